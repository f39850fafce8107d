"""
WAMP over WebSocket: Autobahn's WebSocket server protocol, glued to the core router.

Autobahn does the WebSocket handshake, framing and subprotocol negotiation (``wamp.2.json``,
``wamp.2.msgpack``, ``wamp.2.cbor``); this module decodes each message, hands it to the router and
carries out what the router returns. It replaces Autobahn's ``onMessage`` so that a bad message is
answered the WAMP way (see :mod:`wsserver.core.decoding`) instead of with close 1011.
"""

from __future__ import annotations

import types
from typing import Any

import txaio

txaio.use_twisted()  # autobahn's serializers read txaio's clock: choose Twisted before making any

from autobahn.twisted.websocket import WampWebSocketServerFactory, WampWebSocketServerProtocol
from autobahn.wamp import message as wamp
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wsserver.core.router import CloseReason, Router
from wsserver.delivery import Peer, carry_out
from wsserver.transports import jsonwire
from wsserver.transports.admission import Admission, ConnectionLimits, OpenConnections, Refused, protocol_options
from wsserver.transports.bounds import BoundedWebSocket, truncate
from wsserver.transports.deflate import DEFLATER, compressed_wire_format, use_on_demand_deflate
from wsserver.transports.sendbuffer import HOLD, HOLD_LIMIT, REPLY, ConnectionInfo
from wsserver.transports.wampsession import WampSession, encoded

log = Logger()

STATE_OPEN = WebSocketProtocol.STATE_OPEN
#: Attributes Autobahn fills during the opening handshake and never reads again (on a server).
HANDSHAKE_LEFTOVERS = (
    "http_headers", "http_headers_cnt", "http_request_data", "http_response_data", "http_status_line",
    "http_request_uri", "http_request_path", "http_request_params", "http_request_host",
    "websocket_protocols", "websocket_extensions", "websocket_origin", "_wskey", "websocket_protocol_in_use",
    "websocket_extensions_in_use", "_transport_details",
)
#: What Autobahn sets on every connection and an idle one holds unchanged (flags, timers not
#: running, the close handshake's details, its event table): an open connection reads these from
#: its class (see ``_forget_handshake``) until Autobahn changes one.
IDLE_DEFAULTS: dict[str, Any] = {
    **dict.fromkeys(HANDSHAKE_LEFTOVERS),
    **dict.fromkeys((
        "_perMessageCompress", "trackedTimings", "wasNotCleanReason", "localCloseCode", "localCloseReason",
        "remoteCloseCode", "remoteCloseReason", "openHandshakeTimeoutCall", "closeHandshakeTimeoutCall",
        "autoPingTimeoutCall", "autoPingPending", "autoPingPendingSent",
    )),
    **dict.fromkeys((
        "wasMaxFramePayloadSizeExceeded", "wasMaxMessagePayloadSizeExceeded", "closedByMe", "failedByMe",
        "droppedByMe", "wasClean", "wasServerConnectionDropTimeout", "wasOpenHandshakeTimeout",
        "wasCloseHandshakeTimeout", "wasServingFlashSocketPolicyFile", "triggered",
    ), False),
    "send_state": WebSocketProtocol.SEND_STATE_GROUND,
    # Autobahn's observable (``on``/``fire``), which nothing here listens to: ``fire`` reads no
    # further without listeners, and ``on`` would fail loudly on the shared read-only table.
    "_valid_events": ["message"],
    "_results": {"message": None},
}
#: What the class holds for IDLE_DEFAULTS: the same values, read-only where they are containers.
SHARED_DEFAULTS = {**IDLE_DEFAULTS, "_valid_events": ("message",),
                   "_results": types.MappingProxyType({"message": None})}


def unchanged(value: Any, default: Any) -> bool:
    """Whether an attribute's ``value`` is still Autobahn's ``default`` (False is not 0, nor [] ())."""
    return value is default or (type(value) is type(default) and value == default)


#: A connection's wire format by its serializer: one object for all, as ``delivery.carry_out`` tests it by identity first.
WIRE_FORMATS = {serializer.SERIALIZER_ID: ("websocket", serializer.SERIALIZER_ID)
                for serializer in (CBORSerializer, MsgPackSerializer, JsonSerializer)}

#: WebSocket close codes for the router's close reasons.
CLOSE_CODES = {
    CloseReason.NORMAL: WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL,
    CloseReason.GOING_AWAY: WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY,
    CloseReason.PROTOCOL_VIOLATION: WebSocketProtocol.CLOSE_STATUS_CODE_PROTOCOL_ERROR,
}


def shared(serializer: Any) -> Any:
    """
    ``serializer``, one instance for all connections: Autobahn's ``onConnect`` copies it for each
    connection (``copy.copy``, for statistics per session that nothing here reads), which cost about
    a tenth of a WebSocket handshake. Its copy is now the instance itself.
    """
    kind = type(serializer)
    serializer.__class__ = type(f"Shared{kind.__name__}", (kind,), {"__copy__": lambda self: self})
    return serializer


