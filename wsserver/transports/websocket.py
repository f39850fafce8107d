"""
WAMP over WebSocket: Autobahn's WebSocket server protocol, glued to the core router.

Autobahn does the WebSocket handshake, framing and subprotocol negotiation (``wamp.2.json``,
``wamp.2.msgpack``, ``wamp.2.cbor``); this module decodes each message, hands it to the router and
carries out what the router returns. It replaces Autobahn's ``onMessage`` so that a bad message is
answered the WAMP way (see :mod:`wsserver.core.decoding`) instead of with close 1011.
"""

from __future__ import annotations

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
from wsserver.transports.admission import Admission, ConnectionLimits, OpenConnections, Refused, protocol_options
from wsserver.transports.bounds import BoundedWebSocket, truncate
from wsserver.transports.deflate import DEFLATE, SharedDeflater, use_on_demand_deflate
from wsserver.transports.sendbuffer import REPLY, ConnectionInfo
from wsserver.transports.wampsession import WampSession, encoded

log = Logger()

STATE_OPEN = WebSocketProtocol.STATE_OPEN
#: Attributes Autobahn fills during the opening handshake and never reads again.
HANDSHAKE_LEFTOVERS = (
    "http_headers", "http_headers_cnt", "http_request_data", "http_response_data", "http_status_line",
    "http_request_uri", "http_request_path", "http_request_params", "http_request_host",
    "websocket_protocols", "websocket_extensions", "_wskey",
)


#: WebSocket close codes for the router's close reasons.
CLOSE_CODES = {
    CloseReason.NORMAL: WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL,
    CloseReason.GOING_AWAY: WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY,
    CloseReason.PROTOCOL_VIOLATION: WebSocketProtocol.CLOSE_STATUS_CODE_PROTOCOL_ERROR,
}


def wamp_serializers() -> list[Any]:
    """The serializers offered, in order of preference when a client offers several."""
    return [CBORSerializer(), MsgPackSerializer(), JsonSerializer()]


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
        The message as one frame: compressed by the factory's shared deflater if the connection
        negotiated permessage-deflate (one frame for every connection of its ``wire_format``),
        else (or if it is short) Autobahn's PreparedMessage.
        """
        payload, is_binary = self._serializer.serialize(message)
        if self._deflate_bits is not None:
            frame = self.factory.deflater.frame(payload, is_binary, self._deflate_bits)
            if frame is not None:
                return frame
        return self.factory.prepareMessage(payload, is_binary).payloadHybi

    def write_encoded(self, encoded: tuple[Any, str]) -> None:
        # This is the per-recipient fan-out path: one state test, one buffered write. Autobahn's
        # own sendData would add a debug-log call per write. A compressed frame is compressed
        # already (frame_message), so it goes out as it is too.
        if self.state == STATE_OPEN:
            frame, kind = encoded
            if kind is REPLY:
                self.send_buffer.write_reply(frame, self.frame_message)
            else:
                self.send_buffer.write(frame, kind)

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
        self.wire_format = ("websocket", self._serializer.SERIALIZER_ID)
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
        self._deflate_bits = use_on_demand_deflate(self)
        if self._deflate_bits is not None:
            self.wire_format = (*self.wire_format, DEFLATE, self._deflate_bits)  # type: ignore[misc]
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
        for name in HANDSHAKE_LEFTOVERS:
            setattr(self, name, None)
        # Autobahn queues frames only for "chopped" or "sync" sends, which we never make: an
        # immutable empty queue instead of a deque saves ~760 bytes and fails loudly if that changes.
        self.send_queue = ()
        # One serializer for all connections: Autobahn copies it per connection only for statistics.
        self._serializer = self.factory._serializers[self._serializer.SERIALIZER_ID]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.wamp is not None:
            self.wamp.message_received(payload, isBinary, self._object_serializer)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.wamp is not None:
            self.wamp.end()


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
        self.deflater = SharedDeflater()
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

