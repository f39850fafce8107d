"""
WAMP over HTTP long-poll through a real twisted.web Site over StringTransport, with task.Clock:
the spec's requests and AutobahnJS's expectations (200/204 only, an idle poll answered before its
12 s timeout), batched protocols, the bounded queue of a client that stops polling, held sends
while replies wait, the session timeout, CORS, refusals, admission and shutdown.
"""

from __future__ import annotations

import itertools
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
import msgpack
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.web import resource, server

from tests.transports.test_websocket import TCPLikeTransport
from wsserver.core.router import Router
from wsserver.delivery import carry_out
from wsserver.transports.admission import DROP, Admission, ConnectionLimits
from wsserver.transports.longpoll import (
    BATCH_BYTES,
    HELD_SENDS,
    RECEIVE_HOLD,
    LongPollEndpoint,
    LongPollSettings,
)

HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}, "caller": {}}}]


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class Exchange:
    """One HTTP request on a connection of its own; ``response`` once the server has answered."""

    transport: TCPLikeTransport
    channel: Any
    raw: bytes = b""

    @property
    def response(self) -> Response | None:
        data = self.raw + self.transport.value()
        head, found, body = data.partition(b"\r\n\r\n")
        if not found:
            return None
        lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
        status = int(lines[0].split()[1])
        if len(body) < int(headers.get("content-length", "0")):
            return None
        return Response(status, headers, body)

    def disconnect(self) -> None:
        self.channel.connectionLost(Exception("client went away"))


@dataclass
class Server:
    clock: Clock = field(default_factory=Clock)
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    origins: tuple[str, ...] = ("*",)
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self.router: Router[Any] = Router(["realm1"], itertools.count(1000).__next__, clock=self.clock.seconds)
        self.admission = Admission(self.limits, self.origins)
        ids = (f"id{n}" for n in itertools.count(1))
        self.endpoint = LongPollEndpoint(self.router, self.admission, self.clock,
                                         LongPollSettings(session_timeout=self.timeout), new_id=ids.__next__)
        root = resource.Resource()
        root.putChild(b"lp", self.endpoint)
        self.site = server.Site(root, reactor=self.clock)
        self.ports = itertools.count(50000)

    def request(self, path: str, body: bytes = b"", method: str = "POST", headers: dict[str, str] | None = None,
                address: str = "127.0.0.1") -> Exchange:
        transport = TCPLikeTransport(peerAddress=IPv4Address("TCP", address, next(self.ports)))
        channel = self.site.buildProtocol(transport.getPeer())
        channel.makeConnection(transport)
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        channel.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return Exchange(transport, channel)

    def post(self, path: str, body: bytes = b"", **options: Any) -> Response:
        """A request the server must answer at once."""
        response = self.request(path, body, **options).response
        assert response is not None, f"{path} was not answered at once"
        return response

    def open(self, protocol: str = "wamp.2.json", hello: bool = True, **options: Any) -> Session:
        response = self.post("/lp/open", json.dumps({"protocols": [protocol]}).encode(), **options)
        assert response.status == 200, response
        opened = json.loads(response.body)
        assert opened["protocol"] == protocol
        session = Session(self, opened["transport"], protocol)
        if hello:
            session.send(HELLO)
            assert session.receive()[0][0] == 2  # WELCOME
        return session


CODECS = {
    "wamp.2.json": (lambda m: json.dumps(m).encode(), json.loads),
    "wamp.2.msgpack": (msgpack.packb, msgpack.unpackb),
    "wamp.2.cbor": (cbor2.dumps, cbor2.loads),
}


def unbatch(protocol: str, body: bytes) -> list[Any]:
    """The messages of a /receive answer."""
    base = protocol.removesuffix(".batched")
    decode = CODECS[base][1]
    if not protocol.endswith(".batched"):
        return [decode(body)] if body else []
    if base == "wamp.2.json":
        assert body.endswith(b"\x1e")
        return [decode(part) for part in body.split(b"\x1e")[:-1]]
    messages, offset = [], 0
    while offset < len(body):
        (length,) = struct.unpack("!I", body[offset:offset + 4])
        messages.append(decode(body[offset + 4:offset + 4 + length]))
        offset += 4 + length
    return messages


