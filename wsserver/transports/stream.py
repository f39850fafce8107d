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

A stream of topics with history begins with ``{"id": POSITION}`` and each of their events
carries ``"id"``; ``&since=POSITION`` first replays what was missed, announcing a topic it cannot
recover with ``{"reset": {"topics", "reason"}, "id"}`` (see substream.py, "Positions and resume").

Then each publication is one text frame, the JSON object ``{"topic", "args", "kwargs"}``, framed
once per publication for every ``/stream`` connection (the wire format :data:`STREAM_WIRE`, with
Autobahn's prepared messages: a server frame is not masked, so the bytes are the same for all)
and written through the connection's send buffer, bounded like ``/ws``'s. Pings, message size and
frame rate are those of every WebSocket of the site. What the client sends is read and ignored.
Shutdown closes every stream with 1001.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.wamp import message as wamp
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.python.failure import Failure

from wsserver.core.router import CloseReason, Router
from wsserver.delivery import Peer
from wsserver.transports.admission import Admission
from wsserver.transports.bounds import truncate
from wsserver.transports.deflate import DEFLATER, compressed_wire_format, use_on_demand_deflate
from wsserver.transports.echo import EchoServerFactory, EchoServerProtocol
from wsserver.transports.sendbuffer import EVENT, REPLY, ConnectionInfo
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


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("ascii")


class StreamServerProtocol(EchoServerProtocol):
    """
    One ``/stream`` connection: the router's Peer for its session. Admitted, counted and closed on
    shutdown as an ``/echo`` connection is (the site's plain WebSockets).
    """

    factory: StreamServerFactory
    wire_format = STREAM_WIRE
    transport_kind = "stream"
    stream: StreamSession | None = None
    #: The window bits of the permessage-deflate negotiated (see deflate.py), or None: uncompressed.
    _deflate_bits: int | None = None

    # -- Peer ----------------------------------------------------------------------------------

    def encode(self, message: wamp.Message) -> Any:
        if isinstance(message, wamp.Event) and self.stream is not None:
            event: wamp.Event = message
            payload = event_json(self.stream.topic_of(event), event.args, event.kwargs, self.stream.event_id(event))
            return self._frame(payload)
        return message

    def _frame(self, payload: bytes) -> bytes:
        return self.factory.deflater.frame(payload, False, self._deflate_bits)

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
        super().onConnect(request)  # admitted, or refused (403, 503, 429)
        factory = self.factory
        try:
            query = parse_query(request.params, next(iter(factory.router.realms)))
            login = login_from(request.headers.get("authorization"))
        except StreamRefused as refusal:
            raise ConnectionDeny(refusal.status, refusal.reason) from None
        self.stream = StreamSession(self, router=factory.router, clock=factory.clock, query=query, login=login,
                                    bearer_keys=factory.bearer_keys, name=self.peer, address=self._client_ip,
                                    transport=ConnectionInfo("stream", self.send_buffer))
        return self.stream.start().addErrback(self._refused)

    def _refused(self, failure: Failure) -> None:
        failure.trap(StreamRefused)
        refusal: StreamRefused = failure.value  # type: ignore[assignment]
        raise ConnectionDeny(refusal.status, refusal.reason)

    def onOpen(self) -> None:
        super().onOpen()
        stream = self.stream
        if stream is None or self.state != STATE_OPEN:
            return
        self._deflate_bits = use_on_demand_deflate(self)
        if self._deflate_bits is not None:
            self.wire_format = compressed_wire_format(STREAM_WIRE, self._deflate_bits)
        if stream.own_ids:
            self.wire_format = (STREAM_WIRE, self)  # its ids are its own: it encodes its events itself
        self._resume(stream)

    def _resume(self, stream: StreamSession) -> None:
        """
        Before any live event: what the client missed since ``&since=`` (missed events paced as it
        reads, see sendbuffer.py), or the stream's position now, ``{"id": ...}``.
        """
        if stream.query.since is None:
            current = stream.current_id()
            if current is not None:
                self.send_buffer.write(self._frame(_json({"id": current})), REPLY)
            return
        resumed = stream.resume(stream.query.since)
        if resumed.reset:
            reset = {"reset": {"topics": resumed.reset, "reason": resumed.reason}, "id": resumed.id}
            self.send_buffer.write(self._frame(_json(reset)), REPLY)
        def missed(entry: tuple[int, Any]) -> bytes:
            place, kept = entry
            topic = resumed.topics[place]
            return self._frame(event_json(topic, kept.item.args, kept.item.kwargs, resumed.event_id(place, kept)))

        for entry in resumed.events:
            self.send_buffer.write_reply(entry, missed)
        self.send_buffer.write_reply({"id": resumed.id}, lambda position: self._frame(_json(position)))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        pass  # a stream only sends; the frame bounds still apply to what the client sends

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if self.stream is not None:
            self.stream.end()


class StreamServerFactory(EchoServerFactory):
    """
    The ``/stream`` endpoint. ``admission`` is the site's (one origin check, one connection budget);
    ``bearer_keys`` turns an ``Authorization: Bearer`` key into its realm and identity. Shutdown
    (``close_all``) closes every stream with 1001, as ``/echo``'s.
    """

    protocol = StreamServerProtocol

    def __init__(
        self, router: Router[Peer], admission: Admission, reactor: Any = None, *,
        bearer_keys: BearerKeys = no_bearer_keys,
    ) -> None:
        super().__init__(admission, reactor=reactor)
        self.router = router
        self.bearer_keys = bearer_keys
        #: Compresses each event once for every compressed stream (see deflate.py).
        self.deflater = DEFLATER
