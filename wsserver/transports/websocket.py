"""
WAMP over WebSocket: Autobahn's WebSocket server protocol, glued to the core router.

Autobahn does the WebSocket handshake, framing and subprotocol negotiation (``wamp.2.json``,
``wamp.2.msgpack``, ``wamp.2.cbor``); this module decodes each message, hands it to the router and
carries out what the router returns. It replaces Autobahn's ``onMessage`` so that a bad message is
answered the WAMP way (see :mod:`wsserver.core.decoding`) instead of with close 1011.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import txaio

txaio.use_twisted()  # autobahn's serializers read txaio's clock: choose Twisted before making any

from autobahn.twisted.websocket import WampWebSocketServerFactory, WampWebSocketServerProtocol
from autobahn.wamp import message as wamp
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.util import wildcards2patterns
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionDeny
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wsserver.core.decoding import ProtocolViolation, decode
from wsserver.core.router import CloseReason, Router
from wsserver.core.session import Session, State
from wsserver.delivery import Peer, carry_out

log = Logger()

STATE_OPEN = WebSocketProtocol.STATE_OPEN
#: Attributes Autobahn fills during the opening handshake and never reads again.
HANDSHAKE_LEFTOVERS = (
    "http_headers", "http_headers_cnt", "http_request_data", "http_response_data", "http_status_line",
    "http_request_uri", "http_request_path", "http_request_params", "http_request_host",
    "websocket_protocols", "websocket_extensions", "_wskey",
)
#: Slow-consumer policies: close the connection, or drop the events it cannot take.
DISCONNECT, DROP = "disconnect", "drop"
SLOW_CONSUMER_POLICIES = (DISCONNECT, DROP)

@dataclass(frozen=True)
class ConnectionLimits:
    """What one client may cost the server; each is a ``twistd wsserver`` option (see tap.py)."""

    max_message_size: int = 1024 * 1024
    #: Bytes a client may leave unread beyond Twisted's buffer mark, then the policy applies.
    max_send_buffer: int = 1024 * 1024
    slow_consumer_policy: str = DISCONNECT
    max_connections: int = 10_000
    max_connections_per_ip: int = 256
    #: Take the client's address from X-Forwarded-For (only behind a proxy that sets it).
    trust_proxy: bool = False
    handshake_timeout: float = 10.0
    hello_timeout: float = 10.0
    ping_interval: float = 30.0
    ping_timeout: float = 10.0


#: WebSocket close codes for the router's close reasons.
CLOSE_CODES = {
    CloseReason.NORMAL: WebSocketProtocol.CLOSE_STATUS_CODE_NORMAL,
    CloseReason.GOING_AWAY: WebSocketProtocol.CLOSE_STATUS_CODE_GOING_AWAY,
    CloseReason.PROTOCOL_VIOLATION: WebSocketProtocol.CLOSE_STATUS_CODE_PROTOCOL_ERROR,
}
#: A close reason must fit in a control frame (125 bytes with the code).
MAX_CLOSE_REASON = 120


def wamp_serializers() -> list[Any]:
    """The serializers offered, in order of preference when a client offers several."""
    return [CBORSerializer(), MsgPackSerializer(), JsonSerializer()]


class WampServerProtocol(WampWebSocketServerProtocol):
    """One WebSocket connection carrying one WAMP session at a time."""

    factory: WampServerFactory
    session: Session[Peer] | None = None

    # -- Peer (what wsserver.delivery needs) -----------------------------------------------------

    wire_format: object = None
    _object_serializer: Any = None

    def encode(self, message: wamp.Message) -> tuple[bytes, bool]:
        """The message framed once (Autobahn's PreparedMessage), and whether it may be dropped."""
        payload, is_binary = self._serializer.serialize(message)
        frame = self.factory.prepareMessage(payload, is_binary).payloadHybi
        return frame, type(message) is wamp.Event

    def write_encoded(self, encoded: tuple[bytes, bool]) -> None:
        # This is the per-recipient fan-out path: one attribute test, one buffered write. Autobahn's
        # own sendData would add a debug-log call per write. Compression is never negotiated
        # (the factory accepts no permessage-deflate offer), so the prepared frame is what goes out.
        if self._send_paused:
            self._write_backlogged(encoded)
        elif self.state == STATE_OPEN:
            self.transport.write(encoded[0])

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            # sendCloseFrame, not sendClose: the latter refuses the protocol-level codes (1001, 1002).
            self.sendCloseFrame(CLOSE_CODES[reason], _truncate(f"{reason.value}: {detail}"))

    # -- slow consumers: IPushProducer, registered with our transport ---------------------------
    #
    # Twisted pauses a streaming producer when the transport's write buffer passes its high-water
    # mark (64 KiB) and resumes it once the buffer is empty again. While paused, the client is not
    # reading as fast as we write: everything written until the resume is counted, and when that
    # passes the factory's max_send_buffer the slow-consumer policy applies. So the buffer a
    # connection can hold is bounded by the transport's mark plus max_send_buffer.

    _send_paused = False
    _backlog = 0
    dropped_events = 0
    _dropping = False

    def pauseProducing(self) -> None:
        self._send_paused = True

    def resumeProducing(self) -> None:
        self._send_paused = False
        self._backlog = 0
        if self._dropping:
            self._dropping = False
            log.info("{peer} reads again; {count} events were dropped for it so far",
                     peer=self.peer, count=self.dropped_events)

    def stopProducing(self) -> None:
        self._send_paused = True

    def _write_backlogged(self, encoded: tuple[bytes, bool]) -> None:
        frame, droppable = encoded
        if self.state != STATE_OPEN:
            return
        limit = self.factory.limits.max_send_buffer
        if self._backlog + len(frame) <= limit:
            self._backlog += len(frame)
            self.transport.write(frame)
        elif self.factory.limits.slow_consumer_policy == DROP and droppable:
            self.dropped_events += 1
            if not self._dropping:
                self._dropping = True
                log.info("{peer} is not reading: dropping its events (over {limit} bytes buffered)",
                         peer=self.peer, limit=limit)
        else:
            log.info("{peer} is not reading: disconnecting it (over {limit} bytes buffered)",
                     peer=self.peer, limit=limit)
            # The close frame queues behind what is buffered; Autobahn drops the connection when
            # the close handshake times out, which frees the buffer.
            self.sendCloseFrame(
                WebSocketProtocol.CLOSE_STATUS_CODE_POLICY_VIOLATION,
                _truncate(f"slow consumer: more than {limit} bytes unread"),
            )

    # -- Autobahn callbacks ------------------------------------------------------------------------

    _client_ip: str | None = None
    _hello_deadline: Any = None

    def onConnect(self, request: Any) -> Any:
        self._admit(request)
        origin = request.origin
        if origin and not any(p.match(origin) for p in self.factory.origin_patterns):
            # Cross-site WebSocket hijacking: a page from a foreign site must not ride on the
            # user's cookies. Non-browser clients send no Origin and are not affected.
            log.info("refused WebSocket from origin {origin} ({peer})", origin=origin, peer=self.peer)
            raise ConnectionDeny(ConnectionDeny.FORBIDDEN, f"origin {origin} is not allowed")
        accepted = super().onConnect(request)
        # Autobahn's WAMP serializer wraps an object serializer (bytes <-> lists): decoding uses
        # the latter directly so that wsserver.core.decoding sorts out bad messages.
        self._object_serializer = self.factory.object_serializers[self._serializer.SERIALIZER_ID]
        self.wire_format = ("websocket", self._serializer.SERIALIZER_ID)
        return accepted

    def connectionMade(self) -> None:
        super().connectionMade()
        self.factory.connections.add(self)
        # Over twisted.web, the HTTP channel is still registered as the transport's producer.
        self.transport.unregisterProducer()
        self.transport.registerProducer(self, True)

    def connectionLost(self, reason: Any) -> None:
        super().connectionLost(reason)
        if self._hello_deadline is not None and self._hello_deadline.active():
            self._hello_deadline.cancel()
        self.factory.connection_gone(self)

    def _admit(self, request: Any) -> None:
        """Refuse the upgrade (503/429) when the server, or this client's address, has too many."""
        factory = self.factory
        client_ip = client_address(request.peer, request.headers, factory.limits.trust_proxy)
        if factory.admitted >= factory.limits.max_connections:
            log.warn("refused WebSocket from {ip}: {limit} connections open (--max-connections)",
                     ip=client_ip, limit=factory.limits.max_connections)
            raise ConnectionDeny(ConnectionDeny.SERVICE_UNAVAILABLE, "server is at its connection limit")
        if factory.open_by_ip.get(client_ip, 0) >= factory.limits.max_connections_per_ip:
            log.info("refused WebSocket from {ip}: {limit} connections from there (--max-connections-per-ip)",
                     ip=client_ip, limit=factory.limits.max_connections_per_ip)
            raise ConnectionDeny(429, "too many connections from your address")
        factory.open_by_ip[client_ip] = factory.open_by_ip.get(client_ip, 0) + 1
        factory.admitted += 1
        self._client_ip = client_ip

    def onOpen(self) -> None:
        self._forget_handshake()
        self.session = self.factory.router.attach(self)
        # A WebSocket that never says HELLO holds a connection slot for nothing.
        self._hello_deadline = self.factory.clock.callLater(self.factory.limits.hello_timeout, self._hello_timed_out)

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

    def _hello_timed_out(self) -> None:
        session = self.session
        if session is not None and session.id == 0 and self.state == STATE_OPEN:
            log.info("{peer} sent no HELLO within {seconds} s", peer=self.peer, seconds=self.factory.limits.hello_timeout)
            self.sendCloseFrame(
                WebSocketProtocol.CLOSE_STATUS_CODE_POLICY_VIOLATION,
                _truncate(f"no WAMP HELLO within {self.factory.limits.hello_timeout:g} s"),
            )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if session is None:
            return
        if self._hello_deadline is not None:
            # The first message decides: a HELLO, or a violation that closes the connection.
            if self._hello_deadline.active():
                self._hello_deadline.cancel()
            self._hello_deadline = None
        router = self.factory.router
        serializer = self._object_serializer
        try:
            if isBinary != serializer.BINARY:
                kind = "binary" if isBinary else "text"
                raise ProtocolViolation(f"{kind} message on a {serializer.NAME} session")
            try:
                if serializer is self.factory.json_serializer and b"\\u0000" not in payload:
                    # Autobahn's JSON decoder is pure Python (so that it can turn "\0..." strings
                    # into bytes); without such a string, the C decoder gives the same result.
                    raw = [json.loads(payload)]
                else:
                    raw = serializer.unserialize(payload)
            except Exception as error:
                raise ProtocolViolation(f"cannot unserialize {serializer.NAME}: {error}") from error
            messages = decode(raw)
        except ProtocolViolation as violation:
            log.info("protocol violation from {peer}: {detail}", peer=self.peer, detail=str(violation))
            carry_out(router.violation(session, str(violation)))
            return
        try:
            for message in messages:
                carry_out(router.receive(session, message), self.factory.clock.callLater)
            if session.state is State.AUTHENTICATING and self._hello_deadline is None:
                # A CHALLENGE went out: its AUTHENTICATE has the HELLO timeout to arrive.
                self._hello_deadline = self.factory.clock.callLater(self.factory.limits.hello_timeout, self._hello_timed_out)
        except Exception:
            # A bug of ours must cost this one connection, never the server.
            log.failure("internal error handling a message from {peer}", peer=self.peer)
            self.session = None
            carry_out(router.detach(session))
            self.sendCloseFrame(WebSocketProtocol.CLOSE_STATUS_CODE_INTERNAL_ERROR, b"internal server error")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        session, self.session = self.session, None
        if session is not None:
            carry_out(self.factory.router.detach(session))


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
    ) -> None:
        super().__init__(None, serializers=wamp_serializers(), url=url, reactor=reactor)
        self.router = router
        self.limits = limits
        if reactor is None:
            from twisted.internet import reactor
        self.clock: IReactorTime = reactor
        #: Open WebSocket connections per client address (the limits count these).
        self.open_by_ip: dict[str, int] = {}
        self.admitted = 0
        self.connections: set[WampServerProtocol] = set()
        self._waiting_for_empty: list[defer.Deferred[None]] = []
        self.object_serializers = {s.SERIALIZER_ID: s._serializer for s in self._serializers.values()}
        self.json_serializer = self.object_serializers["json"]
        # Checked in onConnect (403), not by Autobahn (which answers 400 and compares ports).
        self.origin_patterns = wildcards2patterns(allowed_origins or ["*"])
        self.setProtocolOptions(
            maxMessagePayloadSize=limits.max_message_size,
            maxFramePayloadSize=limits.max_message_size,
            # When Autobahn itself fails a connection (message too big: 1009, bad UTF-8: 1007, ...)
            # it sends a close frame with the code, so the client learns why.
            failByDrop=False,
            openHandshakeTimeout=limits.handshake_timeout,
            # Autobahn pings an idle connection and drops it when the pong does not come back.
            autoPingInterval=limits.ping_interval,
            autoPingTimeout=limits.ping_timeout,
        )


    def connection_gone(self, protocol: WampServerProtocol) -> None:
        self.connections.discard(protocol)
        ip = protocol._client_ip
        if ip is not None:
            self.admitted -= 1
            remaining = self.open_by_ip[ip] - 1
            if remaining:
                self.open_by_ip[ip] = remaining
            else:
                del self.open_by_ip[ip]
        if not self.connections:
            waiting, self._waiting_for_empty = self._waiting_for_empty, []
            for waiter in waiting:
                waiter.callback(None)

    def close_all(self, clock: IReactorTime, timeout: float) -> defer.Deferred[None]:
        """
        Say GOODBYE (``wamp.close.system_shutdown``) to every session and close every
        connection; the result fires when all are gone, or after ``timeout`` seconds, when the
        stragglers' connections are aborted.
        """
        for protocol in list(self.connections):
            session = protocol.session
            if session is not None:
                carry_out(self.router.goodbye(session))
            else:
                protocol.close_transport(CloseReason.GOING_AWAY, "server shutting down")
        if not self.connections:
            return defer.succeed(None)
        all_gone: defer.Deferred[None] = defer.Deferred()
        self._waiting_for_empty.append(all_gone)

        def abort_stragglers() -> None:
            for protocol in list(self.connections):
                protocol.transport.abortConnection()

        deadline = clock.callLater(timeout, abort_stragglers)
        all_gone.addBoth(lambda result: deadline.cancel() if deadline.active() else None)
        return all_gone


def client_address(peer: str, headers: dict[str, str], trust_proxy: bool) -> str:
    """
    The client's IP address: the TCP peer ("tcp4:1.2.3.4:5678"), or, behind a trusted proxy, the
    address that proxy saw: the last entry of X-Forwarded-For (nginx appends $remote_addr).
    """
    if trust_proxy:
        forwarded = headers.get("x-forwarded-for", "")
        last = forwarded.rsplit(",", 1)[-1].strip()
        if last:
            return last
    kind, _, rest = peer.partition(":")
    return rest.rsplit(":", 1)[0] if kind in ("tcp4", "tcp6") else peer


def _truncate(text: str) -> bytes:
    """A close reason as UTF-8 that fits a control frame, cut at a character boundary."""
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON:
        return encoded
    return encoded[: MAX_CLOSE_REASON - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."
