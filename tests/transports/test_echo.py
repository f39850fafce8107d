"""
The echo service over Twisted's StringTransport: the handshake web-socket-js sends, text and binary
echoed from masked frames, ``quit``, the admission rules shared with ``/ws``, and shutdown.
"""

from __future__ import annotations

import base64
import itertools
import os
import struct
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from tests.transports.test_websocket import TCPLikeTransport, client_frame, server_frames
from wsserver.transports.echo import Admission, EchoServerFactory
from wsserver.transports.admission import ConnectionLimits


def web_socket_js_request(origin: str = "http://127.0.0.1:8080", path: str = "/echo") -> bytes:
    """The opening handshake exactly as web-socket-js's WebSocket.as writes it (empty Cookie included)."""
    key = base64.b64encode(bytes(b % 128 for b in os.urandom(16))).decode()  # 16 values 0..127
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nOrigin: {origin}\r\nSec-WebSocket-Version: 13\r\nCookie: \r\n\r\n"
    ).encode()


class EchoClient:
    ports = itertools.count(41000)

    def __init__(self, factory: EchoServerFactory, origin: str = "http://127.0.0.1:8080", ip: str = "127.0.0.1") -> None:
        self.transport = TCPLikeTransport(peerAddress=IPv4Address("TCP", ip, next(self.ports)))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        self.protocol.dataReceived(web_socket_js_request(origin))
        self.response, _, rest = self.transport.value().partition(b"\r\n\r\n")
        self.transport.clear()
        self.body = rest  # a refusal's reason, as text
        assert rest == b"" or not self.response.startswith(b"HTTP/1.1 101")

    def send(self, payload: bytes, opcode: int = 0x1) -> None:
        self.protocol.dataReceived(client_frame(payload, opcode))

    def frames(self) -> list[tuple[int, bytes]]:
        frames = server_frames(self.transport.value())
        self.transport.clear()
        return frames

    def lose(self) -> None:
        self.protocol.connectionLost(Failure(ConnectionDone()))


def close_code(payload: bytes) -> tuple[int, bytes]:
    return struct.unpack("!H", payload[:2])[0], payload[2:]


def echo_factory(clock: Any = None, allowed_origins: tuple[str, ...] = ("*",), **limits: Any) -> EchoServerFactory:
    admission = Admission(ConnectionLimits(**limits), allowed_origins)
    return EchoServerFactory(admission, reactor=clock or MemoryReactorClock())


@pytest.fixture
def factory() -> EchoServerFactory:
    return echo_factory(max_message_size=1000)


def test_the_web_socket_js_handshake_is_accepted_without_a_subprotocol(factory: EchoServerFactory) -> None:
    client = EchoClient(factory)
    assert client.response.startswith(b"HTTP/1.1 101")
    assert b"Sec-WebSocket-Protocol" not in client.response


@pytest.mark.parametrize("payload, opcode", [(b"hello", 0x1), ("h\u00e9llo \u2603".encode(), 0x1), (bytes(range(256)), 0x2)])
def test_text_and_binary_come_back_as_they_came(factory: EchoServerFactory, payload: bytes, opcode: int) -> None:
    client = EchoClient(factory)
    client.send(payload, opcode)
    assert client.frames() == [(opcode, payload)]


def test_quit_closes_with_1000(factory: EchoServerFactory) -> None:
    client = EchoClient(factory)
    client.send(b"quit")
    ((opcode, payload),) = client.frames()
    assert opcode == 0x8 and close_code(payload) == (1000, b"quit")


def test_quit_as_binary_is_just_echoed(factory: EchoServerFactory) -> None:
    client = EchoClient(factory)
    client.send(b"quit", 0x2)
    assert client.frames() == [(0x2, b"quit")]


def test_an_oversized_message_is_closed_with_1009(factory: EchoServerFactory) -> None:
    client = EchoClient(factory)
    client.send(b"x" * 1001)
    ((opcode, payload),) = client.frames()
    assert opcode == 0x8 and close_code(payload)[0] == 1009


def test_a_foreign_origin_is_refused_with_403() -> None:
    factory = echo_factory(allowed_origins=("http://127.0.0.1:*",))
    assert EchoClient(factory, origin="https://evil.example").response.startswith(b"HTTP/1.1 403")
    assert EchoClient(factory).response.startswith(b"HTTP/1.1 101")
    assert factory.admission.admitted == 1  # the refused one was not counted


def test_connections_per_address_and_in_all_are_limited() -> None:
    factory = echo_factory(max_connections_per_ip=2, max_connections=3)
    first, _ = EchoClient(factory), EchoClient(factory)
    assert EchoClient(factory).response.startswith(b"HTTP/1.1 429")
    EchoClient(factory, ip="10.0.0.2")
    assert EchoClient(factory, ip="10.0.0.3").response.startswith(b"HTTP/1.1 503")
    first.lose()
    assert EchoClient(factory).response.startswith(b"HTTP/1.1 101")
    assert factory.admission.open_by_ip == {"127.0.0.1": 2, "10.0.0.2": 1}


def test_close_all_closes_with_1001_then_aborts_stragglers() -> None:
    clock = MemoryReactorClock()
    factory = echo_factory(clock)
    polite, silent = EchoClient(factory), EchoClient(factory)
    done = factory.close_all(clock, timeout=5)
    for client in (polite, silent):
        ((opcode, payload),) = client.frames()
        assert opcode == 0x8 and close_code(payload)[0] == 1001
    polite.lose()
    assert not done.called
    clock.advance(5)
    assert silent.transport.disconnecting or silent.transport.disconnected
    silent.lose()
    assert done.called and factory.admission.admitted == 0
