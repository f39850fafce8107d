"""
The running server as Twisted services: the router, the site, the listening ports.

:class:`WampServer` is also the in-process API for Python producers::

    server = wsserver.tap.makeService(options)     # or WampServer(...) directly
    server.publish("realm1", "com.example.status", ["ok"], {"load": 0.3})

``publish`` may be called from the reactor thread at any time while the service runs; the event
goes to every subscriber of the topic on every transport.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autobahn.util import id as random_wamp_id
from twisted.application.internet import TimerService
from twisted.application.service import MultiService, Service
from twisted.internet import defer, endpoints
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from wsserver.adminstats import Figures, StatsPublisher, live_figures
from wsserver.backplane import Backplane
from wsserver.core.admin import ADMIN_ROLE
from wsserver.core.broker import Publication
from wsserver.core.eventstore import Position, StoreBudget, StoreLimits
from wsserver.core.history import HistorySettings
from wsserver.core.limits import SessionLimits
from wsserver.core.logins import LoginLimits
from wsserver.core.policy import RealmPolicy
from wsserver.core.router import Router
from wsserver.delivery import Peer, carry_out, carry_out_publication
from wsserver.health import HEALTH_PATH, READY_PATH, Healthz, Readyz
from wsserver.site import build_site
from wsserver.transports.admission import Admission, ConnectionLimits
from wsserver.transports.echo import ECHO_PATH, EchoServerFactory
from wsserver.transports.flashpolicy import (
    FlashPolicy,
    FlashPolicyService,
    PolicyServerFactory,
    SniffingFactory,
    policy_document,
)
from wsserver.transports.hixie76 import Hixie76Endpoints, Hixie76SniffingFactory
from wsserver.transports.listening import ListeningReactor, SiteConnections
from wsserver.transports.http_api import HttpApi, HttpApiSettings, body_limited
from wsserver.transports.sse import SSE_PATH, SseResource
from wsserver.transports.substream import no_bearer_keys
from wsserver.transports.stream import STREAM_PATH, StreamServerFactory
from wsserver.transports.longpoll import LongPollEndpoint, LongPollSettings
from wsserver.transports.websocket import WampServerFactory

if TYPE_CHECKING:
    from wsserver.backplane.cluster import RedisCluster

log = Logger()

#: Seconds between two log lines about events evicted from the event store.
EVICTION_REPORT_INTERVAL = 60.0
#: Seconds between two checks for calls whose ``timeout`` passed: a timeout ends this late at most.
CALL_TIMEOUT_TICK = 0.05


class EndpointService(Service):
    """
    Listen on one Twisted endpoint string. Binds in ``privilegedStartService`` (so a privileged
    port can be bound before twistd drops root) and logs the address it got, e.g.
    ``listening on http://127.0.0.1:8080/``: with port 0, that line is how to learn the port.
    TCP and TLS ports count their connections into ``connections`` (see listening.py).

    A port that cannot be bound stops the server with exit status 1 (a supervisor must not take
    it for a clean exit): at once, when binding fails in ``privilegedStartService`` as it does for
    tcp: and ssl:; by stopping the reactor when an endpoint fails later.
    """

    def __init__(self, reactor: Any, description: str, factory: Any, scheme: str = "http",
                 connections: SiteConnections | None = None) -> None:
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.scheme = "https" if description.startswith(("ssl:", "tls:")) else scheme
        self.connections = connections or SiteConnections(reactor, per_address=None)
        self.port: IListeningPort | None = None
        self._listening: defer.Deferred[IListeningPort] | None = None
        self._binding = False
        self.failed = False
        #: A listening socket to adopt instead of binding (a worker's, see workers.py).
        self.inherited: int | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        endpoint = endpoints.serverFromString(ListeningReactor(self.reactor, self.connections, inherited=self.inherited),
                                             self.description)
        self._binding = True
        self._listening = endpoint.listen(self.factory)
        self._listening.addCallback(self._listened)
        self._listening.addErrback(self._failed)
        self._binding = False
        if self.failed:
            raise SystemExit(1)

    def startService(self) -> None:
        if self._listening is None:
            self.privilegedStartService()
        super().startService()

    def _listened(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        address = port.getHost()
        log.info(
            "listening on {url}",
            url=f"{self.scheme}://{address.host}:{address.port}/",
            endpoint=self.description,
        )
        return port

    def _failed(self, failure: Any) -> None:
        self.failed = True
        log.critical("cannot listen on {endpoint}: {reason}", endpoint=self.description,
                     reason=failure.getErrorMessage())
        if self._binding:
            return  # privilegedStartService exits
        # Nothing to serve without the port the user asked for: stop rather than idle.
        if self.reactor.running:
            self.reactor.stop()
        else:
            self.reactor.callWhenRunning(self.reactor.stop)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self._listening is not None:
            port = yield self._listening
            self._listening = None
            if port is not None:
                yield port.stopListening()


class EvictionReport:
    """Logs, when called, how many events the event store evicted since the last call (if any)."""

    def __init__(self, budget: StoreBudget) -> None:
        self.budget = budget
        self.reported = 0

    def __call__(self) -> None:
        budget = self.budget
        if budget.evicted == self.reported:
            return
        log.warn(
            "event store full: {count} retained or history events forgotten, oldest first ({total} since start); "
            "it holds {bytes} bytes in {topics} topics (--max-store-bytes {max_bytes}, --max-store-topics {max_topics})",
            count=budget.evicted - self.reported, total=budget.evicted, bytes=budget.bytes, topics=budget.topics,
            max_bytes=budget.limits.max_bytes, max_topics=budget.limits.max_topics,
        )
        self.reported = budget.evicted


class WampServer(MultiService):
    """
    The site and the WAMP router, listening on every endpoint in ``listen``. ``retain_ttl``:
    seconds a retained event is kept (None: until replaced); ``history_size``: events kept per
    topic for ``wamp.subscription.get_events`` (0: no event history); ``store_limits``: what both
    may hold in all (evictions are logged at most every ``EVICTION_REPORT_INTERVAL`` s).
    ``login_limits``: failed logins allowed per client address and per authid. ``realms``: policies
    (see --config), or names of realms open to anyone; ``session_limits``: what one WAMP session
    may cost.

    ``hixie76``: also take the draft-76 handshake on /echo and the WAMP path (see hixie76.py).
    ``http_api``: serve POST /publish and /call with these settings (None: not at all; see http_api.py).
    ``longpoll``: where WAMP over HTTP long-poll lives (see longpoll.py).
    ``history``: which topics keep history, and resume (wins over ``history_size``; see core/history.py).
    ``backplane``: carries publications to and from the other nodes (a Twisted service, started
    and stopped with this one; None: this process only; see wsserver/backplane).
    ``admin_role``: the role that may use the admin page (None: none may; see core/admin.py);
    ``stats_source``: the figures it shows (see adminstats.py; None: :func:`~wsserver.adminstats.live_figures`).
    ``cluster``: the other nodes' sessions, registrations and calls (on the backplane's Redis; see
    wsserver/backplane/cluster.py); None: this process's only.
    ``shared_store``: where retained events, history and positions live, shared with the other
    nodes (see wsserver/core/shared.py and wsserver/backplane/store.py; None: in memory).

    On stop, every WAMP session gets GOODBYE ``wamp.close.system_shutdown`` and its WebSocket is
    closed with 1001; the service waits up to ``shutdown_timeout`` seconds for the clients to
    answer, then drops whatever is left.
    """

    def __init__(
        self,
        reactor: Any,
        listen: Sequence[str],
        web_dir: Path,
        ws_path: str = "ws",
        realms: Sequence[str | RealmPolicy] = ("realm1",),
        allowed_origins: Sequence[str] = ("*",),
        limits: ConnectionLimits = ConnectionLimits(),
        flash_policy: FlashPolicy = FlashPolicy(),
        shutdown_timeout: float = 5.0,
        retain_ttl: float | None = None,
        history_size: int = 0,
        hixie76: bool = False,
        session_limits: SessionLimits = SessionLimits(),
        store_limits: StoreLimits = StoreLimits(),
        login_limits: LoginLimits = LoginLimits(),
        http_api: HttpApiSettings | None = None,
        longpoll: LongPollSettings = LongPollSettings(),
        history: HistorySettings | None = None,
        backplane: Backplane | None = None,
        admin_role: str | None = ADMIN_ROLE,
        stats_source: Callable[[], Figures] | None = None,
        cluster: RedisCluster | None = None,
        shared_store: Any = None,
    ) -> None:
        super().__init__()
        self.reactor = reactor
        #: True once stopService began: /readyz says so while clients are told goodbye.
        self.stopping = False
        self.router: Router[Peer] = Router(
            realms, random_wamp_id, clock=reactor.seconds, retain_ttl=retain_ttl, history_size=history_size,
            random_bytes=os.urandom, limits=session_limits, store_limits=store_limits,
            login_limits=login_limits, history=history,
            forward=None if backplane is None else backplane.forward, admin_role=admin_role,
            elsewhere=cluster, session_id=None if cluster is None else cluster.session_id, shared_store=shared_store,
        )
        evictions = TimerService(EVICTION_REPORT_INTERVAL, EvictionReport(self.router.store_budget))
        evictions.clock = reactor
        evictions.setServiceParent(self)
        # The router reads the clock only: this ends the calls whose timeout passed.
        call_timeouts = TimerService(CALL_TIMEOUT_TICK, lambda: carry_out(self.router.expire_calls(), reactor.callLater))
        call_timeouts.clock = reactor
        call_timeouts.setServiceParent(self)
        # The admin page's figures, once a second on wsserver.stats.
        source = stats_source if stats_source is not None else functools.partial(live_figures, self.router)
        StatsPublisher(self.router, reactor, source).setServiceParent(self)
        # One origin check and one connection budget for every WebSocket endpoint of the site.
        self.admission = Admission(limits, allowed_origins)
        self.ws_factory = WampServerFactory(self.router, reactor=reactor, admission=self.admission)
        # The plain WebSocket echo at /echo.
        self.echo_factory = EchoServerFactory(self.admission, reactor=reactor)
        # The HTTP API's keys also open the event streams (Authorization: Bearer).
        self.http_api = None if http_api is None else HttpApi(
            self.router, settings=http_api, reactor=reactor, allowed_origins=allowed_origins,
            max_body=limits.max_message_size,
        )
        bearer_keys = no_bearer_keys if self.http_api is None else self.http_api.bearer_identity
        # Event streams without WAMP: /sse (Server-Sent Events) and /stream (a plain WebSocket).
        self.sse = SseResource(self.router, self.admission, reactor, bearer_keys=bearer_keys)
        self.stream_factory = StreamServerFactory(self.router, self.admission, reactor=reactor, bearer_keys=bearer_keys)
        self.site = build_site(web_dir, ws_path, self.ws_factory, idle_timeout=limits.handshake_timeout,
                               websockets={ECHO_PATH: self.echo_factory, STREAM_PATH: self.stream_factory},
                               resources={SSE_PATH: self.sse}, head_timeout=limits.handshake_timeout, reactor=reactor,
                               unlogged=(f"/{longpoll.path.strip('/')}/", f"/{HEALTH_PATH}", f"/{READY_PATH}"))
        if self.http_api is not None:
            self.http_api.setServiceParent(self)
            for path, endpoint in self.http_api.resources().items():
                self.site.resource.putChild(path, endpoint)
            self.site.requestFactory = body_limited(self.site.requestFactory, limits.max_message_size)
        # WAMP over HTTP long-poll, for clients whose WebSocket does not get through.
        self.longpoll = LongPollEndpoint(self.router, self.admission, reactor, longpoll)
        self.site.resource.putChild(longpoll.path.strip("/").encode("utf-8"), self.longpoll)
        self.shutdown_timeout = shutdown_timeout
        self.flash_policy = flash_policy
        policy_document(flash_policy.domains, flash_policy.ports)  # refuse bad domains now, not per request
        if flash_policy.port:
            # First, so that it is bound when the site logs "listening on" (readiness for tests).
            policy_factory = PolicyServerFactory(self.policy_document, reactor, flash_policy.timeout)
            FlashPolicyService(
                reactor, policy_factory, flash_policy.port, flash_policy.interface, flash_policy.required
            ).setServiceParent(self)
        # With --hixie76, draft-76 handshakes are taken off a connection before the site sees it.
        self.hixie76 = Hixie76Endpoints(self.router, self.admission, reactor, ws_path, ECHO_PATH)
        site: Any = self.site
        if hixie76:
            site = Hixie76SniffingFactory(self.site, self.hixie76, reactor, limits.handshake_timeout)
        # Every site port also answers the Flash policy request (Flash's fallback after port 843).
        listening = SniffingFactory(site, self.policy_document, reactor, limits.handshake_timeout)
        # One count of connections per address for every site port (behind a proxy, see listening.py).
        self.connections = SiteConnections(
            reactor, per_address=None if limits.trust_proxy else limits.max_connections_per_ip
        )
        self.listeners = [
            EndpointService(reactor, description, listening, connections=self.connections) for description in listen
        ]
        for listener in self.listeners:
            listener.setServiceParent(self)
        if backplane is not None:
            backplane.deliver = self.route_from_elsewhere
        if shared_store is not None:
            shared_store.deliver = self.route_stored
            backplane.setServiceParent(self)
        if cluster is not None:
            # After the backplane: stopped before it, so that it can still say goodbye.
            cluster.router = self.router
            cluster.setServiceParent(self)
        # For load balancers and orchestrators: alive, and ready to take traffic (see health.py).
        #: What /readyz checks: name -> a callable saying what is not ready (None: ready).
        self.readiness: dict[str, Any] = {"listening": self.not_listening, "stopping": self.not_stopping}
        if backplane is not None:
            self.readiness["backplane"] = backplane.not_ready
        self.mount_health(self.site.resource)

    def mount_health(self, root: Any) -> None:
        """Answer ``/healthz`` and ``/readyz`` for this server under ``root`` (the site's, the metrics port's)."""
        root.putChild(HEALTH_PATH.encode("ascii"), Healthz())
        root.putChild(READY_PATH.encode("ascii"), Readyz(self.readiness))

    def not_stopping(self) -> str | None:
        """For /readyz: what a stopping server says, while it waits for its clients' GOODBYEs (None: not stopping)."""
        return "shutting down: saying goodbye to its clients" if self.stopping else None

    def not_listening(self) -> str | None:
        """The endpoints not bound (yet), for /readyz; None when every one is."""
        waiting = [listener.description for listener in self.listeners if listener.port is None]
        return f"not listening on {', '.join(waiting)}" if waiting else None

    def policy_document(self) -> bytes:
        """The Flash socket policy: the configured ports, or those the site listens on."""
        ports = self.flash_policy.ports or tuple(
            listener.port.getHost().port for listener in self.listeners if listener.port is not None
        )
        return policy_document(self.flash_policy.domains, ports)

    def publish(
        self,
        realm: str,
        topic: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        retain: bool = False,
    ) -> None:
        """
        Publish an event from Python code running in the server; ``retain`` keeps it for later
        subscribers that ask for it. Raises ``KeyError`` for an unknown realm and
        ``autobahn.wamp.exception.InvalidUriError`` for an invalid topic.
        """
        carry_out_publication(lambda: self.router.publish(realm, topic, args, kwargs, retain))

    def route_from_elsewhere(self, realm: str, publication: Publication, retain: bool) -> None:
        """A publication from another node (the backplane's ``deliver``): route it to this node's subscribers."""
        carry_out_publication(lambda: self.router.route_from_elsewhere(realm, publication, retain=retain))

    def route_stored(self, realm: str, publication: Publication, position: Position | None) -> None:
        """A publication the shared store hands every node (this one's too): route it to this node's subscribers."""
        carry_out(self.router.route_stored(realm, publication, position))

    def startService(self) -> None:
        self.ws_factory.doStart()
        super().startService()
        # Said once the ports are bound: a server that could not bind never served anyone.
        open_realms = [realm.name for realm in self.router.realms.values() if realm.authenticator.policy.open_to_anyone]
        if open_realms and not any(listener.failed for listener in self.listeners):
            log.info("open to anyone: anonymous sessions may publish, subscribe, call and register anything "
                     "but end other sessions (wamp.session.kill) in realm {realms} (see --config)",
                     realms=", ".join(open_realms))
        self._say_who_may_use_the_admin_page()

    def _say_who_may_use_the_admin_page(self) -> None:
        realms = self.router.realms.values()
        role = next((realm.admin_role for realm in realms), None)
        if role is None:
            return
        admitted = [realm.name for realm in realms
                    if any(p.role == role for p in realm.authenticator.policy.principals.values())]
        if admitted:
            log.info("admin page: /admin.html for the principals of role {role} in realm {realms}",
                     role=role, realms=", ".join(admitted))
        else:
            log.info("admin page: no principal has the admin role {role}, so /admin.html lets no one in "
                     "(see --config and --admin-role)", role=role)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        # Not ready from now on (the metrics port's /readyz answers until the end), stop accepting,
        # then say goodbye to everyone connected.
        self.stopping = True
        for listener in self.listeners:
            yield listener.stopService()
        yield defer.gatherResults([
            self.ws_factory.close_all(self.reactor, self.shutdown_timeout),
            self.echo_factory.close_all(self.reactor, self.shutdown_timeout),
            self.hixie76.close_all(self.reactor, self.shutdown_timeout),
            self.sse.close_all(self.reactor, self.shutdown_timeout),
            self.stream_factory.close_all(self.reactor, self.shutdown_timeout),
            self.longpoll.close_all(self.reactor, self.shutdown_timeout),
        ])
        yield super().stopService()
        self.ws_factory.doStop()

