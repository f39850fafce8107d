"""
Hostile input to the dealer's Advanced Profile against a running server (see hostile.py): each
offender gets a clear answer, a bystander's events keep flowing in time, memory stays bounded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import exchange, raw_session

ABORT, ERROR, CALL, CANCEL, RESULT, REGISTER, INVOCATION, INTERRUPT, YIELD = 3, 8, 48, 49, 50, 64, 68, 69, 70
MEMORY_BOUND = 64 * 2**20
#: A callee that understands INTERRUPT (only such callees are sent one).
CANCELING_CALLEE_HELLO = [1, "realm1", {"roles": {"callee": {"features": {"call_canceling": True}}}}]


class Drain:
    """Reads everything ``ws`` receives on a thread of its own (a peer that keeps up), by message type."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[list[Any]] = []
        self.closed = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                self.received.append(json.loads(self.ws.recv()))
        except (ConnectionClosed, TimeoutError, OSError):
            self.closed.set()

    def of(self, message_type: int) -> list[list[Any]]:
        return [m for m in list(self.received) if m[0] == message_type]

    def wait_for(self, message_type: int, count: int, timeout: float = 30.0) -> list[list[Any]]:
        """Wait until ``count`` messages of ``message_type`` arrived; return them."""
        done = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if len(self.of(message_type)) >= count or self.closed.is_set():
                break
            done.wait(0.05)
        return self.of(message_type)


def flood(ws: ClientConnection, messages: Iterable[list[Any]]) -> None:
    """
    Send ``messages`` at 5,000 a second: the server, this loop and the bystander share 2 cores,
    and what is measured is what the dealer does with each message, not the cost of reading one.
    """
    for n, message in enumerate(messages, 1):
        ws.send(json.dumps(message))
        if n % 100 == 0:
            time.sleep(0.02)


def register(ws: ClientConnection, procedure: str) -> int:
    registered = exchange(ws, [REGISTER, 1, {}, procedure])
    assert registered[0] == 65, registered
    return int(registered[2])




def test_cancel_of_unknown_or_other_sessions_calls_is_dropped_and_costs_nothing(server: Any) -> None:
    with raw_session(server.ws_url) as callee, raw_session(server.ws_url) as victim, \
            raw_session(server.ws_url) as attacker:
        register(callee, "com.example.slow")
        victim.send(json.dumps([CALL, 7, {}, "com.example.slow", [1]]))
        invocation = json.loads(callee.recv(timeout=5))
        assert invocation[0] == INVOCATION
        attacks = 3_000
        with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
            modes = [{}, {"mode": "skip"}, {"mode": "kill"}, {"mode": "killnowait"}]
            # The victim's request id, and ids no call of the attacker has.
            flood(attacker, ([CANCEL, 7 if n % 2 else n + 1, modes[n % 4]] for n in range(attacks)))
            # The attacker's session is open and has had no answer (WAMP has none for CANCEL).
            answer = exchange(attacker, [CALL, 1, {}, "wamp.session.count"])
            assert answer[:2] == [RESULT, 1], answer
        bystander.check()
        memory.check(MEMORY_BOUND)
        # The victim's call was never touched: the callee had no INTERRUPT, and its answer arrives.
        callee.send(json.dumps([YIELD, invocation[1], {}, ["fine"]]))
        assert json.loads(victim.recv(timeout=5))[:4] == [RESULT, 7, {}, ["fine"]]


def test_a_progress_flood_for_a_call_not_asking_for_progress_aborts_the_callee(server: Any) -> None:
    with raw_session(server.ws_url) as attacker, raw_session(server.ws_url) as caller:
        register(attacker, "com.example.chatty")
        caller.send(json.dumps([CALL, 7, {}, "com.example.chatty", [1]]))
        invocation = json.loads(attacker.recv(timeout=5))
        assert invocation[0] == INVOCATION and invocation[3] == {}
        drain = Drain(caller)
        with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
            try:
                flood(attacker, ([YIELD, invocation[1], {"progress": True}, [n, "x" * 100]] for n in range(3_000)))
            except ConnectionClosed:
                pass  # cut off mid-flood, as it should be
            abort = None
            try:
                while abort is None:
                    message = json.loads(attacker.recv(timeout=10))
                    abort = message if message[0] == ABORT else None
            except ConnectionClosed:
                pass
            assert abort is not None and abort[2] == "wamp.error.protocol_violation", abort
            assert "progress" in abort[1]["message"]
            (error,) = drain.wait_for(ERROR, 1)
        bystander.check()
        memory.check(MEMORY_BOUND)
        assert error[:5] == [ERROR, CALL, 7, {}, "wamp.error.canceled"]
        assert drain.of(RESULT) == []  # no progress reached the caller, and no "result"


