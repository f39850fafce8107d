"""
Server-Sent Events at ``/sse?topic=URI``: a page's ``new EventSource(url)`` (or ``curl -N``)
receives the events of the topics it names, with no WAMP library.

Theory of operation
-------------------
A GET of ``/sse`` is admitted like a WebSocket (:class:`~wsserver.transports.admission.Admission`:
the origin check, 403, and the connection counts, 503 / 429), its query parsed and its session
subscribed by a :class:`~wsserver.transports.substream.StreamSession`. Only when every topic is
subscribed does the response start: ``200``, ``Content-Type: text/event-stream; charset=utf-8``,
``Cache-Control: no-store``, ``X-Accel-Buffering: no`` (nginx would otherwise hold the events
back), and a first comment, which makes every proxy on the way pass the headers on at once. A
refusal on the way is the status with its reason as ``text/plain``: 400 bad query, 401 failed
login, 403 refused origin or topic, 404 no such realm. A browser page from another origin that
the origin check allows gets ``Access-Control-Allow-Origin`` for its origin.

Each publication is then one event::

    id: q3v9a0bKcZtX:17                  (a topic with history: the stream's position after it)
    event: com.example.ticker
    data: {"topic":"com.example.ticker","args":[42],"kwargs":{}}

A stream of topics with history begins with its position (an ``id:`` line of its own) and, given
one back (the browser's ``Last-Event-ID`` on its automatic reconnect, or ``?since=``), first
sends what the client missed, then ``event: reset`` for the topics it cannot recover (see
substream.py, "Positions and resume"). The missed events are paced as the client reads, as the
answers to a WebSocket client's own requests are.

built once per publication for every SSE stream (the wire formats :data:`SSE_CHUNKED_WIRE` and
:data:`SSE_WIRE`), and written
through the stream's own :class:`~wsserver.transports.sendbuffer.SendBuffer` (registered as the
response's producer), so a client that stops reading is held to ``--max-send-buffer``: its events
are dropped and counted, or (``--slow-consumer disconnect``) its connection is cut. A comment goes
out every :data:`HEARTBEAT_INTERVAL` seconds while nothing waits for the client, so that proxies
and browsers do not take a quiet stream for a dead one; a client that has taken nothing for
``--ping-interval`` + ``--ping-timeout`` seconds is dropped, as a WebSocket whose pong does not
come (SSE has no pong: the connection's flow control tells). Shutdown ends every response.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.wamp import message as wamp
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from wsserver.core.router import CloseReason, Router
from wsserver.delivery import Peer
from wsserver.tally import PING_TIMEOUT, TALLY
from wsserver.transports.admission import Admission, OpenConnections, Refused
from wsserver.transports.sendbuffer import CONTROL, EVENT, SendBuffer
from wsserver.transports.substream import (
    BearerKeys,
    StreamRefused,
    StreamSession,
    event_json,
    login_from,
    no_bearer_keys,
    parse_query,
)

log = Logger()

#: Where the site mounts the stream.
SSE_PATH = "sse"
#: The wire formats SSE streams share: an EVENT is encoded once for all streams of each. Over
#: HTTP/1.1 an event goes out as one pre-framed chunk of the chunked body, written to the
#: connection as WebSocket frames are (Request.write would frame it again for every stream,
#: which costs 40% of the fan-out rate); over anything else the response writes it.
SSE_CHUNKED_WIRE = ("sse", "chunked")
SSE_WIRE = ("sse",)
#: Seconds between heartbeat comments on a quiet stream. The issue asks for at most 25 s; proxies
#: commonly give up on an idle response after 30 to 60 s (nginx: proxy_read_timeout 60 s), and a
#: browser's EventSource notices a dead connection only when a write fails. 15 s leaves margin.
HEARTBEAT_INTERVAL = 15.0
HEARTBEAT = b":\n\n"
HEADERS = (
    (b"Content-Type", b"text/event-stream; charset=utf-8"),
    (b"Cache-Control", b"no-store"),
    (b"X-Accel-Buffering", b"no"),
    (b"X-Content-Type-Options", b"nosniff"),
)


def sse_event(topic: str, data: bytes, event_id: str | None = None) -> bytes:
    """
    One SSE event: ``id:`` the stream's position after it (if any), ``event:`` the topic (URIs
    and positions hold no line break), ``data:`` one line of JSON.
    """
    head = b"" if event_id is None else b"id: " + event_id.encode("ascii") + b"\n"
    return head + b"event: " + topic.encode("utf-8") + b"\ndata: " + data + b"\n\n"


def sse_reset(topics: list[str], reason: str, event_id: str) -> bytes:
    """The announcement of an unrecoverable gap: ``event: reset``, data ``{"topics", "reason"}``."""
    return b"id: " + event_id.encode("ascii") + b"\nevent: reset\ndata: " + _json({"topics": topics, "reason": reason}) + b"\n\n"


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


def chunk(data: bytes) -> bytes:
    """``data`` as one chunk of an HTTP/1.1 chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def refuse(request: Any, status: int, reason: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """Answer ``request`` with ``status`` and ``reason`` as text; returns the body to render."""
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
    request.setHeader(b"Cache-Control", b"no-store")
    for name, value in headers:
        request.setHeader(name, value)
    return reason.encode("utf-8") + b"\n"


def peer_of(request: Any) -> str:
    """The client as Autobahn names a peer (``tcp4:1.2.3.4:5678``), for Admission."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    if host is None:
        return str(address)
    return f"{'tcp6' if ':' in host else 'tcp4'}:{host}:{address.port}"


class SseStream:
    """One open event stream: the router's Peer for its session, writing to one HTTP response."""

    wire_format: object = SSE_WIRE
    transport_kind = "sse"
    #: Whether events leave as chunks of the chunked body (HTTP/1.1), written to the connection.
    chunked = False

    def __init__(self, resource: SseResource, request: Any, client_ip: str) -> None:
        self.resource = resource
        self.request = request
        self.client_ip = client_ip
        self.stream: StreamSession | None = None
        self.send_buffer: SendBuffer | None = None
        self.open = False
        self._heartbeat: IDelayedCall | None = None
        self._gone = False
        #: Since when the client has taken nothing (the connection is paused), or None.
        self._stalled_since: float | None = None

    # -- TransportInfo (wamp.session.get, the admin page) ------------------------------------------

    kind = "sse"

    def buffered_bytes(self) -> int:
        return 0 if self.send_buffer is None else self.send_buffer.counted

    # -- Peer ----------------------------------------------------------------------------------

    def encode(self, message: wamp.Message) -> Any:
        if isinstance(message, wamp.Event) and self.stream is not None:
            event: wamp.Event = message
            topic = self.stream.topic_of(event)
            data = sse_event(topic, event_json(topic, event.args, event.kwargs), self.stream.event_id(event))
            return chunk(data) if self.chunked else data
        return message

    def write_encoded(self, data: Any) -> None:
        if type(data) is bytes:
            if self.open and self.send_buffer is not None:
                self.send_buffer.write(data, EVENT)
        elif self.stream is not None:
            self.stream.answer(data)

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        if self.open:
            self.close()

    # -- the response --------------------------------------------------------------------------

    def start(self) -> None:
        """The stream is subscribed: send the headers and the first comment, start the heartbeat."""
        request = self.request
        if self._gone:
            return
        request.setResponseCode(200)
        for name, value in HEADERS:
            request.setHeader(name, value)
        assert self.stream is not None
        request.write(f": subscribed to {' '.join(self.stream.query.topics)}\n\n".encode("utf-8"))
        sink = request
        if request.chunked and isinstance(request.channel, http.HTTPChannel):
            self.wire_format, sink, self.chunked = SSE_CHUNKED_WIRE, request.channel.transport, True
        if self.stream.own_ids:
            self.wire_format = (self.wire_format, self)  # its ids are its own: it encodes its events itself
        limits = self.resource.admission.limits
        self.send_buffer = SendBuffer(sink, limits=limits, overflow=self._overflowed, peer=self.client_ip)
        request.registerProducer(self, True)
        self.open = True
        self._resume()
        self._schedule_heartbeat()

    def _resume(self) -> None:
        """
        Before any live event: what the client missed since the position it gave (the browser's
        ``Last-Event-ID``, else ``?since=``), or the stream's position now. Missed events are
        paced as the client reads (replies, see sendbuffer.py).
        """
        stream, buffer = self.stream, self.send_buffer
        assert stream is not None and buffer is not None
        last_id = self.request.getHeader(b"last-event-id")
        given = last_id.decode("utf-8", "replace") if last_id is not None else stream.query.since
        if given is None:
            current = stream.current_id()
            if current is not None:
                buffer.write(self._framed(b"id: " + current.encode("ascii") + b"\n\n"), CONTROL)
            return
        resumed = stream.resume(given)
        if resumed.reset:
            buffer.write(self._framed(sse_reset(resumed.reset, resumed.reason, resumed.id)), CONTROL)
        def missed(entry: tuple[int, Any]) -> bytes:
            place, kept = entry
            topic, publication = resumed.topics[place], kept.item
            data = event_json(topic, publication.args, publication.kwargs)
            return self._framed(sse_event(topic, data, resumed.event_id(place, kept)))

        for entry in resumed.events:
            buffer.write_reply(entry, missed)
        buffer.write_reply(resumed.id, lambda position: self._framed(b"id: " + position.encode("ascii") + b"\n\n"))

    def _framed(self, data: bytes) -> bytes:
        return chunk(data) if self.chunked else data

    def refused(self, failure: Failure) -> None:
        failure.trap(StreamRefused)
        if not self._gone:
            refusal: StreamRefused = failure.value  # type: ignore[assignment]
            self.request.write(refuse(self.request, refusal.status, refusal.reason, self.resource.cors(self.request)))
            self.request.finish()

    def close(self) -> None:
        """End the response (shutdown, the router ended the session)."""
        if self.open and not self._gone:
            self.open = False
            self.request.unregisterProducer()
            self.request.finish()

    def _overflowed(self, limit: int) -> None:
        # The client reads nothing: no last words would reach it. Free what it holds at once.
        self.open = False
        if self.stream is not None:
            self.stream.end()
        self.request.channel.transport.abortConnection()

    def gone(self, reason: Any = None) -> None:
        """The response is over, finished or lost: the session leaves, the slot is freed."""
        if self._gone:
            return
        self._gone = True
        self.open = False
        if self._heartbeat is not None and self._heartbeat.active():
            self._heartbeat.cancel()
        if self.stream is not None:
            self.stream.end()
        self.resource.streams.discard(self)
        self.resource.admission.release(self.client_ip)

    # -- IPushProducer: the send buffer's, and when the client stopped reading ----------------------

    def pauseProducing(self) -> None:
        if self._stalled_since is None:
            self._stalled_since = self.resource.clock.seconds()
        if self.send_buffer is not None:
            self.send_buffer.pauseProducing()

    def resumeProducing(self) -> None:
        self._stalled_since = None
        if self.send_buffer is not None:
            self.send_buffer.resumeProducing()

    def stopProducing(self) -> None:
        if self.send_buffer is not None:
            self.send_buffer.stopProducing()

    def _schedule_heartbeat(self) -> None:
        self._heartbeat = self.resource.clock.callLater(HEARTBEAT_INTERVAL, self._beat)

    def _beat(self) -> None:
        buffer = self.send_buffer
        if not self.open or buffer is None:
            return
        limits = self.resource.admission.limits
        stalled = self._stalled_since
        if limits.ping_interval and stalled is not None:
            if self.resource.clock.seconds() - stalled >= limits.ping_interval + limits.ping_timeout:
                # What a WebSocket that reads nothing meets: its ping waits behind the data, no pong
                # comes, and it is dropped (under --slow-consumer drop it would hold its slot forever).
                log.info("{peer} read nothing of its event stream for {seconds:g} s: dropping it",
                         peer=self.client_ip, seconds=limits.ping_interval + limits.ping_timeout)
                TALLY.disconnects[PING_TIMEOUT] += 1
                self._overflowed(0)
                return
        if not buffer.paused and not buffer.waiting:  # nothing waits: the comment goes out now
            buffer.write(self._framed(HEARTBEAT), CONTROL)
        self._schedule_heartbeat()


class SseResource(resource.Resource):
    """
    The ``/sse`` endpoint (see the module docstring). ``admission`` is the site's (one origin
    check, one connection budget); ``bearer_keys`` turns an ``Authorization: Bearer`` key into
    its realm and identity (the HTTP API's keys).
    """

    isLeaf = True

    def __init__(
        self, router: Router[Peer], admission: Admission, clock: IReactorTime, *,
        bearer_keys: BearerKeys = no_bearer_keys,
    ) -> None:
        super().__init__()
        self.router = router
        self.admission = admission
        self.clock = clock
        self.bearer_keys = bearer_keys
        self.streams = OpenConnections()

    def cors(self, request: Any) -> tuple[tuple[bytes, bytes], ...]:
        """The CORS headers for a page of an origin the origin check allowed."""
        origin = request.getHeader(b"origin")
        return ((b"Access-Control-Allow-Origin", origin), (b"Vary", b"Origin")) if origin else ()

    def render_GET(self, request: Any) -> Any:
        headers = {name.decode("latin-1").lower(): values[-1].decode("latin-1")
                   for name, values in request.requestHeaders.getAllRawHeaders()}
        try:
            client_ip = self.admission.admit(peer_of(request), headers, headers.get("origin"))
        except Refused as refused:
            return refuse(request, refused.status, refused.reason)
        params = {key.decode("utf-8", "replace"): [value.decode("utf-8", "replace") for value in values]
                  for key, values in request.args.items()}
        try:
            query = parse_query(params, next(iter(self.router.realms)))
            login = login_from(headers.get("authorization"))
        except StreamRefused as refusal:
            self.admission.release(client_ip)
            return refuse(request, refusal.status, refusal.reason, self.cors(request))
        for name, value in self.cors(request):
            request.setHeader(name, value)
        sse = SseStream(self, request, client_ip)
        sse.stream = StreamSession(sse, router=self.router, clock=self.clock, query=query, login=login,
                                   bearer_keys=self.bearer_keys, name=client_ip, address=client_ip,
                                   transport=sse)
        self.streams.add(sse)
        request.notifyFinish().addBoth(sse.gone)
        sse.stream.start().addCallbacks(lambda _: sse.start(), sse.refused)
        return server.NOT_DONE_YET

    def close_all(self, clock: IReactorTime, timeout: float) -> defer.Deferred[None]:
        """End every stream; fires when all are gone (aborted after ``timeout``)."""
        for sse in self.streams:
            sse.close()
        return self.streams.all_gone(clock, timeout, lambda sse: sse.request.channel.transport.abortConnection())
