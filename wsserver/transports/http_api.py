"""
The HTTP API (``--http-api``): ``POST /publish`` and ``POST /call`` for processes that do not
speak WAMP, on the site's own port.

Theory of operation
-------------------
A request goes through these steps, and the first that fails answers it::

    body within --max-message-size     413   (refused from its headers, before it is read: BodyLimit)
    method POST                        405
    Origin (--allowed-origin, as /ws)  403
    Content-Type application/json      415   (a browser cannot send it cross-site unasked)
    credentials                        401   (a bearer key, or a signature; none: loopback only)
    JSON of the endpoint's shape       400   with the parser's reason
    realm                              404 / 403 (unknown / not the key's)
    the router, as a WAMP session      200, or the WAMP error's status (ERROR_STATUS)

**Who may.** Keys live in ``--config``, each under its realm with a role
(``[realms.NAME.http-keys.KEYNAME]``, see :mod:`wsserver.config`): ``key`` is the SHA-256 of a
bearer key (``Authorization: Bearer KEY``), ``secret`` an HMAC-SHA256 secret. A signed request
carries ``X-Wsserver-Key`` (the key's name), ``X-Wsserver-Timestamp`` (unix seconds),
``X-Wsserver-Nonce`` (8 to 64 characters of ``[A-Za-z0-9_-]``) and ``X-Wsserver-Signature``, the
hex HMAC-SHA256 of ``timestamp "\\n" nonce "\\n" body`` under the secret. Every comparison of a
secret is ``hmac.compare_digest``; a bearer key is compared with every stored key (no early exit),
and an unknown signer's signature is checked against a decoy. A timestamp more than
``max_skew`` seconds away from the server's clock is stale; a nonce is spent once its signature
checks out, and :class:`NonceCache` remembers it until its timestamp is stale anyway (two skew
windows after it was spent), so the cache holds the nonces of a few minutes only, at most
``max_nonces`` of them: when full, signed requests get 503 until nonces expire, rather than the
cache growing. Without any key configured, requests are accepted from loopback addresses only
(:func:`from_loopback`), in the realm's anonymous role.

**Through the router.** Each credential (realm, key name, role) has one WAMP session of its own,
attached and joined without HELLO (``Router.join_internal``) the first time it is used, so that
its role's permissions, the session limits (publish rate) and every check the router makes on a
WebSocket session's messages apply. Its peer (:class:`BridgePeer`) keeps the HTTP requests in
flight by WAMP request id and answers each when its PUBLISHED, RESULT or ERROR arrives. A PUBLISH
always asks for ``acknowledge`` so the publication id comes back. A CALL not answered within
``call_timeout`` gets 504 and is forgotten by the router (``Router.forget_call``): the callee's
late answer is dropped. A session has at most ``max_calls_in_flight`` calls waiting; more get 503.
A session the router closes (``wamp.session.kill``) fails its waiting requests with 503 and is
replaced on the next request; on shutdown every bridge session leaves.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import ipaddress
import itertools
import json
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import txaio

txaio.use_twisted()  # autobahn's serializers read txaio's clock: choose Twisted before making any

from autobahn.util import wildcards2patterns
from autobahn.wamp import message as wamp
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.serializer import JsonObjectSerializer
from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.web import resource, server

from wsserver.core.authentication import Identity
from wsserver.core.decoding import InvalidRequest, ProtocolViolation, decode_one
from wsserver.core.router import CloseReason, Router
from wsserver.core.session import Session
from wsserver.delivery import Peer, carry_out, carry_out_publication
from wsserver.core.limits import PUBLISH_RATE_EXCEEDED
from wsserver.tally import HTTP_KEY, TALLY
from wsserver.transports.substream import StreamRefused

log = Logger()

PUBLISH_PATH = "publish"
CALL_PATH = "call"
#: The authmethod the bridge's sessions show in the session meta API.
AUTHMETHOD = "http-api"
#: The authid of the session that serves loopback requests when no key is configured.
LOOPBACK_AUTHID = "http-api-loopback"
#: Seconds a /call waits for its RESULT before 504.
DEFAULT_CALL_TIMEOUT = 10.0

# Error URIs of the refusals the HTTP API makes itself (the router's are WAMP's).
BAD_REQUEST = "wsserver.error.bad_request"
AUTHENTICATION_FAILED = "wsserver.error.authentication_failed"
STALE_TIMESTAMP = "wsserver.error.stale_timestamp"
REPLAYED_NONCE = "wsserver.error.replayed_nonce"
PAYLOAD_TOO_LARGE = "wsserver.error.payload_too_large"
TIMEOUT = "wsserver.error.timeout"
UNAVAILABLE = "wsserver.error.unavailable"
METHOD_NOT_ALLOWED = "wsserver.error.method_not_allowed"
UNSUPPORTED_MEDIA_TYPE = "wsserver.error.unsupported_media_type"
NOT_FOUND = "wsserver.error.not_found"

#: The HTTP status of a WAMP error; an application's own error (a callee's) gets
#: APPLICATION_ERROR_STATUS, any other error of the router 400.
ERROR_STATUS = {
    ApplicationError.NOT_AUTHORIZED: 403,
    ApplicationError.NO_SUCH_PROCEDURE: 404,
    ApplicationError.NO_SUCH_REALM: 404,
    ApplicationError.INVALID_URI: 400,
    ApplicationError.INVALID_ARGUMENT: 400,
    PUBLISH_RATE_EXCEEDED: 429,
    ApplicationError.CANCELED: 502,
}
APPLICATION_ERROR_STATUS = 422

#: What each endpoint's JSON object may hold (``realm``: optional, the key's realm by default).
FIELDS = {
    PUBLISH_PATH: ("topic", "args", "kwargs", "options", "realm"),
    CALL_PATH: ("procedure", "args", "kwargs", "realm"),
}
NONCE = re.compile(r"[A-Za-z0-9_-]{8,64}")
SIGNATURE_HEADERS = ("x-wsserver-key", "x-wsserver-timestamp", "x-wsserver-nonce", "x-wsserver-signature")


@dataclass(frozen=True)
class HttpKey:
    """
    A credential of the HTTP API, named ``name`` (the authid of its session), for ``realm`` in
    ``role``: ``key_sha256`` the SHA-256 of a bearer key, ``secret`` an HMAC-SHA256 secret (or both).
    """

    name: str
    realm: str
    role: str
    key_sha256: bytes | None = None
    secret: bytes | None = None


@dataclass(frozen=True)
class HttpApiSettings:
    """The HTTP API's configuration (``--http-api``, ``--http-call-timeout``, ``--config`` keys)."""

    keys: tuple[HttpKey, ...] = ()
    call_timeout: float = DEFAULT_CALL_TIMEOUT
    #: Seconds a signed request's timestamp may be away from the server's clock.
    max_skew: float = 300.0
    #: Nonces remembered at most (two skew windows' worth, see NonceCache): about 9 MB when full.
    max_nonces: int = 100_000
    #: Calls one credential may have waiting for their answer.
    max_calls_in_flight: int = 1000


