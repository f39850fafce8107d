"""
The echo service at ``/echo``: a plain WebSocket (no WAMP) that sends every message back.

Theory of operation
-------------------
It is the classic endpoint for trying a WebSocket client by hand (``web/echo.html``) and for
checking a legacy path end to end: a text message comes back as text, a binary message as binary,
byte for byte; the text message ``quit`` closes the connection with 1000 ("quit"). No subprotocol
is negotiated, so any client that can open a WebSocket can use it, including the web-socket-js
Flash shim (text only: the shim fails a connection that receives a binary message).

Who may connect is decided by the site's one :class:`~wsserver.transports.admission.Admission`,
shared with ``/ws`` and the draft-76 adapter: the same ``--allowed-origin`` patterns and one
connection budget. A refused client gets 403 (origin), 503 (the server is full) or 429 (too many
from its address). Message size, handshake timeout and pings come from the same limits, and so do
the bounds of :mod:`~wsserver.transports.bounds`: an echo is written through the connection's send
buffer, so a client that sends and never reads is closed with 1008 once ``max_send_buffer`` bytes
of echoes wait for it (an echo is no event to drop: it is the answer the client asked for).

On shutdown every connection is closed with 1001 (:meth:`EchoServerFactory.close_all`).
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wsserver.transports.admission import Admission, ConnectionLimits, OpenConnections, Refused, protocol_options
from wsserver.transports.bounds import BoundedWebSocket
from wsserver.transports.deflate import use_on_demand_deflate

log = Logger()

#: Where the site mounts the echo service.
ECHO_PATH = "echo"
#: The text message that asks the server to close the connection.
QUIT = b"quit"


class EchoServerProtocol(BoundedWebSocket, WebSocketServerProtocol):
    """One echo connection: every message goes back as it came; ``quit`` closes."""

    factory: EchoServerFactory
    _client_ip: str | None = None

    def onConnect(self, request: Any) -> None:
        try:
            self._client_ip = self.factory.admission.admit(request.peer, request.headers, request.origin)
        except Refused as refused:
            raise ConnectionDeny(refused.status, refused.reason) from None
        return None  # accepted, without a subprotocol

    def onOpen(self) -> None:
        use_on_demand_deflate(self)  # Autobahn's codec compresses the echoes, holding zlib state only meanwhile
        self.factory.connections.add(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state != WebSocketProtocol.STATE_OPEN:
            return  # closing: Autobahn still reads until the client's close frame
        if not isBinary and payload == QUIT:
            self.sendClose(WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL, "quit")
        else:
            self.sendMessage(payload, isBinary)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        self.factory.connections.discard(self)
        if self._client_ip is not None:
            self.factory.admission.release(self._client_ip)
            self._client_ip = None


class EchoServerFactory(WebSocketServerFactory):
    """The echo endpoint; ``admission`` decides who may connect (see :class:`Admission`)."""

    protocol = EchoServerProtocol

    def __init__(self, admission: Admission, reactor: Any = None) -> None:
        super().__init__(reactor=reactor)
        if reactor is None:
            from twisted.internet import reactor
        self.clock: IReactorTime = reactor
        self.admission = admission
        self.connections = OpenConnections()
        self.setProtocolOptions(**protocol_options(admission.limits))

    @property
    def limits(self) -> ConnectionLimits:
        return self.admission.limits

    def close_all(self, clock: IReactorTime, timeout: float) -> defer.Deferred[None]:
        """Close every connection with 1001; fires when all are gone (aborted after ``timeout``)."""
        for connection in self.connections:
            connection.sendCloseFrame(WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY, b"server shutting down")
        return self.connections.all_gone(clock, timeout, lambda c: c.transport.abortConnection())

