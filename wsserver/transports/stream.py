"""
A plain WebSocket stream at ``/stream?topic=URI``: a page needs nothing but ``new WebSocket(url)``
and ``JSON.parse(event.data)``.

Theory of operation
-------------------
No subprotocol is negotiated. During the opening handshake (Autobahn's ``onConnect``) the client
is admitted like any WebSocket of the site (origin 403, connection counts 503 / 429), the query
is parsed (the same as ``/sse``'s: ``topic`` repeatable, ``match``, ``realm``) and a
:class:`~wsserver.transports.substream.StreamSession` logs in and subscribes; ``onConnect`` answers
with a Deferred, and the handshake completes (101) only when every topic is subscribed. A refusal
fails the handshake with its status and the reason as the response's text body
(:class:`~wsserver.transports.bounds.BoundedWebSocket`): 400 bad query, 401 failed login, 403
refused origin or topic, 404 no such realm.

Then each publication is one text frame, the JSON object ``{"topic", "args", "kwargs"}``, framed
once per publication for every ``/stream`` connection (the wire format :data:`STREAM_WIRE`, with
Autobahn's prepared messages: a server frame is not masked, so the bytes are the same for all)
and written through the connection's send buffer, bounded like ``/ws``'s. Pings, message size and
frame rate are those of every WebSocket of the site. What the client sends is read and ignored.
Shutdown closes every stream with 1001.
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.wamp import message as wamp
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from wsserver.core.router import CloseReason, Router
from wsserver.delivery import Peer
from wsserver.transports.admission import Admission, ConnectionLimits, OpenConnections, Refused, protocol_options
from wsserver.transports.bounds import BoundedWebSocket, truncate
from wsserver.transports.sendbuffer import EVENT
from wsserver.transports.substream import (
    BearerKeys,
    StreamRefused,
    StreamSession,
    event_json,
    login_from,
    no_bearer_keys,
    parse_query,
)

#: Where the site mounts the stream.
STREAM_PATH = "stream"
#: The wire format every /stream connection shares: an EVENT is framed once for all of them.
STREAM_WIRE = ("stream",)
STATE_OPEN = WebSocketProtocol.STATE_OPEN


class StreamServerProtocol(BoundedWebSocket, WebSocketServerProtocol):
    """One ``/stream`` connection: the router's Peer for its session."""

    factory: StreamServerFactory
    wire_format = STREAM_WIRE
    stream: StreamSession | None = None
    _client_ip: str | None = None

    # -- Peer ----------------------------------------------------------------------------------

    def encode(self, message: wamp.Message) -> Any:
        if type(message) is wamp.Event and self.stream is not None:
            event: wamp.Event = message  # type: ignore[assignment]
            payload = event_json(self.stream.topic_of(event), event.args, event.kwargs)
            return self.factory.prepareMessage(payload, False).payloadHybi
        return message

    def write_encoded(self, data: Any) -> None:
        if type(data) is bytes:
            if self.state == STATE_OPEN:
                self.send_buffer.write(data, EVENT)
        elif self.stream is not None:
            self.stream.answer(data)

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        if self.state == STATE_OPEN:
            self.sendCloseFrame(WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY, truncate(detail))

    # -- Autobahn callbacks ----------------------------------------------------------------------

    def onConnect(self, request: Any) -> Any:
        factory = self.factory
        try:
            self._client_ip = factory.admission.admit(request.peer, request.headers, request.origin)
        except Refused as refused:
            raise ConnectionDeny(refused.status, refused.reason) from None
        try:
            query = parse_query(request.params, next(iter(factory.router.realms)))
            login = login_from(request.headers.get("authorization"))
        except StreamRefused as refusal:
            raise ConnectionDeny(refusal.status, refusal.reason) from None
        self.stream = StreamSession(self, router=factory.router, clock=factory.clock, query=query, login=login,
                                    bearer_keys=factory.bearer_keys, name=self.peer)
        return self.stream.start().addErrback(self._refused)

    def _refused(self, failure: Failure) -> None:
        failure.trap(StreamRefused)
        refusal: StreamRefused = failure.value  # type: ignore[assignment]
        raise ConnectionDeny(refusal.status, refusal.reason)

    def onOpen(self) -> None:
        self.factory.connections.add(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass  # a stream only sends; the frame bounds still apply to what the client sends

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if self.stream is not None:
            self.stream.end()
        self.factory.connections.discard(self)
        if self._client_ip is not None:
            self.factory.admission.release(self._client_ip)
            self._client_ip = None


class StreamServerFactory(WebSocketServerFactory):
    """
    The ``/stream`` endpoint. ``admission`` is the site's (one origin check, one connection budget);
    ``bearer_keys`` turns an ``Authorization: Bearer`` key into its realm and identity.
    """

    protocol = StreamServerProtocol

    def __init__(
        self, router: Router[Peer], admission: Admission, reactor: Any = None, *,
        bearer_keys: BearerKeys = no_bearer_keys,
    ) -> None:
        super().__init__(reactor=reactor)
        if reactor is None:
            from twisted.internet import reactor
        self.clock: IReactorTime = reactor
        self.router = router
        self.admission = admission
        self.bearer_keys = bearer_keys
        self.connections = OpenConnections()
        self.setProtocolOptions(**protocol_options(admission.limits))

    @property
    def limits(self) -> ConnectionLimits:
        return self.admission.limits

    def close_all(self, clock: IReactorTime, timeout: float) -> defer.Deferred[None]:
        """Close every stream with 1001; fires when all are gone (aborted after ``timeout``)."""
        for connection in self.connections:
            connection.close_transport(CloseReason.GOING_AWAY, "server shutting down")
        return self.connections.all_gone(clock, timeout, lambda c: c.transport.abortConnection())
