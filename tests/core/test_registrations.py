"""Shared registrations (``invoke``) and pattern-based registrations (``match``) of the dealer."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.harness import Harness, wire
from wsserver.core.session import State

ERROR, REGISTER, REGISTERED, UNREGISTER, UNREGISTERED, CALL, INVOCATION, YIELD, RESULT = 8, 64, 65, 66, 67, 48, 68, 70, 50


@pytest.fixture
def h() -> Harness:
    h = Harness()
    for name in ("caller", "a", "b", "c"):
        h.join(name)
    return h


def invoked(h: Harness, procedure: str, request: int = 1) -> tuple[str, list[Any]]:
    """The caller calls ``procedure``; return which session got the INVOCATION, and the INVOCATION."""
    received = wire(h.send("caller", [CALL, request, {}, procedure, [request]]))
    ((callee, (invocation,)),) = received.items()
    assert invocation[0] == INVOCATION, received
    return callee, invocation


def register(h: Harness, name: str, procedure: str, **options: Any) -> list[Any]:
    (reply,) = wire(h.send(name, [REGISTER, 9, options, procedure]))[name]
    return reply


# -- shared registrations --------------------------------------------------------------------


@pytest.mark.parametrize(
    "invoke, expected",
    [
        ("roundrobin", ["a", "b", "c", "a", "b", "c"]),
        ("first", ["a"] * 6),
        ("last", ["c"] * 6),
    ],
)
def test_a_shared_registration_invokes_its_callees_by_policy(h: Harness, invoke: str, expected: list[str]) -> None:
    ids = {h.register(name, "com.shared", invoke=invoke) for name in "abc"}
    assert len(ids) == 1, "one registration, shared"
    assert [invoked(h, "com.shared", n)[0] for n in range(1, 7)] == expected


def test_random_draws_from_the_injected_source_and_reaches_every_callee(h: Harness) -> None:
    for name in "abc":
        h.register(name, "com.shared", invoke="random")
    assert {invoked(h, "com.shared", n)[0] for n in range(1, 31)} == {"a", "b", "c"}


def test_each_answer_goes_to_its_caller_whichever_callee_answers(h: Harness) -> None:
    for name in "ab":
        h.register(name, "com.shared", invoke="roundrobin")
    first, second = invoked(h, "com.shared", 1), invoked(h, "com.shared", 2)
    assert (first[0], second[0]) == ("a", "b")
    assert wire(h.send("b", [YIELD, second[1][1], {}, ["two"]])) == {"caller": [[RESULT, 2, {}, ["two"]]]}
    assert wire(h.send("a", [YIELD, first[1][1], {}, ["one"]])) == {"caller": [[RESULT, 1, {}, ["one"]]]}


@pytest.mark.parametrize(
    "first, second",
    [({}, {}), ({}, {"invoke": "roundrobin"}), ({"invoke": "roundrobin"}, {}), ({"invoke": "first"}, {"invoke": "last"})],
)
def test_a_second_register_with_another_policy_is_refused(h: Harness, first: dict[str, str], second: dict[str, str]) -> None:
    h.register("a", "com.p", **first)
    reply = register(h, "b", "com.p", **second)
    assert reply[:5] == [ERROR, REGISTER, 9, {}, "wamp.error.procedure_already_exists"], reply
    assert h.sessions["b"].state is State.OPEN


def test_the_same_session_cannot_join_a_shared_registration_twice(h: Harness) -> None:
    h.register("a", "com.p", invoke="roundrobin")
    assert register(h, "a", "com.p", invoke="roundrobin")[4] == "wamp.error.procedure_already_exists"


def test_callees_leaving_keep_the_others_and_the_last_one_deletes_it(h: Harness) -> None:
    registration = h.register("a", "com.p", invoke="roundrobin")
    h.register("b", "com.p", invoke="roundrobin")
    h.register("c", "com.p", invoke="roundrobin")
    assert wire(h.send("a", [UNREGISTER, 3, registration])) == {"a": [[UNREGISTERED, 3]]}
    wire(h.send("b", [6, {}, "wamp.close.close_realm"]))  # GOODBYE
    assert [invoked(h, "com.p", n)[0] for n in range(1, 4)] == ["c", "c", "c"]
    h.register("a", "com.p", invoke="roundrobin")
    assert {invoked(h, "com.p", n)[0] for n in range(4, 8)} == {"a", "c"}
    for name in "ac":
        wire(h.send(name, [6, {}, "wamp.close.close_realm"]))
    assert h.call("caller", "com.p")[4] == "wamp.error.no_such_procedure"
    assert len(h.router.realms["realm1"].dealer._by_id) == len(h.router.realms["realm1"].dealer._index)
    h.register("caller", "com.p")  # free for any policy again
