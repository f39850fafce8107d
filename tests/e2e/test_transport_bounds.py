"""
What one WebSocket may cost the server below WAMP, on every WebSocket endpoint (``/ws``, ``/echo``):
one bounded send buffer (an echo client or a ping flooder that never reads is closed 1008), a
bound on fragments per message (1009) and on frames a second (1008), while a client that reads is
never cut off by the router's own bulk reply (retained events, many call results at once).

Each attack runs next to a :class:`~tests.e2e.hostile.Bystander` and under a
:class:`~tests.e2e.hostile.MemoryWatch`.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import HELLO, frame, open_raw, raw_session, read_close

MEMORY_BOUND = 64 * 2**20
#: How long an attack may run before the test gives up waiting for the server to end it.
ATTACK_SECONDS = 6.0
TEXT, BINARY, CONTINUATION, PING = 0x1, 0x2, 0x0, 0x9


def flood(sock: Any, chunk: bytes, times: int, seconds: float = ATTACK_SECONDS) -> int:
    """
    Write ``chunk`` ``times`` (far past the bound under test), never reading, or until the server
    stops taking it; bytes sent. Then the attacker reads, to see how the server closed.
    """
    sock.settimeout(1.0)
    sent = 0
    deadline = time.monotonic() + seconds
    for _ in range(times):
        if time.monotonic() > deadline:
            break
        try:
            sock.sendall(chunk)
        except OSError:  # reset, broken pipe, or the server stopped reading (timeout)
            break
        sent += len(chunk)
    return sent


@pytest.mark.parametrize("path", ["/echo", "/ws"])
def test_endless_empty_continuation_fragments_are_closed_1009(start_server: Any, path: str) -> None:
    server = start_server()
    subprotocol = "wamp.2.json" if path == "/ws" else None
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        sock = open_raw(server.port, path, subprotocol)
        if path == "/ws":
            sock.sendall(frame(TEXT, json.dumps(HELLO).encode()))  # a joined session
        sock.sendall(frame(TEXT, b"", fin=False))
        flood(sock, frame(CONTINUATION, b"", fin=False) * 10_000, 100)  # 1 M fragments
        code, reason = read_close(sock)
        sock.close()
    assert code == 1009, (code, reason)
    assert "fragments" in reason
    bystander.check()
    memory.check(MEMORY_BOUND)


def test_a_ping_flood_that_never_reads_its_pongs_is_closed_1008(start_server: Any) -> None:
    server = start_server()
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        sock = open_raw(server.port, "/ws", "wamp.2.json")
        flood(sock, frame(PING, b"p" * 125) * 400, 100)  # 40 000 pings, 5 MiB of pongs
        code, reason = read_close(sock)
        sock.close()
    assert code == 1008, (code, reason)
    bystander.check()
    memory.check(MEMORY_BOUND)


def test_an_echo_client_that_never_reads_is_closed_1008_with_memory_bounded(start_server: Any) -> None:
    server = start_server()
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        sock = open_raw(server.port, "/echo")
        flood(sock, frame(BINARY, b"e" * 65536), 512)  # 32 MiB
        code, reason = read_close(sock)
        sock.close()
    assert code == 1008, (code, reason)
    assert "not reading" in reason
    bystander.check()
    memory.check(MEMORY_BOUND)


EVENT_SIZE = 64 * 1024
#: Retained events (or kept events) that together make 4x the default --max-send-buffer (1 MiB).
BURST_EVENTS = 64


def test_a_reading_subscriber_gets_retained_events_4x_the_send_buffer(start_server: Any) -> None:
    server = start_server()
    padding = "r" * EVENT_SIZE
    with raw_session(server.ws_url) as publisher:
        for n in range(BURST_EVENTS):
            publisher.send(json.dumps([16, n + 1, {"retain": True, "acknowledge": True}, f"com.example.burst.{n}", [n, padding]]))
            assert json.loads(publisher.recv(timeout=5))[0] == 17
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        with raw_session(server.ws_url, max_size=None) as reader:
            reader.send(json.dumps([32, 1, {"match": "prefix", "get_retained": True}, "com.example.burst."]))
            assert json.loads(reader.recv(timeout=5))[0] == 33
            received = sorted(json.loads(reader.recv(timeout=10))[4][0] for _ in range(BURST_EVENTS))
    assert received == list(range(BURST_EVENTS))
    bystander.check()
    memory.check(MEMORY_BOUND)


def test_a_reading_caller_gets_many_call_results_at_once_beyond_the_send_buffer(start_server: Any) -> None:
    server = start_server("--history-size", "16")
    padding = "h" * EVENT_SIZE
    calls = 8  # each answer carries 16 kept events (1 MiB): 8 MiB written in one reactor turn
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        with raw_session(server.ws_url, max_size=None) as caller, raw_session(server.ws_url) as publisher:
            caller.send(json.dumps([32, 1, {}, "com.example.kept"]))
            subscription = json.loads(caller.recv(timeout=5))[2]
            for n in range(16):
                publisher.send(json.dumps([16, n + 1, {"acknowledge": True}, "com.example.kept", [n, padding]]))
                assert json.loads(publisher.recv(timeout=5))[0] == 17
            for _ in range(16):
                assert json.loads(caller.recv(timeout=5))[0] == 36
            # All the CALLs in one write, so that the server reads them at once.
            call = [frame(TEXT, json.dumps([48, n + 1, {}, "wamp.subscription.get_events", [subscription, 16]]).encode())
                    for n in range(calls)]
            caller.socket.sendall(b"".join(call))
            results = [json.loads(caller.recv(timeout=10)) for _ in range(calls)]
    assert [(r[0], r[1], len(r[3][0])) for r in results] == [(50, n + 1, 16) for n in range(calls)]
    bystander.check()
    memory.check(MEMORY_BOUND)


def test_a_browser_like_client_is_not_limited(start_server: Any) -> None:
    """Fragmented messages within the bounds, and a quick burst of messages, go through."""
    server = start_server()
    with raw_session(server.ws_url) as ws:
        ws.send(["[32, 1, {}, ", '"com.example.fragmented"]'])  # an iterable: sent as fragments
        assert json.loads(ws.recv(timeout=5))[0] == 33
        for n in range(2000):
            ws.send(json.dumps([16, n + 1, {}, "com.example.quick", [n]]))
        ws.send(json.dumps([32, 2, {}, "com.example.after"]))
        assert json.loads(ws.recv(timeout=5))[0] == 33