def batch(protocol: str, messages: list[Any]) -> bytes:
    base = protocol.removesuffix(".batched")
    encode = CODECS[base][0]
    if not protocol.endswith(".batched"):
        (message,) = messages
        return bytes(encode(message))
    if base == "wamp.2.json":
        return b"".join(encode(m) + b"\x1e" for m in messages)
    return b"".join(struct.pack("!I", len(encode(m))) + encode(m) for m in messages)


@dataclass
class Session:
    server: Server
    transport_id: str
    protocol: str

    def path(self, action: str) -> str:
        return f"/lp/{self.transport_id}/{action}"

    def send(self, *messages: Any, expect: int = 204) -> Response:
        response = self.server.post(self.path("send"), batch(self.protocol, list(messages)))
        assert response.status == expect, response
        return response

    def poll(self) -> Exchange:
        return self.server.request(self.path("receive"))

    def receive(self) -> list[Any]:
        """What a /receive answers at once (fails if it would be held)."""
        response = self.poll().response
        assert response is not None, "nothing waits for the client"
        assert response.status == 200, response
        return unbatch(self.protocol, response.body)


# -- the protocol -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor"])
def test_open_hello_subscribe_publish_one_message_per_receive(protocol: str) -> None:
    lp = Server()
    session = lp.open(protocol)
    session.send([32, 1, {}, "com.example.a"])
    assert session.receive()[0][0] == 33  # SUBSCRIBED
    session.send([16, 2, {"exclude_me": False, "acknowledge": True}, "com.example.a", [1]])
    first, second = session.receive(), session.receive()
    assert sorted([first[0][0], second[0][0]]) == [17, 36]  # PUBLISHED and the EVENT, one per answer
    assert session.poll().response is None  # nothing left: held


@pytest.mark.parametrize("protocol", ["wamp.2.json", "wamp.2.cbor.batched"])
def test_a_session_tells_what_carries_it_and_its_clients_address(protocol: str) -> None:
    lp = Server()
    lp.open(protocol)
    (session,) = lp.router.realms["realm1"].sessions.values()
    assert session.transport is not None and session.transport.kind == f"longpoll/{protocol.removeprefix('wamp.2.')}"
    assert session.address is not None and session.transport.buffered_bytes() == 0


@pytest.mark.parametrize("protocol", ["wamp.2.json.batched", "wamp.2.msgpack.batched", "wamp.2.cbor.batched"])
def test_batched_protocols_take_several_messages_and_answer_all_that_waits(protocol: str) -> None:
    lp = Server()
    session = lp.open(protocol)
    session.send([32, 1, {}, "com.example.a"], [32, 2, {}, "com.example.b"])
    assert [m[:2] for m in session.receive()] == [[33, 1], [33, 2]]
    held = session.poll()
    assert held.response is None
    publisher = lp.open("wamp.2.json")
    publisher.send([16, 3, {}, "com.example.a", ["x"]])
    publisher.send([16, 4, {}, "com.example.b", ["y"]])
    assert held.response is None  # the answer collects what this reactor turn writes
    lp.clock.advance(0)
    response = held.response
    assert response is not None and response.status == 200
    assert response.headers["content-type"].startswith(("application/json", "application/x-msgpack", "application/cbor"))
    assert [m[4] for m in unbatch(protocol, response.body)] == [["x"], ["y"]]
    assert session.poll().response is None


