"""
The plain WebSocket stream at /stream over a StringTransport: the handshake (no subprotocol, 101
only once subscribed, refusals with their reason as the body), one JSON text frame per event framed
once for every connection, a client that stops reading, and shutdown.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import struct
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from tests.transports.test_websocket import TCPLikeTransport, client_frame, server_frames
from wsserver.core.history import HistorySettings
from wsserver.core.policy import Permission, RealmPolicy
from wsserver.core.router import Router
from wsserver.delivery import carry_out
from wsserver.transports import stream as stream_module
from wsserver.transports.admission import Admission, ConnectionLimits
from wsserver.transports.stream import StreamServerFactory

POLICY = RealmPolicy("realm1", {"public": (Permission("com.example.", "prefix", frozenset({"subscribe"})),)},
                     anonymous_role="public")


class Endpoint:
    def __init__(self, history: HistorySettings | None = None, **limits: Any) -> None:
        self.clock = MemoryReactorClock()
        self.router: Router[Any] = Router([POLICY], itertools.count(1).__next__, history=history,
                                          random_bytes=lambda n: bytes(n))
        self.admission = Admission(ConnectionLimits(**limits))
        self.factory = StreamServerFactory(self.router, self.admission, reactor=self.clock)
        self.ports = itertools.count(43000)

    def connect(self, target: str, *headers: str) -> Connection:
        return Connection(self, target, headers)

    def publish(self, topic: str, *args: Any) -> None:
        carry_out(self.router.publish("realm1", topic, list(args)))


class Connection:
    def __init__(self, endpoint: Endpoint, target: str, headers: tuple[str, ...]) -> None:
        self.transport = TCPLikeTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", next(endpoint.ports)))
        self.protocol = endpoint.factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {target} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
        )
        self.protocol.dataReceived(request.encode())
        self.response, _, self.rest = self.transport.value().partition(b"\r\n\r\n")
        self.transport.clear()

    @property
    def status(self) -> int:
        return int(self.response.split(b" ", 2)[1])

    def messages(self) -> list[Any]:
        frames = server_frames(self.rest + self.transport.value())  # what came with the 101, then
        self.rest = b""
        self.transport.clear()
        return [json.loads(payload) for opcode, payload in frames if opcode == 1]

    def frames(self) -> list[tuple[int, bytes]]:
        frames = server_frames(self.transport.value())
        self.transport.clear()
        return frames

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


def test_the_handshake_takes_no_subprotocol_and_each_event_is_one_json_text_frame(endpoint: Endpoint) -> None:
    connection = endpoint.connect("/stream?topic=com.example.a&topic=com.example.&match=prefix")
    assert connection.status == 101 and b"sec-websocket-protocol" not in connection.response.lower()
    endpoint.publish("com.example.b", 1, "two")
    assert connection.messages() == [{"topic": "com.example.b", "args": [1, "two"], "kwargs": {}}]


def test_an_event_is_framed_once_for_every_connection(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    connections = [endpoint.connect("/stream?topic=com.example.a") for _ in range(5)]
    framed = []
    original = stream_module.event_json
    monkeypatch.setattr(stream_module, "event_json", lambda *a: framed.append(a) or original(*a))
    endpoint.publish("com.example.a", 7)
    assert len(framed) == 1
    assert [c.messages() for c in connections] == [[{"topic": "com.example.a", "args": [7], "kwargs": {}}]] * 5


@pytest.mark.parametrize("target, headers, status, reason", [
    ("/stream", (), 400, "no topic"),
    ("/stream?topic=com.example.x&match=regex", (), 400, "invalid value regex for 'match'"),
    ("/stream?topic=org.other", (), 403, "role 'public' may not subscribe 'org.other'"),
    ("/stream?topic=com.example.a&realm=nope", (), 404, "no realm 'nope'"),
    ("/stream?topic=com.example.a", ("Authorization: Digest x",), 401, "Authorization must be"),
])
def test_a_refused_stream_gets_its_status_and_the_reason_as_text(
    endpoint: Endpoint, target: str, headers: tuple[str, ...], status: int, reason: str
) -> None:
    connection = endpoint.connect(target, *headers)
    assert connection.status == status
    assert b"content-type: text/plain; charset=utf-8" in connection.response.lower()
    assert reason in connection.rest.decode()
    connection.lose()
    assert endpoint.admission.admitted == 0 and endpoint.router.realms["realm1"].sessions == {}


def test_what_the_client_sends_is_ignored_and_its_frames_are_bounded(endpoint: Endpoint) -> None:
    endpoint = Endpoint(max_message_size=100)
    connection = endpoint.connect("/stream?topic=com.example.a")
    connection.protocol.dataReceived(client_frame(b"hello", 0x1))
    assert connection.frames() == []
    connection.protocol.dataReceived(client_frame(b"x" * 200, 0x1))
    ((opcode, payload),) = connection.frames()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009


def test_a_client_that_stops_reading_is_closed_with_1008_past_the_send_buffer() -> None:
    endpoint = Endpoint(max_send_buffer=4096)
    connection = endpoint.connect("/stream?topic=com.example.a")
    connection.transport.producer.pauseProducing()
    for n in range(100):
        endpoint.publish("com.example.a", "x" * 100, n)
    ((opcode, payload),) = connection.frames()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1008


def test_a_lost_connection_leaves_no_session_or_slot(endpoint: Endpoint) -> None:
    connection = endpoint.connect("/stream?topic=com.example.a")
    assert len(endpoint.router.realms["realm1"].sessions) == 1
    connection.lose()
    assert endpoint.router.realms["realm1"].sessions == {} and endpoint.admission.admitted == 0


def test_close_all_closes_every_stream_with_1001(endpoint: Endpoint) -> None:
    connections = [endpoint.connect("/stream?topic=com.example.a") for _ in range(2)]
    done = endpoint.factory.close_all(endpoint.clock, 5.0)
    for connection in connections:
        ((opcode, payload),) = connection.frames()
        assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1001
    fired: list[Any] = []
    done.addCallback(fired.append)
    for connection in connections:
        connection.lose()
    assert fired == [None]


def test_a_stream_with_history_gives_its_position_and_since_replays_the_missed_events_with_their_ids() -> None:
    endpoint = Endpoint(history=HistorySettings(size=10, max_resume_events=3))
    target = "/stream?topic=com.example.a&topic=com.example.b"
    first = endpoint.connect(target)
    assert first.messages() == [{"id": "-,-"}]
    endpoint.publish("com.example.a", 1)
    endpoint.publish("com.example.b", 1)
    epoch = "AAAAAAAAAAAA"  # base64 of the test's random bytes
    assert first.messages() == [
        {"topic": "com.example.a", "args": [1], "kwargs": {}, "id": f"{epoch}:1,-"},
        {"topic": "com.example.b", "args": [1], "kwargs": {}, "id": f"{epoch}:1,{epoch}:1"},
    ]
    first.lose()
    endpoint.publish("com.example.b", 2)
    endpoint.publish("com.example.a", 3)
    again = endpoint.connect(f"{target}&since={epoch}:1,{epoch}:1")
    assert again.messages() == [
        {"topic": "com.example.b", "args": [2], "kwargs": {}, "id": f"{epoch}:1,{epoch}:2"},
        {"topic": "com.example.a", "args": [3], "kwargs": {}, "id": f"{epoch}:2,{epoch}:2"},
        {"id": f"{epoch}:2,{epoch}:2"},
    ]
    endpoint.publish("com.example.b", 4)
    assert again.messages()[0]["id"] == f"{epoch}:2,{epoch}:3"
    for n in range(4):
        endpoint.publish("com.example.a", n)
    # 4 missed of a, past --max-resume-events; b had nothing kept ("-") and has now: both reset.
    late = endpoint.connect(f"{target}&since={epoch}:2,-")
    reset, position = late.messages()
    assert reset["reset"]["topics"] == ["com.example.a", "com.example.b"]
    assert reset["id"] == position["id"] == f"{epoch}:6,{epoch}:3"
