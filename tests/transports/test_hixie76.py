"""
The draft-76 adapter over Twisted's StringTransport, checked against draft-hixie-thewebsocketprotocol-76:
the key arithmetic and its example (§1.3), the handshake answer, 0x00..0xFF text frames however
they are cut, the closing handshake, refused keys; then the echo and WAMP routes, the admission
rules, slow clients, shutdown, and the sniffer that leaves every other connection to the site.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web import http
from zope.interface import directlyProvides

from tests.transports.test_websocket import TCPLikeTransport
from wsserver.core.router import Router
from wsserver.delivery import carry_out
from wsserver.site import build_site
from wsserver.transports.echo import Admission, EchoServerFactory
from wsserver.transports.hixie76 import (
    CLOSE_TIMEOUT,
    FrameReader,
    FrameTooLarge,
    HandshakeError,
    Hixie76Endpoints,
    Hixie76Sniffer,
    Hixie76SniffingFactory,
    challenge_response,
    key_number,
    parse_head,
)
from wsserver.transports.admission import CLOSE_GRACE, ConnectionLimits
from wsserver.transports.websocket import WampServerFactory

# The example of §1.3.
KEY1, KEY2, KEY3 = "4 @1  46546xW%0l 1 5", "12998 5 Y3 1  .P00", b"^n:ds[4U"
ANSWER = b"8jKS'y:G*Co,Wxa-"
HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]


def draft76_head(path: str = "/echo", protocol: str | None = None, origin: str | None = "http://example.com",
                 key1: str = KEY1, key2: str = KEY2, host: str | None = "example.com") -> bytes:  # fmt: skip
    """A handshake head as Safari 5 sends it (the 8 key bytes follow separately)."""
    lines = [f"GET {path} HTTP/1.1", "Upgrade: WebSocket", "Connection: Upgrade"]
    lines += [f"Host: {host}"] if host else []
    lines += [f"Origin: {origin}"] if origin else []
    lines += [f"Sec-WebSocket-Protocol: {protocol}"] if protocol else []
    lines += [f"Sec-WebSocket-Key1: {key1}", f"Sec-WebSocket-Key2: {key2}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


# -- the arithmetic and the frames ------------------------------------------------------------------


def test_the_drafts_example_handshake() -> None:
    assert key_number(KEY1) == 4146546015 // 5 == 829309203  # digits over 5 spaces
    assert key_number(KEY2) == 1299853100 // 5 == 259970620
    assert challenge_response(KEY1, KEY2, KEY3) == ANSWER


@pytest.mark.parametrize(
    "key, why",
    [
        ("12345", "no spaces"),
        ("   ", "no digits"),
        ("1   1", "not a multiple"),  # 11 over 3 spaces
        ("42949672960 ", "too large"),  # 10 * 2**32 over 1 space
    ],
)
def test_bad_keys_are_refused(key: str, why: str) -> None:
    with pytest.raises(HandshakeError, match=why):
        key_number(key)


def test_parse_head_reads_a_get_and_its_headers() -> None:
    request = parse_head(draft76_head("/ws?x=1", protocol="wamp.2.json"))
    assert request is not None and request.path == "/ws?x=1" and request.route == "/ws" and request.is_draft76
    assert request.headers["sec-websocket-key1"] == KEY1 and request.headers["upgrade"] == "WebSocket"
    assert parse_head(b"POST /ws HTTP/1.1\r\n\r\n") is None
    assert parse_head(b"GET /ws HTTP/1.0\r\n\r\n") is None


def test_text_frames_however_they_are_cut() -> None:
    stream = b"\x00hello\xff" + b"\x00" + "h\u00e9llo \u2603".encode() + b"\xff" + b"\x00\xff"
    for chunk_size in (1, 2, 3, 7, len(stream)):
        reader = FrameReader(max_size=100)
        messages = []
        for start in range(0, len(stream), chunk_size):
            messages += reader.feed(stream[start : start + chunk_size])
        assert messages == [b"hello", "h\u00e9llo \u2603".encode(), b""]


def test_frames_of_other_types_are_skipped_and_the_closing_frame_ends_reading() -> None:
    reader = FrameReader(max_size=1000)
    length_prefixed = b"\x80\x81\x00" + b"x" * 128  # type 0x80, length 128 in base 128: 0x81 0x00
    other_sentinel = b"\x05ignored\xff"
    assert reader.feed(length_prefixed + other_sentinel + b"\x00kept\xff" + b"\xff\x00" + b"\x00late\xff") == [
        b"kept",
        FrameReader.CLOSING,
    ]
    assert reader.closed and reader.feed(b"\x00more\xff") == []


@pytest.mark.parametrize("stream", [b"\x00" + b"x" * 11, b"\x00" + b"x" * 11 + b"\xff", b"\x80\x0c"])
def test_frames_over_the_limit_fail(stream: bytes) -> None:
    with pytest.raises(FrameTooLarge):
        FrameReader(max_size=10).feed(stream)


# -- connections ------------------------------------------------------------------------------------


class Wire:
    """One TCP connection into the sniffing factory, over a StringTransport."""

    ports = itertools.count(42000)

    def __init__(self, factory: Hixie76SniffingFactory, ip: str = "127.0.0.1") -> None:
        self.transport = TCPLikeTransport(peerAddress=IPv4Address("TCP", ip, next(self.ports)))
        sniffer = factory.buildProtocol(self.transport.getPeer())
        self.transport.protocol = sniffer
        sniffer.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.transport.protocol.dataReceived(data)

    def read(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data

    def handshake(self, head: bytes) -> bytes:
        self.send(head)
        self.send(KEY3)
        return self.read()

    def open(self, path: str = "/echo", **head: Any) -> Wire:
        response = self.handshake(draft76_head(path, **head))
        assert response.startswith(b"HTTP/1.1 101 WebSocket Protocol Handshake\r\n") and response.endswith(ANSWER)
        return self

    def messages(self) -> list[Any]:
        """The text frames written since the last read, as JSON values (WAMP messages)."""
        return [json.loads(payload) for payload in FrameReader(10**6).feed(self.read()) if payload]

    def lose(self) -> None:
        self.transport.protocol.connectionLost(Failure(ConnectionDone()))


class Server:
    """The draft-76 endpoints in front of a real site (with /ws and /echo over RFC 6455)."""

    def __init__(self, tmp_path: Path, allowed_origins: tuple[str, ...] = ("*",), **limits: Any) -> None:
        self.clock = MemoryReactorClock()
        self.router: Router[Any] = Router(["realm1"], itertools.count(1).__next__)
        self.limits = ConnectionLimits(**limits)
        self.admission = Admission(self.limits, allowed_origins)
        site = build_site(tmp_path, "ws", WampServerFactory(self.router, reactor=self.clock),
                          websockets={"echo": EchoServerFactory(self.admission, reactor=self.clock)})  # fmt: skip
        self.endpoints = Hixie76Endpoints(self.router, self.admission, self.clock, "ws", "echo")
        self.factory = Hixie76SniffingFactory(site, self.endpoints, self.clock, timeout=10)

    def connect(self, ip: str = "127.0.0.1") -> Wire:
        return Wire(self.factory, ip)

    def join(self) -> Wire:
        wire = self.connect().open("/ws", protocol="wamp.2.json")
        wire.send(b"\x00" + json.dumps(HELLO).encode() + b"\xff")
        (welcome,) = wire.messages()
        assert welcome[0] == 2
        return wire


@pytest.fixture
def server(tmp_path: Path) -> Server:
    return Server(tmp_path, max_message_size=1000)


def test_the_handshake_answer(server: Server) -> None:
    response = server.connect().handshake(draft76_head("/echo?room=1"))
    head, _, answer = response.partition(b"\r\n\r\n")
    assert head.split(b"\r\n") == [
        b"HTTP/1.1 101 WebSocket Protocol Handshake",
        b"Upgrade: WebSocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Origin: http://example.com",
        b"Sec-WebSocket-Location: ws://example.com/echo?room=1",
    ]
    assert answer == ANSWER


def test_the_location_is_wss_over_tls(server: Server) -> None:
    wire = server.connect()
    directlyProvides(wire.transport, ISSLTransport)
    assert b"Sec-WebSocket-Location: wss://example.com/echo\r\n" in wire.handshake(draft76_head())


def test_no_answer_before_the_eight_key_bytes(server: Server) -> None:
    wire = server.connect()
    wire.send(draft76_head() + KEY3[:7])
    assert wire.read() == b""
    wire.send(KEY3[7:] + b"\x00hi\xff")  # the key's last byte and a first frame together
    assert wire.read().endswith(ANSWER + b"\x00hi\xff")


def test_a_handshake_that_stalls_before_the_key_bytes_is_aborted(server: Server) -> None:
    wire = server.connect()
    wire.send(draft76_head())
    server.clock.advance(server.limits.handshake_timeout)
    assert wire.transport.disconnected


@pytest.mark.parametrize(
    "head",
    [
        draft76_head(key1="12345"),  # no spaces
        draft76_head(key2="1   1"),  # not a multiple
        draft76_head(key1="42949672960 "),  # too large
        draft76_head(host=None),
        draft76_head().replace(b"Upgrade: WebSocket", b"Upgrade: h2c"),
        draft76_head("/ws"),  # WAMP without wamp.2.json
        draft76_head("/ws", protocol="wamp.2.msgpack"),
    ],
)
def test_bad_handshakes_are_refused_with_400(server: Server, head: bytes) -> None:
    wire = server.connect()
    wire.send(head)
    assert wire.read().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert wire.transport.disconnecting
    wire.send(KEY3)
    assert wire.read() == b""
    assert server.admission.admitted == 0


def test_echo_sends_text_back_and_quit_starts_the_closing_handshake(server: Server) -> None:
    wire = server.connect().open()
    wire.send(b"\x00one\xff\x00" + "tw\u00f6".encode())
    wire.send(b"\xff")
    assert wire.read() == b"\x00one\xff\x00" + "tw\u00f6".encode() + b"\xff"
    wire.send(b"\x00quit\xff")
    assert wire.read() == b"\xff\x00"
    assert not wire.transport.disconnecting
    wire.send(b"\xff\x00")  # the client's answer
    assert wire.transport.disconnecting and not wire.transport.disconnected


def test_a_client_that_never_answers_the_closing_frame_is_aborted(server: Server) -> None:
    wire = server.connect().open()
    wire.send(b"\x00quit\xff")
    server.clock.advance(CLOSE_TIMEOUT)
    assert wire.transport.disconnected


def test_a_closing_frame_from_the_client_is_answered_then_closed(server: Server) -> None:
    wire = server.connect().open()
    wire.send(b"\xff\x00")
    assert wire.read() == b"\xff\x00"
    assert wire.transport.disconnecting


def test_an_oversized_message_fails_the_connection(server: Server) -> None:
    wire = server.connect().open()
    wire.send(b"\x00" + b"x" * 1001)
    assert wire.transport.disconnected
    wire.lose()
    assert server.admission.admitted == 0


def test_admission_origin_and_limits(tmp_path: Path) -> None:
    server = Server(tmp_path, allowed_origins=("http://good.example",), max_connections_per_ip=1)
    refused = server.connect()
    refused.send(draft76_head(origin="http://evil.example"))
    assert refused.read().startswith(b"HTTP/1.1 403 Forbidden\r\n")
    first = server.connect().open(origin="http://good.example")
    crowded = server.connect()
    crowded.send(draft76_head(origin="http://good.example"))
    assert crowded.read().startswith(b"HTTP/1.1 429 ")
    first.lose()
    server.connect().open(origin="http://good.example")
    assert server.admission.open_by_ip == {"127.0.0.1": 1}


# -- WAMP -----------------------------------------------------------------------------------------------


def test_a_wamp_session_subscribes_and_gets_events_encoded_once(server: Server) -> None:
    response = server.connect().handshake(draft76_head("/ws", protocol="wamp.2.json"))
    assert b"Sec-WebSocket-Protocol: wamp.2.json\r\n" in response
    subscribers = [server.join(), server.join()]
    for wire in subscribers:
        wire.send(b"\x00" + json.dumps([32, 7, {}, "com.example.t"]).encode() + b"\xff")
        ((subscribed, request_id, _),) = wire.messages()
        assert (subscribed, request_id) == (33, 7)
    serialized = []
    original = server.endpoints.json.serialize
    server.endpoints.json.serialize = lambda message: serialized.append(message) or original(message)  # type: ignore[method-assign]
    carry_out(server.router.publish("realm1", "com.example.t", ["caf\u00e9"], {"n": 1}))
    frames = [wire.read() for wire in subscribers]
    assert frames[0] == frames[1] and len(serialized) == 1
    event = json.loads(frames[0][1:-1])
    assert event[0] == 36 and event[4:] == [["caf\u00e9"], {"n": 1}]


def test_bad_json_is_a_protocol_violation(server: Server) -> None:
    wire = server.join()
    wire.send(b"\x00[1, oops\xff")
    data = wire.read()
    abort = json.loads(data[1 : data.index(b"\xff")])
    assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation"
    assert data.endswith(b"\xff\x00")  # then the closing handshake


def test_a_session_without_hello_is_closed_after_the_hello_timeout(server: Server) -> None:
    silent = server.connect().open("/ws", protocol="wamp.2.json")
    joined = server.join()
    server.clock.advance(server.limits.hello_timeout)
    assert silent.read() == b"\xff\x00"
    assert joined.read() == b""


@pytest.mark.parametrize("ending", [b"", b"\xff\x00", b"\x00" + b"x" * 1001])  # lost, closed, failed
def test_an_ended_connection_leaves_no_session(server: Server, ending: bytes) -> None:
    wire = server.join()
    wire.send(b"\x00" + json.dumps([32, 1, {}, "com.example.t"]).encode() + b"\xff")
    wire.send(ending)
    wire.lose()
    realm = server.router.realms["realm1"]
    assert realm.sessions == {} and len(realm.subscriptions) == 0
    assert len(server.endpoints.connections) == 0 and server.admission.admitted == 0


@pytest.mark.parametrize("policy, still_connected", [("disconnect", False), ("drop", True)])
def test_a_client_that_does_not_read(tmp_path: Path, policy: str, still_connected: bool) -> None:
    server = Server(tmp_path, max_send_buffer=1024, slow_consumer_policy=policy)
    wire = server.join()
    wire.send(b"\x00" + json.dumps([32, 1, {}, "com.example.t"]).encode() + b"\xff")
    wire.read()
    wire.transport.producer.pauseProducing()  # what Twisted does when the socket buffer is full
    for n in range(20):
        carry_out(server.router.publish("realm1", "com.example.t", ["x" * 100, n]))
    assert len(wire.read()) <= 1024
    assert wire.transport.disconnected is not still_connected
    if still_connected:
        assert wire.transport.protocol.send_buffer.dropped > 0
        wire.transport.producer.resumeProducing()  # it reads again: what waited comes first
        assert 0 < len(wire.messages()) < 20
        carry_out(server.router.publish("realm1", "com.example.t", ["again"]))
        assert wire.messages()[0][4] == ["again"]


def test_close_all_says_goodbye_and_closes_echoes_then_aborts(server: Server) -> None:
    wamp_wire, echo_wire = server.join(), server.connect().open()
    done = server.endpoints.close_all(server.clock, timeout=5)
    assert wamp_wire.messages() == [[6, {}, "wamp.close.system_shutdown"]]
    assert echo_wire.read() == b"\xff\x00"
    server.clock.advance(5)  # the silent WAMP client gets the closing frame, then a moment to take it
    assert wamp_wire.read() == b"\xff\x00"
    server.clock.advance(CLOSE_GRACE)
    assert wamp_wire.transport.disconnected and echo_wire.transport.disconnected
    wamp_wire.lose()
    echo_wire.lose()
    assert done.called


# -- the sniffer ------------------------------------------------------------------------------------


def is_the_sites(protocol: object) -> bool:
    return isinstance(protocol, http.HTTPChannel) or isinstance(getattr(protocol, "_channel", None), http.HTTPChannel)


def test_other_requests_go_to_the_site_at_the_first_byte_that_decides(server: Server) -> None:
    wire = server.connect()
    wire.send(b"GET /e")
    assert isinstance(wire.transport.protocol, Hixie76Sniffer)
    wire.send(b"x")  # "GET /ex" starts no route
    assert is_the_sites(wire.transport.protocol)
    wire.send(b"ists-not HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert wire.read().startswith(b"HTTP/1.1 404 ")


def test_an_rfc6455_handshake_on_a_route_goes_to_the_site(server: Server) -> None:
    wire = server.connect()
    wire.send(
        b"GET /echo HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    response = wire.read()
    assert response.startswith(b"HTTP/1.1 101 ") and b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in response


def test_a_head_that_never_ends_goes_to_the_site_after_the_timeout(server: Server) -> None:
    wire = server.connect()
    wire.send(b"GET /ws HTTP/1.1\r\nHost: exa")
    server.clock.advance(10)
    assert is_the_sites(wire.transport.protocol)


def test_more_frames_a_second_than_the_rate_abort_the_connection(tmp_path: Path) -> None:
    server = Server(tmp_path, max_frame_rate=10, frame_burst=20)
    wire = server.connect().open()
    wire.send(b"\x00\xff" * 20)  # the burst: 20 empty messages, echoed
    assert wire.read() == b"\x00\xff" * 20
    server.clock.advance(1)
    wire.send(b"\x80\x00" * 10)  # ten more a second later, skipped frames count too
    assert not wire.transport.disconnected
    wire.send(b"\x00\xff")
    assert wire.transport.disconnected
