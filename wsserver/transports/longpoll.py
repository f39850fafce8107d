"""
WAMP over HTTP long-poll at ``/lp`` (``--longpoll-path``): for clients whose WebSocket cannot get
through (a proxy that strips ``Upgrade``), as the WAMP spec's long-poll transport and AutobahnJS's
``{type: "longpoll", url: ".../lp"}`` speak it.

Theory of operation
-------------------
Requests. Every request is a POST (``?x=...`` against caches is ignored); a browser's preflight
OPTIONS is answered for an allowed origin:

=========================  ==========================================================  ================
request                    what it does                                                answer
=========================  ==========================================================  ================
``/open``                  body ``{"protocols": [...]}``; the first offered protocol   200 ``{"protocol",
                           we speak wins; counts one connection of the client address  "transport"}``
``/<id>/send``             one message, or a batch for a ``.batched`` protocol          204
``/<id>/receive``          held until something waits for the client, then:           200 with it, or 204
                           one message, or for ``.batched`` all that waits (each JSON  when idle for
                           message followed by 0x1e, msgpack/cbor each after a 4-byte  RECEIVE_HOLD s
                           length)
``/<id>/close``            ends the session like a lost connection                     204
=========================  ==========================================================  ================

AutobahnJS takes only 200 or 204 as success (the spec's 202 would fail it), and gives up on a
request after 12 s, closing the transport: so an idle ``/receive`` is answered empty after
RECEIVE_HOLD seconds and the client polls again. Refusals are plain text with the reason: 400 for
a body that is not what the request takes (a WAMP message that does not decode also ends the
session, as on ``/ws``), 403 for a page of an origin ``--allowed-origin`` does not allow, 404 for an
unknown transport id, 405 for another method, 410 for a session the server ended (the reason says
why), 413 for a message over ``--max-message-size`` (ends the session, as close 1009 does on /ws),
429 and 503 for the connection limits, 429 for too many ``/send`` requests held (below).

One session = a :class:`~wsserver.transports.wampsession.WampSession` and a
:class:`~wsserver.transports.sendbuffer.SendBuffer`, as for every transport: the
:class:`LongPollSession` is the router's Peer and its buffer's transport. What a TCP transport
does with its socket, it does with ``/receive`` requests:

- the buffer *flows* while a ``/receive`` is held: a frame written to it goes into that answer.
  Unbatched, the answer is finished with the first frame; batched, with what the reactor turn
  wrote (up to BATCH_BYTES). Once answered, the session pauses the buffer, as Twisted pauses a
  producer whose transport is full;
- while no ``/receive`` is held, the client is not reading: frames wait in the buffer, events and
  pushes bounded by ``--max-send-buffer`` and ``--slow-consumer`` (the session then ends with the
  reason "not reading"), replies paced. Pacing stops "reading from the client": a ``/send``
  arriving while replies wait is held, unanswered, until they are out (at most HELD_SENDS of
  them, and ``--max-message-size`` bytes in all beyond the first, as a paused WebSocket holds
  at most one message; more get 429). So a subscriber that stops polling costs what a stalled WebSocket costs.

One ``/receive`` at a time: a second one answers the first empty (nothing is lost: only an
unanswered request is replaced) and is held instead. A ``/receive`` whose client goes away
unanswered pauses the buffer again. A message already written into an answer that then does not
arrive is lost: long-poll has no acknowledgement, as a WebSocket frame in a dying TCP connection.

Lifetime. The transport id is ``secrets.token_urlsafe`` (128 bits): it is the session's only
credential. A session with no request for ``--longpoll-timeout`` seconds (a held ``/receive``
counts as one) ends like a lost connection. When the router closes the session (GOODBYE answered,
ABORT, no HELLO in time, the send buffer over its bound) it is detached at once; what waits for the
client (the GOODBYE or ABORT) is still delivered, then ``/receive`` answers 410 with the reason and
the id is forgotten. Each session counts as one connection of its client address in the site's
one :class:`~wsserver.transports.admission.Admission` until it is forgotten. On shutdown every
session gets GOODBYE, like the WebSocket ones.

CORS. Every request's Origin passes the ``--allowed-origin`` check (else 403); an allowed one is
reflected in ``Access-Control-Allow-Origin`` with ``Access-Control-Allow-Credentials: true``, since
AutobahnJS sends its requests ``withCredentials``. Answers carry ``Cache-Control: no-store``.
"""

