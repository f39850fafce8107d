"""
The HTTP API without a network: credentials and nonces with a clock that moves when a test moves
it, and whole requests through the server's own site over Twisted's StringTransport, with a
router whose other sessions are recording peers.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp import message as wamp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from wsserver.core.decoding import decode_one
from wsserver.core.router import CloseReason
from wsserver.delivery import carry_out
from wsserver.service import WampServer
from wsserver.tally import HTTP_KEY, TALLY
from wsserver.transports.substream import StreamRefused
from wsserver.transports.http_api import (
    Credentials,
    HttpApiSettings,
    HttpKey,
    NonceCache,
    HttpRefusal,
    from_loopback,
)

SECRET = b"a-secret-of-some-length"
BEARER = "the-bearer-key"
KEYS = (
    HttpKey("signer", "realm1", "anonymous", secret=SECRET),
    HttpKey("backend", "realm1", "anonymous", key_sha256=hashlib.sha256(BEARER.encode()).digest()),
)
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def signature_headers(body: bytes, *, timestamp: float = NOW, nonce: str = "nonce-0001", name: str = "signer",
                      secret: bytes = SECRET) -> dict[str, str]:
    stamp = str(int(timestamp))
    signature = hmac.new(secret, f"{stamp}\n{nonce}\n".encode() + body, hashlib.sha256).hexdigest()
    return {"x-wsserver-key": name, "x-wsserver-timestamp": stamp, "x-wsserver-nonce": nonce,
            "x-wsserver-signature": signature}


# -- credentials ----------------------------------------------------------------------------------


def refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(HttpRefusal) as refused:
        call()
    return refused.value.status, refused.value.error


def test_a_signed_request_is_accepted_once_and_only_within_the_skew() -> None:
    clock = Clock()
    credentials = Credentials(HttpApiSettings(keys=KEYS, max_skew=300), clock)
    body = b'{"topic": "com.example.x"}'
    assert credentials.signed(signature_headers(body), body).name == "signer"
    assert refusal(lambda: credentials.signed(signature_headers(body), body)) == (401, "wsserver.error.replayed_nonce")
    for skew in (-301, 301):
        headers = signature_headers(body, timestamp=NOW + skew, nonce="fresh-nonce")
        assert refusal(lambda: credentials.signed(headers, body)) == (401, "wsserver.error.stale_timestamp")
    assert credentials.signed(signature_headers(body, timestamp=NOW + 299, nonce="fresh-nonce"), body)
    # Upper-case hex is the same signature.
    headers = signature_headers(body, nonce="upper-case")
    headers["x-wsserver-signature"] = headers["x-wsserver-signature"].upper()
    assert credentials.signed(headers, body)


@pytest.mark.parametrize(
    "change",
    [
        {"secret": b"another-secret-entirely"},
        {"name": "backend"},  # a bearer key, not a signer
        {"name": "nobody"},
    ],
)
def test_a_wrong_signature_or_signer_is_refused_alike(change: dict[str, Any]) -> None:
    credentials = Credentials(HttpApiSettings(keys=KEYS), Clock())
    body = b"{}"
    headers = signature_headers(body, **change)
    assert refusal(lambda: credentials.signed(headers, body)) == (401, "wsserver.error.authentication_failed")
    assert len(credentials.nonces) == 0  # a refused signature spends no nonce


@pytest.mark.parametrize(
    "header, value",
    [("x-wsserver-nonce", "short"), ("x-wsserver-nonce", "bad nonce!"), ("x-wsserver-timestamp", "yesterday"),
     ("x-wsserver-signature", "")],
)
def test_malformed_signature_headers_are_refused(header: str, value: str) -> None:
    credentials = Credentials(HttpApiSettings(keys=KEYS), Clock())
    headers = {**signature_headers(b"{}"), header: value}
    assert refusal(lambda: credentials.signed(headers, b"{}"))[0] == 401


def test_another_body_under_the_same_signature_is_refused() -> None:
    credentials = Credentials(HttpApiSettings(keys=KEYS), Clock())
    headers = signature_headers(b'{"topic": "com.example.a"}')
    assert refusal(lambda: credentials.signed(headers, b'{"topic": "com.example.b"}'))[0] == 401


def test_bearer_keys_are_found_by_their_hash() -> None:
    credentials = Credentials(HttpApiSettings(keys=KEYS), Clock())
    assert credentials.bearer(BEARER).name == "backend"
    assert refusal(lambda: credentials.bearer("the-bearer-kez")) == (401, "wsserver.error.authentication_failed")
    assert refusal(lambda: credentials.bearer("")) == (401, "wsserver.error.authentication_failed")


def test_the_nonce_cache_forgets_after_its_window_and_refuses_when_full() -> None:
    cache = NonceCache(capacity=3, keep=600)
    for n in range(3):
        cache.spend(b"n%d" % n, 1000.0 + n)
    assert refusal(lambda: cache.spend(b"n0", 1599.0)) == (401, "wsserver.error.replayed_nonce")
    assert refusal(lambda: cache.spend(b"n3", 1100.0)) == (503, "wsserver.error.unavailable")
    assert len(cache) == 3  # refused rather than grown
    # Remembered for at least 600 s, forgotten within 900 s (one generation of 300 s at a time).
    assert refusal(lambda: cache.spend(b"n2", 1602.0)) == (401, "wsserver.error.replayed_nonce")
    cache.spend(b"n0", 1900.0)
    assert len(cache) == 1
    cache.spend(b"n1", 2000.0)
    cache.spend(b"n4", 2300.0)  # a second generation
    assert len(cache) == 3
    assert refusal(lambda: cache.spend(b"n1", 2450.0)) == (401, "wsserver.error.replayed_nonce")
    cache.spend(b"late", 2900.0)  # the generation of 1900 is gone, that of 2300 is not
    assert len(cache) == 2
    assert refusal(lambda: cache.spend(b"n4", 2900.0)) == (401, "wsserver.error.replayed_nonce")


@pytest.mark.parametrize(
    "peer, headers, expected",
    [
        ("127.0.0.1", {}, True),
        ("127.8.9.10", {}, True),
        ("::1", {}, True),
        ("::ffff:127.0.0.1", {}, True),
        ("10.0.0.1", {}, False),
        ("127.0.0.1", {"x-forwarded-for": "127.0.0.1, ::1"}, True),
        ("127.0.0.1", {"x-forwarded-for": "127.0.0.1, 203.0.113.7"}, False),
        ("127.0.0.1", {"x-forwarded-for": "garbage"}, False),
        ("127.0.0.1", {"forwarded": "for=127.0.0.1"}, False),
        ("", {}, False),
    ],
)
def test_loopback_is_the_tcp_peer_and_every_forwarded_address(peer: str, headers: dict[str, str], expected: bool) -> None:
    assert from_loopback(peer, headers) is expected


# -- whole requests through the site ----------------------------------------------------------------


class RecordingPeer:
    """A WebSocket client of the router, as far as the router and delivery can tell."""

    wire_format = "recording"

    def __init__(self) -> None:
        self.received: list[wamp.Message] = []
        self.closed: list[str] = []

    def encode(self, message: wamp.Message) -> wamp.Message:
        return message

    def write_encoded(self, message: wamp.Message) -> None:
        self.received.append(message)

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        self.closed.append(detail)


class Response:
    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """A WampServer with --http-api on a MemoryReactorClock, and ways to talk to its router and site."""

    ports = itertools.count(41000)

    def __init__(self, tmp_path: Path, **settings: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.reactor.advance(NOW)
        self.server = WampServer(self.reactor, listen=[], web_dir=tmp_path, allowed_origins=["https://app.example"],
                                 http_api=HttpApiSettings(**settings))
        self.server.site.timeOut = None  # no idle timer on the global reactor
        self.router = self.server.router
        self.requests = itertools.count(1)

    def wamp_client(self, *raw: list[Any]) -> tuple[Any, RecordingPeer]:
        peer = RecordingPeer()
        session = self.router.attach(peer)  # type: ignore[arg-type]
        self.send(session, [1, "realm1", {"roles": {"subscriber": {}, "callee": {}, "caller": {}}}])
        for message in raw:
            self.send(session, message)
        return session, peer

    def send(self, session: Any, raw: list[Any]) -> None:
        carry_out(self.router.receive(session, decode_one(raw)), self.reactor.callLater)

    def connect(self, host: str = "127.0.0.1") -> Any:
        address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, next(self.ports))
        transport = StringTransport(peerAddress=address)
        channel = self.server.site.buildProtocol(address)
        channel.makeConnection(transport)
        return channel, transport

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None, headers: dict[str, str] | None = None,
             host: str = "127.0.0.1", method: str = "POST") -> tuple[Any, Any]:
        """Send one request on a new connection; return (channel, transport) to read the answer from."""
        data = raw if raw is not None else json.dumps(body).encode()
        fields = {"Host": "x", "Content-Type": "application/json", "Content-Length": str(len(data)), **(headers or {})}
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
        channel, transport = self.connect(host)
        channel.dataReceived(head.encode() + b"\r\n" + data)
        return channel, transport

    def answer(self, path: str, body: Any = None, **options: Any) -> Response:
        _, transport = self.post(path, body, **options)
        return Response(transport.value())


@pytest.fixture
def api(tmp_path: Path) -> Api:
    return Api(tmp_path, call_timeout=5.0, max_calls_in_flight=2)


def test_a_publication_reaches_a_subscriber_and_its_id_comes_back(api: Api) -> None:
    _, subscriber = api.wamp_client([32, 1, {}, "com.example.news"])
    response = api.answer("/publish", {"topic": "com.example.news", "args": [1], "kwargs": {"a": 2}})
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    (event,) = [m for m in subscriber.received if isinstance(m, wamp.Event)]
    assert (event.args, event.kwargs, event.publication) == ([1], {"a": 2}, response.json["id"])
    # One session serves every request of a credential.
    api.answer("/publish", {"topic": "com.example.news"})
    assert len(api.server.http_api.peers) == 1


def test_a_call_waits_for_the_callee_and_answers_with_its_result(api: Api) -> None:
    callee_session, callee = api.wamp_client([64, 1, {}, "com.example.add"])
    _, transport = api.post("/call", {"procedure": "com.example.add", "args": [2, 3]})
    assert transport.value() == b""
    (invocation,) = [m for m in callee.received if isinstance(m, wamp.Invocation)]
    assert invocation.args == [2, 3]
    api.send(callee_session, [70, invocation.request, {}, [5]])
    assert Response(transport.value()).json == {"args": [5], "kwargs": {}}


def test_a_call_not_answered_in_time_gets_504_and_is_forgotten(api: Api) -> None:
    callee_session, callee = api.wamp_client([64, 1, {}, "com.example.slow"])
    _, transport = api.post("/call", {"procedure": "com.example.slow"})
    api.reactor.advance(4.9)
    assert transport.value() == b""
    api.reactor.advance(0.2)
    response = Response(transport.value())
    assert (response.status, response.json["error"]) == (504, "wsserver.error.timeout")
    assert callee_session.invocations == set()
    (invocation,) = [m for m in callee.received if isinstance(m, wamp.Invocation)]
    api.send(callee_session, [70, invocation.request, {}, ["late"]])  # dropped, nobody to answer
    # No timer of the call's is left: only the kept-alive connection's deadline for its next request.
    assert [call.func.__name__ for call in api.reactor.getDelayedCalls()] == ["_head_too_late"]


def test_a_client_that_leaves_mid_call_leaves_nothing_behind(api: Api) -> None:
    callee_session, _ = api.wamp_client([64, 1, {}, "com.example.slow"])
    channel, _ = api.post("/call", {"procedure": "com.example.slow"})
    channel.connectionLost(Failure(ConnectionLost()))
    assert callee_session.invocations == set()
    assert not api.reactor.getDelayedCalls()
    (peer,) = api.server.http_api.peers.values()
    assert peer.waiting == {}


def test_calls_in_flight_are_bounded_per_credential(api: Api) -> None:
    api.wamp_client([64, 1, {}, "com.example.slow"])
    for _ in range(2):
        api.post("/call", {"procedure": "com.example.slow"})
    response = api.answer("/call", {"procedure": "com.example.slow"})
    assert (response.status, response.json["error"]) == (503, "wsserver.error.unavailable")


def test_a_killed_bridge_session_fails_its_waiting_calls_and_is_replaced(api: Api) -> None:
    api.wamp_client([64, 1, {}, "com.example.slow"])
    _, transport = api.post("/call", {"procedure": "com.example.slow"})
    (peer,) = api.server.http_api.peers.values()
    assert peer.session is not None
    # What wamp.session.kill does (a configured role's call: not anonymous in an open realm).
    carry_out(api.router.goodbye(peer.session, "wamp.close.killed"), api.reactor.callLater)
    response = Response(transport.value())
    assert (response.status, response.json["error"]) == (503, "wsserver.error.unavailable")
    assert api.server.http_api.peers == {}
    assert api.answer("/publish", {"topic": "com.example.x"}).status == 200
    (replacement,) = api.server.http_api.peers.values()
    assert replacement is not peer


def test_shutdown_ends_the_bridge_sessions_and_answers_what_waits(api: Api) -> None:
    api.wamp_client([64, 1, {}, "com.example.slow"])
    _, transport = api.post("/call", {"procedure": "com.example.slow"})
    api.server.http_api.stopService()
    assert Response(transport.value()).status == 503
    assert api.server.http_api.peers == {}
    assert len(api.router.realms["realm1"].sessions) == 1  # the callee alone


@pytest.mark.parametrize(
    "options, status, error",
    [
        ({"method": "GET", "raw": b""}, 405, "wsserver.error.method_not_allowed"),
        ({"headers": {"Origin": "https://evil.example"}}, 403, "wamp.error.not_authorized"),
        ({"headers": {"Content-Type": "text/plain"}}, 415, "wsserver.error.unsupported_media_type"),
        ({"headers": {"Content-Type": None}}, 415, "wsserver.error.unsupported_media_type"),
        ({"raw": b"{not json"}, 400, "wsserver.error.bad_request"),
        ({"raw": b"[" * 100_000}, 400, "wsserver.error.bad_request"),
        ({"host": "192.0.2.1"}, 403, "wamp.error.not_authorized"),
        ({"host": "::1"}, 200, None),
        ({"headers": {"Origin": "https://app.example"}}, 200, None),
    ],
)
def test_each_refusal_has_its_status(api: Api, options: dict[str, Any], status: int, error: str | None) -> None:
    response = api.answer("/publish", {"topic": "com.example.x"}, **options)
    assert response.status == status, response.body
    if error is not None:
        assert response.json["error"] == error and response.json["args"]


@pytest.mark.parametrize(
    "body, error",
    [
        ({"topic": "com.example.x", "args": {"a": 1}}, "wsserver.error.bad_request"),
        ({"topic": 7}, "wsserver.error.bad_request"),
        ({"procedure": "com.example.x"}, "wsserver.error.bad_request"),
        ({"topic": "com.example.x", "options": {"exclude": "me"}}, "wsserver.error.bad_request"),
        ({"topic": "com.example.x", "realm": ["realm1"]}, "wsserver.error.bad_request"),
        ({"topic": "com.example..x"}, "wamp.error.invalid_uri"),
        ({"topic": "wamp.session.on_join"}, None),  # the router's own checks decide, as for a WebSocket
    ],
)
def test_bodies_are_checked_as_a_websocket_clients_messages_are(api: Api, body: Any, error: str | None) -> None:
    response = api.answer("/publish", body)
    if error is None:
        assert response.status in (200, 400, 403), response.body
    else:
        assert (response.status, response.json["error"]) == (400, error), response.body


def test_a_body_over_the_limit_is_refused_from_its_headers(tmp_path: Path) -> None:
    api = Api(tmp_path)
    api.server.site.requestFactory.max_body = 100  # as --max-message-size 100 would
    api.server.http_api.max_body = 100
    channel, transport = api.connect()
    channel.dataReceived(b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000000000\r\nExpect: 100-continue\r\n\r\n")
    response = Response(transport.value())
    assert (response.status, response.json["error"]) == (413, "wsserver.error.payload_too_large")
    assert b"100 Continue" not in transport.value()
    assert transport.disconnecting
    channel.dataReceived(b"x" * 10_000)  # what the client still sends is dropped
    # A chunked body is counted as it comes.
    channel, transport = api.connect()
    channel.dataReceived(b"POST /call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\n")
    channel.dataReceived(b"40\r\n" + b"[" * 64 + b"\r\n")
    assert transport.value() == b""
    channel.dataReceived(b"40\r\n" + b"[" * 64 + b"\r\n")
    assert Response(transport.value()).status == 413
    # Below the endpoints too (they answer 404 there).
    channel, transport = api.connect()
    channel.dataReceived(b"POST /publish/x/y?z HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n")
    assert Response(transport.value()).status == 413
    response = api.answer("/call/x", {"procedure": "com.example.x"})
    assert (response.status, response.json["error"]) == (404, "wsserver.error.not_found")
    # A body within the limit is served.
    body = json.dumps({"topic": "com.example.x", "args": ["y" * 40]}).encode()
    assert len(body) <= 100 and api.answer("/publish", raw=body).status == 200


def test_with_keys_a_request_needs_one_and_gets_the_keys_role(tmp_path: Path) -> None:
    from wsserver.core.policy import Permission, RealmPolicy

    api = Api.__new__(Api)
    api.reactor = MemoryReactorClock()
    api.reactor.advance(NOW)
    realm = RealmPolicy("realm1", {
        "writer": (Permission("com.example.", "prefix", frozenset({"publish"})),),
        "reader": (Permission("com.example.", "prefix", frozenset({"subscribe"})),),
    })
    keys = (HttpKey("signer", "realm1", "writer", secret=SECRET),
            HttpKey("backend", "realm1", "reader", key_sha256=hashlib.sha256(BEARER.encode()).digest()))
    api.server = WampServer(api.reactor, listen=[], web_dir=tmp_path, realms=[realm], http_api=HttpApiSettings(keys=keys))
    api.server.site.timeOut = None
    api.router = api.server.router
    body = json.dumps({"topic": "com.example.x"}).encode()
    refused_before = TALLY.auth_failures[HTTP_KEY]
    response = api.answer("/publish", raw=body)
    assert (response.status, response.headers["www-authenticate"]) == (401, 'Bearer realm="wsserver"')
    assert api.answer("/publish", raw=body, headers={k.title(): v for k, v in signature_headers(body).items()}).status == 200
    response = api.answer("/publish", raw=body, headers={"Authorization": f"Bearer {BEARER}"})
    assert (response.status, response.json["error"]) == (403, "wamp.error.not_authorized")
    assert api.answer("/publish", raw=body, headers={"Authorization": "Bearer nope"}).status == 401
    with pytest.raises(StreamRefused):
        api.server.http_api.bearer_identity("nope")  # an event stream's key
    assert TALLY.auth_failures[HTTP_KEY] - refused_before == 3  # for the metrics (403 is not a failed login)
    sessions = api.router.realms["realm1"].sessions.values()
    assert sorted((s.authid, s.authrole, s.authmethod) for s in sessions) == [
        ("backend", "reader", "http-api"), ("signer", "writer", "http-api")]