def test_a_batched_answer_stops_at_its_size_and_the_rest_waits_for_the_next_poll() -> None:
    lp = Server()
    session = lp.open("wamp.2.json.batched")
    session.send([32, 1, {}, "com.example.big"])
    session.receive()
    publisher = lp.open("wamp.2.json")
    for n in range(10):
        publisher.send([16, 10 + n, {}, "com.example.big", ["x" * (BATCH_BYTES // 4)]])
    sizes = []
    while (response := session.poll().response) is not None:
        sizes.append(len(response.body))
        lp.clock.advance(0)
    assert len(sizes) > 2 and all(size < BATCH_BYTES + BATCH_BYTES // 2 for size in sizes)


def test_an_idle_receive_is_answered_empty_before_autobahnjs_gives_up() -> None:
    lp = Server()
    session = lp.open()
    held = session.poll()
    lp.clock.advance(RECEIVE_HOLD - 0.1)
    assert held.response is None
    lp.clock.advance(0.1)
    assert held.response is not None and held.response.status == 204 and held.response.body == b""
    assert RECEIVE_HOLD < 12  # AutobahnJS's request timeout, which closes its transport


def test_a_second_receive_answers_the_first_empty_and_takes_its_place() -> None:
    lp = Server()
    session = lp.open()
    session.send([32, 1, {}, "com.example.a"])
    session.receive()
    first, second = session.poll(), session.poll()
    assert first.response is not None and first.response.status == 204
    lp.open().send([16, 2, {}, "com.example.a", [7]])
    assert second.response is not None and json.loads(second.response.body)[4] == [7]


def test_a_receive_whose_client_goes_away_does_not_swallow_the_next_message() -> None:
    lp = Server()
    session = lp.open()
    session.send([32, 1, {}, "com.example.a"])
    session.receive()
    session.poll().disconnect()
    lp.open().send([16, 2, {}, "com.example.a", [8]])
    assert session.receive()[0][4] == [8]


# -- bounds ---------------------------------------------------------------------------------------------


def subscribed_and_stalled(lp: Server) -> Session:
    session = lp.open()
    session.send([32, 1, {}, "com.example.flood"])
    session.receive()
    return session


def test_a_subscriber_that_stops_polling_is_bounded_and_ended_like_a_stalled_websocket() -> None:
    lp = Server(limits=ConnectionLimits(max_send_buffer=4096))
    stalled = subscribed_and_stalled(lp)
    publisher = lp.open()
    for n in range(100):
        publisher.send([16, 10 + n, {}, "com.example.flood", ["x" * 100]])
    record = lp.endpoint.sessions[stalled.transport_id]
    assert record.ended == "not reading: more than 4096 bytes unread"
    assert not record.send_buffer.waiting
    assert lp.router.realms["realm1"].broker is not None
    response = stalled.poll().response
    assert response is not None and response.status == 410 and b"not reading" in response.body
    assert stalled.transport_id not in lp.endpoint.sessions and lp.admission.admitted == 1  # the publisher


def test_with_the_drop_policy_a_stalled_subscriber_loses_events_and_keeps_its_session() -> None:
    lp = Server(limits=ConnectionLimits(max_send_buffer=4096, slow_consumer_policy=DROP))
    stalled = subscribed_and_stalled(lp)
    publisher = lp.open()
    for n in range(100):
        publisher.send([16, 10 + n, {}, "com.example.flood", [n, "x" * 100]])
    record = lp.endpoint.sessions[stalled.transport_id]
    assert record.ended is None and record.send_buffer.dropped > 50
    received = [stalled.receive()[0][4][0] for _ in range(100 - record.send_buffer.dropped)]
    assert received == sorted(received) and received[0] == 0


def test_while_replies_wait_sends_are_held_then_processed_in_order_and_bounded() -> None:
    lp = Server()
    session = lp.open()
    publisher = lp.open()
    for n in range(3):
        publisher.send([16, n + 1, {"retain": True}, f"com.example.kept.{n}", [n]])
    session.send([32, 1, {"match": "prefix", "get_retained": True}, "com.example.kept."])
    # Nothing is polled: SUBSCRIBED and the retained events wait, as replies (paced).
    assert lp.endpoint.sessions[session.transport_id].reading_paused
    held = [lp.request(session.path("send"), json.dumps([32, 10 + n, {}, f"com.example.x{n}"]).encode())
            for n in range(HELD_SENDS)]
    assert all(exchange.response is None for exchange in held)
    assert lp.post(session.path("send"), b'[32, 99, {}, "com.example.y"]').status == 429
    answered = [session.receive()[0][0] for _ in range(4)]
    assert answered == [33, 36, 36, 36]
    for n, exchange in enumerate(held):  # each held send once the reply before it is polled
        lp.clock.advance(0)
        assert exchange.response is not None and exchange.response.status == 204
        assert all(later.response is None for later in held[n + 1:])
        assert session.receive()[0][:2] == [33, 10 + n]


def test_held_sends_are_bounded_in_bytes_as_a_paused_websocket_holds_one_message() -> None:
    lp = Server(limits=ConnectionLimits(max_message_size=1000))
    session = lp.open()
    session.send([32, 1, {}, "com.example.a"])  # SUBSCRIBED waits: sends are held from now on
    first = lp.request(session.path("send"), json.dumps([16, 2, {}, "com.example.a", ["x" * 900]]).encode())
    assert first.response is None
    response = lp.post(session.path("send"), json.dumps([16, 3, {}, "com.example.a", ["x" * 200]]).encode())
    assert response.status == 429
    lp.post(session.path("close"))
    assert first.response is not None and first.response.status == 410


def test_a_session_without_requests_ends_after_the_timeout_and_a_held_receive_keeps_it() -> None:
    lp = Server(timeout=30)
    quiet, polling = lp.open(), lp.open()
    lp.clock.advance(5)
    polling.poll()
    for _ in range(3):
        lp.clock.advance(RECEIVE_HOLD)
        polling.poll()
    assert quiet.transport_id not in lp.endpoint.sessions
    assert polling.transport_id in lp.endpoint.sessions
    assert lp.post(quiet.path("receive")).status == 404
    assert lp.admission.admitted == 1


def test_a_session_that_says_no_hello_ends_after_the_hello_timeout() -> None:
    lp = Server(limits=ConnectionLimits(hello_timeout=5))
    session = lp.open(hello=False)
    lp.clock.advance(5)
    response = lp.post(session.path("receive"))
    assert response.status == 410 and b"no WAMP HELLO within 5 s" in response.body


def test_close_ends_the_session_and_forgets_its_id() -> None:
    lp = Server()
    session = lp.open()
    held = session.poll()
    assert lp.post(session.path("close")).status == 204
    assert held.response is not None and held.response.status == 204
    assert lp.post(session.path("send"), json.dumps([32, 1, {}, "com.x"]).encode()).status == 404
    assert lp.admission.admitted == 0 and lp.router.realms["realm1"].broker is not None


def test_the_clients_goodbye_is_answered_and_its_close_forgets_the_session() -> None:
    lp = Server()
    session = lp.open()
    session.send([6, {}, "wamp.close.normal"])
    assert session.receive()[0][0] == 6  # GOODBYE back; AutobahnJS then posts /close
    assert lp.post(session.path("close")).status == 204
    assert lp.post(session.path("receive")).status == 404


def test_an_abort_is_delivered_then_the_receive_says_why_the_session_is_gone() -> None:
    lp = Server()
    session = lp.open(hello=False)
    session.send([1, "no.such.realm", {"roles": {"subscriber": {}}}])
    assert session.receive()[0][0] == 3  # ABORT
    response = lp.post(session.path("receive"))
    assert response.status == 410 and b"no_such_realm" in response.body
    assert lp.post(session.path("receive")).status == 404


# -- refusals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, reason", [
    (b"not json", b"the body must be"),
    (b'{"protocols": "wamp.2.json"}', b"protocols must be a list"),
    (b'{"protocols": ["wamp.2.xml"]}', b"none of the protocols offered"),
    (b"{}", b"the body must be"),
])
def test_open_refuses_a_bad_body_with_400_and_the_reason(body: bytes, reason: bytes) -> None:
    response = Server().post("/lp/open", body)
    assert response.status == 400 and reason in response.body
    assert response.headers["content-type"].startswith("text/plain")


def test_a_message_that_is_no_wamp_is_400_with_the_reason_after_the_abort() -> None:
    lp = Server()
    session = lp.open()
    response = session.send("not a message", expect=400)
    assert b"WAMP message" in response.body
    assert session.receive()[0][0] == 3  # ABORT
    assert lp.post(session.path("receive")).status == 410


def test_an_empty_batch_is_a_violation() -> None:
    lp = Server()
    session = lp.open("wamp.2.json.batched")
    response = lp.post(session.path("send"), b"")
    assert response.status == 400 and b"empty" in response.body


def test_a_message_over_the_size_limit_is_413_and_ends_the_session() -> None:
    lp = Server(limits=ConnectionLimits(max_message_size=100))
    session = lp.open()
    response = lp.post(session.path("send"), json.dumps([16, 1, {}, "com.x", ["x" * 200]]).encode())
    assert response.status == 413
    assert lp.post(session.path("receive")).status == 410


def test_unknown_ids_requests_and_methods() -> None:
    lp = Server()
    lp.open()
    assert lp.post("/lp/id1x/receive").status == 404
    assert lp.post("/lp/id1/subscribe").status == 404
    assert lp.post("/lp/open", b"", method="GET").status == 405
    assert lp.post("/lp/id1/receive", method="PUT").status == 405


def test_ids_are_unguessable_by_default() -> None:
    clock = Clock()
    endpoint = LongPollEndpoint(Router(["realm1"], itertools.count(1).__next__), Admission(ConnectionLimits()), clock)
    ids = {endpoint.new_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(i) >= 22 for i in ids)


# -- origins, CORS, admission ---------------------------------------------------------------------------


def test_an_allowed_origin_is_reflected_with_credentials_and_preflight_is_answered() -> None:
    lp = Server(origins=("https://app.example.com",))
    origin = {"Origin": "https://app.example.com"}
    preflight = lp.post("/lp/open", method="OPTIONS", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert preflight.headers["access-control-allow-headers"].lower() == "content-type"
    opened = lp.post("/lp/open", b'{"protocols": ["wamp.2.json"]}', headers=origin)
    assert opened.status == 200 and opened.headers["access-control-allow-credentials"] == "true"
    assert opened.headers["cache-control"] == "no-store"


def test_a_foreign_origin_is_refused_on_every_request() -> None:
    lp = Server(origins=("https://app.example.com",))
    session = lp.open()
    evil = {"Origin": "https://evil.example.net"}
    assert lp.post("/lp/open", b'{"protocols": ["wamp.2.json"]}', headers=evil).status == 403
    assert lp.post("/lp/open", method="OPTIONS", headers=evil).status == 403
    assert lp.post(session.path("receive"), headers=evil).status == 403
    assert "access-control-allow-origin" not in lp.post(session.path("receive"), headers=evil).headers


def test_each_session_counts_as_a_connection_of_its_address() -> None:
    lp = Server(limits=ConnectionLimits(max_connections_per_ip=2, max_connections=3))
    first = lp.open(address="10.0.0.1")
    lp.open(address="10.0.0.1")
    refused = lp.post("/lp/open", b'{"protocols": ["wamp.2.json"]}', address="10.0.0.1")
    assert refused.status == 429
    lp.open(address="10.0.0.2")
    assert lp.post("/lp/open", b'{"protocols": ["wamp.2.json"]}', address="10.0.0.3").status == 503
    lp.post(first.path("close"))
    lp.open(address="10.0.0.1")


# -- shutdown ---------------------------------------------------------------------------------------------


def test_shutdown_says_goodbye_and_waits_for_the_sessions() -> None:
    lp = Server()
    answering, silent = lp.open(), lp.open()
    lp.open(hello=False)  # no WAMP session: forgotten at once
    done = lp.endpoint.close_all(lp.clock, 5)
    assert answering.receive()[0][:3] == [6, {}, "wamp.close.system_shutdown"]
    answering.send([6, {}, "wamp.close.goodbye_and_out"])
    assert lp.post(answering.path("close")).status == 204
    assert not done.called
    lp.clock.advance(5)
    lp.clock.advance(1)
    assert done.called and lp.endpoint.sessions == {} and lp.admission.admitted == 0
    assert silent.transport_id not in lp.endpoint.sessions


def test_python_publish_reaches_long_poll_subscribers_encoded_once_per_protocol() -> None:
    lp = Server()
    sessions = [lp.open("wamp.2.json") for _ in range(3)] + [lp.open("wamp.2.msgpack")]
    for n, session in enumerate(sessions):
        session.send([32, n + 1, {}, "com.example.py"])
        session.receive()
    encoded: list[Any] = []
    for session in sessions:
        record = lp.endpoint.sessions[session.transport_id]
        original = record.encode
        record.encode = lambda message, original=original: encoded.append(1) or original(message)  # type: ignore[method-assign]
    carry_out(lp.router.publish("realm1", "com.example.py", [42], None, False))
    assert len(encoded) == 2
    assert all(session.receive()[0][4] == [42] for session in sessions)