def wamp_serializers() -> list[Any]:
    """The serializers offered, in order of preference when a client offers several."""
    json = JsonSerializer()
    json._serializer = jsonwire.json_object_serializer(json._serializer)  # the same bytes, one encoder for all: see jsonwire.py
    return [shared(CBORSerializer()), shared(MsgPackSerializer()), shared(json)]


def no_wamp_subprotocol(subprotocols: list[str]) -> str:
    """Why a WebSocket without a WAMP subprotocol is refused, and what to use instead."""
    return (f"this endpoint speaks WAMP: ask for one of the WebSocket subprotocols {', '.join(subprotocols)} "
            f"(AutobahnJS does); for events without a WAMP library, open a plain WebSocket on /stream?topic=URI "
            f"or an EventSource on /sse?topic=URI")


class WampServerProtocol(BoundedWebSocket, WampWebSocketServerProtocol):
    """One WebSocket connection carrying one WAMP session at a time."""

    factory: WampServerFactory
    #: The WAMP session, from the opening handshake on.
    wamp: WampSession | None = None

    # -- Peer (what wsserver.delivery needs) -----------------------------------------------------

    wire_format: object = None
    transport_kind = "websocket"
    _object_serializer: Any = None
    #: The window bits of the permessage-deflate negotiated (see deflate.py), or None: uncompressed.
    _deflate_bits: int | None = None

    def encode(self, message: wamp.Message) -> tuple[Any, str]:
        """
        The message framed once, and its kind for the send buffer; a REPLY stays a message, framed
        when it leaves the send buffer (see sendbuffer.py).
        """
        return encoded(message, self.frame_message)

    def frame_message(self, message: wamp.Message) -> bytes:
        """
        The message as one frame. Serialized by Autobahn's object serializer straight from
        ``marshal()``: its WAMP serializer around it only adds statistics we do not read, and the
        message's own per-serializer cache, which ``delivery.carry_out`` does better (once per
        wire format). Compressed by the factory's shared deflater if the connection negotiated
        permessage-deflate (one frame for every connection of its ``wire_format``) and the
        message is not short.
        """
        serializer = self._object_serializer
        return self.factory.deflater.frame(serializer.serialize(message.marshal()), serializer.BINARY,
                                           self._deflate_bits)

    def write_encoded(self, encoded: tuple[Any, str]) -> None:
        # This is the per-recipient fan-out path: one state test, one buffered write. Autobahn's
        # own sendData would add a debug-log call per write. A compressed frame is compressed
        # already (frame_message), so it goes out as it is too.
        if self.state == STATE_OPEN:
            frame, kind = encoded
            buffer = self.send_buffer
            held = buffer.held
            if held is not None and kind is not REPLY:
                # A read's fan-out while the buffer holds (and so flows): SendBuffer.write's first
                # case, inline, as this runs once per subscriber and event.
                held.append(frame)
                held_bytes = buffer.held_bytes = buffer.held_bytes + len(frame)
                if held_bytes > HOLD_LIMIT:
                    buffer.write_held()
            elif kind is REPLY:
                buffer.write_reply(frame, self.frame_message)
            else:
                buffer.write(frame, kind)

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            # sendCloseFrame, not sendClose: the latter refuses the protocol-level codes (1001, 1002).
            self.sendCloseFrame(CLOSE_CODES[reason], truncate(f"{reason.value}: {detail}"))

    # -- closing for the session (wsserver.transports.wampsession) ------------------------------

    def _close_for_silence(self, reason: str) -> None:
        if self.state == STATE_OPEN:
            self.sendCloseFrame(WebSocketProtocol.CLOSE_STATUS_CODE_POLICY_VIOLATION, truncate(reason))

    def _close_for_internal_error(self) -> None:
        if self.state == STATE_OPEN:
            self.sendCloseFrame(WebSocketProtocol.CLOSE_STATUS_CODE_INTERNAL_ERROR, b"internal server error")

    # -- Autobahn callbacks ------------------------------------------------------------------------

    _client_ip: str | None = None

    def onConnect(self, request: Any) -> Any:
        try:
            self._client_ip = self.factory.admission.admit(request.peer, request.headers, request.origin)
        except Refused as refused:
            raise ConnectionDeny(refused.status, refused.reason) from None
        try:
            accepted = super().onConnect(request)
        except ConnectionDeny as denied:
            # No WAMP subprotocol we speak (a plain `new WebSocket(url)`): say where to go instead.
            raise ConnectionDeny(denied.code, no_wamp_subprotocol(self.factory.protocols)) from None
        # Autobahn's WAMP serializer wraps an object serializer (bytes <-> lists): decoding uses
        # the latter directly so that wsserver.core.decoding sorts out bad messages.
        self._object_serializer = self.factory.object_serializers[self._serializer.SERIALIZER_ID]
        self.wire_format = WIRE_FORMATS[self._serializer.SERIALIZER_ID]
        return accepted

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.connections.add(self)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if self.wamp is not None:
            self.wamp.end()
        self.factory.connections.discard(self)
        if self._client_ip is not None:
            self.factory.admission.release(self._client_ip)
            self._client_ip = None

    def onOpen(self) -> None:
        bits = use_on_demand_deflate(self)
        if bits is not None:  # else the class's None: an idle connection's dict stays small
            self._deflate_bits = bits
            self.wire_format = compressed_wire_format(self.wire_format, bits)
        self._forget_handshake()
        factory = self.factory
        self.wamp = WampSession(self, router=factory.router, clock=factory.clock, limits=factory.limits,
                                name=self.peer, close_for_silence=self._close_for_silence,
                                close_for_internal_error=self._close_for_internal_error)
        kind = f"websocket/{self._serializer.SERIALIZER_ID}"
        self.wamp.start(self._client_ip, ConnectionInfo(kind, self.send_buffer))

    def _forget_handshake(self) -> None:
        """
        Drop what Autobahn keeps of the opening handshake: an idle connection should cost little
        (thousands of them sit open). Autobahn reads none of it after the handshake.
        """
        # Autobahn queues frames only for "chopped" or "sync" sends, which we never make: the
        # class's immutable empty queue instead of a deque saves ~760 bytes and fails loudly if
        # that changes. A dict sized for what is left: the handshake's leftovers and what still
        # has its default are read from the class. What Autobahn sets per message, and on the
        # first ping, fits in the room left (a dict that grows past 42 entries doubles to ~1.6 kB).
        own = self.__dict__
        own.update(dict.fromkeys(HANDSHAKE_LEFTOVERS))
        own.pop("send_queue", None)
        self.__dict__ = {name: value for name, value in own.items()
                         if name not in IDLE_DEFAULTS or not unchanged(value, IDLE_DEFAULTS[name])}

    def dataReceived(self, data: bytes) -> None:
        # Autobahn's own would format a debug-log call's arguments on every read, logged or not.
        # What the read's messages write is held until all are handled (see sendbuffer.py): one
        # write per connection and read.
        HOLD.during(self._dataReceived, data)

    def onMessageEnd(self) -> None:
        # Autobahn's own also fires its "message" signal (a Deferred per message) that no one here
        # observes; the rest is the same.
        if not self.failedByMe:
            self.onMessage(b"".join(self.message_data), self.message_is_binary)
        self.message_data = None

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.wamp is not None:
            self.wamp.message_received(payload, isBinary, self._object_serializer)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.wamp is not None:
            self.wamp.end()


