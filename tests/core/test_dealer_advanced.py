"""The dealer's Advanced Profile: progressive results, CANCEL, call timeouts, caller identification."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.harness import Harness, wire
from wsserver.core.dealer import DEADLINE_SLACK
from wsserver.core.session import State

ABORT, ERROR, CALL, CANCEL, RESULT, INVOCATION, INTERRUPT, YIELD = 3, 8, 48, 49, 50, 68, 69, 70
CANCELED = "wamp.error.canceled"
#: HELLO roles of a callee that understands INTERRUPT (autobahn-python's; AutobahnJS does not announce it).
CANCELING_CALLEE = {"callee": {"features": {"call_canceling": True, "progressive_call_results": True}}}


@pytest.fixture
def h() -> Harness:
    h = Harness()
    h.join("caller"), h.join("callee", roles=CANCELING_CALLEE)
    h.register("callee", "com.work")
    return h


def invoke(h: Harness, options: dict[str, Any], request: int = 7, caller: str = "caller") -> list[Any]:
    """``caller`` calls com.work with ``options``; return the INVOCATION the callee gets."""
    received = wire(h.send(caller, [CALL, request, options, "com.work", [1]]))
    assert caller not in received, received
    (invocation,) = received["callee"]
    assert invocation[0] == INVOCATION
    return invocation


def in_flight(h: Harness) -> int:
    return len(h.router.realms["realm1"].dealer._in_flight)


def test_progressive_results_reach_the_caller_until_the_final_one(h: Harness) -> None:
    invocation = invoke(h, {"receive_progress": True})
    assert invocation[3] == {"receive_progress": True}
    for step in (1, 2):
        received = wire(h.send("callee", [YIELD, invocation[1], {"progress": True}, [step]]))
        assert received == {"caller": [[RESULT, 7, {"progress": True}, [step]]]}
    assert wire(h.send("callee", [YIELD, invocation[1], {}, ["done"]])) == {"caller": [[RESULT, 7, {}, ["done"]]]}
    assert h.send("callee", [YIELD, invocation[1], {"progress": True}, [3]]) == []
    assert in_flight(h) == 0


def test_a_call_not_asking_for_progress_is_invoked_without_it(h: Harness) -> None:
    assert invoke(h, {})[3] == {}
    assert invoke(h, {"receive_progress": False}, request=8)[3] == {}


def test_a_progressive_yield_the_caller_did_not_ask_for_aborts_the_callee_and_the_caller_hears_at_once(h: Harness) -> None:
    invocation = invoke(h, {})
    received = wire(h.send("callee", [YIELD, invocation[1], {"progress": True}, ["x"]]))
    abort, close = received["callee"]
    assert abort[0] == ABORT and abort[2] == "wamp.error.protocol_violation" and "progress" in abort[1]["message"]
    assert close[0] == "close"
    (error,) = received["caller"]
    assert error[:5] == [ERROR, CALL, 7, {}, CANCELED]
    assert h.sessions["callee"].state is State.CLOSED


def test_cancel_skip_answers_the_caller_at_once_and_tells_the_callee_nothing(h: Harness) -> None:
    invocation = invoke(h, {"receive_progress": True})
    (error,) = wire(h.send("caller", [CANCEL, 7, {"mode": "skip"}]))["caller"]
    assert error[:5] == [ERROR, CALL, 7, {}, CANCELED]
    assert h.send("callee", [YIELD, invocation[1], {"progress": True}, ["late"]]) == []
    assert h.send("callee", [YIELD, invocation[1], {}, ["late"]]) == []
    assert in_flight(h) == 0 and h.router.realms["realm1"].dealer.calls_in_flight(h.sessions["caller"]) == 0


def test_cancel_killnowait_interrupts_the_callee_and_answers_the_caller_at_once(h: Harness) -> None:
    invocation = invoke(h, {})
    received = wire(h.send("caller", [CANCEL, 7, {"mode": "killnowait"}]))
    assert received["callee"] == [[INTERRUPT, invocation[1], {"mode": "killnowait"}]]
    assert received["caller"][0][:5] == [ERROR, CALL, 7, {}, CANCELED]
    assert h.send("callee", [ERROR, INVOCATION, invocation[1], {}, CANCELED]) == []
    assert in_flight(h) == 0


@pytest.mark.parametrize("options", [{"mode": "kill"}, {}])
def test_cancel_kill_interrupts_the_callee_and_the_caller_gets_its_answer(h: Harness, options: dict[str, Any]) -> None:
    invocation = invoke(h, {"receive_progress": True})
    assert wire(h.send("caller", [CANCEL, 7, options])) == {"callee": [[INTERRUPT, invocation[1], {"mode": "kill"}]]}
    assert h.send("caller", [CANCEL, 7, options]) == []  # once is enough
    assert h.send("callee", [YIELD, invocation[1], {"progress": True}, ["after"]]) == []
    received = wire(h.send("callee", [ERROR, INVOCATION, invocation[1], {}, CANCELED, ["stopped"]]))
    assert received == {"caller": [[ERROR, CALL, 7, {}, CANCELED, ["stopped"]]]}
    assert in_flight(h) == 0


def test_cancel_of_a_call_not_in_flight_or_not_the_senders_is_dropped(h: Harness) -> None:
    h.join("stranger")
    invocation = invoke(h, {})
    for mode in ("skip", "kill", "killnowait"):
        assert h.send("stranger", [CANCEL, 7, {"mode": mode}]) == []
        assert h.send("caller", [CANCEL, 99, {"mode": mode}]) == []
    assert wire(h.send("callee", [YIELD, invocation[1], {}, [2]])) == {"caller": [[RESULT, 7, {}, [2]]]}
    assert h.send("caller", [CANCEL, 7, {}]) == []  # raced its RESULT


def test_cancel_with_an_unknown_mode_is_a_protocol_violation(h: Harness) -> None:
    invoke(h, {})
    abort, _ = wire(h.send("caller", [CANCEL, 7, {"mode": "explode"}]))["caller"]
    assert abort[0] == ABORT and abort[2] == "wamp.error.protocol_violation"


def test_a_timeout_cancels_the_call_and_interrupts_the_callee(h: Harness) -> None:
    invocation = invoke(h, {"timeout": 1500})
    dealer = h.router.realms["realm1"].dealer
    h.clock.now += 1.499
    assert h.router.expire_calls() == []
    h.clock.now += 0.001
    received = wire(h.router.expire_calls())
    assert received["callee"] == [[INTERRUPT, invocation[1], {"mode": "killnowait", "reason": "wamp.error.timeout"}]]
    (error,) = received["caller"]
    assert error[:5] == [ERROR, CALL, 7, {}, CANCELED] and "timeout" in error[5][0]
    assert h.send("callee", [YIELD, invocation[1], {}, ["late"]]) == []
    assert in_flight(h) == 0 and dealer.timers() == 0 and h.router.expire_calls() == []


def test_a_call_answered_in_time_is_not_timed_out(h: Harness) -> None:
    invocation = invoke(h, {"timeout": 1000})
    invoke(h, {"timeout": 0}, request=8)  # 0: no timeout
    assert wire(h.send("callee", [YIELD, invocation[1], {}, [1]])) == {"caller": [[RESULT, 7, {}, [1]]]}
    h.clock.now += 3600
    assert h.router.expire_calls() == []


def test_calls_answered_long_before_their_timeout_leave_no_deadlines_behind(h: Harness) -> None:
    dealer = h.router.realms["realm1"].dealer
    for request in range(1, 1001):
        invocation = invoke(h, {"timeout": 3_600_000}, request=request)
        h.send("callee", [YIELD, invocation[1], {}, []])
    assert dealer.timers() <= DEADLINE_SLACK
    waiting = invoke(h, {"timeout": 1000}, request=5000)
    h.clock.now += 1
    (interrupt,) = wire(h.router.expire_calls())["callee"]
    assert interrupt[1] == waiting[1]


def test_disclose_me_tells_the_callee_who_calls(h: Harness) -> None:
    caller = h.sessions["caller"]
    invocation = invoke(h, {"disclose_me": True})
    assert invocation[3] == {"caller": caller.id, "caller_authid": caller.authid, "caller_authrole": "anonymous"}
    assert invoke(h, {"disclose_me": False}, request=8)[3] == {}


def test_disclose_me_that_is_not_a_bool_is_a_protocol_violation(h: Harness) -> None:
    abort, _ = wire(h.send("caller", [CALL, 1, {"disclose_me": 1}, "com.work"]))["caller"]
    assert abort[0] == ABORT and "disclose_me" in abort[1]["message"]


def test_the_callee_leaving_answers_every_call_in_flight_at_once(h: Harness) -> None:
    h.join("other")
    for request in range(1, 101):
        invoke(h, {"timeout": 60_000}, request=request)
        invoke(h, {}, request=request, caller="other")
    received = wire(h.router.detach(h.sessions["callee"]))
    for caller in ("caller", "other"):
        assert sorted(error[2] for error in received[caller]) == list(range(1, 101))
        assert {error[4] for error in received[caller]} == {CANCELED}
    assert h.sessions["caller"].state is State.OPEN and in_flight(h) == 0
    h.clock.now += 60
    assert h.router.expire_calls() == []


@pytest.mark.parametrize("mode", ["kill", "killnowait", "skip"])
def test_a_callee_that_did_not_announce_call_canceling_gets_no_interrupt(mode: str) -> None:
    h = Harness()
    h.join("caller"), h.join("callee")  # no call_canceling among its features, as AutobahnJS
    h.register("callee", "com.work")
    invocation = invoke(h, {})
    received = wire(h.send("caller", [CANCEL, 7, {"mode": mode}]))
    assert received == {"caller": [[ERROR, CALL, 7, {}, CANCELED, ["the caller canceled the call (mode skip)"]]]}
    assert h.send("callee", [YIELD, invocation[1], {}, ["late"]]) == []
    invoke(h, {"timeout": 10}, request=8)
    h.clock.now += 1
    assert list(wire(h.router.expire_calls())) == ["caller"]
