"""
The WebSocket adapter, over Twisted's StringTransport: handshake, decoding, the fan-out path, close
codes and teardown, with no network and no running reactor.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import struct
from typing import Any

import cbor2
import txaio
import msgpack
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from wsserver.core.router import Router
from wsserver.transports.admission import CLOSE_GRACE, ConnectionLimits, client_address
from wsserver.transports.deflate import server_frame
from wsserver.transports.websocket import WampServerFactory, WampServerProtocol

HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]
ENCODERS = {
    "wamp.2.json": (lambda m: json.dumps(m).encode(), 0x1, json.loads),
    "wamp.2.msgpack": (msgpack.packb, 0x2, msgpack.unpackb),
    "wamp.2.cbor": (cbor2.dumps, 0x2, cbor2.loads),
}


def client_frame(payload: bytes, opcode: int, *, first_bits: int = 0x80) -> bytes:
    """One masked client frame (RFC 6455 5.2); ``first_bits``: FIN and RSV bits (0xC0: final, compressed)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", first_bits | opcode, 0x80 | n)
    elif n < 65536:
        header = struct.pack("!BBH", first_bits | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", first_bits | opcode, 0x80 | 127, n)
    return header + mask + masked


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """Split unmasked server frames into (opcode, payload)."""
    return [(opcode, payload) for _, opcode, payload in server_frames_with_rsv1(data)]


def server_frames_with_rsv1(data: bytes) -> list[tuple[bool, int, bytes]]:
    """Split unmasked server frames into (rsv1: compressed, opcode, payload)."""
    frames = []
    while data:
        rsv1, opcode, length = bool(data[0] & 0x40), data[0] & 0x0F, data[1] & 0x7F
        offset = 2
        if length == 126:
            (length,) = struct.unpack("!H", data[2:4])
            offset = 4
        elif length == 127:
            (length,) = struct.unpack("!Q", data[2:10])
            offset = 10
        frames.append((rsv1, opcode, data[offset : offset + length]))
        data = data[offset + length :]
    return frames


class TCPLikeTransport(StringTransport):
    """StringTransport, but like a real TCP transport, unregistering no producer is not an error."""

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class Client:
    """A connection to the factory's protocol over a StringTransport, speaking one subprotocol."""

    ports = itertools.count(40000)

    def __init__(
        self, factory: WampServerFactory, subprotocol: str = "wamp.2.json", origin: str | None = None,
        extensions: str | None = None,
    ) -> None:
        self.subprotocol = subprotocol
        self.encode, self.opcode, self.decode = ENCODERS[subprotocol]
        self.transport = TCPLikeTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", next(self.ports)))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {subprotocol}\r\n"
            + (f"Origin: {origin}\r\n" if origin else "")
            + (f"Sec-WebSocket-Extensions: {extensions}\r\n" if extensions else "")
            + "\r\n"
        )
        self.protocol.dataReceived(request.encode())
        self.response, _, rest = self.transport.value().partition(b"\r\n\r\n")
        self.transport.clear()
        self.body = rest  # a refusal's reason, as text
        assert rest == b"" or not self.response.startswith(b"HTTP/1.1 101")

    def send(self, message: Any, opcode: int | None = None) -> None:
        payload = message if isinstance(message, bytes) else self.encode(message)
        self.protocol.dataReceived(client_frame(payload, opcode or self.opcode))

    def frames(self) -> list[tuple[int, bytes]]:
        frames = server_frames(self.transport.value())
        self.transport.clear()
        return frames

    def messages(self) -> list[Any]:
        return [self.decode(payload) for opcode, payload in self.frames() if opcode in (1, 2)]

    def join(self) -> Client:
        self.send(HELLO)
        (welcome,) = self.messages()
        assert welcome[0] == 2
        return self


@pytest.fixture
def router() -> Router[Any]:
    ids = itertools.count(1)
    return Router(["realm1"], ids.__next__)


@pytest.fixture
def factory(router: Router[Any]) -> WampServerFactory:
    return WampServerFactory(router, reactor=MemoryReactorClock(), limits=ConnectionLimits(max_message_size=1000))


@pytest.mark.parametrize("subprotocol", sorted(ENCODERS))
def test_handshake_negotiates_each_serializer_and_hello_is_welcomed(factory: WampServerFactory, subprotocol: str) -> None:
    client = Client(factory, subprotocol)
    assert client.response.startswith(b"HTTP/1.1 101")
    assert f"Sec-WebSocket-Protocol: {subprotocol}".encode() in client.response
    client.send(HELLO)
    ((message_type, session_id, details),) = client.messages()
    assert message_type == 2 and session_id == 1
    assert details["roles"]["broker"]["features"]["publisher_exclusion"] is True


