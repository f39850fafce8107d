"""The dealer: REGISTER, CALL -> INVOCATION -> YIELD / ERROR -> RESULT / ERROR, and who leaves mid-call."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.harness import Harness, wire
from wsserver.core.session import State

ERROR, REGISTERED, UNREGISTERED, CALL, RESULT, INVOCATION, YIELD = 8, 65, 67, 48, 50, 68, 70


@pytest.fixture
def h() -> Harness:
    h = Harness()
    h.join("caller"), h.join("callee")
    return h


def invoke(h: Harness, procedure: str = "com.add", *args: Any, request: int = 7, **kwargs: Any) -> list[Any]:
    """The caller calls; return the INVOCATION the callee gets."""
    (invocation,) = wire(h.send("caller", [CALL, request, {}, procedure, list(args), kwargs]))["callee"]
    assert invocation[0] == INVOCATION
    return invocation


def test_a_call_is_invoked_and_its_yield_is_the_callers_result(h: Harness) -> None:
    registration = h.register("callee", "com.add")
    invocation = invoke(h, "com.add", 2, 3, request=7, carry=True)
    assert invocation[2:] == [registration, {}, [2, 3], {"carry": True}]
    received = wire(h.send("callee", [YIELD, invocation[1], {}, [5], {"exact": True}]))
    assert received == {"caller": [[RESULT, 7, {}, [5], {"exact": True}]]}


def test_a_callee_error_is_the_callers_error(h: Harness) -> None:
    h.register("callee", "com.div")
    invocation = invoke(h, "com.div", 1, 0, request=9)
    received = wire(h.send("callee", [ERROR, INVOCATION, invocation[1], {}, "com.error.div_by_zero", ["no"]]))
    assert received == {"caller": [[ERROR, CALL, 9, {}, "com.error.div_by_zero", ["no"]]]}


def test_calls_in_flight_are_told_apart(h: Harness) -> None:
    h.register("callee", "com.echo")
    first, second = invoke(h, "com.echo", "a", request=1), invoke(h, "com.echo", "b", request=2)
    assert first[1] != second[1]
    assert wire(h.send("callee", [YIELD, second[1], {}, ["b"]]))["caller"] == [[RESULT, 2, {}, ["b"]]]
    assert wire(h.send("callee", [YIELD, first[1], {}, ["a"]]))["caller"] == [[RESULT, 1, {}, ["a"]]]


def test_a_late_or_foreign_answer_is_dropped(h: Harness) -> None:
    h.join("stranger")
    h.register("callee", "com.echo")
    invocation = invoke(h, "com.echo")
    assert h.send("stranger", [YIELD, invocation[1], {}, ["forged"]]) == []
    assert h.send("callee", [YIELD, invocation[1], {}, ["real"]]) != []
    assert h.send("callee", [YIELD, invocation[1], {}, ["again"]]) == []
    assert h.send("callee", [ERROR, INVOCATION, 424242, {}, "com.error"]) == []


def test_no_such_procedure(h: Harness) -> None:
    (error,) = wire(h.send("caller", [CALL, 3, {}, "com.nobody"]))["caller"]
    assert error[:5] == [ERROR, CALL, 3, {}, "wamp.error.no_such_procedure"]


def test_a_procedure_has_one_callee(h: Harness) -> None:
    h.register("callee", "com.add")
    (error,) = wire(h.send("caller", [64, 4, {}, "com.add"]))["caller"]
    assert error[:5] == [ERROR, 64, 4, {}, "wamp.error.procedure_already_exists"]


@pytest.mark.parametrize(
    "options, procedure, error",
    [
        ({}, "wamp.session.count", "wamp.error.invalid_uri"),
        ({}, "wamp.my.own", "wamp.error.invalid_uri"),
        ({}, "com..bad", "wamp.error.invalid_uri"),
        ({"match": "regex"}, "com.x", "wamp.error.invalid_argument"),
        ({"match": "prefix"}, "wamp.session.", "wamp.error.invalid_uri"),
        ({"match": "wildcard"}, "com.a b", "wamp.error.invalid_uri"),
    ],
)
def test_registrations_refused_and_the_session_stays_open(
    h: Harness, options: dict[str, Any], procedure: str, error: str
) -> None:
    (reply,) = wire(h.send("callee", [64, 5, options, procedure]))["callee"]
    assert reply[:5] == [ERROR, 64, 5, {}, error]
    assert h.sessions["callee"].state is State.OPEN
    h.register("callee", "com.fine")


def test_unregister(h: Harness) -> None:
    registration = h.register("callee", "com.add")
    (error,) = wire(h.send("caller", [66, 5, registration]))["caller"]
    assert error[:5] == [ERROR, 66, 5, {}, "wamp.error.no_such_registration"]
    assert wire(h.send("callee", [66, 6, registration])) == {"callee": [[UNREGISTERED, 6]]}
    assert h.call("caller", "com.add")[4] == "wamp.error.no_such_procedure"
    h.register("caller", "com.add")  # free again


def test_a_call_in_flight_completes_after_unregister(h: Harness) -> None:
    registration = h.register("callee", "com.slow")
    invocation = invoke(h, "com.slow", request=8)
    h.send("callee", [66, 9, registration])
    assert wire(h.send("callee", [YIELD, invocation[1], {}, ["done"]]))["caller"] == [[RESULT, 8, {}, ["done"]]]


@pytest.mark.parametrize("how", ["detach", "goodbye", "abort"])
def test_the_caller_is_told_canceled_when_the_callee_leaves_mid_call(h: Harness, how: str) -> None:
    h.register("callee", "com.slow")
    invoke(h, "com.slow", request=11)
    callee = h.sessions["callee"]
    if how == "detach":
        actions = h.router.detach(callee)
    elif how == "goodbye":
        actions = h.send("callee", [6, {}, "wamp.close.normal"])
    else:
        actions = h.send("callee", [3, {}, "wamp.close.normal"])
    (error,) = wire(actions)["caller"]
    assert error[:5] == [ERROR, CALL, 11, {}, "wamp.error.canceled"]
    assert h.call("caller", "com.slow")[4] == "wamp.error.no_such_procedure"


def test_a_caller_that_leaves_mid_call_is_forgotten(h: Harness) -> None:
    h.register("callee", "com.slow")
    invocation = invoke(h, "com.slow")
    caller = h.sessions["caller"]
    assert h.router.detach(caller) == []
    assert h.send("callee", [YIELD, invocation[1], {}, ["too late"]]) == []
    assert h.sessions["callee"].invocations == set() and caller.invocations == set()


def test_a_session_may_call_itself_and_leave_mid_call(h: Harness) -> None:
    h.register("callee", "com.self")
    (invocation,) = wire(h.send("callee", [CALL, 1, {}, "com.self"]))["callee"]
    assert invocation[0] == INVOCATION
    assert h.router.detach(h.sessions["callee"]) == []


def test_an_error_for_anything_but_an_invocation_is_a_protocol_violation(h: Harness) -> None:
    abort, close = wire(h.send("callee", [ERROR, 32, 1, {}, "com.error"]))["callee"]
    assert abort[0] == 3 and "ERROR for request type 32" in abort[1]["message"]


def test_requests_from_a_session_the_router_is_closing_are_dropped(h: Harness) -> None:
    h.register("callee", "com.echo")
    invocation = invoke(h, "com.echo")
    h.router.goodbye(h.sessions["callee"])
    assert h.send("callee", [YIELD, invocation[1], {}, ["while closing"]]) == []
    (error,) = wire(h.send("callee", [6, {}, "wamp.close.goodbye_and_out"]))["caller"]
    assert error[4] == "wamp.error.canceled"


def test_a_caller_that_stops_waiting_forgets_its_call_and_the_late_answer_is_dropped(h: Harness) -> None:
    h.register("callee", "com.slow")
    first, second = invoke(h, "com.slow", request=1), invoke(h, "com.slow", request=2)
    h.router.forget_call(h.sessions["caller"], 1)
    assert len(h.sessions["callee"].invocations) == 1 and len(h.sessions["caller"].invocations) == 1
    assert h.send("callee", [YIELD, first[1], {}, ["late"]]) == []
    assert wire(h.send("callee", [YIELD, second[1], {}, ["b"]]))["caller"] == [[RESULT, 2, {}, ["b"]]]
    h.router.forget_call(h.sessions["caller"], 424242)  # nothing in flight: nothing to forget
