"""
What one session may make the router hold, against ``twistd -n wsserver``: the length of every URI
it sends (--max-uri-length), its registrations (--max-registrations) and its calls waiting for a
callee (--max-calls-in-flight). Past each, an ERROR ``wsserver.error.*`` and the session goes on,
while a bystander keeps its events and the server its memory.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import raw_session

ERROR, SUBSCRIBED, PUBLISHED, REGISTERED, CALL, RESULT, INVOCATION, YIELD = 8, 33, 17, 65, 48, 50, 68, 70
LONG = "com.example." + "x" * 500_000  # 500 KB: what an attacker sent


def send_all(ws: Any, messages: list[list[Any]]) -> list[list[Any]]:
    """Send every message, then read one answer per message."""
    for message in messages:
        ws.send(json.dumps(message))
    return [json.loads(ws.recv(timeout=10)) for _ in messages]


@pytest.mark.parametrize(
    "request_type, build",
    [
        pytest.param(32, lambda n, uri: [32, n, {}, uri], id="SUBSCRIBE"),
        pytest.param(32, lambda n, uri: [32, n, {"match": "prefix"}, uri], id="SUBSCRIBE-prefix"),
        pytest.param(16, lambda n, uri: [16, n, {"acknowledge": True, "retain": True}, uri, [n]], id="PUBLISH-retained"),
        pytest.param(64, lambda n, uri: [64, n, {}, uri], id="REGISTER"),
        pytest.param(48, lambda n, uri: [48, n, {}, uri, []], id="CALL"),
    ],
)
def test_a_500_kb_uri_is_refused_before_the_router_keeps_it(server: Any, request_type: int, build: Any) -> None:
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory, raw_session(server.ws_url, max_size=None) as ws:
        for batch in range(4):  # 100 distinct long URIs, 25 at a time: 50 MB through the socket
            answers = send_all(ws, [build(batch * 25 + n + 1, f"{LONG}{batch * 25 + n}") for n in range(25)])
            for answer in answers:
                assert answer[:2] == [ERROR, request_type] and answer[4] == "wsserver.error.uri_too_long", str(answer)[:200]
                assert answer[5][0].startswith("a URI of 5000") and answer[5][0].endswith("bytes; at most 1024 are accepted")
        # The session goes on with URIs of a sensible length.
        assert send_all(ws, [[32, 999, {}, "com.example.short"]])[0][:2] == [SUBSCRIBED, 999]
    bystander.check()
    memory.check(32 * 2**20)


def test_the_uri_length_is_an_option(start_server: Any) -> None:
    server = start_server("--max-uri-length", "40")
    with raw_session(server.ws_url) as ws:
        ok, refused = send_all(ws, [[32, 1, {}, "com.example." + "a" * 28], [32, 2, {}, "com.example." + "é" * 15]])
        assert ok[:2] == [SUBSCRIBED, 1]
        assert refused[4] == "wsserver.error.uri_too_long" and refused[5] == ["a URI of 42 bytes; at most 40 are accepted"]


def test_registrations_past_the_limit_are_refused(start_server: Any) -> None:
    server = start_server("--max-registrations", "50")
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory, raw_session(server.ws_url) as ws:
        answers = send_all(ws, [[64, n, {}, f"com.example.p{n}"] for n in range(1, 61)])
        assert [a[0] for a in answers] == [REGISTERED] * 50 + [ERROR] * 10
        assert answers[-1][4:] == ["wsserver.error.too_many_registrations", ["a session may register 50 procedures"]]
        # Unregistering one makes room for one.
        (unregistered,) = send_all(ws, [[66, 100, answers[0][2]]])
        assert unregistered == [67, 100]
        assert send_all(ws, [[64, 101, {}, "com.example.again"]])[0][0] == REGISTERED
    bystander.check()
    memory.check(16 * 2**20)


def test_calls_waiting_for_a_callee_past_the_limit_are_refused(start_server: Any) -> None:
    server = start_server("--max-calls-in-flight", "100")
    with (
        Bystander(server.ws_url) as bystander,
        MemoryWatch(server.proc.pid) as memory,
        raw_session(server.ws_url) as callee,
        raw_session(server.ws_url) as caller,
    ):
        assert send_all(callee, [[64, 1, {}, "com.example.silent"]])[0][0] == REGISTERED
        for n in range(1, 106):
            caller.send(json.dumps([CALL, n, {}, "com.example.silent", [n]]))
        refusals = [json.loads(caller.recv(timeout=10)) for _ in range(5)]
        assert [r[:3] for r in refusals] == [[ERROR, CALL, n] for n in range(101, 106)]
        assert refusals[0][4:] == ["wsserver.error.too_many_calls_in_flight", ["a session may wait for 100 calls at once"]]
        invocations = [json.loads(callee.recv(timeout=10)) for _ in range(100)]
        assert {i[0] for i in invocations} == {INVOCATION}
        # One answer makes room for one more call.
        callee.send(json.dumps([YIELD, invocations[0][1], {}, ["done"]]))
        assert json.loads(caller.recv(timeout=10))[:2] == [RESULT, 1]
        caller.send(json.dumps([CALL, 200, {}, "com.example.silent", []]))
        assert json.loads(callee.recv(timeout=10))[0] == INVOCATION
    bystander.check()
    memory.check(16 * 2**20)
