"""
The Redis backplane (``--redis URL``): publications reach the subscribers of every node that uses
the same Redis, through Redis pub/sub.

Theory of operation
-------------------
Client: txredisapi, Twisted-native (no second event loop, no asyncio reactor: every transport of
this server runs on the default reactor), with AUTH, SELECT, TLS and Sentinel
(``redis+sentinel://``: before each connection attempt the sentinels are asked where the master
is, and a connection that finds a replica there is dropped and made again). Each node keeps two
connections: one that PUBLISHes and one that SUBSCRIBEs (a subscribed Redis connection may do
nothing else).

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
on reconnecting, the subscriber subscribes again. A connection that opens but does not become
usable (AUTH or SELECT unanswered: a Redis paused with SIGSTOP accepts connections in its backlog)
is dropped after ``connect_timeout`` and tried again.

Losses are counted where they happen. The origin numbers every publication it makes (``seq`` 1,
2, 3, ..., forwarded or not; a node's id is new at each start, so its numbers start again with it),
and a receiver keeps the last number it got from each origin: a jump from 7 to 12 means 8 to 11
never arrived here (made while the origin could not forward, published while this node's
subscription was down, or in flight when Redis went away), and is counted (``lost``) and logged
once per jump, naming the origin. The first message from an origin sets its baseline: what an
origin published before this node heard from it at all is not counted here. Messages of one
origin arrive in order (one publishing connection, one Redis), so a jump is never a reordering.

The probe: a subscription connection can stop delivering without closing (a half-open TCP
connection, Redis paused, Redis's ``client-output-buffer-limit``), and then nothing else would
notice: this node would go on publishing and hear nothing, for hours. So every
``probe.interval`` seconds, while both connections are up, the node publishes a numbered probe on
a channel of its own (subscribed with the realms' channels on the same connection; a probe is
sent once that SUBSCRIBE is answered, and an unanswered SUBSCRIBE counts as a lost probe); if it has not
come back through the subscription within ``probe.timeout`` seconds, both connections are dropped
(aborted: what they had not yet sent is discarded, not sent late) and made again, and the node
says so in one line; when a probe comes back again it says that too, with what was not
forwarded meanwhile. Before declaring a probe lost the node lets the reactor read its sockets
once more, so a reactor that was itself blocked for a while does not take its own lateness for
Redis's.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
DEFAULT_SENTINEL_PORT = 26379
#: Origins whose last number a node remembers (the oldest heard from is forgotten first): node
#: ids are new at each start, and a long-lived node must not keep every id it ever heard.
MAX_ORIGINS = 10_000
_quiet = Logger(observer=lambda event: None)


@dataclass(frozen=True)
class ProbeSettings:
    """How often a node checks that its subscription still delivers, and how long a probe may take."""

    #: Seconds between two probes: two small messages through Redis per node, a cost too small to measure.
    interval: float = 5.0
    #: Seconds a probe may take to come back (a PUBLISH to SUBSCRIBE round trip takes well under a
    #: millisecond); generous, because a probe declared lost costs the publications in flight.
    timeout: float = 5.0


@dataclass(frozen=True)
class RedisAddress:
    """
    Where Redis is, from ``redis://[[user]:password@]host[:port][/db]`` (``rediss://``: TLS), or
    through Sentinel, from ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/MASTER[/db]``
    (``sentinels``: the sentinels' addresses; ``host`` and ``port`` are then the first sentinel's).
    """

    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    sentinels: tuple[tuple[str, int], ...] = ()
    master: str | None = None

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """Raises ``ValueError`` with a message for the user for a URL that is not one."""
        if url.startswith("redis+sentinel://"):
            return cls._parse_sentinel(url)
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"{url!r} is not a redis://, rediss:// or redis+sentinel:// URL")
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

    @classmethod
    def _parse_sentinel(cls, url: str) -> RedisAddress:
        credentials, _, rest = url[len("redis+sentinel://"):].rpartition("@")
        hosts, _, path = rest.partition("/")
        master, _, db = path.strip("/").partition("/")
        if not master:
            raise ValueError(f"{url!r} names no master, as in redis+sentinel://host:26379/mymaster/0")
        if db and not db.isdigit():
            raise ValueError(f"{url!r}: after the master's name comes a database number, as in .../mymaster/0")
        sentinels = []
        for host in hosts.split(","):
            # urlsplit parses one host:port (IPv6 in brackets too) and says what is wrong with it.
            parts = urlsplit(f"redis://{host}")
            try:
                port = parts.port or DEFAULT_SENTINEL_PORT
            except ValueError:
                raise ValueError(f"{url!r}: {host!r} is not host:port") from None
            if not parts.hostname:
                raise ValueError(f"{url!r} names no sentinel host")
            sentinels.append((parts.hostname, port))
        username, _, password = credentials.partition(":") if credentials else ("", "", "")
        return cls(
            sentinels[0][0], sentinels[0][1], int(db or 0),
            username=unquote(username) or None, password=unquote(password) if credentials else None,
            sentinels=tuple(sentinels), master=master,
        )

    def __str__(self) -> str:
        """For logs: without the password."""
        if self.master is not None:
            hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"redis+sentinel://{hosts}/{self.master}/{self.db}"
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
        if channel == self.factory.backplane.probe_channel:
            self.factory.backplane.probe_received(message)
            return
        self.factory.backplane.channel_message(channel, message)


class _MasterOnly:
    """
    With Sentinel: a connection that asks ROLE first and drops itself if it reached a replica (the
    sentinels' answer was stale, or a failover is under way); the backoff then asks them again.
    (txredisapi's SentinelRedisProtocol does this for text connections only: ours carry bytes.)
    """

    def connectionMade(self: Any) -> Any:
        def check_role(role: Any) -> Any:
            if role[0] not in ("master", b"master"):
                self.transport.loseConnection()
                return None
            return txredisapi.RedisProtocol.connectionMade(self)

        if self.password is not None:
            self.auth(self.password, self.username)
        return self.role().addCallback(check_role)


class _SentinelPublisher(_MasterOnly, txredisapi.RedisProtocol):
    pass


class _SentinelSubscriber(_MasterOnly, _Subscriber):
    pass


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
        with _quiet_retries():
            super().startConnecting(endpoint)

    def buildProtocol(self, addr: Any) -> Any:
        connection = super().buildProtocol(addr)
        connection.whenConnected().addCallback(self.backplane.connected, subscriber=self.subscriber)
        connection.whenDisconnected().addCallback(self.backplane.disconnected, subscriber=self.subscriber)
        # A connection whose AUTH/SELECT/ROLE is never answered (a paused Redis still completes TCP
        # handshakes from its backlog) would wait forever: drop it and let the backoff try again.
        self.backplane.reactor.callLater(self.backplane.connect_timeout, _abort_if_not_ready, connection)
        return connection


@contextmanager
def _quiet_retries() -> Iterator[None]:
    """Build txredisapi connections (their ClientServices) in this block, and they do not log their retries."""
    # Twisted's ClientService (txredisapi's reconnecting) logs every retry it schedules; the
    # backplane logs an outage once itself (see RedisBackplane.unreachable), so those lines would
    # only repeat it, every 30 s, for as long as Redis is gone. A ClientService takes its Logger
    # from the class when it is built, which happens in the block, synchronously: lend it a quiet one.
    lent = "_log" in vars(ClientService)
    original = ClientService.__dict__.get("_log")
    ClientService._log = _quiet
    try:
        yield
    finally:
        if lent:
            ClientService._log = original
        else:
            del ClientService._log


def _abort_if_not_ready(connection: Any) -> None:
    if not connection._ready and connection.transport is not None:
        connection.transport.abortConnection()  # a no-op on a connection closed meanwhile


class RedisBackplane(Service):
    """
    Forward this node's publications to the other nodes on the Redis at ``address``, and deliver
    theirs here through ``deliver`` (set it before starting). ``realms``: the realms this node
    serves (it subscribes to their channels). ``node_id``: this node's name in its messages
    (default: random). ``probe``: how the subscription is checked (see the theory of operation).
    Counters for operators and tests: ``forwarded``, ``unforwarded``, ``received``, ``lost``
    (publications of other nodes that never arrived), ``rebuilt`` (probes lost). ``not_ready()``
    says why this node should not take traffic yet (for ``/readyz``).
    """

    deliver: Deliver | None = None
    #: The shared store on this Redis (wsserver/backplane/store.py), if any: it takes the
    #: messages it published itself, and hears when the publishing connection is back.
    store: Any = None

    def __init__(
        self, address: RedisAddress, *, realms: list[str], reactor: Any, node_id: str | None = None,
        connect_timeout: float = 10.0, probe: ProbeSettings = ProbeSettings(),
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
        self.probe = probe
        # '#' cannot be in a realm's URI: this channel is never a realm's.
        self.probe_channel = f"{self._prefix}#probe:{self.node_id}".encode("utf-8")
        self._sequence = 0
        self._last_seq: OrderedDict[str, int] = OrderedDict()
        self.lost = 0
        self.rebuilt = 0
        self._subscribed = False
        self._unreachable_reason = "connecting"
        self._probe_next: Any = None
        self._probe_deadline: Any = None
        self._probes_sent = 0
        self._stalled_since: float | None = None
        self._sentinel: Any = None
        #: More channels to subscribe to, each with what handles its messages (see cluster.py).
        self.listeners: dict[bytes, Callable[[bytes], None]] = {}
        #: Called once those channels are subscribed (again, after a reconnection), and when that connection is lost.
        self.on_subscribed: list[Callable[[], None]] = []
        self.on_unsubscribed: list[Callable[[], None]] = []
        #: Called with the command connection whenever it is connected, and with None when it is lost.
        self.watchers: list[Callable[[Any], None]] = []

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
        sentinel = self.address.master is not None
        if sentinel:
            # The URL's password is the master's: sentinels are asked without one. A sentinel that
            # is down is retried quietly too: the outage line says what matters (no master found).
            with _quiet_retries():
                self._sentinel = txredisapi.Sentinel(list(self.address.sentinels))
        self._factories = [
            _Factory(self, _SentinelPublisher if sentinel else txredisapi.RedisProtocol, subscriber=False),
            _Factory(self, _SentinelSubscriber if sentinel else _Subscriber, subscriber=True),
        ]
        for factory in self._factories:
            factory.startConnecting(_ReportingEndpoint(self._endpoint(factory), self.unreachable))
        self._probe_next = self.reactor.callLater(self.probe.interval, self._send_probe)

    def stopService(self) -> Any:
        super().stopService()
        for call in (self._probe_next, self._probe_deadline):
            if call is not None and call.active():
                call.cancel()
        self._probe_next = self._probe_deadline = None
        stopping = [factory.disconnect() for factory in self._factories]
        if self._sentinel is not None:
            stopping.append(self._sentinel.disconnect())
            self._sentinel = None
        self._factories = []
        return defer.gatherResults(stopping, consumeErrors=True)

    def _endpoint(self, factory: _Factory) -> Any:
        address = self.address
        if address.master is not None:
            # txredisapi's endpoint asks the sentinels for the master before every attempt; it reads
            # these from the factory it is given.
            factory.sentinel_manager = self._sentinel
            factory.service_name = address.master
            factory.is_master = True
            return txredisapi._SentinelEndpoint(factory)
        endpoint: Any = HostnameEndpoint(self.reactor, address.host, address.port, timeout=self.connect_timeout)
        if address.tls:
            endpoint = wrapClientTLS(optionsForClientTLS(address.host), endpoint)
        return endpoint

    # -- what the core hands us -------------------------------------------------------------------

    def forward(self, realm: str, publication: Publication, retain: bool) -> None:
        """Publish ``publication`` on ``realm``'s channel; while Redis is unreachable, count it as not forwarded."""
        publisher = self._publisher
        # Numbered whether it is forwarded or not: a receiver counts every one it did not get.
        self._sequence += 1
        if publisher is None:
            self.unforwarded += 1
            self._unforwarded_in_outage += 1
            return
        data = codec.encode(self.node_id, realm, publication, retain, seq=self._sequence)
        self.forwarded += 1
        publisher.publish(self.channel(realm), data).addErrback(self._publish_failed)

    def _publish_failed(self, failure: Any) -> None:
        # The connection died under this PUBLISH: the outage that follows is logged with its count.
        self.forwarded -= 1
        self.unforwarded += 1
        self._unforwarded_in_outage += 1

    # -- what Redis hands us ----------------------------------------------------------------------

    def channel_message(self, channel: bytes, data: bytes) -> None:
        """A message on ``channel``: to its listener, or (a realm's channel) to the subscribers here."""
        listener = self.listeners.get(channel)
        if listener is None:
            self.message_received(data)
        else:
            listener(data)

    def message_received(self, data: bytes) -> None:
        """A message on one of our channels: route it here unless this node sent it."""
        if self.store is not None and self.store.takes(data):
            return
        try:
            decoded = codec.decode_numbered(data)
        except Exception:
            log.failure("Redis backplane: dropped a message that is not a publication")
            return
        if decoded is None:
            log.warn("Redis backplane: dropped a message of another format version (a node of another release?)")
            return
        node, realm, publication, retain, seq = decoded
        if node == self.node_id or self.deliver is None:
            return
        if seq is not None:
            self._count_missed(node, seq)
        self.received += 1
        self.deliver(realm, publication, retain)

    def _count_missed(self, node: str, seq: int) -> None:
        last = self._last_seq.pop(node, None)
        self._last_seq[node] = seq if last is None else max(last, seq)
        if len(self._last_seq) > MAX_ORIGINS:
            self._last_seq.popitem(last=False)
        if last is not None and seq > last + 1:
            missed = seq - last - 1
            self.lost += missed
            log.warn("Redis backplane: lost {count} publication(s) from node {node} (its numbers {first} to "
                     "{last}): its subscribers here did not receive them ({total} lost since start)",
                     count=missed, node=node, first=last + 1, last=seq - 1, total=self.lost)

    # -- the probe --------------------------------------------------------------------------------

    def _send_probe(self) -> None:
        self._probe_next = self.reactor.callLater(self.probe.interval, self._send_probe)
        self._probe_now()

    def _probe_now(self) -> None:
        if self._probe_deadline is not None or self._publisher is None or self._subscriber is None:
            return  # one probe at a time; and while a connection is down, reconnecting is under way
        if not self._subscribed:
            # Published before Redis has taken the SUBSCRIBE, the probe could not come back: wait
            # for that answer instead, within the same time (see _subscribed_on).
            self._probe_deadline = self.reactor.callLater(self.probe.timeout, self._probe_overdue)
            return
        self._probes_sent += 1
        self._publisher.publish(self.probe_channel, str(self._probes_sent).encode("ascii")).addErrback(
            lambda failure: None)  # a lost PUBLISH is a lost probe: the deadline says so
        self._probe_deadline = self.reactor.callLater(self.probe.timeout, self._probe_overdue)

    def _probe_overdue(self) -> None:
        # Read the sockets once more first: the probe may be waiting behind a reactor that was busy.
        self._probe_deadline = self.reactor.callLater(0, self._probe_lost)

    def probe_received(self, data: bytes) -> None:
        """A probe came back through the subscription: it delivers."""
        try:
            number = int(data)
        except ValueError:
            return
        if self._probe_deadline is None or number != self._probes_sent:
            return  # a late one, from before a rebuild
        self._probe_deadline.cancel()
        self._probe_deadline = None
        if self._stalled_since is not None:
            log.info("Redis backplane: a probe came back through {address}: delivering again after {seconds:.1f}s; "
                     "{count} publication(s) made meanwhile were delivered on this node only",
                     address=str(self.address), seconds=self.reactor.seconds() - self._stalled_since,
                     count=self._unforwarded_in_outage)
            self._stalled_since = None
            self._outage_reported = False
            self._unforwarded_in_outage = 0

    def _probe_lost(self) -> None:
        self._probe_deadline = None
        self.rebuilt += 1
        if self._stalled_since is None:
            self._stalled_since = self.reactor.seconds()
            self._outage_reported = True  # this line says it: no second one for the connection lost
            log.warn("Redis backplane: a probe through {address} did not come back within {timeout}s: the "
                     "subscription has stopped delivering; dropping both connections and making them again "
                     "(publications are delivered on this node only until a probe comes back)",
                     address=str(self.address), timeout=self.probe.timeout)
        for connection in (self._publisher, self._subscriber):
            if connection is not None and connection.transport is not None:
                connection.transport.abortConnection()

    # -- readiness --------------------------------------------------------------------------------

    def not_ready(self) -> str | None:
        """Why this node should not take traffic yet (Redis not connected, not subscribed, stalled), or None."""
        if self._stalled_since is not None:
            return f"{self.address}: the subscription stopped delivering (a probe did not come back); reconnecting"
        if self._publisher is None:
            return f"{self.address}: {self._unreachable_reason}"
        if not self._subscribed:
            return f"{self.address}: not subscribed yet"
        return None

    # -- connection state -------------------------------------------------------------------------

    def connected(self, connection: Any, *, subscriber: bool) -> None:
        if subscriber:
            self._subscriber = connection
            self._subscribed = False
            channels = [self.channel(realm) for realm in self.realms]
            connection.subscribe(channels + [self.probe_channel]).addCallbacks(
                lambda _: self._subscribed_on(connection, len(channels)),
                lambda failure: log.failure("Redis backplane: SUBSCRIBE failed", failure),
            )
            if self.listeners:
                connection.subscribe(list(self.listeners)).addCallbacks(
                    lambda _: [subscribed() for subscribed in self.on_subscribed],
                    lambda failure: log.failure("Redis backplane: SUBSCRIBE failed", failure),
                )
            return
        self._publisher = connection
        for watcher in self.watchers:
            watcher(connection)
        if self._stalled_since is not None:
            return  # the probe that comes back says it is over, with the count
        if self._outage_reported or self._unforwarded_in_outage:
            log.info("Redis backplane: connected to {address} again; {count} publication(s) made while it was "
                     "unreachable were delivered on this node only", address=str(self.address),
                     count=self._unforwarded_in_outage)
        else:
            log.info("Redis backplane: connected to {address}", address=str(self.address))
        self._outage_reported = False
        self._unforwarded_in_outage = 0

    def _subscribed_on(self, connection: Any, count: int) -> None:
        if connection is not self._subscriber:
            return
        self._subscribed = True
        log.info("Redis backplane: subscribed to {count} realm channel(s) on {address}",
                 count=count, address=str(self.address))
        if self._probe_deadline is not None:  # a probe waiting for this SUBSCRIBE: it goes out now
            self._probe_deadline.cancel()
            self._probe_deadline = None
            self._probe_now()
        elif self._stalled_since is not None:
            self._probe_now()  # after a stall, the next probe says it is over: now, not at the next tick

    def disconnected(self, connection: Any, *, subscriber: bool) -> None:
        if connection in (self._publisher, self._subscriber) and self._probe_deadline is not None:
            self._probe_deadline.cancel()  # a probe's answer is moot: the connection is being made again anyway
            self._probe_deadline = None
        if subscriber:
            if connection is self._subscriber:
                self._subscriber = None
                self._subscribed = False
                if self.running and self._publisher is not None and self._stalled_since is None:
                    # Redis closed it (CLIENT KILL, client-output-buffer-limit): what is published
                    # until it is back is counted by the numbers' jump when it is.
                    log.warn("Redis backplane: the subscription connection to {address} was closed; "
                             "subscribing again", address=str(self.address))
                for unsubscribed in self.on_unsubscribed:
                    unsubscribed()
            return
        if connection is not self._publisher:
            return
        self._publisher = None
        for watcher in self.watchers:
            watcher(None)
        if self.running:
            self.unreachable("connection lost")

    def unreachable(self, reason: str) -> None:
        """Log the outage once, however many attempts fail."""
        if self._publisher is None:
            self._unreachable_reason = f"unreachable ({reason})"
        if self._outage_reported or self._publisher is not None or not self.running:
            return
        self._outage_reported = True
        log.warn("Redis backplane: {address} unreachable ({reason}); serving this node's subscribers only, "
                 "publications are not forwarded until it is back; retrying every {initial}s up to every {max}s",
                 address=str(self.address), reason=reason, initial=INITIAL_DELAY, max=MAX_DELAY)
