"""
WAMP over HTTP long-poll (``/lp``) against ``twistd -n wsserver``: AutobahnJS on Node over its
long-poll transport only, next to autobahn-python over WebSocket; and hostile long-poll clients (a
subscriber that stops polling, a flood of sessions) while a WebSocket bystander keeps its events
and latency and the server's memory stays bounded.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.e2e.broker_clients import Client, NodePeer
from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import HELLO, exchange, raw_session
from tests.e2e.test_broker_node import python

__all__ = ["python"]  # the fixture, shared with test_broker_node.py


class LongPoll:
    """A long-poll session spoken by hand over one keep-alive HTTP connection (http.client)."""

    def __init__(self, port: int, protocol: str = "wamp.2.json") -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        status, body = self.post("/lp/open", json.dumps({"protocols": [protocol]}).encode())
        assert status == 200, body
        self.transport = json.loads(body)["transport"]

    def post(self, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.connection.request("POST", path, body, {"Content-Type": "application/json"})
        response = self.connection.getresponse()
        return response.status, response.read()

    def send(self, message: list[Any]) -> int:
        return self.post(f"/lp/{self.transport}/send", json.dumps(message).encode())[0]

    def receive(self) -> tuple[int, bytes]:
        return self.post(f"/lp/{self.transport}/receive")

    def exchange(self, message: list[Any]) -> list[Any]:
        assert self.send(message) == 204
        status, body = self.receive()
        assert status == 200, (status, body)
        return list(json.loads(body))

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def node_lp(server: Any) -> Iterator[NodePeer]:
    peer = NodePeer(f"{server.http_url}/lp")
    yield peer
    peer.close()


# -- AutobahnJS on Node, long-poll only -----------------------------------------------------------


def test_autobahnjs_over_long_poll_receives_the_events_of_a_python_publisher(node_lp: NodePeer, python: Client) -> None:
    subscribed = node_lp.request("subscribe", topic="com.example.lp.news")
    for n in range(20):
        python.publish("com.example.lp.news", n, source="python")
    events = [node_lp.event(subscribed) for _ in range(20)]
    assert [(e["args"], e["kwargs"]) for e in events] == [([n], {"source": "python"}) for n in range(20)]


def test_autobahnjs_over_long_poll_publishes_and_calls_both_ways(node_lp: NodePeer, python: Client) -> None:
    inbox = python.subscribe("com.example.lp.up")
    node_lp.request("publish", topic="com.example.lp.up", args=["from node"], kwargs={"n": 1})
    assert inbox.get() == (("from node",), {"n": 1})
    assert node_lp.request("call", procedure="wamp.session.count")["result"]["args"] == [2]
    python.register("com.example.lp.double", lambda x: 2 * x)
    assert node_lp.request("call", procedure="com.example.lp.double", args=[21])["result"]["args"] == [42]
    node_lp.request("register", procedure="com.example.lp.echo")
    result = python.call("com.example.lp.echo", "over", "long-poll")
    assert list(result.results) == ["over", "long-poll"]
    error = node_lp.failing("call", procedure="com.example.nobody")
    assert error["error"] == "wamp.error.no_such_procedure"


def test_autobahnjs_over_long_poll_leaves_cleanly(server: Any, python: Client) -> None:
    peer = NodePeer(f"{server.http_url}/lp")
    assert python.call("wamp.session.count") == 2
    peer.close()  # GOODBYE, then /close: AutobahnJS exits 0 only once its transport closed
    assert peer.proc.returncode == 0
    assert python.call("wamp.session.count") == 1


# -- hostile long-poll clients ----------------------------------------------------------------------


def test_a_subscriber_that_stops_polling_is_bounded_like_a_stalled_websocket(start_server: Any) -> None:
    """
    A long-poll subscriber that stops polling while 100 MB of events are published to it costs
    the server at most --max-send-buffer; its session ends and its next poll says why (410).
    """
    server = start_server("--max-send-buffer", str(1024 * 1024))
    stalled = LongPoll(server.port)
    assert stalled.exchange(HELLO)[0] == 2
    assert stalled.exchange([32, 1, {}, "com.example.flood"])[0] == 33
    padding = "x" * 100_000
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        with raw_session(server.ws_url) as publisher:
            for n in range(1000):
                publisher.send(json.dumps([16, n + 1, {"acknowledge": True}, "com.example.flood", [n, padding]]))
                assert json.loads(publisher.recv(timeout=10))[0] == 17
        received = 0
        while True:  # what the session had waiting before its buffer overflowed is gone with it
            status, body = stalled.receive()
            if status != 200:
                break
            received += 1
        assert status == 410 and b"not reading: more than 1048576 bytes unread" in body, (status, body)
        assert received < 20
    bystander.check()
    memory.check(64 * 2**20)
    assert stalled.receive()[0] == 404
    assert "long-poll #1 from 127.0.0.1 is not reading: disconnecting it" in server.log


def test_a_flood_of_long_poll_sessions_is_held_to_the_per_address_limit(start_server: Any) -> None:
    """Each session counts as a connection of its address: past --max-connections-per-ip, 429."""
    server = start_server("--max-connections-per-ip", "300")
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        sessions = []
        statuses = []
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
        for _ in range(400):
            connection.request("POST", "/lp/open", b'{"protocols": ["wamp.2.json"]}')
            response = connection.getresponse()
            statuses.append(response.status)
            body = response.read()
            if response.status == 200:
                sessions.append(json.loads(body)["transport"])
        connection.close()
        # The bystander's two WebSockets count too.
        assert statuses.count(200) == 298 and set(statuses[298:]) == {429}
    bystander.check()
    memory.check(64 * 2**20)


def test_a_long_poll_session_without_hello_or_requests_ends_and_frees_its_slot(start_server: Any) -> None:
    # --trust-proxy: no count of TCP connections per address (behind a proxy all come from it), so
    # what is counted here is sessions: long-poll and WebSocket alike, one budget.
    server = start_server("--max-connections-per-ip", "1", "--hello-timeout", "1", "--longpoll-timeout", "2",
                          "--trust-proxy")
    silent = LongPoll(server.port)
    refused = LongPoll.__new__(LongPoll)
    refused.connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=15)
    assert refused.post("/lp/open", b'{"protocols": ["wamp.2.json"]}')[0] == 429
    status, body = silent.receive()  # held until the HELLO timeout ends the session
    assert (status, body) == (410, b"no WAMP HELLO within 1 s\n")
    again = LongPoll(server.port)  # the slot is free again
    assert again.exchange(HELLO)[0] == 2
    with pytest.raises(InvalidStatus) as refused_ws:  # and taken: WebSockets share the count
        ws_connect(server.ws_url, subprotocols=["wamp.2.json"], open_timeout=5)
    assert refused_ws.value.response.status_code == 429
    again.close()
    assert again.post(f"/lp/{again.transport}/close")[0] == 204


def test_events_reach_websocket_and_long_poll_subscribers_alike(server: Any) -> None:
    poller = LongPoll(server.port, "wamp.2.json.batched")
    assert poller.post(f"/lp/{poller.transport}/send", json.dumps(HELLO).encode() + b"\x1e")[0] == 204
    status, body = poller.receive()
    assert status == 200 and body.endswith(b"\x1e") and json.loads(body[:-1])[0] == 2
    with raw_session(server.ws_url) as ws:
        assert exchange(ws, [32, 1, {}, "com.example.both"])[0] == 33
        subscribe = json.dumps([32, 1, {}, "com.example.both"]).encode() + b"\x1e"
        assert poller.post(f"/lp/{poller.transport}/send", subscribe)[0] == 204
        assert json.loads(poller.receive()[1][:-1])[0] == 33
        with raw_session(server.ws_url) as publisher:
            for n in range(3):
                publisher.send(json.dumps([16, n + 1, {}, "com.example.both", [n]]))
        assert [json.loads(ws.recv(timeout=5))[4] for _ in range(3)] == [[0], [1], [2]]
        got: list[Any] = []
        while len(got) < 3:
            status, body = poller.receive()
            assert status == 200
            got += [json.loads(part)[4] for part in body.split(b"\x1e")[:-1]]
        assert got == [[0], [1], [2]]


def test_shutdown_says_goodbye_to_long_poll_sessions_and_waits_for_them_bounded(start_server: Any) -> None:
    server = start_server("--shutdown-timeout", "2")
    polite, rude = LongPoll(server.port), LongPoll(server.port)
    for session in (polite, rude):
        assert session.exchange(HELLO)[0] == 2
    started = time.monotonic()
    os.kill(server.proc.pid, signal.SIGTERM)
    status, body = polite.receive()
    assert (status, json.loads(body)) == (200, [6, {}, "wamp.close.system_shutdown"])
    assert polite.send([6, {}, "wamp.close.goodbye_and_out"]) == 204
    assert polite.post(f"/lp/{polite.transport}/close")[0] == 204
    assert json.loads(rude.receive()[1])[2] == "wamp.close.system_shutdown"  # and never answers
    assert server.proc.poll() is None, "the server waits for the rude session"
    server.proc.wait(timeout=10)
    assert 2 <= time.monotonic() - started < 2 + 2.5  # the timeout, plus the process's own exit


def test_sends_faster_than_polls_are_held_to_one_message_per_session(start_server: Any) -> None:
    """
    Sessions that never poll and keep sending 1 MiB messages: while their WELCOME waits unpolled,
    each holds one send and refuses the rest (429), so ten of them cost about 10 MiB, not 160.
    """
    server = start_server()
    message = json.dumps([16, 1, {}, "com.example.big", ["x" * (1024 * 1024 - 100)]]).encode()
    request = b"POST /lp/%s/send HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        sockets: list[socket.socket] = []
        statuses: list[bytes] = []
        for _ in range(10):
            greedy = LongPoll(server.port)
            assert greedy.send(HELLO) == 204  # its WELCOME waits: from now on its sends are held
            batch = [socket.create_connection(("127.0.0.1", server.port), timeout=15) for _ in range(17)]
            for sock in batch:
                sock.sendall(request % (greedy.transport.encode(), len(message)) + message)
            statuses += answers(batch, 16)  # whichever came first is held, unanswered
            sockets += batch
        assert statuses == [b"429"] * 160
        for sock in sockets:
            sock.close()
    bystander.check()
    memory.check(64 * 2**20)


def answers(sockets: list[socket.socket], count: int, timeout: float = 15.0) -> list[bytes]:
    """The HTTP statuses of the first ``count`` of ``sockets`` to be answered."""
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        statuses: list[bytes] = []
        deadline = time.monotonic() + timeout
        while len(statuses) < count and time.monotonic() < deadline:
            for key, _ in selector.select(deadline - time.monotonic()):
                statuses.append(key.fileobj.recv(12)[9:12])  # type: ignore[union-attr]
                selector.unregister(key.fileobj)
        return statuses