for _name, _value in {**SHARED_DEFAULTS, "send_queue": ()}.items():  # see _forget_handshake
    setattr(WampServerProtocol, _name, _value)


class WampServerFactory(WampWebSocketServerFactory):
    """
    The WAMP-over-WebSocket endpoint. ``router`` is the core router all its sessions share.
    ``allowed_origins`` are Autobahn origin patterns (``*`` wildcards); a browser page from any
    other origin is refused with HTTP 403 during the handshake. A connection whose client does
    not read is held to ``limits.max_send_buffer`` bytes beyond Twisted's own buffer mark; past
    that it is closed (1008), or with the "drop" policy its events are dropped and counted.
    """

    protocol = WampServerProtocol

    def __init__(
        self,
        router: Router[Peer],
        url: str | None = None,
        allowed_origins: list[str] | None = None,
        limits: ConnectionLimits = ConnectionLimits(),
        reactor: Any = None,
        admission: Admission | None = None,
    ) -> None:
        """``admission``: shared with the site's other WebSocket endpoints (one connection budget)."""
        super().__init__(None, serializers=wamp_serializers(), url=url, reactor=reactor)
        self.router = router
        self.admission = admission or Admission(limits, allowed_origins or ["*"])
        if reactor is None:
            from twisted.internet import reactor
        self.clock: IReactorTime = reactor
        self.connections = OpenConnections()
        self.object_serializers = {s.SERIALIZER_ID: s._serializer for s in self._serializers.values()}
        #: Compresses each message once for every connection of its wire format (see deflate.py).
        self.deflater = DEFLATER
        # The origin check is the Admission's (403): Autobahn's own answers 400 and compares ports.
        self.setProtocolOptions(**protocol_options(self.admission.limits))

    @property
    def limits(self) -> ConnectionLimits:
        return self.admission.limits

    def close_all(self, clock: IReactorTime, timeout: float) -> defer.Deferred[None]:
        """
        Say GOODBYE (``wamp.close.system_shutdown``) to every session and close every
        connection; the result fires when all are gone. After ``timeout`` seconds the stragglers
        (sessions that did not answer GOODBYE) get close 1001, and are aborted a moment later.
        """
        for protocol in self.connections:
            if protocol.wamp is None or not protocol.wamp.say_goodbye():
                protocol.close_transport(CloseReason.GOING_AWAY, "server shutting down")
        return self.connections.all_gone(
            clock, timeout, lambda protocol: protocol.transport.abortConnection(),
            close=lambda protocol: protocol.close_transport(CloseReason.GOING_AWAY, "server shutting down"),
        )

