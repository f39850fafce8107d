"""
permessage-deflate: the shared frame builder, the negotiation on /ws and /echo over StringTransport,
one compression per publication per wire format, no zlib state held by an idle connection, and
inflation bounded by --max-message-size.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import zlib
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock

from tests.transports.test_websocket import HELLO, Client, TCPLikeTransport, client_frame
from tests.transports.test_websocket import server_frames_with_rsv1 as frames_with_rsv1
from wsserver.core.router import Router
from wsserver.transports.admission import Admission, ConnectionLimits
from wsserver.transports.deflate import COMPRESS_MIN_BYTES, OFF, SYNC_TAIL, SharedDeflater, frame_header, server_frame
from wsserver.transports.echo import EchoServerFactory
from wsserver.transports.websocket import WampServerFactory

#: What Chromium and the ws npm package offer.
BROWSER_OFFER = "permessage-deflate; client_max_window_bits"


def inflate(payload: bytes, window_bits: int = 15) -> bytes:
    """A compressed message's payload inflated with a fresh decompressor (RFC 7692 7.2.2)."""
    return zlib.decompressobj(-window_bits).decompress(payload + SYNC_TAIL)


def deflate(payload: bytes) -> bytes:
    """``payload`` compressed on its own as a client would (tail removed)."""
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    return (compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


def messages(client: Client) -> list[Any]:
    """What the server sent ``client``, each message inflated if it came compressed."""
    received = frames_with_rsv1(client.transport.value())
    client.transport.clear()
    return [client.decode(inflate(p) if rsv1 else p) for rsv1, opcode, p in received if opcode in (1, 2)]


def join(client: Client) -> Client:
    client.send(HELLO)
    (welcome,) = messages(client)
    assert welcome[0] == 2
    return client


def extensions_header(response: bytes) -> str | None:
    for line in response.decode().split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "sec-websocket-extensions":
            return value.strip()
    return None


def event_args() -> list[Any]:
    """A realistic event of about 1 KB: a list of quotes."""
    return [[{"symbol": f"SYM{i}", "name": f"Company {i} Holdings", "price": 100.25 + i, "volume": 1000 * i,
              "ts": f"2026-11-29T19:{i:02d}:00.000Z"} for i in range(8)]]


# -- the shared frame builder -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [COMPRESS_MIN_BYTES, 1000, 70_000, 200_000])
@pytest.mark.parametrize("is_binary", [False, True])
def test_a_shared_frame_is_final_with_rsv1_set_and_inflates_back(size: int, is_binary: bool) -> None:
    payload = json.dumps(list(range(size))).encode()[:size]
    frame = SharedDeflater().frame(payload, is_binary, 15)
    assert frame is not None
    ((rsv1, opcode, compressed),) = frames_with_rsv1(frame)
    assert frame[0] & 0x80 and rsv1 and opcode == (0x2 if is_binary else 0x1)
    assert inflate(compressed) == payload


def test_each_message_inflates_on_its_own_after_others_went_through_the_same_compressor() -> None:
    deflater = SharedDeflater()
    payloads = [json.dumps(event_args()).encode(), json.dumps(event_args()).encode(), b"x" * 500]
    frames = [deflater.frame(payload, False, 15) for payload in payloads]
    for frame, payload in zip(frames, payloads):
        assert frame is not None
        ((_, _, compressed),) = frames_with_rsv1(frame)
        assert inflate(compressed) == payload  # no reference to an earlier message
    assert frames[0] == frames[1]


def test_a_smaller_window_is_one_the_client_can_inflate_with() -> None:
    payload = json.dumps([event_args()] * 4).encode()
    ((_, _, compressed),) = frames_with_rsv1(SharedDeflater().frame(payload, False, 9))
    assert inflate(compressed, 9) == payload


def test_a_short_payload_is_left_to_plain_framing() -> None:
    short = b"x" * (COMPRESS_MIN_BYTES - 1)
    assert SharedDeflater().frame(short, False, 15) == server_frame(short, False)  # plain: RSV1 clear
    assert SharedDeflater().frame(b"x" * 1000, False, None) == server_frame(b"x" * 1000, False)  # not negotiated


@pytest.mark.parametrize("length, header_length", [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_frame_header_lengths(length: int, header_length: int) -> None:
    header = frame_header(0x1, length, rsv1=True)
    assert len(header) == header_length and header[0] == 0xC1


# -- negotiation on /ws ----------------------------------------------------------------------------------


@pytest.fixture
def router() -> Router[Any]:
    ids = iter(range(1, 10_000))
    return Router(["realm1"], ids.__next__)


def wamp_factory(router: Router[Any], **limits: Any) -> WampServerFactory:
    return WampServerFactory(router, reactor=MemoryReactorClock(), limits=ConnectionLimits(**limits))


@pytest.mark.parametrize("offer", [BROWSER_OFFER, "permessage-deflate", "permessage-deflate; client_no_context_takeover",
                                   "permessage-deflate; server_no_context_takeover; client_no_context_takeover"])
def test_any_deflate_offer_is_accepted_without_context_takeover_either_way(router: Router[Any], offer: str) -> None:
    client = Client(wamp_factory(router), extensions=offer)
    assert client.response.startswith(b"HTTP/1.1 101")
    accepted = extensions_header(client.response)
    assert accepted is not None
    parameters = {p.strip() for p in accepted.split(";")}
    assert parameters == {"permessage-deflate", "server_no_context_takeover", "client_no_context_takeover"}
    assert client.protocol.wire_format == ("websocket", "json", "deflate", 15)


def test_a_smaller_server_window_asked_for_is_granted_and_keys_the_wire_format(router: Router[Any]) -> None:
    client = Client(wamp_factory(router), "wamp.2.msgpack", extensions="permessage-deflate; server_max_window_bits=10")
    assert "server_max_window_bits=10" in (extensions_header(client.response) or "")
    assert client.protocol.wire_format == ("websocket", "msgpack", "deflate", 10)


def test_connections_of_one_wire_format_share_one_object_compressed_or_not(router: Router[Any]) -> None:
    # The fan-out tests a recipient's format by identity before it asks its dict (delivery.py).
    factory = wamp_factory(router)
    for extensions in (BROWSER_OFFER, None):
        first, second = (Client(factory, extensions=extensions) for _ in range(2))
        assert first.protocol.wire_format is second.protocol.wire_format


def test_with_compression_off_no_extension_is_answered(router: Router[Any]) -> None:
    client = Client(wamp_factory(router, compression=OFF), extensions=BROWSER_OFFER)
    assert client.response.startswith(b"HTTP/1.1 101")
    assert extensions_header(client.response) is None
    assert client.protocol.wire_format == ("websocket", "json")


def test_without_an_offer_nothing_is_compressed(router: Router[Any]) -> None:
    client = Client(wamp_factory(router))
    assert extensions_header(client.response) is None
    assert client.protocol.wire_format == ("websocket", "json")


# -- fan-out ----------------------------------------------------------------------------------------------


def test_one_compression_per_publication_per_wire_format(router: Router[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    factory = wamp_factory(router)
    compressed = [join(Client(factory, p, extensions=BROWSER_OFFER))
                  for p in ("wamp.2.json", "wamp.2.json", "wamp.2.json", "wamp.2.msgpack", "wamp.2.msgpack")]
    plain = [Client(factory).join(), Client(factory).join()]
    for client in compressed + plain:
        client.send([32, 1, {}, "com.t"])
        client.transport.clear()
    compressions: list[int] = []
    compress = factory.deflater.compress
    # The process's one deflater: patched for this test only.
    monkeypatch.setattr(factory.deflater, "compress", lambda payload, bits: compressions.append(bits) or compress(payload, bits))
    publisher = Client(factory).join()
    publisher.send([16, 2, {}, "com.t", event_args(), {"k": 3}])
    assert len(compressions) == 2  # json and msgpack, once each
    received = [frames_with_rsv1(client.transport.value()) for client in compressed]
    assert received[0] == received[1] == received[2]
    for client, ((rsv1, opcode, payload),) in zip(compressed, received):
        assert rsv1 and opcode == client.opcode
        event = client.decode(inflate(payload))
        assert event[0] == 36 and event[4:] == [event_args(), {"k": 3}]
    for client in plain:
        ((rsv1, _, payload),) = frames_with_rsv1(client.transport.value())
        assert not rsv1 and json.loads(payload)[4] == event_args()


def test_a_short_message_goes_out_plain_on_a_compressed_connection(router: Router[Any]) -> None:
    client = Client(wamp_factory(router), extensions=BROWSER_OFFER)
    join(client)
    client.send([32, 7, {}, "com.t"])
    ((rsv1, _, subscribed),) = frames_with_rsv1(client.transport.value())
    assert not rsv1 and json.loads(subscribed)[:2] == [33, 7]


# -- what a compressed connection holds, and what it may send ------------------------------------------------


def test_an_idle_compressed_connection_holds_no_zlib_state(router: Router[Any]) -> None:
    client = Client(wamp_factory(router), extensions=BROWSER_OFFER)
    codec = client.protocol._perMessageCompress
    client.protocol.dataReceived(client_frame(deflate(json.dumps(HELLO).encode()), 0x1, first_bits=0xC0))
    ((_, _, welcome),) = frames_with_rsv1(client.transport.value())
    client.transport.clear()
    client.protocol.dataReceived(client_frame(deflate(json.dumps([32, 1, {}, "com.t"]).encode()), 0x1, first_bits=0xC0))
    assert [json.loads(p)[0] for _, _, p in frames_with_rsv1(client.transport.value())] == [33]
    assert codec._compressor is None and codec._decompressor is None


def test_a_compressed_message_is_bounded_after_inflation_with_1009(router: Router[Any]) -> None:
    client = Client(wamp_factory(router, max_message_size=10_000), extensions=BROWSER_OFFER)
    join(client)
    bomb = deflate(json.dumps([16, 1, {}, "com.t", ["0" * 1_000_000]]).encode())
    assert len(bomb) < 10_000  # it passes as a frame; it is the inflated size that is refused
    client.protocol.dataReceived(client_frame(bomb, 0x1, first_bits=0xC0))
    (*_, (_, opcode, close)) = frames_with_rsv1(client.transport.value())
    assert opcode == 0x8 and struct.unpack("!H", close[:2])[0] == 1009


# -- /echo: Autobahn's own codec, holding zlib state only while it works --------------------------------------


def test_echo_negotiates_deflate_and_frees_its_zlib_state_after_each_message() -> None:
    factory = EchoServerFactory(Admission(ConnectionLimits()), reactor=MemoryReactorClock())
    transport = TCPLikeTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 42000))
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.dataReceived(
        (f"GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Extensions: {BROWSER_OFFER}\r\n\r\n"
         ).encode())
    response, _, _ = transport.value().partition(b"\r\n\r\n")
    assert "server_no_context_takeover" in (extensions_header(response) or "")
    transport.clear()
    message = json.dumps(event_args()).encode()
    protocol.dataReceived(client_frame(deflate(message), 0x1, first_bits=0xC0))
    ((rsv1, opcode, payload),) = frames_with_rsv1(transport.value())
    assert rsv1 and opcode == 0x1 and inflate(payload) == message
    codec = protocol._perMessageCompress
    assert codec._compressor is None and codec._decompressor is None
