"""
The bounds every Autobahn WebSocket endpoint shares (wsserver/transports/bounds.py), on the WAMP
endpoint over StringTransport: fragments per message, frames a second, pongs in the send buffer.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from typing import Any

from twisted.internet.testing import MemoryReactorClock

from tests.transports.test_websocket import Client, limited_factory, router  # noqa: F401 (router: a fixture)
from wsserver.core.router import Router
from wsserver.tally import TALLY


def fragment(opcode: int, payload: bytes, fin: bool) -> bytes:
    """A masked client frame with a zero key, FIN as given."""
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


def close_code(client: Client) -> tuple[int, bytes]:
    (opcode, payload), *_ = [f for f in client.frames() if f[0] == 0x8]
    return struct.unpack("!H", payload[:2])[0], payload[2:]


def test_a_message_in_few_fragments_is_whole_and_too_many_close_1009(router: Router[Any]) -> None:  # noqa: F811
    factory = limited_factory(router, MemoryReactorClock(), max_fragments=3)
    client = Client(factory).join()
    text = json.dumps([32, 1, {}, "com.example.t"]).encode()
    client.protocol.dataReceived(fragment(0x1, text[:5], False) + fragment(0x0, text[5:10], False)
                                 + fragment(0x0, text[10:], True))
    assert client.messages()[0][0] == 33
    client.protocol.dataReceived(fragment(0x1, b"", False) + fragment(0x0, b"", False) * 3
                                 + fragment(0x1, text, True))  # never processed
    code, reason = close_code(client)
    assert (code, reason) == (1009, b"a message in more than 3 fragments")
    assert client.messages() == []


def test_frames_a_second_are_bounded_with_a_burst_then_close_1008(router: Router[Any]) -> None:  # noqa: F811
    clock = MemoryReactorClock()
    factory = limited_factory(router, clock, max_frame_rate=10, frame_burst=20)
    client = Client(factory)
    client.protocol.dataReceived(fragment(0x9, b"p", True) * 20)  # the burst: 20 pongs
    assert [opcode for opcode, _ in client.frames()] == [0xA] * 20
    clock.advance(1)  # ten more
    client.protocol.dataReceived(fragment(0x9, b"p", True) * 10)
    assert len(client.frames()) == 10
    client.protocol.dataReceived(fragment(0x9, b"p", True) * 2)
    assert close_code(client) == (1008, b"more than 10 frames a second")


def test_pongs_to_a_client_that_does_not_read_fill_its_send_buffer_then_close_1008(router: Router[Any]) -> None:  # noqa: F811
    factory = limited_factory(router, MemoryReactorClock(), max_send_buffer=1024)
    client = Client(factory)
    client.protocol.send_buffer.pauseProducing()  # what Twisted does when the socket buffer is full
    client.protocol.dataReceived(fragment(0x9, b"p" * 100, True) * 11)  # 11 x 102 bytes of pongs
    code, reason = close_code(client)
    assert code == 1008 and b"not reading" in reason
    assert not client.protocol.send_buffer.waiting  # freed at once


def test_what_closes_a_websocket_below_its_messages_is_counted_by_reason(router: Router[Any]) -> None:  # noqa: F811
    before = Counter(TALLY.disconnects)
    flooder = Client(limited_factory(router, MemoryReactorClock(), max_frame_rate=1, frame_burst=1))
    flooder.protocol.dataReceived(fragment(0x9, b"p", True) * 2)
    fragmenter = Client(limited_factory(router, MemoryReactorClock(), max_fragments=1))
    fragmenter.protocol.dataReceived(fragment(0x1, b"[", False) + fragment(0x0, b"]", True))
    silent = Client(limited_factory(router, MemoryReactorClock()))
    silent.protocol.onAutoPingTimeout()  # what Autobahn calls when its ping's pong is late
    assert (close_code(flooder)[0], close_code(fragmenter)[0]) == (1008, 1009)
    assert silent.transport.disconnecting or silent.transport.disconnected
    assert Counter(TALLY.disconnects) - before == Counter(frame_rate=1, too_many_fragments=1, ping_timeout=1)


def test_a_connection_reads_autobahns_options_from_its_factory_and_keeps_only_the_per_frame_ones(
    router: Router[Any],  # noqa: F811
) -> None:
    from autobahn.websocket.protocol import WebSocketServerProtocol

    from wsserver.transports.bounds import PER_FRAME_OPTIONS

    factory = limited_factory(router, MemoryReactorClock(), max_message_size=1000, handshake_timeout=7.0)
    client = Client(factory).join()
    own = vars(client.protocol)
    assert set(WebSocketServerProtocol.CONFIG_ATTRS) & set(own) == set(PER_FRAME_OPTIONS)
    assert client.protocol.openHandshakeTimeout == 7.0 and client.protocol.maxMessagePayloadSize == 1000
    # An option set on the factory later reaches the connections made after it.
    factory.setProtocolOptions(autoPingSize=12)
    assert Client(factory).protocol.autoPingSize == 12
    # The copied limit is honoured: a message over it closes 1009.
    client.send([16, 1, {}, "com.example.topic", ["x" * 2000]])
    assert close_code(client)[0] == 1009


def test_autobahns_debug_labels_are_made_only_when_a_line_is_formatted() -> None:
    import autobahn.twisted.websocket
    import autobahn.util
    import autobahn.websocket.protocol

    from wsserver.transports.bounds import DebugLabel

    for module in (autobahn.websocket.protocol, autobahn.twisted.websocket):
        label = module.hltype(test_autobahns_debug_labels_are_made_only_when_a_line_is_formatted)
        assert isinstance(label, DebugLabel)  # not a string yet: txaio drops debug lines unformatted
        assert f"{label}" == str(label) == autobahn.util.hltype(
            test_autobahns_debug_labels_are_made_only_when_a_line_is_formatted)
        assert f"{module.hlval(42)}" == autobahn.util.hlval(42)


def test_a_connection_hands_on_a_budget_of_message_bytes_a_turn_and_the_rest_in_the_next(
    router: Router[Any],  # noqa: F811
) -> None:
    """Four 600 kB PUBLISHes in one read (as 64 KiB of compressed ones could be): two now, two a turn later."""
    clock = MemoryReactorClock()
    client = Client(limited_factory(router, clock, max_frame_rate=0)).join()
    frames = b""
    for n in range(4):
        payload = json.dumps([16, n + 1, {"acknowledge": True}, "com.example.big", ["x" * 600_000]]).encode()
        frames += bytes([0x81, 0x80 | 127]) + struct.pack("!Q", len(payload)) + b"\0\0\0\0" + payload
    client.protocol.dataReceived(frames)
    assert [message[:2] for message in client.messages()] == [[17, 1], [17, 2]]
    assert client.transport.producerState == "paused", "it reads no more meanwhile"
    clock.advance(0)
    assert [message[:2] for message in client.messages()] == [[17, 3], [17, 4]]
    assert client.transport.producerState == "producing"
