"""
The Redis backplane (``--redis URL``): publications reach the subscribers of every node that uses
the same Redis, through Redis pub/sub.

Theory of operation
-------------------
Client: txredisapi, Twisted-native (no second event loop, no asyncio reactor: every transport of
this server runs on the default reactor), with AUTH, SELECT, TLS and a Sentinel connection
factory of its own for later. Each node keeps two connections: one that PUBLISHes and one that
SUBSCRIBEs (a subscribed Redis connection may do nothing else).

Channels: one per realm, ``wsserver:<db>:<realm>``. Every node serves every realm of its
configuration, so every node would subscribe to every topic channel anyway; a channel per topic
would cost a SUBSCRIBE per topic and saves nothing until topics are sharded over several Redis
instances (Redis Cluster's sharded pub/sub), which is for later. Redis pub/sub ignores the
database number, so the channel names it: servers on ``/0`` and ``/1`` are separate clusters.

Each message names its origin node (a random id drawn at start); a node skips its own, so
every subscriber gets each event once: from its own node's local routing.

When Redis cannot be reached (at start or later), this node keeps serving its own subscribers:
its publications are delivered locally and counted as not forwarded (there is no buffer: other
nodes would receive them late and out of order, and a bounded buffer would drop them anyway).
The outage is logged once when it begins and once when it ends, with that count. Both
connections retry with exponential backoff, from ``initial_delay`` doubling to ``max_delay``;
on reconnecting, the subscriber subscribes again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import txredisapi
from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from zope.interface import implementer

from wsserver.backplane import Deliver, codec
from wsserver.core.broker import Publication

log = Logger()

#: Seconds before the first reconnection attempt; doubled after each failure up to MAX_DELAY.
INITIAL_DELAY = 0.5
#: The longest wait between two attempts: a Redis back after an outage is found within this.
MAX_DELAY = 30.0
DEFAULT_PORT = 6379
_quiet = Logger(observer=lambda event: None)


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis is, from ``redis://[[user]:password@]host[:port][/db]`` (``rediss://``: TLS)."""

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Raises ``ValueError`` with a message for the user for a URL that is not one."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"{url!r} is not a redis:// or rediss:// URL")
        if not parts.hostname:
            raise ValueError(f"{url!r} names no host")
        path = parts.path.strip("/")
        if path and not path.isdigit():
            raise ValueError(f"{url!r}: the path must be a database number, as in redis://host:6379/0")
        return cls(
            parts.hostname, parts.port or DEFAULT_PORT, int(path or 0),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            tls=parts.scheme == "rediss",
        )

    def __str__(self) -> str:
        """For logs: without the password."""
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db}"


@implementer(IStreamClientEndpoint)
class _ReportingEndpoint:
    """An endpoint that tells ``failed(reason)`` about each attempt that fails, then fails as before."""

    def __init__(self, endpoint: Any, failed: Any) -> None:
        self._endpoint = endpoint
        self._failed = failed

    def connect(self, factory: Any) -> Any:
        connecting = self._endpoint.connect(factory)

        def report(failure: Any) -> Any:
            if not failure.check(defer.CancelledError):
                self._failed(failure.getErrorMessage())
            return failure

        return connecting.addErrback(report)


class _Subscriber(txredisapi.SubscriberProtocol):
    def messageReceived(self, pattern: Any, channel: bytes, message: bytes) -> None:
        self.factory.backplane.message_received(message)


class _Factory(txredisapi.RedisFactory):
    """One connection to Redis, reconnected with our backoff; tells the backplane when it is ready and lost."""

    initialDelay = INITIAL_DELAY
    factor = 2.0
    maxDelay = MAX_DELAY

    def __init__(self, backplane: RedisBackplane, protocol: type, *, subscriber: bool) -> None:
        address = backplane.address
        # charset None: bytes in and out (messages are msgpack).
        super().__init__(None, address.db, 1, isLazy=True, charset=None, password=address.password,
                         username=address.username)
        self.protocol = protocol
        self.backplane = backplane
        self.subscriber = subscriber

    def startConnecting(self, endpoint: Any) -> None:
        # Twisted's ClientService (txredisapi's reconnecting) logs every retry it schedules; the
        # backplane logs an outage once itself (see RedisBackplane.unreachable), so those lines would
        # only repeat it, every 30 s, for as long as Redis is gone. A ClientService takes its Logger
        # from the class when it is built, which happens here, synchronously: lend it a quiet one.
        lent = "_log" in vars(ClientService)
        original = ClientService.__dict__.get("_log")
        ClientService._log = _quiet
        try:
            super().startConnecting(endpoint)
        finally:
            if lent:
                ClientService._log = original
            else:
                del ClientService._log

    def buildProtocol(self, addr: Any) -> Any:
        connection = super().buildProtocol(addr)
        connection.whenConnected().addCallback(self.backplane.connected, subscriber=self.subscriber)
        connection.whenDisconnected().addCallback(self.backplane.disconnected, subscriber=self.subscriber)
        return connection