class HttpRefusal(Exception):
    """Answer the request with ``status`` and ``{"error": error, "args": [reason]}``."""

    def __init__(self, status: int, error: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason


# -- credentials (no Twisted here: a clock is given) ------------------------------------------------


class NonceCache:
    """
    Spent nonces, each remembered for at least ``keep`` seconds (two skew windows: its timestamp
    is stale by then), at most ``capacity`` of them. They are kept in generations of ``keep / 2``
    seconds, and a generation is dropped whole once its newest nonce is ``keep`` old, so a nonce is
    forgotten ``keep`` to ``1.5 * keep`` seconds after it was spent. A nonce is stored as 16 bytes
    of its SHA-256: about 9 MB for 100,000.
    """

    def __init__(self, capacity: int, keep: float) -> None:
        self.capacity = capacity
        self.keep = keep
        self.span = keep / 2
        #: (when the generation began, its nonces), oldest first.
        self._generations: deque[tuple[float, set[bytes]]] = deque()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def spend(self, nonce: bytes, now: float) -> None:
        """Remember ``nonce``; raise :class:`HttpRefusal` if it was spent, or if the cache is full."""
        generations = self._generations
        while generations and generations[0][0] + self.span + self.keep <= now:
            self._count -= len(generations.popleft()[1])
        digest = hashlib.sha256(nonce).digest()[:16]
        if any(digest in nonces for _, nonces in generations):
            raise HttpRefusal(401, REPLAYED_NONCE, "this nonce was used already")
        if self._count >= self.capacity:
            raise HttpRefusal(503, UNAVAILABLE, "too many signed requests in the replay window; try again later")
        if not generations or now >= generations[-1][0] + self.span:
            generations.append((now, set()))
        generations[-1][1].add(digest)
        self._count += 1


class Credentials:
    """Who a request is: checks bearer keys and signatures against ``keys``, with ``clock``."""

    def __init__(self, settings: HttpApiSettings, clock: Callable[[], float]) -> None:
        self.keys = settings.keys
        self.max_skew = settings.max_skew
        self.clock = clock
        self.nonces = NonceCache(settings.max_nonces, keep=2 * settings.max_skew)
        self._signers = {key.name: key for key in self.keys if key.secret is not None}

    def bearer(self, presented: str) -> HttpKey:
        """The key whose SHA-256 ``presented`` has; every stored key is compared, in constant time."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for key in self.keys:
            if key.key_sha256 is not None and hmac.compare_digest(key.key_sha256, digest):
                found = key
        if found is None:
            raise HttpRefusal(401, AUTHENTICATION_FAILED, "no such key")
        return found

    def signed(self, headers: Mapping[str, str], body: bytes) -> HttpKey:
        """The key that signed ``body`` (headers by lower-case name); its nonce is then spent."""
        name, timestamp, nonce, signature = (headers.get(header, "") for header in SIGNATURE_HEADERS)
        if not (name and timestamp and nonce and signature):
            raise HttpRefusal(401, AUTHENTICATION_FAILED, f"a signed request needs {', '.join(SIGNATURE_HEADERS)}")
        if not re.fullmatch(r"\d{1,12}", timestamp):
            raise HttpRefusal(401, AUTHENTICATION_FAILED, "X-Wsserver-Timestamp must be unix seconds")
        if not NONCE.fullmatch(nonce):
            raise HttpRefusal(401, AUTHENTICATION_FAILED, "X-Wsserver-Nonce must be 8 to 64 characters of A-Z a-z 0-9 _ -")
        now = self.clock()
        if abs(now - int(timestamp)) > self.max_skew:
            raise HttpRefusal(401, STALE_TIMESTAMP, f"timestamp is more than {self.max_skew:g} s away from the server's clock")
        key = self._signers.get(name)
        # An unknown name is checked against a decoy, so that it costs what a wrong signature costs.
        secret = key.secret if key is not None and key.secret is not None else b"\0" * 32
        expected = hmac.new(secret, f"{timestamp}\n{nonce}\n".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()) or key is None:
            raise HttpRefusal(401, AUTHENTICATION_FAILED, "bad signature")
        self.nonces.spend(f"{name}\n{nonce}".encode(), now)
        return key


def from_loopback(peer_host: str, headers: Mapping[str, str]) -> bool:
    """
    Whether a request comes from this machine: the TCP peer is a loopback address, and so is every
    address a proxy put in X-Forwarded-For (with or without --trust-proxy: a proxy on this machine
    connects from loopback for everyone, and the header is how to tell); ``Forwarded`` or
    ``X-Real-IP`` make it not loopback.
    """
    if "forwarded" in headers or "x-real-ip" in headers:
        return False
    forwarded = [entry.strip() for entry in headers.get("x-forwarded-for", "").split(",") if entry.strip()]
    return all(_is_loopback(address) for address in [peer_host, *forwarded])


def _is_loopback(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return parsed.is_loopback


# -- the bridge's sessions ----------------------------------------------------------------------------


class BridgePeer:
    """
    The peer of one bridge session (see the module's docstring): what ``wsserver.delivery`` writes
    to. It encodes nothing: the router's answers arrive as messages and answer HTTP requests.
    """

    def __init__(self, bridge: HttpApi, key: tuple[str, str, str]) -> None:
        self.bridge = bridge
        self.key = key
        self.wire_format: object = self  # never shares an encoding with another peer
        self.session: Session[Peer] | None = None
        self.waiting: dict[int, Waiting] = {}
        self._requests = itertools.count(1)

    def next_request(self) -> int:
        return next(self._requests)

    def encode(self, message: wamp.Message) -> wamp.Message:
        return message

    def write_encoded(self, message: wamp.Message) -> None:
        if isinstance(message, wamp.Published):
            self._answer(message.request, 200, {"id": message.publication})
        elif isinstance(message, wamp.Result):
            self._answer(message.request, 200, {"args": message.args or [], "kwargs": message.kwargs or {}})
        elif isinstance(message, wamp.Error):
            status = ERROR_STATUS.get(message.error)
            if status is None:
                status = 400 if message.error.startswith(("wamp.", "wsserver.")) else APPLICATION_ERROR_STATUS
            body = {"error": message.error, "args": message.args or [], "kwargs": message.kwargs or {}}
            self._answer(message.request, status, body)
        elif isinstance(message, wamp.Goodbye):
            self.close_transport(CloseReason.GOING_AWAY, message.reason)
        # Nothing else is for the bridge: its sessions subscribe to nothing and register nothing.

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        """The router ends this session (``wamp.session.kill``): fail what waits, and leave."""
        self.bridge.end(self, f"the bridge session was closed: {detail}")

    def _answer(self, request: int, status: int, body: dict[str, Any]) -> None:
        waiting = self.waiting.pop(request, None)
        if waiting is not None:
            waiting.answer(status, body)


class Waiting:
    """An HTTP request waiting for the router's answer to WAMP request ``request``, with its timer."""

    def __init__(self, http_request: Any, request: int, timer: IDelayedCall | None = None) -> None:
        self.http_request = http_request
        self.request = request
        self.timer = timer
        self.done = False

    def answer(self, status: int, body: dict[str, Any]) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        respond(self.http_request, status, body)


def respond(request: Any, status: int, body: dict[str, Any]) -> None:
    """Finish ``request`` with ``status`` and ``body`` as JSON (WAMP's JSON, bytes included)."""
    if request.finished or request._disconnected:
        return
    payload = _SERIALIZER.serialize(body)
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"X-Content-Type-Options", b"nosniff")
    request.setHeader(b"Content-Length", str(len(payload)).encode())
    request.write(payload)
    request.finish()


_SERIALIZER = JsonObjectSerializer(batched=False)


class HttpApi(Service):
    """
    The HTTP API of one router: its credentials, its bridge sessions, and the two resources to
    mount (:meth:`resources`). A child service of the server: started, it logs who may use it;
    stopped, its sessions leave and waiting requests get 503.
    """

    def __init__(
        self,
        router: Router[Peer],
        *,
        settings: HttpApiSettings,
        reactor: Any,
        allowed_origins: Sequence[str] = ("*",),
        max_body: int,
    ) -> None:
        self.router = router
        self.settings = settings
        self.reactor = reactor
        self.max_body = max_body
        self.credentials = Credentials(settings, reactor.seconds)
        self.origin_patterns = wildcards2patterns(list(allowed_origins) or ["*"])
        self.peers: dict[tuple[str, str, str], BridgePeer] = {}

    def resources(self) -> dict[bytes, resource.Resource]:
        """The resources to mount at the root of the site, by path segment."""
        return {path.encode(): Endpoint(self, path) for path in (PUBLISH_PATH, CALL_PATH)}

    def startService(self) -> None:
        super().startService()
        if self.settings.keys:
            log.info("HTTP API at /{publish} and /{call}: {count} keys configured",
                     publish=PUBLISH_PATH, call=CALL_PATH, count=len(self.settings.keys))
        else:
            log.info("HTTP API at /{publish} and /{call}: no keys configured, accepting requests from "
                     "loopback addresses only (see --config)", publish=PUBLISH_PATH, call=CALL_PATH)

    def stopService(self) -> None:
        super().stopService()
        for peer in list(self.peers.values()):
            self.end(peer, "the server is shutting down")

    # -- what the resources call ------------------------------------------------------------------

    def handle(self, path: str, request: Any) -> Any:
        """Answer one request (see the module's docstring); returns NOT_DONE_YET."""
        try:
            self._handle(path, request)
        except HttpRefusal as refusal:
            if refusal.status == 401:
                TALLY.auth_failures[HTTP_KEY] += 1
            respond(request, refusal.status, {"error": refusal.error, "args": [refusal.reason], "kwargs": {}})
        return server.NOT_DONE_YET

    def _handle(self, path: str, request: Any) -> None:
        headers = {name.decode("latin-1").lower(): b",".join(values).decode("latin-1")
                   for name, values in request.requestHeaders.getAllRawHeaders()}
        if request.method != b"POST":
            request.setHeader(b"Allow", b"POST")
            raise HttpRefusal(405, METHOD_NOT_ALLOWED, f"/{path} takes POST only")
        origin = headers.get("origin")
        if origin and not any(pattern.match(origin) for pattern in self.origin_patterns):
            raise HttpRefusal(403, ApplicationError.NOT_AUTHORIZED, f"origin {origin} is not allowed")
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise HttpRefusal(415, UNSUPPORTED_MEDIA_TYPE, "the body must be JSON: Content-Type: application/json")
        body = request.content.read(self.max_body + 1)
        # The body is in hand: drop the request's copy, which a waiting /call would keep alive.
        request.content = io.BytesIO()
        if len(body) > self.max_body:
            raise HttpRefusal(413, PAYLOAD_TOO_LARGE, f"the body is over {self.max_body} bytes (--max-message-size)")
        key = self._authenticate(request, headers, body)
        fields = parse_body(path, body)
        realm = self._realm(key, fields.get("realm"))
        identity = self._identity(key, realm)
        peer = self._peer(realm, identity)
        session = peer.session
        assert session is not None
        request_id = peer.next_request()
        message = _message(path, request_id, fields)
        if path == CALL_PATH and len(peer.waiting) >= self.settings.max_calls_in_flight:
            raise HttpRefusal(503, UNAVAILABLE, f"{self.settings.max_calls_in_flight} calls of this key are waiting already")
        waiting = Waiting(request, request_id)
        peer.waiting[request_id] = waiting
        if path == CALL_PATH:
            waiting.timer = self.reactor.callLater(self.settings.call_timeout, self._timed_out, peer, waiting)
            request.notifyFinish().addErrback(lambda _: self._gave_up(peer, waiting))
        try:
            if path == PUBLISH_PATH:
                carry_out_publication(lambda: self.router.receive(session, message), self.reactor.callLater)
            else:
                carry_out(self.router.receive(session, message), self.reactor.callLater)
        except Exception:
            peer.waiting.pop(request_id, None)
            log.failure("internal error handling an HTTP API request")
            raise HttpRefusal(500, "wsserver.error.internal", "internal error") from None
        if not waiting.done and path == PUBLISH_PATH:
            # A PUBLISH is answered at once; nothing came: the router had nothing to say.
            peer.waiting.pop(request_id, None)
            waiting.answer(500, {"error": "wsserver.error.internal", "args": ["no answer"], "kwargs": {}})

    def bearer_identity(self, presented: str) -> tuple[str, Identity]:
        """
        The realm and identity a bearer key stands for, for the event streams (/sse, /stream:
        ``substream.BearerKeys``); ``StreamRefused`` (401) for a key that is not one of ours.
        """
        try:
            key = self.credentials.bearer(presented)
        except HttpRefusal as refusal:
            TALLY.auth_failures[HTTP_KEY] += 1
            raise StreamRefused(refusal.status, refusal.reason) from None
        return key.realm, self._identity(key, key.realm)

    def _authenticate(self, request: Any, headers: Mapping[str, str], body: bytes) -> HttpKey | None:
        """The key of the request, or None for a loopback request when no key is configured."""
        authorization = headers.get("authorization", "")
        if authorization[:7].lower() == "bearer ":
            return self.credentials.bearer(authorization[7:].strip())
        if any(header in headers for header in SIGNATURE_HEADERS):
            return self.credentials.signed(headers, body)
        if self.settings.keys:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="wsserver"')
            raise HttpRefusal(401, AUTHENTICATION_FAILED, "give a key (Authorization: Bearer) or a signature")
        if not from_loopback(getattr(request.getClientAddress(), "host", ""), headers):
            raise HttpRefusal(403, ApplicationError.NOT_AUTHORIZED,
                          "no HTTP API keys are configured: only requests from this machine are accepted")
        return None

    def _realm(self, key: HttpKey | None, asked: Any) -> str:
        if asked is not None and not isinstance(asked, str):
            raise HttpRefusal(400, BAD_REQUEST, "realm must be a string")
        if key is not None:
            if asked is not None and asked != key.realm:
                raise HttpRefusal(403, ApplicationError.NOT_AUTHORIZED, f"key {key.name!r} is for realm {key.realm!r}")
            asked = key.realm
        realm = asked if asked is not None else next(iter(self.router.realms))
        if realm not in self.router.realms:
            raise HttpRefusal(404, ApplicationError.NO_SUCH_REALM, f"no realm {realm!r} on this server")
        return realm

    def _identity(self, key: HttpKey | None, realm: str) -> Identity:
        if key is not None:
            return Identity(key.name, key.role, AUTHMETHOD)
        role = self.router.realms[realm].authenticator.policy.anonymous_role
        if role is None:
            raise HttpRefusal(403, ApplicationError.NOT_AUTHORIZED,
                          f"realm {realm!r} has no anonymous role: give the HTTP API a key in --config")
        return Identity(LOOPBACK_AUTHID, role, AUTHMETHOD)

    def _peer(self, realm: str, identity: Identity) -> BridgePeer:
        """The credential's bridge session, joined the first time it is used."""
        key = (realm, identity.authid or "", identity.authrole)
        peer = self.peers.get(key)
        if peer is None:
            peer = BridgePeer(self, key)
            session = self.router.attach(peer)
            peer.session = session
            carry_out(self.router.join_internal(session, realm, identity))
            self.peers[key] = peer
            log.info("HTTP API session {session_id} for {authid} ({authrole}) in realm {realm}",
                     session_id=session.id, authid=identity.authid, authrole=identity.authrole, realm=realm)
        return peer

    def _timed_out(self, peer: BridgePeer, waiting: Waiting) -> None:
        waiting.timer = None
        self._gave_up(peer, waiting)
        seconds = self.settings.call_timeout
        waiting.answer(504, {"error": TIMEOUT, "args": [f"no answer within {seconds:g} s (--http-call-timeout)"], "kwargs": {}})

    def _gave_up(self, peer: BridgePeer, waiting: Waiting) -> None:
        """The call's answer is no longer wanted (timeout, or the HTTP client left): forget it."""
        if peer.waiting.pop(waiting.request, None) is None:
            return
        if waiting.timer is not None and waiting.timer.active():
            waiting.timer.cancel()
        if peer.session is not None:
            self.router.forget_call(peer.session, waiting.request)

    def end(self, peer: BridgePeer, reason: str) -> None:
        """End ``peer``'s session: its waiting requests get 503, and the next request joins anew."""
        if self.peers.get(peer.key) is peer:
            del self.peers[peer.key]
        session, peer.session = peer.session, None
        waiting, peer.waiting = peer.waiting, {}
        if session is not None:
            carry_out(self.router.detach(session))
        for each in waiting.values():
            each.answer(503, {"error": UNAVAILABLE, "args": [reason], "kwargs": {}})


def parse_body(path: str, body: bytes) -> dict[str, Any]:
    """The endpoint's JSON object, its fields checked for name; raises :class:`HttpRefusal` (400)."""
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise HttpRefusal(400, BAD_REQUEST, f"the body is not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise HttpRefusal(400, BAD_REQUEST, f"the body must be a JSON object with {', '.join(FIELDS[path])}")
    unknown = sorted(set(fields) - set(FIELDS[path]))
    if unknown:
        raise HttpRefusal(400, BAD_REQUEST, f"unknown fields {', '.join(unknown)} (known: {', '.join(FIELDS[path])})")
    uri = "topic" if path == PUBLISH_PATH else "procedure"
    if not isinstance(fields.get(uri), str):
        raise HttpRefusal(400, BAD_REQUEST, f"{uri} must be a string")
    for name, kind in (("args", list), ("kwargs", dict), ("options", dict)):
        if fields.get(name) is not None and not isinstance(fields[name], kind):
            raise HttpRefusal(400, BAD_REQUEST, f"{name} must be a JSON {'array' if kind is list else 'object'}")
    return fields


def _message(path: str, request_id: int, fields: dict[str, Any]) -> Any:
    """The WAMP message a WebSocket client would send for this request, decoded as the router's transports do."""
    args, kwargs = fields.get("args") or [], fields.get("kwargs") or {}
    if path == PUBLISH_PATH:
        options = {**(fields.get("options") or {}), "acknowledge": True}
        raw: list[Any] = [wamp.Publish.MESSAGE_TYPE, request_id, options, fields["topic"], args, kwargs]
    else:
        raw = [wamp.Call.MESSAGE_TYPE, request_id, {}, fields["procedure"], args, kwargs]
    try:
        message = decode_one(raw)
    except ProtocolViolation as violation:
        raise HttpRefusal(400, BAD_REQUEST, str(violation)) from None
    if isinstance(message, InvalidRequest):
        raise HttpRefusal(400, message.error, message.reason)
    return message


class Endpoint(resource.Resource):
    """``/publish`` or ``/call``: every method is answered by the :class:`HttpApi`."""

    isLeaf = True

    def __init__(self, api: HttpApi, path: str) -> None:
        super().__init__()
        self.api = api
        self.path = path

    def render(self, request: Any) -> Any:
        if [segment for segment in request.postpath if segment]:
            respond(request, 404, {"error": NOT_FOUND, "args": [f"nothing below /{self.path}"], "kwargs": {}})
            return server.NOT_DONE_YET
        return self.api.handle(self.path, request)


# -- bodies refused from their headers ----------------------------------------------------------------


class BodyLimit:
    """
    A mixin for the site's request class: a request to one of ``limited_paths`` whose body is
    declared (Content-Length) or found (chunked) to be over ``max_body`` bytes is answered 413 at
    once and its connection closed; the rest of its body is read and dropped, never stored.
    Twisted would otherwise spool the whole body (to memory, or to a temporary file past 100 kB)
    before the resource could refuse it.
    """

    limited_paths: frozenset[bytes] = frozenset()
    max_body = 0
    _body_refused = False
    _body_seen = 0

    def gotLength(self, length: int | None) -> None:
        channel: Any = getattr(self, "channel")
        path = getattr(channel, "_path", b"").split(b"?", 1)[0]
        if any(path == limited or path.startswith(limited + b"/") for limited in self.limited_paths):
            self._body_seen = 0
            if length is not None and length > self.max_body:
                self._refuse_body()
                return
        else:
            self._body_seen = -1  # not ours to count
        super().gotLength(length)  # type: ignore[misc]

    def handleContentChunk(self, data: bytes) -> None:
        if self._body_refused:
            return
        if self._body_seen >= 0:
            self._body_seen += len(data)
            if self._body_seen > self.max_body:
                self._refuse_body()
                return
        super().handleContentChunk(data)  # type: ignore[misc]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self._body_refused:
            super().requestReceived(command, path, version)  # type: ignore[misc]

    def _refuse_body(self) -> None:
        self._body_refused = True
        channel: Any = getattr(self, "channel")
        requests: Any = getattr(self, "requestHeaders")
        requests.removeHeader(b"Expect")  # no "100 Continue" after the refusal
        body = _SERIALIZER.serialize({
            "error": PAYLOAD_TOO_LARGE, "args": [f"the body is over {self.max_body} bytes (--max-message-size)"],
            "kwargs": {},
        })
        channel.transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        channel.loseConnection()


def body_limited(base: type[server.Request], max_body: int) -> type[server.Request]:
    """The site's request class ``base`` with a :class:`BodyLimit` of ``max_body`` on /publish and /call."""
    paths = frozenset(f"/{path}".encode() for path in (PUBLISH_PATH, CALL_PATH))
    namespace = {"limited_paths": paths, "max_body": max_body}
    return type(f"BodyLimited{base.__name__}", (BodyLimit, base), namespace)
