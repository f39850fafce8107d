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


# -- pattern-based registrations ----------------------------------------------------------------


def test_a_prefix_registration_is_invoked_with_the_called_procedure(h: Harness) -> None:
    registration = h.register("a", "com.app", match="prefix")
    callee, invocation = invoked(h, "com.app.users.get")
    assert callee == "a" and invocation[2] == registration
    assert invocation[3] == {"procedure": "com.app.users.get"}
    assert invoked(h, "com.apple", 2)[1][3] == {"procedure": "com.apple"}, "a prefix of the string, as the broker"
    assert h.call("caller", "com.ap")[4] == "wamp.error.no_such_procedure"


def test_a_wildcard_registration_matches_by_components(h: Harness) -> None:
    registration = h.register("a", "com..get", match="wildcard")
    callee, invocation = invoked(h, "com.users.get")
    assert (callee, invocation[2], invocation[3]) == ("a", registration, {"procedure": "com.users.get"})
    assert h.call("caller", "com.users.all.get")[4] == "wamp.error.no_such_procedure"


def test_exact_wins_over_the_longest_prefix_over_shorter_ones_over_wildcards(h: Harness) -> None:
    h.join("d")
    h.register("a", "com.x.y", match="wildcard")
    h.register("b", "com.", match="prefix")
    h.register("c", "com.x", match="prefix")
    h.register("d", "com.x.y")
    assert invoked(h, "com.x.y", 1)[0] == "d"
    assert invoked(h, "com.x.z", 2)[0] == "c"
    assert invoked(h, "com.y", 3)[0] == "b"
    exact = invoked(h, "com.x.y", 4)[1]
    assert exact[3] == {}, "an exact registration is not told the procedure"


def test_among_wildcards_more_components_before_the_first_empty_one_win(h: Harness) -> None:
    h.register("a", "com..y.z", match="wildcard")
    h.register("b", "com.x..z", match="wildcard")
    assert invoked(h, "com.x.y.z")[0] == "b"
    wire(h.send("b", [6, {}, "wamp.close.close_realm"]))
    assert invoked(h, "com.x.y.z", 2)[0] == "a"


def test_patterns_and_exact_registrations_of_one_uri_are_apart_and_may_be_shared(h: Harness) -> None:
    exact = h.register("a", "com.p")
    prefix = h.register("b", "com.p", match="prefix", invoke="roundrobin")
    assert prefix != exact and h.register("c", "com.p", match="prefix", invoke="roundrobin") == prefix
    assert [invoked(h, "com.p.q", n)[0] for n in range(1, 4)] == ["b", "c", "b"]
    assert invoked(h, "com.p", 4)[0] == "a"


def test_no_pattern_reaches_the_routers_namespace(h: Harness) -> None:
    h.register("a", "..", match="wildcard")
    h.register("b", "w", match="prefix")
    assert h.result("caller", "wamp.session.count") == 4
    assert h.call("caller", "wamp.nobody.here")[4] == "wamp.error.no_such_procedure"
    assert invoked(h, "com.x.y")[0] == "a"


def test_a_session_that_never_registers_nor_calls_holds_no_sets_of_its_own(h: Harness) -> None:
    from wsserver.core.session import NONE

    subscriber = h.join("subscriber")
    assert subscriber.registrations is NONE and subscriber.invocations is NONE
    h.register("a", "com.example.add")
    a, caller = h.sessions["a"], h.sessions["caller"]
    assert len(a.registrations) == 1 and caller.invocations is NONE
    callee, invocation = invoked(h, "com.example.add")
    assert len(caller.invocations) == 1 and len(a.invocations) == 1
    wire(h.send("a", [YIELD, invocation[1], {}, [2]]))
    assert not caller.invocations and not a.invocations
    (reply,) = wire(h.send("a", [UNREGISTER, 10, next(iter(a.registrations)).id]))["a"]
    assert reply[0] == UNREGISTERED and not a.registrations