class RedisBackplane(Service):
    """
    Forward this node's publications to the other nodes on the Redis at ``address``, and deliver
    theirs here through ``deliver`` (set it before starting). ``realms``: the realms this node
    serves (it subscribes to their channels). ``node_id``: this node's name in its messages
    (default: random). Counters for operators and tests: ``forwarded``, ``unforwarded``,
    ``received``.
    """

    deliver: Deliver | None = None
    #: The shared store on this Redis (wsserver/backplane/store.py), if any: it takes the
    #: messages it published itself, and hears when the publishing connection is back.
    store: Any = None

    def __init__(
        self, address: RedisAddress, *, realms: list[str], reactor: Any, node_id: str | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self.address = address
        self.realms = list(realms)
        self.reactor = reactor
        self.node_id = node_id or uuid.uuid4().hex[:16]
        self.connect_timeout = connect_timeout
        self._prefix = f"wsserver:{address.db}:"
        self._publisher: Any = None
        self._subscriber: Any = None
        self._factories: list[_Factory] = []
        self._outage_reported = False
        self._unforwarded_in_outage = 0
        self.forwarded = 0
        self.unforwarded = 0
        self.received = 0

    @property
    def publisher_connection(self) -> Any:
        """The connection that publishes (it may run other commands too); None while Redis is unreachable."""
        return self._publisher

    def channel(self, realm: str) -> bytes:
        return (self._prefix + realm).encode("utf-8")

    # -- the service ------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        log.info("Redis backplane: node {node} connecting to {address}", node=self.node_id, address=str(self.address))
        self._factories = [
            _Factory(self, txredisapi.RedisProtocol, subscriber=False),
            _Factory(self, _Subscriber, subscriber=True),
        ]
        for factory in self._factories:
            factory.startConnecting(_ReportingEndpoint(self._endpoint(), self.unreachable))

    def stopService(self) -> Any:
        super().stopService()
        stopping = [factory.disconnect() for factory in self._factories]
        self._factories = []
        return defer.gatherResults(stopping, consumeErrors=True)

    def _endpoint(self) -> Any:
        address = self.address
        endpoint: Any = HostnameEndpoint(self.reactor, address.host, address.port, timeout=self.connect_timeout)
        if address.tls:
            endpoint = wrapClientTLS(optionsForClientTLS(address.host), endpoint)
        return endpoint

    # -- what the core hands us -------------------------------------------------------------------

    def forward(self, realm: str, publication: Publication, retain: bool) -> None:
        """Publish ``publication`` on ``realm``'s channel; while Redis is unreachable, count it as not forwarded."""
        publisher = self._publisher
        if publisher is None:
            self.unforwarded += 1
            self._unforwarded_in_outage += 1
            return
        data = codec.encode(self.node_id, realm, publication, retain)
        self.forwarded += 1
        publisher.publish(self.channel(realm), data).addErrback(self._publish_failed)

    def _publish_failed(self, failure: Any) -> None:
        # The connection died under this PUBLISH: the outage that follows is logged with its count.
        self.forwarded -= 1
        self.unforwarded += 1
        self._unforwarded_in_outage += 1

    # -- what Redis hands us ----------------------------------------------------------------------

    def message_received(self, data: bytes) -> None:
        """A message on one of our channels: route it here unless this node sent it."""
        if self.store is not None and self.store.takes(data):
            return
        try:
            decoded = codec.decode(data)
        except Exception:
            log.failure("Redis backplane: dropped a message that is not a publication")
            return
        if decoded is None:
            log.warn("Redis backplane: dropped a message of another format version (a node of another release?)")
            return
        node, realm, publication, retain = decoded
        if node == self.node_id or self.deliver is None:
            return
        self.received += 1
        self.deliver(realm, publication, retain)

    # -- connection state -------------------------------------------------------------------------

    def connected(self, connection: Any, *, subscriber: bool) -> None:
        if subscriber:
            self._subscriber = connection
            channels = [self.channel(realm) for realm in self.realms]
            connection.subscribe(channels).addCallbacks(
                lambda _: log.info("Redis backplane: subscribed to {count} realm channel(s) on {address}",
                                   count=len(channels), address=str(self.address)),
                lambda failure: log.failure("Redis backplane: SUBSCRIBE failed", failure),
            )
            return
        self._publisher = connection
        if self.store is not None:
            self.store.connected(connection)
        if self._outage_reported or self._unforwarded_in_outage:
            log.info("Redis backplane: connected to {address} again; {count} publication(s) made while it was "
                     "unreachable were delivered on this node only", address=str(self.address),
                     count=self._unforwarded_in_outage)
        else:
            log.info("Redis backplane: connected to {address}", address=str(self.address))
        self._outage_reported = False
        self._unforwarded_in_outage = 0

    def disconnected(self, connection: Any, *, subscriber: bool) -> None:
        if subscriber:
            if connection is self._subscriber:
                self._subscriber = None
            return
        if connection is not self._publisher:
            return
        self._publisher = None
        if self.running:
            self.unreachable("connection lost")

    def unreachable(self, reason: str) -> None:
        """Log the outage once, however many attempts fail."""
        if self._outage_reported or self._publisher is not None or not self.running:
            return
        self._outage_reported = True
        log.warn("Redis backplane: {address} unreachable ({reason}); serving this node's subscribers only, "
                 "publications are not forwarded until it is back; retrying every {initial}s up to every {max}s",
                 address=str(self.address), reason=reason, initial=INITIAL_DELAY, max=MAX_DELAY)