@pytest.mark.parametrize("subprotocol", sorted(ENCODERS))
def test_a_session_tells_what_carries_it_and_what_waits_for_it(
    factory: WampServerFactory, router: Router[Any], subprotocol: str
) -> None:
    client = Client(factory, subprotocol)
    client.send(HELLO)
    (session,) = router.realms["realm1"].sessions.values()
    assert session.transport is not None
    assert session.transport.kind == f"websocket/{subprotocol.removeprefix('wamp.2.')}"
    assert session.transport.buffered_bytes() == 0


def test_one_event_is_encoded_once_per_wire_format_and_written_to_each(factory: WampServerFactory) -> None:
    subscribers = [Client(factory, p).join() for p in ("wamp.2.json", "wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor")]
    for client in subscribers:
        client.send([32, 1, {}, "com.t"])
        client.messages()
    encoded: list[Any] = []
    for client in subscribers:  # count encodings across all connections
        original = client.protocol.encode
        client.protocol.encode = lambda message, original=original: encoded.append(message) or original(message)
    publisher = Client(factory).join()
    publisher.send([16, 2, {}, "com.t", [1, "two"], {"k": 3}])
    frames = [client.frames() for client in subscribers]
    assert frames[0] == frames[1]  # the same bytes for the same format
    for client, ((opcode, payload),) in zip(subscribers, frames):
        assert opcode == client.opcode
        event = client.decode(payload)
        assert event[0] == 36 and event[4:] == [[1, "two"], {"k": 3}]
    assert len(encoded) == 3  # json, msgpack, cbor: once each


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("binary", [False, True])
def test_server_frames_are_the_bytes_autobahns_prepared_message_makes(
    factory: WampServerFactory, length: int, binary: bool
) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    assert server_frame(payload, binary) == factory.prepareMessage(payload, binary).payloadHybi


@pytest.mark.parametrize("subprotocol", sorted(ENCODERS))
def test_many_publications_in_one_read_each_reach_the_subscriber_and_are_acknowledged(
    factory: WampServerFactory, subprotocol: str
) -> None:
    subscriber = Client(factory, subprotocol).join()
    subscriber.send([32, 1, {}, "com.t"])
    subscriber.messages()
    publisher = Client(factory, subprotocol).join()
    encode, opcode, _ = ENCODERS[subprotocol]
    read = b"".join(client_frame(encode([16, n, {"acknowledge": True}, "com.t", [n]]), opcode) for n in range(1, 51))
    publisher.protocol.dataReceived(read)
    assert [event[4] for event in subscriber.messages()] == [[n] for n in range(1, 51)]
    assert [(published[0], published[1]) for published in publisher.messages()] == [(17, n) for n in range(1, 51)]


def test_binary_frame_on_json_session_is_aborted_with_close_1002(factory: WampServerFactory, router: Router[Any]) -> None:
    client = Client(factory).join()
    client.send(b"\x93\x01\x02", opcode=0x2)
    (abort_frame, close_frame) = client.frames()
    abort = json.loads(abort_frame[1])
    assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation"
    assert abort[1]["message"] == "binary message on a json session"
    assert close_frame[0] == 0x8
    code, reason = struct.unpack("!H", close_frame[1][:2])[0], close_frame[1][2:].decode()
    assert code == 1002 and reason == "protocol violation: binary message on a json session"
    assert router.realms["realm1"].sessions == {}


def test_long_close_reasons_are_cut_to_fit_a_control_frame(factory: WampServerFactory) -> None:
    client = Client(factory).join()
    client.send([1, "realm1" + "x" * 300, {"roles": {}}])
    close_frame = client.frames()[-1]
    assert close_frame[0] == 0x8 and len(close_frame[1]) <= 125


def test_oversized_message_is_closed_with_1009(factory: WampServerFactory) -> None:
    client = Client(factory).join()
    client.send([16, 1, {}, "com.t", ["x" * 2000]])
    ((opcode, payload),) = client.frames()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1009


def test_lost_connection_leaves_no_session_or_subscription(factory: WampServerFactory, router: Router[Any]) -> None:
    clients = [Client(factory).join() for _ in range(3)]
    for client in clients:
        client.send([32, 1, {}, "com.t"])
    for client in clients:
        client.protocol.connectionLost(Failure(ConnectionDone()))
    realm = router.realms["realm1"]
    assert realm.sessions == {} and len(realm.subscriptions) == 0
    assert len(factory.connections) == 0 and factory.admission.admitted == 0