from __future__ import annotations

import itertools
import json
import secrets
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autobahn.wamp import message as wamp
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.web import resource, server

from wsserver.core.decoding import ProtocolViolation
from wsserver.core.router import CloseReason, Router
from wsserver.delivery import Peer
from wsserver.transports.admission import Admission, OpenConnections, Refused
from wsserver.transports.sendbuffer import ConnectionInfo, SendBuffer
from wsserver.transports.wampsession import WampSession, encoded

log = Logger()

#: Seconds an idle ``/receive`` is held before it is answered empty: under AutobahnJS's 12 s
#: request timeout (which closes its transport) with room for a slow network.
RECEIVE_HOLD = 10.0
#: A batched answer is finished once it holds this many bytes; the rest waits for the next poll
#: (as Twisted pauses a producer at its transport's 64 KiB mark).
BATCH_BYTES = 64 * 1024
#: ``/send`` requests a session may have held while its replies wait (see the module docstring);
#: AutobahnJS has one in flight per message it sends, a handful at most.
HELD_SENDS = 16
#: Bytes of randomness in a transport id (token_urlsafe: 22 characters).
ID_BYTES = 16
#: The largest ``/open`` body we read: a list of protocol names.
MAX_OPEN_BODY = 4096


@dataclass(frozen=True)
class LongPollSettings:
    """Where the long-poll transport lives and how long a session may go without a request (see tap.py)."""

    #: ``--longpoll-path``: the site path under which ``/open`` and ``/<id>/...`` live.
    path: str = "lp"
    #: ``--longpoll-timeout``: seconds without a request after which a session ends like a lost
    #: connection. Crossbar's default; three missed polls of RECEIVE_HOLD.
    session_timeout: float = 30.0


def serializers() -> dict[str, Any]:
    """
    The protocols we speak, by name (the first the client offers wins), each with autobahn's
    serializer of one message: a ``.batched`` protocol frames each itself (see :func:`batch_frame`).
    """
    found: dict[str, Any] = {}
    for kind in (JsonSerializer, MsgPackSerializer, CBORSerializer):
        serializer = kind()
        found[f"wamp.2.{serializer.SERIALIZER_ID}"] = serializer
        found[f"wamp.2.{serializer.SERIALIZER_ID}.batched"] = serializer
    return found


#: Ends each JSON message of a batch (ASCII record separator).
RECORD_SEPARATOR = b"\x1e"


def batch_frame(payload: bytes, binary: bool) -> bytes:
    """
    One message of a batch: JSON followed by 0x1e, msgpack or cbor after its length (4 bytes,
    big-endian). Not autobahn's batched serializers: its JSON one separates with b"\\30", which is
    octal, 0x18 (autobahn-python 26), where the spec and other peers use 0x1e.
    """
    return struct.pack("!I", len(payload)) + payload if binary else payload + RECORD_SEPARATOR


def split_batch(body: bytes, binary: bool) -> list[bytes]:
    """The messages of a batch (see :func:`batch_frame`); raises ProtocolViolation for a malformed or empty one."""
    if not binary:
        if not body.endswith(RECORD_SEPARATOR):
            raise ProtocolViolation("a JSON batch must end with 0x1e" if body else "an empty batch")
        return body[:-1].split(RECORD_SEPARATOR)
    payloads = []
    offset = 0
    while offset < len(body):
        if offset + 4 > len(body):
            raise ProtocolViolation("a batch ends inside a length prefix")
        (length,) = struct.unpack_from("!I", body, offset)
        offset += 4 + length
        if offset > len(body):
            raise ProtocolViolation("a batch ends inside a message")
        payloads.append(body[offset - length:offset])
    if not payloads:
        raise ProtocolViolation("an empty batch")
    return payloads


