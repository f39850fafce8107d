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
import socket
import time
from typing import Any

import pytest

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import HELLO, frame, open_raw, raw_session, read_close

MEMORY_BOUND = 64 * 2**20
#: How long an attack may run before the test gives up waiting for the server to end it.
ATTACK_SECONDS = 6.0
#: How long a flooder waits after its flood before it reads: longer than Autobahn's close
#: handshake timeout (1 s), after which the server used to drop the connection with the close
#: frame still in its socket, behind the output the flooder had not read (a reset, not a code).
READ_AFTER_SECONDS = 2.0
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


JOINED = frame(TEXT, json.dumps(HELLO).encode())
#: Each attack: the path, what the attacker sends first, then a chunk it sends again and again
#: without reading (and how often: far past the bound), and the close it must get.
FLOODS = {
    "empty continuation fragments on /echo": (
        "/echo", frame(TEXT, b"", fin=False), frame(CONTINUATION, b"", fin=False) * 10_000, 100, 1009, "fragments"),
    "empty continuation fragments in a WAMP session": (
        "/ws", JOINED + frame(TEXT, b"", fin=False), frame(CONTINUATION, b"", fin=False) * 10_000, 100, 1009,
        "fragments"),
    # Loopback socket buffers take megabytes of pongs: the frame rate ends this one first (the
    # pongs' bound in the send buffer is tested in tests/transports/test_bounds.py).
    "40 000 pings, their 5 MiB of pongs never read": (
        "/ws", JOINED, frame(PING, b"p" * 125) * 400, 100, 1008, "frames a second"),
    "32 MiB to /echo, the echoes never read": (
        "/echo", b"", frame(BINARY, b"e" * 65536), 512, 1008, "not reading"),
}


@pytest.mark.parametrize("path, first, chunk, times, code, reason", FLOODS.values(), ids=FLOODS.keys())
def test_a_flood_is_closed_with_a_code_and_costs_no_one_else(
    start_server: Any, path: str, first: bytes, chunk: bytes, times: int, code: int, reason: str
) -> None:
    server = start_server()
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        sock = open_raw(server.port, path, "wamp.2.json" if path == "/ws" else None)
        sock.sendall(first)
        flood(sock, chunk, times)
        time.sleep(READ_AFTER_SECONDS)
        closed = read_close(sock)
        sock.close()
    assert closed[0] == code and reason in closed[1], closed
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


def test_clients_that_ask_for_a_big_reply_and_never_read_hold_little_and_are_dropped(start_server: Any) -> None:
    """The paced replies wait as messages (shared with the retained store), and pings still run."""
    server = start_server("--ping-interval", "1", "--ping-timeout", "1")
    padding = "r" * EVENT_SIZE
    with raw_session(server.ws_url) as publisher:
        for n in range(BURST_EVENTS):
            publisher.send(json.dumps([16, n + 1, {"retain": True, "acknowledge": True}, f"com.example.burst.{n}", [n, padding]]))
            assert json.loads(publisher.recv(timeout=5))[0] == 17
    subscribe = frame(TEXT, json.dumps([32, 1, {"match": "prefix", "get_retained": True}, "com.example.burst."]).encode())
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        stuck = []
        for _ in range(40):  # 40 x 4 MiB asked for (framed at once, 20 of them cost the server 56 MiB)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and (almost) nothing read
            sock.connect(("127.0.0.1", server.port))
            stuck.append(open_raw(server.port, "/ws", sock=sock))
            sock.sendall(JOINED + subscribe)
        for sock in stuck:  # the ping timeout drops each (its pong could not even be read)
            assert read_close(sock, timeout=10)[0] is None
            sock.close()
    bystander.check()
    memory.check(MEMORY_BOUND)