def test_foreign_origin_is_refused_with_403(router: Router[Any]) -> None:
    factory = WampServerFactory(router, reactor=MemoryReactorClock(), allowed_origins=["https://example.com"])
    refused = Client(factory, origin="https://evil.example")
    assert refused.response.startswith(b"HTTP/1.1 403 Forbidden")
    assert refused.body == b"origin https://evil.example is not allowed\n"  # the reason, for the browser's console
    assert Client(factory, origin="https://example.com").response.startswith(b"HTTP/1.1 101")
    assert Client(factory).response.startswith(b"HTTP/1.1 101")  # non-browser clients send none


@pytest.mark.parametrize("subprotocol_header", ["", "Sec-WebSocket-Protocol: chat\r\n"])
def test_a_websocket_without_a_wamp_subprotocol_gets_400_with_a_body_naming_stream_and_the_subprotocols(
    factory: WampServerFactory, subprotocol_header: str
) -> None:
    transport = TCPLikeTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 39999))
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    protocol.dataReceived((
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n"
        f"{subprotocol_header}\r\n"
    ).encode())
    head, _, body = transport.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"Content-Type: text/plain; charset=utf-8" in head and f"Content-Length: {len(body)}".encode() in head
    text = body.decode()
    assert "/stream?topic=URI" in text and "wamp.2.json" in text and "wamp.2.msgpack" in text and "wamp.2.cbor" in text


def test_any_origin_by_default(factory: WampServerFactory) -> None:
    assert Client(factory, origin="https://anywhere.example").response.startswith(b"HTTP/1.1 101")


def test_close_all_says_goodbye_then_closes_1001_and_aborts_stragglers(router: Router[Any]) -> None:
    clock = MemoryReactorClock()
    factory = WampServerFactory(router, reactor=clock)
    polite, silent, unjoined = Client(factory).join(), Client(factory).join(), Client(factory)
    done = factory.close_all(clock, timeout=5)
    for client in (polite, silent):
        assert client.messages() == [[6, {}, "wamp.close.system_shutdown"]]
    assert unjoined.frames()[0][0] == 0x8  # closed with 1001 at once
    polite.send([6, {}, "wamp.close.goodbye_and_out"])
    (close_frame,) = polite.frames()
    assert struct.unpack("!H", close_frame[1][:2])[0] == 1001
    assert not done.called
    clock.advance(5)  # the silent one gets its close frame (1001), then a moment to take it
    (close_frame,) = silent.frames()
    assert struct.unpack("!H", close_frame[1][:2])[0] == 1001
    clock.advance(CLOSE_GRACE)
    assert silent.transport.disconnecting or silent.transport.disconnected


def test_json_binary_strings_still_become_bytes_for_binary_serializers(factory: WampServerFactory) -> None:
    # The C JSON fast path must not bypass Autobahn's "\0base64" binary convention.
    subscriber = Client(factory, "wamp.2.msgpack").join()
    subscriber.send([32, 1, {}, "com.t"])
    subscriber.messages()
    publisher = Client(factory).join()
    publisher.send([16, 2, {}, "com.t", ["\u0000AQI=", "plain"]])
    ((event_type, _, _, _, args),) = subscriber.messages()
    assert event_type == 36 and args == [b"\x01\x02", "plain"]


# -- limits ---------------------------------------------------------------------------------------


def limited_factory(router: Router[Any], clock: MemoryReactorClock, **limits: Any) -> WampServerFactory:
    return WampServerFactory(router, reactor=clock, limits=ConnectionLimits(**limits))


def test_connections_per_address_are_limited_with_429(router: Router[Any]) -> None:
    factory = limited_factory(router, MemoryReactorClock(), max_connections_per_ip=2)
    first = Client(factory)
    Client(factory)
    assert Client(factory).response.startswith(b"HTTP/1.1 429")
    first.protocol.connectionLost(Failure(ConnectionDone()))
    assert Client(factory).response.startswith(b"HTTP/1.1 101")
    assert factory.admission.open_by_ip == {"127.0.0.1": 2} and factory.admission.admitted == 2


def test_total_connections_are_limited_with_503(router: Router[Any]) -> None:
    factory = limited_factory(router, MemoryReactorClock(), max_connections=1)
    Client(factory)
    assert Client(factory).response.startswith(b"HTTP/1.1 503")


