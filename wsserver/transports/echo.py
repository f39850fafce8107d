"""
The echo service at ``/echo``: a plain WebSocket (no WAMP) that sends every message back.

Theory of operation
-------------------
It is the classic endpoint for trying a WebSocket client by hand (``web/echo.html``) and for
checking a legacy path end to end: a text message comes back as text, a binary message as binary,
byte for byte; the text message ``quit`` closes the connection with 1000 ("quit"). No subprotocol
is negotiated, so any client that can open a WebSocket can use it, including the web-socket-js
Flash shim (text only: the shim fails a connection that receives a binary message).

Who may connect is decided by an :class:`Admission`: the same ``--allowed-origin`` patterns and
connection limits (``ConnectionLimits``) as ``/ws``, counted for the endpoints outside
:mod:`wsserver.transports.websocket`: this one and everything the draft-76 adapter
(:mod:`wsserver.transports.hixie76`) carries. A refused client gets 403 (origin), 503 (the server
is full) or 429 (too many from its address), as on ``/ws``. Message size, handshake timeout and
pings come from the same limits too.

On shutdown every connection is closed with 1001 (:meth:`EchoServerFactory.close_all`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import wildcards2patterns
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wsserver.transports.websocket import ConnectionLimits, client_address

log = Logger()

#: Where the site mounts the echo service.
ECHO_PATH = "echo"
#: The text message that asks the server to close the connection.
QUIT = b"quit"


class Refused(Exception):
    """A connection the :class:`Admission` does not let in: the HTTP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Admission:
    """
    The origin check and the connection counts for a set of endpoints. Call :meth:`admit` during
    the handshake and, if it returned, :meth:`release` with its result when the connection ends.
    """

    def __init__(self, limits: ConnectionLimits, allowed_origins: Sequence[str] = ("*",)) -> None:
        self.limits = limits
        self.origin_patterns = wildcards2patterns(list(allowed_origins) or ["*"])
        #: Open connections per client address, and in all.
        self.open_by_ip: dict[str, int] = {}
        self.admitted = 0

    def admit(self, peer: str, headers: Mapping[str, str], origin: str | None) -> str:
        """
        Count one more connection from ``peer`` (Autobahn's "tcp4:1.2.3.4:5678") and return the
        client address it is counted under; raise :class:`Refused` instead when it may not open.
        ``headers``: lower-case names (X-Forwarded-For counts behind a trusted proxy).
        """
        client_ip = client_address(peer, headers, self.limits.trust_proxy)
        if origin and not any(p.match(origin) for p in self.origin_patterns):
            # Cross-site WebSocket hijacking: see WampServerProtocol.onConnect.
            log.info("refused WebSocket from origin {origin} ({ip})", origin=origin, ip=client_ip)
            raise Refused(403, f"origin {origin} is not allowed")
        if self.admitted >= self.limits.max_connections:
            log.warn("refused WebSocket from {ip}: {limit} connections open (--max-connections)",
                     ip=client_ip, limit=self.limits.max_connections)
            raise Refused(503, "server is at its connection limit")
        if self.open_by_ip.get(client_ip, 0) >= self.limits.max_connections_per_ip:
            log.info("refused WebSocket from {ip}: {limit} connections from there (--max-connections-per-ip)",
                     ip=client_ip, limit=self.limits.max_connections_per_ip)
            raise Refused(429, "too many connections from your address")
        self.open_by_ip[client_ip] = self.open_by_ip.get(client_ip, 0) + 1
        self.admitted += 1
        return client_ip

    def release(self, client_ip: str) -> None:
        """One connection counted by :meth:`admit` is gone."""
        self.admitted -= 1
        remaining = self.open_by_ip[client_ip] - 1
        if remaining:
            self.open_by_ip[client_ip] = remaining
        else:
            del self.open_by_ip[client_ip]


class OpenConnections:
    """The live connections of one endpoint, and a way to wait until none is left."""

    def __init__(self) -> None:
        self.live: set[Any] = set()
        self._waiting_for_none: list[defer.Deferred[None]] = []

    def add(self, connection: Any) -> None:
        self.live.add(connection)

    def discard(self, connection: Any) -> None:
        self.live.discard(connection)
        if not self.live:
            waiting, self._waiting_for_none = self._waiting_for_none, []
            for waiter in waiting:
                waiter.callback(None)

    def __iter__(self) -> Any:
        return iter(list(self.live))

    def __len__(self) -> int:
        return len(self.live)

    def all_gone(self, clock: IReactorTime, timeout: float, abort: Callable[[Any], None]) -> defer.Deferred[None]:
        """Fires when every connection is gone; after ``timeout`` seconds, ``abort`` the stragglers."""
        if not self.live:
            return defer.succeed(None)
        gone: defer.Deferred[None] = defer.Deferred()
        self._waiting_for_none.append(gone)

        def abort_stragglers() -> None:
            for connection in list(self.live):
                abort(connection)

        deadline = clock.callLater(timeout, abort_stragglers)
        gone.addBoth(lambda result: deadline.cancel() if deadline.active() else None)
        return gone


def protocol_options(limits: ConnectionLimits) -> dict[str, Any]:
    """Autobahn protocol options for ``limits``, as ``/ws`` sets them (see WampServerFactory)."""
    return {
        "maxMessagePayloadSize": limits.max_message_size,
        "maxFramePayloadSize": limits.max_message_size,
        "failByDrop": False,
        "openHandshakeTimeout": limits.handshake_timeout,
        "autoPingInterval": limits.ping_interval,
        "autoPingTimeout": limits.ping_timeout,
    }


class EchoServerProtocol(WebSocketServerProtocol):
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
        self.factory.connections.add(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
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
        self.admission = admission
        self.connections = OpenConnections()
        self.setProtocolOptions(**protocol_options(admission.limits))

    def close_all(self, clock: IReactorTime, timeout: float) -> defer.Deferred[None]:
        """Close every connection with 1001; fires when all are gone (aborted after ``timeout``)."""
        for connection in self.connections:
            connection.sendCloseFrame(WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY, b"server shutting down")
        return self.connections.all_gone(clock, timeout, lambda c: c.transport.abortConnection())

