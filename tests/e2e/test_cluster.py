"""
A cluster on a real redis-server (``--redis``): two or three ``twistd -n wsserver`` nodes whose
session meta API (count, list, get, on_join, on_leave) and remote procedure calls cover every
node; a node killed with SIGKILL leaves the cluster within its presence TTL (``--cluster-ttl``,
short here), its sessions leaving the count and its registrations vanishing, and a call in
flight to it ending with an ERROR, not a hang.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import ServerProcess, wait_for
from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import join
from tests.e2e.test_http_api import post
from tests.e2e.redisserver import RedisServer, redis_server  # noqa: F401 (a fixture)

ERROR, SUBSCRIBED, EVENT, RESULT, REGISTERED, INVOCATION = 8, 33, 36, 50, 65, 68
#: The presence TTL of these tests' nodes: a killed node is gone from the others within it
#: (plus one refresh period, TTL / 3, for the others to look).
TTL = 2.0
requests = itertools.count(1)


@contextlib.contextmanager
def session(node: ServerProcess) -> Iterator[tuple[ClientConnection, int]]:
    """A raw wamp.2.json session on ``node`` and its session id."""
    with ws_connect(node.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as ws:
        welcome = join(ws)
        yield ws, welcome[1]


def receive(ws: ClientConnection, kind: int, timeout: float = 10.0) -> list[Any]:
    """The next message of ``kind`` on ``ws`` (skipping others)."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message[0] == kind:
            return list(message)


def call(ws: ClientConnection, procedure: str, *args: Any, **kwargs: Any) -> list[Any]:
    """CALL and return its RESULT or ERROR."""
    request = next(requests)
    ws.send(json.dumps([48, request, {}, procedure, list(args), kwargs]))
    while True:
        reply = json.loads(ws.recv(timeout=10))
        if reply[0] in (RESULT, ERROR) and reply[1 if reply[0] == RESULT else 2] == request:
            return list(reply)


def result(ws: ClientConnection, procedure: str, *args: Any) -> Any:
    reply = call(ws, procedure, *args)
    assert reply[0] == RESULT, reply
    return reply[3][0]


def register(ws: ClientConnection, procedure: str) -> list[Any]:
    """REGISTER; the REGISTERED or ERROR."""
    ws.send(json.dumps([64, next(requests), {}, procedure]))
    while True:
        reply = json.loads(ws.recv(timeout=10))
        if reply[0] in (REGISTERED, ERROR):
            return list(reply)


def subscribe(ws: ClientConnection, topic: str) -> None:
    ws.send(json.dumps([32, next(requests), {}, topic]))
    receive(ws, SUBSCRIBED)


def start_node(start_server: Any, redis: RedisServer, *args: str) -> ServerProcess:
    node: ServerProcess = start_server("--redis", redis.url, "--cluster-ttl", str(TTL), *args)
    wait_for(lambda: "Redis cluster: node" in node.log and "joined the cluster" in node.log)
    return node


def wait_for_count(ws: ClientConnection, count: int, timeout: float = 10.0) -> float:
    """Seconds until ``wamp.session.count`` on ``ws`` says ``count``."""
    started = time.monotonic()
    wait_for(lambda: result(ws, "wamp.session.count") == count, timeout=timeout, interval=0.05)
    return time.monotonic() - started


def announced(node: ServerProcess, elsewhere: ClientConnection) -> None:
    """
    Wait until what ``node`` announced so far reached the node of ``elsewhere``: a node announces
    in order on one channel, so a session joining after it is seen there last.
    """
    count = result(elsewhere, "wamp.session.count")
    with session(node):
        wait_for_count(elsewhere, count + 1)
    wait_for_count(elsewhere, count)


def sigkill(node: ServerProcess) -> None:
    assert node.proc is not None
    os.kill(node.proc.pid, signal.SIGKILL)
    node.proc.wait(10)
    node.proc = None


@pytest.fixture
def nodes(start_server: Any, redis_server: RedisServer) -> tuple[ServerProcess, ServerProcess]:  # noqa: F811
    redis_server.start()
    return start_node(start_server, redis_server), start_node(start_server, redis_server)