@pytest.mark.parametrize(
    "peer, forwarded, trust, expected",
    [
        ("tcp4:10.0.0.1:5555", "", False, "10.0.0.1"),
        ("tcp4:10.0.0.1:5555", "203.0.113.9", False, "10.0.0.1"),  # not trusted: ignored
        ("tcp4:10.0.0.1:5555", "198.51.100.1, 203.0.113.9", True, "203.0.113.9"),  # what nginx saw
        ("tcp4:10.0.0.1:5555", "", True, "10.0.0.1"),
        ("tcp6:::1:5555", "", False, "::1"),
    ],
)
def test_client_address(peer: str, forwarded: str, trust: bool, expected: str) -> None:
    headers = {"x-forwarded-for": forwarded} if forwarded else {}
    assert client_address(peer, headers, trust) == expected


def test_a_websocket_without_hello_is_closed_after_the_hello_timeout(router: Router[Any]) -> None:
    clock = MemoryReactorClock()
    factory = limited_factory(router, clock, hello_timeout=10)
    silent, joined = Client(factory), Client(factory).join()
    clock.advance(10)
    ((opcode, payload),) = silent.frames()
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1008
    assert b"no WAMP HELLO within 10 s" in payload
    assert joined.frames() == []


def test_idle_connections_are_pinged_and_dropped_when_they_stop_answering(
    router: Router[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = MemoryReactorClock()
    # Autobahn's ping timers run on txaio's loop, not on the factory's reactor.
    monkeypatch.setattr(txaio.config, "loop", clock)
    factory = limited_factory(router, clock, ping_interval=30, ping_timeout=10)
    client = Client(factory).join()
    clock.advance(30)
    (ping,) = client.frames()
    assert ping[0] == 0x9
    clock.advance(10)
    assert client.transport.disconnecting or client.transport.disconnected


def test_every_connection_of_a_wire_format_shares_one_serializer(router: Router[Any]) -> None:
    import copy

    factory = limited_factory(router, MemoryReactorClock())
    for serializer in factory._serializers.values():
        assert copy.copy(serializer) is serializer  # Autobahn's onConnect copies it per connection
    first, second = Client(factory).join(), Client(factory, "wamp.2.msgpack").join()
    assert first.protocol._serializer is Client(factory).join().protocol._serializer is factory._serializers["json"]
    assert second.protocol._serializer is factory._serializers["msgpack"]
    assert second.messages() == [] and first.messages() == []


def test_an_idle_connection_keeps_few_attributes_of_its_own_through_messages_and_pings(
    router: Router[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerProtocol

    from wsserver.transports.websocket import HANDSHAKE_LEFTOVERS, IDLE_DEFAULTS

    clock = MemoryReactorClock()
    monkeypatch.setattr(txaio.config, "loop", clock)  # Autobahn's ping timers
    factory = limited_factory(router, clock, ping_interval=30, ping_timeout=10)
    client = Client(factory).join()
    client.send([32, 1, {}, "com.example.topic"])
    assert client.messages()[0][0] == 33
    clock.advance(30)
    (ping,) = client.frames()
    client.send(ping[1], 0xA)
    clock.advance(10)
    protocol = client.protocol
    assert not (client.transport.disconnecting or client.transport.disconnected), "the pong counted"
    own = vars(protocol)
    # A dict of 42 entries or fewer takes 64 slots; one more and it doubles (+750 bytes a connection).
    assert len(own) <= 42 and sys.getsizeof(own) < 1000, sorted(own)
    assert not set(HANDSHAKE_LEFTOVERS) & set(own)
    # What the connection reads from its class is what Autobahn set: a fresh protocol's values.
    fresh = WebSocketServerProtocol()
    fresh.factory, fresh.log = factory, client.protocol.log
    WebSocketProtocol._connectionMade(fresh)
    fresh.openHandshakeTimeoutCall.cancel()  # the one timer a fresh (handshaking) connection runs
    for name in set(IDLE_DEFAULTS) - set(own) - set(HANDSHAKE_LEFTOVERS) - {"openHandshakeTimeoutCall"}:
        value = getattr(protocol, name)
        assert value == getattr(fresh, name, value) or name in ("_results", "_valid_events"), name
    assert list(protocol._valid_events) == fresh._valid_events and dict(protocol._results) == fresh._results
    # And it still closes as Autobahn closes: the flags it sets go to the connection's own dict.
    client.send(b"\x03\xe8", 0x8)
    assert client.frames()[0][0] == 0x8 and protocol.closedByMe is False
    assert vars(protocol)["wasClean"] is True and WampServerProtocol.wasClean is False
    protocol.connectionLost(Failure(ConnectionDone()))
    assert factory.admission.admitted == 0 and not factory.connections
