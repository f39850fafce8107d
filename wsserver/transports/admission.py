"""
Who may open a WebSocket, and what one may cost: shared by every WebSocket endpoint of the site
(``/ws``, ``/echo``, and what ``--hixie76`` carries), so that they draw on one connection budget.

Theory of operation
-------------------
:class:`ConnectionLimits` is the configuration (each field is a ``twistd wsserver`` option).
During each opening handshake an endpoint asks the one :class:`Admission` to ``admit`` the
client: it checks the Origin (cross-site WebSocket hijacking: a foreign page must not ride on the
user's cookies; clients that send no Origin are not browsers and are not affected), then the
total and per-address counts, and either counts the connection and returns the address it is
counted under, or raises :class:`Refused` with the HTTP status (403, 503, 429). When the
connection ends, the endpoint ``release``s that address. :class:`OpenConnections` tracks an
endpoint's live connections so that shutdown can wait for them, bounded by a timeout.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autobahn.util import wildcards2patterns
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wsserver.transports.deflate import DEFLATE, compression_options

log = Logger()

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
    #: Frames one WebSocket message may come in; more: close 1009. A browser sends one frame.
    max_fragments: int = 1024
    #: Frames (control frames too) one connection may send a second, sustained, and at once;
    #: more: close 1008. Twice the publish rate and burst (SessionLimits): those refuse first.
    max_frame_rate: float = 2000.0
    frame_burst: int = 20_000
    #: permessage-deflate on the site's WebSockets (see wsserver/transports/deflate.py): on, because
    #: every browser offers it, a JSON event shrinks 3x, an event is compressed once for all its
    #: subscribers, and an idle compressed connection holds no zlib state.
    compression: str = DEFLATE


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
        self.counts = AddressCounts()

    def admit(self, peer: str, headers: Mapping[str, str], origin: str | None) -> str:
        """
        Count one more connection from ``peer`` (Autobahn's "tcp4:1.2.3.4:5678") and return the
        client address it is counted under; raise :class:`Refused` instead when it may not open.
        ``headers``: lower-case names (X-Forwarded-For counts behind a trusted proxy).
        """
        client_ip = client_address(peer, headers, self.limits.trust_proxy)
        if origin and not self.allows_origin(origin):
            log.info("refused a connection from origin {origin} ({ip})", origin=origin, ip=client_ip)
            raise Refused(403, f"origin {origin} is not allowed")
        if self.counts.total >= self.limits.max_connections:
            log.warn("refused a connection from {ip}: {limit} connections open (--max-connections)",
                     ip=client_ip, limit=self.limits.max_connections)
            raise Refused(503, "server is at its connection limit")
        if self.counts.of(client_ip) >= self.limits.max_connections_per_ip:
            log.info("refused a connection from {ip}: {limit} connections from there (--max-connections-per-ip)",
                     ip=client_ip, limit=self.limits.max_connections_per_ip)
            raise Refused(429, "too many connections from your address")
        self.counts.add(client_ip)
        return client_ip

    def allows_origin(self, origin: str) -> bool:
        """Whether a browser page of ``origin`` may use the endpoints (for requests that :meth:`admit` does not see)."""
        return any(p.match(origin) for p in self.origin_patterns)

    def release(self, client_ip: str) -> None:
        """One connection counted by :meth:`admit` is gone."""
        self.counts.remove(client_ip)

    @property
    def admitted(self) -> int:
        """WebSocket connections open in all."""
        return self.counts.total

    @property
    def open_by_ip(self) -> dict[str, int]:
        """WebSocket connections open per client address."""
        return self.counts.by_address


class AddressCounts:
    """Open connections per client address, and in all: :meth:`add` one, :meth:`remove` it when it ends."""

    def __init__(self) -> None:
        self.by_address: dict[str, int] = {}
        self.total = 0

    def of(self, address: str) -> int:
        return self.by_address.get(address, 0)

    def add(self, address: str) -> None:
        self.by_address[address] = self.by_address.get(address, 0) + 1
        self.total += 1

    def remove(self, address: str) -> int:
        """Count one connection from ``address`` less; return how many remain open from there."""
        self.total -= 1
        remaining = self.by_address[address] - 1
        if remaining:
            self.by_address[address] = remaining
        else:
            del self.by_address[address]
        return remaining


#: Seconds a connection closed at the end of the shutdown timeout has to take its close frame.
CLOSE_GRACE = 1.0


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

    def all_gone(
        self, clock: IReactorTime, timeout: float, abort: Callable[[Any], None],
        close: Callable[[Any], None] | None = None,
    ) -> defer.Deferred[None]:
        """
        Fires when every connection is gone. After ``timeout`` seconds, ``close`` the stragglers
        (their close frame: the client learns why) and ``abort`` those still open CLOSE_GRACE
        seconds later; without ``close``, abort them at once.
        """
        if not self.live:
            return defer.succeed(None)
        gone: defer.Deferred[None] = defer.Deferred()
        self._waiting_for_none.append(gone)

        def abort_stragglers() -> None:
            for connection in list(self.live):
                abort(connection)

        def close_stragglers() -> None:
            for connection in list(self.live):
                close(connection)  # type: ignore[misc]
            deadline[0] = clock.callLater(CLOSE_GRACE, abort_stragglers)

        deadline = [clock.callLater(timeout, abort_stragglers if close is None else close_stragglers)]
        gone.addBoth(lambda result: deadline[0].cancel() if deadline[0].active() else None)
        return gone


def protocol_options(limits: ConnectionLimits) -> dict[str, Any]:
    """The Autobahn protocol options every WebSocket endpoint of the site sets from ``limits``."""
    return {
        "maxMessagePayloadSize": limits.max_message_size,
        "maxFramePayloadSize": limits.max_message_size,
        # When Autobahn itself fails a connection (message too big: 1009, bad UTF-8: 1007, ...)
        # it sends a close frame with the code, so the client learns why.
        "failByDrop": False,
        "openHandshakeTimeout": limits.handshake_timeout,
        # Autobahn pings an idle connection and drops it when the pong does not come back.
        "autoPingInterval": limits.ping_interval,
        "autoPingTimeout": limits.ping_timeout,
        # A GET without Upgrade gets 426 with the reason, not Autobahn's status page, which
        # names its version and 303-redirects to any URL in ?redirect= (an open redirect).
        "webStatus": False,
        **compression_options(limits.compression),
    }