def test_count_list_and_get_cover_every_node(nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = nodes
    with session(a) as (on_a, a_id), session(a) as (_, a2_id), session(b) as (on_b, b_id):
        wait_for_count(on_b, 3)
        wait_for_count(on_a, 3)
        assert sorted(result(on_b, "wamp.session.list")) == sorted([a_id, a2_id, b_id])
        assert result(on_b, "wamp.session.list", ["anonymous"]) and result(on_b, "wamp.session.count", ["x"]) == 0
        details = result(on_b, "wamp.session.get", a_id)
        assert details["session"] == a_id and details["authid"] == f"anonymous-{a_id}"
        assert details["authrole"] == "anonymous"
        assert call(on_b, "wamp.session.get", 1)[4] == "wamp.error.no_such_session"
    # Ids are unique across the cluster: each node draws them from a range it holds alone.
    with contextlib.ExitStack() as stack:
        ids = [stack.enter_context(session(node))[1] for node in (a, b) for _ in range(20)]
        assert len(set(ids)) == 40
        assert len({i >> 33 for i in ids[:20]}) == 1 and len({i >> 33 for i in ids[20:]}) == 1
        assert ids[0] >> 33 != ids[20] >> 33


def test_joins_and_leaves_on_one_node_reach_subscribers_on_the_other(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    with session(b) as (watcher, _):
        subscribe(watcher, "wamp.session.on_join")
        subscribe(watcher, "wamp.session.on_leave")
        with session(a) as (_, joined_id):
            on_join = receive(watcher, EVENT)
            assert on_join[4][0]["session"] == joined_id and on_join[4][0]["authrole"] == "anonymous"
        on_leave = receive(watcher, EVENT)
        assert on_leave[4] == [joined_id, f"anonymous-{joined_id}", "anonymous"]


def test_a_call_reaches_a_callee_on_another_node(nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = nodes
    with session(a) as (callee, _), session(b) as (caller, _), session(b) as (rival, _):
        assert register(callee, "com.example.add")[0] == REGISTERED
        announced(a, caller)
        # Registrations are cluster-wide: the same URI on B is refused.
        assert register(rival, "com.example.add")[4] == "wamp.error.procedure_already_exists"
        request = next(requests)
        caller.send(json.dumps([48, request, {}, "com.example.add", [2, 3], {"unit": "m"}]))
        invocation = receive(callee, INVOCATION)
        assert invocation[4:] == [[2, 3], {"unit": "m"}]
        callee.send(json.dumps([70, invocation[1], {}, [5], {"unit": "m"}]))
        assert receive(caller, RESULT) == [RESULT, request, {}, [5], {"unit": "m"}]
        # An error from the callee reaches the caller as it was raised.
        request = next(requests)
        caller.send(json.dumps([48, request, {}, "com.example.add", ["x"]]))
        invocation = receive(callee, INVOCATION)
        callee.send(json.dumps([8, INVOCATION, invocation[1], {}, "com.example.error.nan", ["x is no number"]]))
        assert receive(caller, ERROR) == [ERROR, 48, request, {}, "com.example.error.nan", ["x is no number"]]
        assert call(caller, "com.example.nobody")[4] == "wamp.error.no_such_procedure"
    # The callee left: its registration went with it, on every node.
    with session(b) as (caller, _):
        wait_for(lambda: call(caller, "com.example.add", 1, 1)[4] == "wamp.error.no_such_procedure")


def test_a_killed_node_leaves_the_cluster_within_the_ttl(
    start_server: Any, redis_server: RedisServer,  # noqa: F811
) -> None:
    redis_server.start()
    a, b = start_node(start_server, redis_server), start_node(start_server, redis_server)
    with session(b) as (caller, _), session(b) as (watcher, _), session(a) as (callee, callee_id):
        with session(a):
            assert register(callee, "com.example.slow")[0] == REGISTERED
            announced(a, caller)
            assert result(caller, "wamp.session.count") == 4
            assert register(watcher, "com.example.slow")[4] == "wamp.error.procedure_already_exists"
            subscribe(watcher, "wamp.session.on_leave")
            request = next(requests)
            caller.send(json.dumps([48, request, {}, "com.example.slow", []]))
            receive(callee, INVOCATION)  # in flight; and now its node dies without a word
            killed = time.monotonic()
            sigkill(a)
            error = receive(caller, ERROR, timeout=3 * TTL)
            lost_after = time.monotonic() - killed
            assert error[2] == request and error[4] == "wsserver.error.node_lost", error
            assert lost_after <= TTL + TTL / 3 + 1.0, lost_after
            left = {receive(watcher, EVENT)[4][0] for _ in range(2)}
            assert callee_id in left
            assert result(caller, "wamp.session.count") == 2
            assert call(caller, "com.example.slow")[4] == "wamp.error.no_such_procedure"
            assert register(watcher, "com.example.slow")[0] == REGISTERED


def test_a_node_stopped_gracefully_leaves_at_once(nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = nodes
    with session(b) as (watcher, _):
        with session(a):
            wait_for_count(watcher, 2)
        with session(a) as (_, stays_id):
            wait_for_count(watcher, 2)
            stopped = time.monotonic()
            a.stop()
            assert wait_for_count(watcher, 1, timeout=TTL / 2) < TTL / 2
        assert time.monotonic() - stopped < TTL + 5


def test_three_nodes_see_each_other(start_server: Any, redis_server: RedisServer) -> None:  # noqa: F811
    redis_server.start()
    nodes = [start_node(start_server, redis_server) for _ in range(3)]
    with contextlib.ExitStack() as stack:
        sessions = [stack.enter_context(session(node)) for node in nodes]
        for ws, _ in sessions:
            wait_for_count(ws, 3)
        # A callee on the third node answers a caller on the first.
        third, _ = sessions[2]
        assert register(third, "com.example.third")[0] == REGISTERED
        first, _ = sessions[0]
        for ws, _ in sessions[:2]:
            announced(nodes[2], ws)
        request = next(requests)
        first.send(json.dumps([48, request, {}, "com.example.third", [3]]))
        invocation = receive(third, INVOCATION)
        third.send(json.dumps([70, invocation[1], {}, ["three"]]))
        assert receive(first, RESULT)[3] == ["three"]


def test_session_churn_on_one_node_does_not_harm_the_others(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """A client joining and leaving as fast as it can: every join and leave crosses Redis to every node."""
    a, b = nodes
    assert b.proc is not None
    with session(b) as (watcher, _):
        with Bystander(b.ws_url) as bystander, MemoryWatch(b.proc.pid) as memory:
            deadline = time.monotonic() + 3.0
            churned = 0
            while time.monotonic() < deadline:
                with session(a):
                    churned += 1
        report = bystander.check()
        print("churn:", churned, "sessions,", report.summary(), f"B +{memory.check(64 * 2**20) / 2**20:.1f} MiB")
        wait_for_count(watcher, 1)  # the bystander is gone too: the watcher alone, no ghost left
        assert churned > 50, churned


def test_a_flood_of_calls_to_a_callee_on_another_node_is_bounded_by_calls_in_flight(
    start_server: Any, redis_server: RedisServer,  # noqa: F811
) -> None:
    """A caller on B floods a callee on A that never answers: past its calls in flight, ERROR; A is unharmed."""
    redis_server.start()
    a = start_node(start_server, redis_server)
    b = start_node(start_server, redis_server, "--max-calls-in-flight", "100")
    assert a.proc is not None and b.proc is not None
    with session(a) as (callee, _), session(b) as (attacker, _):
        assert register(callee, "com.example.never")[0] == REGISTERED
        announced(a, attacker)
        with Bystander(a.ws_url) as bystander, MemoryWatch(a.proc.pid) as memory_a, \
                MemoryWatch(b.proc.pid) as memory_b:
            flood = 5000
            for n in range(flood):
                attacker.send(json.dumps([48, 1_000_000 + n, {}, "com.example.never", ["x" * 1000]]))
            refused = [receive(attacker, ERROR) for _ in range(flood - 100)]
            assert {e[4] for e in refused} == {"wsserver.error.too_many_calls_in_flight"}
            invoked = 0
            while True:  # exactly as many reached the callee as may be in flight
                try:
                    receive(callee, INVOCATION, timeout=1.0)
                except TimeoutError:
                    break
                invoked += 1
            assert invoked == 100
        report = bystander.check()
        print("flood:", report.summary(), f"A +{memory_a.check(64 * 2**20) / 2**20:.1f} MiB",
              f"B +{memory_b.check(64 * 2**20) / 2**20:.1f} MiB")


def test_after_redis_restarts_the_nodes_write_their_presence_again(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = nodes
    with session(a) as (callee, _), session(b) as (caller, _):
        assert register(callee, "com.example.survivor")[0] == REGISTERED
        announced(a, caller)
        redis_server.stop()
        redis_server.start()  # empty: every presence is gone
        wait_for(lambda: a.log.count("joined the cluster") >= 2 and b.log.count("joined the cluster") >= 2,
                 timeout=30)
        took = wait_for_count(caller, 2, timeout=5 * TTL)
        wait_for_count(callee, 2, timeout=5 * TTL)
        # While the nodes resubscribe, a call may get wsserver.error.node_lost (at once, never a hang).
        deadline = time.monotonic() + 10
        while True:
            request = next(requests)
            caller.send(json.dumps([48, request, {}, "com.example.survivor", ["again"]]))
            try:
                invocation = receive(callee, INVOCATION, timeout=1.0)
                break
            except TimeoutError:
                assert receive(caller, ERROR)[4] == "wsserver.error.node_lost"
                assert time.monotonic() < deadline
        callee.send(json.dumps([70, invocation[1], {}, ["back"]]))
        assert receive(caller, RESULT)[3] == ["back"]
        print("redis restart: count right again", took, "s after both rejoined")


def test_the_http_api_calls_a_callee_on_another_node_and_its_timeout_holds(
    start_server: Any, redis_server: RedisServer,  # noqa: F811
) -> None:
    redis_server.start()
    a = start_node(start_server, redis_server)
    b = start_node(start_server, redis_server, "--http-api", "--http-call-timeout", "1")
    with session(a) as (callee, _), session(b) as (on_b, _):
        assert register(callee, "com.example.twice")[0] == REGISTERED
        announced(a, on_b)

        def answer_one() -> None:
            invocation = receive(callee, INVOCATION)
            callee.send(json.dumps([70, invocation[1], {}, [invocation[4][0] * 2]]))

        answering = threading.Thread(target=answer_one)
        answering.start()
        assert post(b, "/call", {"procedure": "com.example.twice", "args": [21]}) == (200, {"args": [42], "kwargs": {}})
        answering.join()
        # A callee that answers too late: 504 on B after --http-call-timeout, and the late answer is dropped.
        status, _ = post(b, "/call", {"procedure": "com.example.twice", "args": [1]})
        assert status == 504
        invocation = receive(callee, INVOCATION)
        callee.send(json.dumps([70, invocation[1], {}, ["late"]]))
        announced(a, on_b)  # the late answer has crossed meanwhile
        assert "Traceback" not in b.log and "Traceback" not in a.log