class Refusal(Exception):
    """A request answered with an HTTP error: ``status`` and the reason the body gives."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def answer(request: Any, status: int, body: bytes = b"", content_type: bytes | None = None) -> bytes:
    """Set ``status`` (and the content type) on ``request``; return ``body`` for render to send."""
    request.setResponseCode(status)
    if content_type is not None:
        request.setHeader(b"Content-Type", content_type)
    return body


def refusal(request: Any, status: int, reason: str) -> bytes:
    """A plain-text HTTP error saying ``reason`` (AutobahnJS shows the status text, a person the body)."""
    return answer(request, status, reason.encode("utf-8") + b"\n", b"text/plain; charset=utf-8")


def finish(request: Any, body: bytes) -> None:
    """Finish a request held with NOT_DONE_YET, unless its client is gone."""
    if not request._disconnected and not request.finished:
        if body:
            request.setHeader(b"Content-Length", b"%d" % len(body))
            request.write(body)
        request.finish()


class LongPollSession:
    """
    One long-poll WAMP session (see the module docstring): the router's Peer, and the transport its
    SendBuffer writes to, pauses and resumes. The endpoint calls :meth:`send`, :meth:`receive` and
    :meth:`forget` for the requests on its id.
    """

    transport_kind = "longpoll"

    def __init__(self, endpoint: LongPollEndpoint, *, transport_id: str, protocol: str, client_ip: str,
                 name: str) -> None:
        self.endpoint = endpoint
        self.transport_id = transport_id
        self.protocol = protocol
        self.client_ip = client_ip
        self.name = name
        self.serializer = endpoint.serializers[protocol]
        self.object_serializer = self.serializer._serializer
        self.binary: bool = self.object_serializer.BINARY
        self.batched = protocol.endswith(".batched")
        self.wire_format: object = ("longpoll", protocol)
        self.content_type = self.serializer.MIME_TYPE.encode() + (b"" if self.binary else b"; charset=utf-8")
        #: Why the session ended (None: it has not).
        self.ended: str | None = None
        #: The /receive held, and what its answer holds so far.
        self.receiving: Any = None
        self.answer: list[bytes] = []
        self.answer_bytes = 0
        self._flush: IDelayedCall | None = None
        self._hold: IDelayedCall | None = None
        #: Stop "reading from the client": held /send requests and their bodies.
        self.reading_paused = False
        self.held: deque[tuple[Any, bytes]] = deque()
        self.held_bytes = 0
        clock = endpoint.clock
        self.send_buffer = SendBuffer(self, limits=endpoint.admission.limits, overflow=self._overflowed, peer=name)
        self.send_buffer.pauseProducing()  # no /receive yet: the client is not reading
        self.wamp = WampSession(self, router=endpoint.router, clock=clock, limits=endpoint.admission.limits,
                                name=name, close_for_silence=self.end, close_for_internal_error=self._internal_error)
        self._deadline = clock.callLater(endpoint.settings.session_timeout, self._timed_out)

    # -- Peer (what wsserver.delivery needs) ----------------------------------------------------

    def encode(self, message: wamp.Message) -> tuple[Any, str]:
        return encoded(message, self.frame_message)

    def frame_message(self, message: wamp.Message) -> bytes:
        """One message as it goes into a /receive answer (with its batch framing when batched)."""
        payload: bytes = self.serializer.serialize(message)[0]
        return batch_frame(payload, self.binary) if self.batched else payload

    def write_encoded(self, data: tuple[Any, str]) -> None:
        if self.ended is None:
            self.send_buffer.write_encoded(data, self.frame_message)

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        self.end(f"{reason.value}: {detail}")

    # -- the SendBuffer's transport: frames leave in /receive answers ---------------------------

    def write(self, frame: bytes) -> None:
        """A frame for the client: into the held /receive's answer (the buffer flows only while one is held)."""
        self.answer.append(frame)
        self.answer_bytes += len(frame)
        if not self.batched or self.answer_bytes >= BATCH_BYTES:
            self._answer_receive()
        elif self._flush is None:
            # Everything this reactor turn writes (one fan-out, one drain) goes into one answer.
            self._flush = self.endpoint.clock.callLater(0, self._answer_receive)

    def pauseProducing(self) -> None:
        """Replies wait for the client: hold its /send requests until they are out."""
        self.reading_paused = True

    def resumeProducing(self) -> None:
        self.reading_paused = False
        # Later, not now: the buffer calls this from the middle of its drain loop.
        self.endpoint.clock.callLater(0, self._process_held)

    # -- requests ---------------------------------------------------------------------------------

    def receive(self, request: Any) -> Any:
        """Hold ``request`` until something waits for the client, or answer it now."""
        self._touch()
        if self.receiving is not None:
            self._answer_receive()  # empty: the newer request takes its place
        if self.ended is not None and not self.send_buffer.waiting:
            reason = self.ended
            self.forget(reason)
            return refusal(request, 410, reason)
        self.receiving = request
        request.notifyFinish().addErrback(lambda _: self._receive_gone(request))
        self._hold = self.endpoint.clock.callLater(RECEIVE_HOLD, self._answer_receive)
        self.send_buffer.resumeProducing()  # what waits goes into this answer
        if self.answer:
            self._answer_receive()  # batched: all that waited (unbatched answers in write)
        return server.NOT_DONE_YET

    def send(self, request: Any, body: bytes) -> Any:
        """Hand the message(s) in ``body`` to the router, now or once the replies that wait are out."""
        self._touch()
        if self.ended is not None:
            return refusal(request, 410, self.ended)
        if not self.reading_paused and not self.held:
            return self._process(request, body)
        limit = self.endpoint.admission.limits.max_message_size
        if len(self.held) >= HELD_SENDS or (self.held and self.held_bytes + len(body) > limit):
            log.info("{peer} sends faster than it polls: /send refused", peer=self.name)
            return refusal(request, 429, "too many messages wait for the answers to be polled")
        self.held.append((request, body))
        self.held_bytes += len(body)
        return server.NOT_DONE_YET

    def _process(self, request: Any, body: bytes) -> bytes:
        try:
            payloads = split_batch(body, self.binary) if self.batched else [body]
        except ProtocolViolation as violation:
            return refusal(request, 400, self.wamp.violation(str(violation)))
        for payload in payloads:
            refused = self.wamp.message_received(payload, self.binary, self.object_serializer)
            if refused is not None:
                return refusal(request, 400, refused)
        return answer(request, 204)

    def _process_held(self) -> None:
        while self.held and not self.reading_paused and self.ended is None:
            request, body = self.held.popleft()
            self.held_bytes -= len(body)
            finish(request, self._process(request, body))

    def _refuse_held(self) -> None:
        held, self.held, self.held_bytes = self.held, deque(), 0
        for request, _ in held:
            finish(request, refusal(request, 410, self.ended or "ended"))

    # -- the end ----------------------------------------------------------------------------------

    def end(self, reason: str) -> None:
        """
        The session is over (``reason`` says why, to the client's next /receive): the router
        forgets it now; what waits for the client is still delivered, then the id is forgotten.
        """
        if self.ended is None:
            log.info("{peer} ended: {reason}", peer=self.name, reason=reason)
            self.ended = reason
            self.wamp.end()
            self._refuse_held()
            if self.receiving is not None and not self.send_buffer.waiting and not self.answer:
                request, self.receiving = self.receiving, None
                self._cancel_hold()
                finish(request, refusal(request, 410, reason))
                self.forget(reason)

    def forget(self, reason: str = "closed by the client") -> None:
        """Forget the session and its id (ending it first, for ``reason``); it no longer counts against the client's connections."""
        self._answer_receive()
        self.end(reason)
        if self.endpoint.sessions.pop(self.transport_id, None) is None:
            return
        self.send_buffer.discard()
        for call in (self._deadline, self._flush):
            if call is not None and call.active():
                call.cancel()
        self.endpoint.admission.release(self.client_ip)
        self.endpoint.connections.discard(self)

    def _overflowed(self, limit: int) -> None:
        self.end(f"not reading: more than {limit} bytes unread")

    def _internal_error(self) -> None:
        self.end("internal server error")

    # -- timers -----------------------------------------------------------------------------------

    def _touch(self) -> None:
        if self._deadline.active():
            self._deadline.reset(self.endpoint.settings.session_timeout)

    def _timed_out(self) -> None:
        if self.receiving is not None:  # held: the client is there
            self._deadline = self.endpoint.clock.callLater(self.endpoint.settings.session_timeout, self._timed_out)
            return
        seconds = self.endpoint.settings.session_timeout
        self.forget(f"no request for {seconds:g} s")

    def _answer_receive(self) -> None:
        """Finish the held /receive with what its answer holds (204 when nothing); pause the buffer."""
        if self._flush is not None:
            if self._flush.active():
                self._flush.cancel()
            self._flush = None
        request, self.receiving = self.receiving, None
        body = b"".join(self.answer)
        self.answer.clear()
        self.answer_bytes = 0
        self._cancel_hold()
        if request is not None:
            self.send_buffer.pauseProducing()
            if body:
                request.setHeader(b"Content-Type", self.content_type)
            else:
                request.setResponseCode(204)
            finish(request, body)

    def _receive_gone(self, request: Any) -> None:
        if self.receiving is request:
            self.receiving = None
            self.answer.clear()
            self.answer_bytes = 0
            self._cancel_hold()
            self.send_buffer.pauseProducing()

    def _cancel_hold(self) -> None:
        hold, self._hold = self._hold, None
        if hold is not None and hold.active():
            hold.cancel()