def test_a_flood_of_calls_with_tiny_timeouts_is_answered_and_leaves_nothing_in_flight(server: Any) -> None:
    calls = 3_000
    with raw_session(server.ws_url, hello=False) as callee, raw_session(server.ws_url) as attacker:
        assert exchange(callee, CANCELING_CALLEE_HELLO)[0] == 2
        register(callee, "com.example.never")
        callee_drain = Drain(callee)  # a callee that reads everything and never answers
        drain = Drain(attacker)
        with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
            flood(attacker, ([CALL, request, {"timeout": 1}, "com.example.never", [request]] for request in range(1, calls + 1)))
            errors = drain.wait_for(ERROR, calls, timeout=60)
        bystander.check()
        memory.check(MEMORY_BOUND)
        assert len(errors) == calls and sorted(e[2] for e in errors) == list(range(1, calls + 1))
        kinds = {e[4] for e in errors}
        assert kinds <= {"wamp.error.canceled", "wsserver.error.too_many_calls_in_flight"}, kinds
        assert "wamp.error.canceled" in kinds
        invocations, interrupts = callee_drain.of(INVOCATION), callee_drain.wait_for(INTERRUPT, 1)
        assert len(callee_drain.wait_for(INTERRUPT, len(invocations))) == len(invocations)
        assert {i[2]["reason"] for i in interrupts} == {"wamp.error.timeout"}
        # Nothing is left in flight: the attacker may make as many calls as ever.
        attacker.send(json.dumps([CALL, 1, {"timeout": 1}, "com.example.never"]))
        assert len(drain.wait_for(ERROR, calls + 1)) == calls + 1
        assert drain.of(ERROR)[-1][4] == "wamp.error.canceled"


def test_a_callee_leaving_with_many_calls_in_flight_answers_each_caller_at_once(server: Any) -> None:
    with raw_session(server.ws_url) as caller:
        drain = Drain(caller)
        with raw_session(server.ws_url) as callee:
            register(callee, "com.example.leaving")
            for request in range(1, 1001):
                caller.send(json.dumps([CALL, request, {}, "com.example.leaving"]))
            for _ in range(1000):
                assert json.loads(callee.recv(timeout=5))[0] == INVOCATION
        errors = drain.wait_for(ERROR, 1000)
        assert sorted(e[2] for e in errors) == list(range(1, 1001))
        assert {e[4] for e in errors} == {"wamp.error.canceled"}
        assert not drain.closed.is_set()


def test_ten_thousand_pattern_registrations_of_one_session_stop_at_its_registration_limit(server: Any) -> None:
    patterns = 10_000
    with raw_session(server.ws_url) as attacker, raw_session(server.ws_url) as caller:
        with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
            drain = Drain(attacker)
            flood(attacker, (
                [REGISTER, n, {"match": "prefix" if n % 2 else "wildcard", "invoke": "roundrobin"}, pattern]
                for n in range(1, patterns + 1)
                for pattern in [f"com.hostile{n}." if n % 2 else f"com.hostile{n}..x"]
            ))
            drain.wait_for(ERROR, patterns - 1000)
        bystander.check()  # before (main): every pattern refused invalid_argument; after: 1000 kept, the rest refused
        memory.check(MEMORY_BOUND)  # after: +1.1 MiB
        registered, refused = drain.of(65), drain.of(ERROR)
        # The server's default --max-registrations (1000) holds for patterns as for exact procedures.
        assert len(registered) == 1000 and len(refused) == patterns - 1000, (len(registered), len(refused))
        assert {r[4] for r in refused} == {"wsserver.error.too_many_registrations"}
        # The patterns it got work, and a call matching none of them is answered at once.
        assert exchange(caller, [CALL, 1, {}, "com.nothing.here", []])[4] == "wamp.error.no_such_procedure"
        caller.send(json.dumps([CALL, 2, {}, "com.hostile1.users", []]))
        (invocation,) = drain.wait_for(INVOCATION, 1)
        assert invocation[3] == {"procedure": "com.hostile1.users"}


def test_a_thousand_long_prefix_patterns_cost_their_bytes_not_a_node_per_character(server: Any) -> None:
    # Before (a trie with a node per character): server RSS +232 MiB, bystander median 173 ms (max 335 ms), for the
    # registrations as for the same subscriptions; after (a radix trie): +2 MiB, median 1 ms.
    with raw_session(server.ws_url) as registrar, raw_session(server.ws_url) as subscriber:
        with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
            for ws, kind, answer in ((registrar, REGISTER, 65), (subscriber, 32, 33)):
                drain = Drain(ws)
                flood(ws, ([kind, n, {"match": "prefix"}, f"c{n}." + "a" * 1000] for n in range(1, 1001)))
                assert len(drain.wait_for(answer, 1000)) == 1000
        bystander.check()
        memory.check(MEMORY_BOUND)