class LongPollEndpoint(resource.Resource):
    """
    The twisted.web resource at ``/<settings.path>``: every long-poll request (see the module
    docstring). ``admission``: the site's one, shared with the WebSocket endpoints.
    """

    isLeaf = True

    def __init__(self, router: Router[Peer], admission: Admission, clock: IReactorTime,
                 settings: LongPollSettings = LongPollSettings(), *,
                 new_id: Callable[[], str] = lambda: secrets.token_urlsafe(ID_BYTES)) -> None:
        super().__init__()
        self.router = router
        self.admission = admission
        self.clock = clock
        self.settings = settings
        self.new_id = new_id
        self.serializers = serializers()
        self.sessions: dict[str, LongPollSession] = {}
        self.connections = OpenConnections()
        self._numbers = itertools.count(1)
        #: ``elsewhere(transport_id, request)``: answers a request for a transport this process does
        #: not hold but knows where it is (another worker's, see longpoll_relay.py), or returns None.
        self.elsewhere: Callable[[str, Any], Any] | None = None

    def render_OPTIONS(self, request: Any) -> bytes:
        """A browser's CORS preflight: POST with a Content-Type is what the pages send."""
        try:
            self._check_origin(request)
        except Refusal as refused:
            return refusal(request, refused.status, refused.reason)
        request.setHeader(b"Access-Control-Allow-Methods", b"POST, OPTIONS")
        request.setHeader(b"Access-Control-Allow-Headers", b"Content-Type")
        request.setHeader(b"Access-Control-Max-Age", b"600")
        return answer(request, 204)

    def render_POST(self, request: Any) -> Any:
        path = [segment.decode("ascii", "replace") for segment in request.postpath if segment]
        if self.elsewhere is not None and len(path) == 2 and path[0] not in self.sessions:
            relayed = self.elsewhere(path[0], request)
            if relayed is not None:
                return relayed
        try:
            self._check_origin(request)
            if path == ["open"]:
                return self._open(request)
            if len(path) != 2 or path[1] not in ("send", "receive", "close"):
                raise Refusal(404, "no such long-poll request: POST /open, /<id>/send, /<id>/receive or /<id>/close")
            session = self.sessions.get(path[0])
            if session is None:
                raise Refusal(404, "no such long-poll transport (it ended, or never was)")
            if path[1] == "receive":
                return session.receive(request)
            if path[1] == "send":
                return session.send(request, self._body(request, self.admission.limits.max_message_size, session))
            session.forget()
            return answer(request, 204)
        except Refusal as refused:
            return refusal(request, refused.status, refused.reason)

    def render(self, request: Any) -> Any:
        if request.method in (b"POST", b"OPTIONS"):
            return super().render(request)
        request.setHeader(b"Allow", b"POST, OPTIONS")
        return refusal(request, 405, "long-poll requests are POST")

    def _check_origin(self, request: Any) -> None:
        request.setHeader(b"Cache-Control", b"no-store")
        origin = request.getHeader(b"origin")
        if origin is None:
            return
        text = origin.decode("latin-1")
        if not self.admission.allows_origin(text):
            log.info("refused long-poll request from origin {origin}", origin=text)
            raise Refusal(403, f"origin {text} is not allowed")
        request.setHeader(b"Access-Control-Allow-Origin", origin)
        request.setHeader(b"Access-Control-Allow-Credentials", b"true")
        request.setHeader(b"Vary", b"Origin")

    def _body(self, request: Any, limit: int, session: LongPollSession | None = None) -> bytes:
        """The request body, unless it is over ``limit`` bytes (413; a session's then ends, as close 1009 does)."""
        content = request.content
        content.seek(0, 2)
        size = content.tell()
        if size > limit:
            if session is not None:
                session.end(f"a message of more than {limit} bytes")
            raise Refusal(413, f"more than {limit} bytes")
        content.seek(0)
        body: bytes = content.read()
        return body

    def _open(self, request: Any) -> bytes:
        try:
            offered = json.loads(self._body(request, MAX_OPEN_BODY))["protocols"]
            if not isinstance(offered, list):
                raise TypeError("protocols must be a list")
        except (ValueError, KeyError, TypeError) as error:
            raise Refusal(400, f'the body must be {{"protocols": [...]}}: {error}') from None
        protocol = next((p for p in offered if isinstance(p, str) and p in self.serializers), None)
        if protocol is None:
            raise Refusal(400, f"none of the protocols offered is spoken here: {', '.join(self.serializers)}")
        address = request.getClientAddress()
        host = getattr(address, "host", "?")
        peer = f"{'tcp6' if ':' in host else 'tcp4'}:{host}:{getattr(address, 'port', 0)}"
        forwarded = request.getHeader(b"x-forwarded-for")
        headers = {"x-forwarded-for": forwarded.decode("latin-1")} if forwarded else {}
        try:
            client_ip = self.admission.admit(peer, headers, None)  # the origin is checked already
        except Refused as refused:
            raise Refusal(refused.status, refused.reason) from None
        transport_id = self.new_id()
        session = LongPollSession(self, transport_id=transport_id, protocol=protocol, client_ip=client_ip,
                                  name=f"long-poll #{next(self._numbers)} from {client_ip}")
        self.sessions[transport_id] = session
        self.connections.add(session)
        session.wamp.start(client_ip, ConnectionInfo(f"longpoll/{protocol.removeprefix('wamp.2.')}", session.send_buffer))
        body = json.dumps({"protocol": protocol, "transport": transport_id}).encode()
        return answer(request, 200, body, b"application/json")

    def close_all(self, clock: IReactorTime, timeout: float) -> defer.Deferred[None]:
        """
        GOODBYE (``wamp.close.system_shutdown``) to every session; the result fires when all are
        gone. After ``timeout`` seconds the stragglers end, and are forgotten a moment later.
        """
        for session in self.connections:
            if not session.wamp.say_goodbye():
                session.forget("server shutting down")
        return self.connections.all_gone(clock, timeout, lambda session: session.forget("server shutting down"),
                                         close=lambda session: session.end("server shutting down"))
