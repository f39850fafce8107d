"""
``twistd wsserver``: command-line options to a running server.

This module is the only place that turns options into objects (see ARCHITECTURE.md); the help
text of every option is its ``optParameters`` row or its ``opt_*`` docstring.
"""

from __future__ import annotations

import getopt
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from wsserver.backplane.cluster import PRESENCE_TTL, RedisCluster
from wsserver.backplane.redis import ProbeSettings, RedisAddress, RedisBackplane
from wsserver.core.admin import ADMIN_ROLE
from wsserver.backplane.store import RedisStore
from wsserver.config import FLAG, LIST, VALUE, Config, ConfigError
from wsserver.config import load as load_config
from wsserver.core.eventstore import StoreLimits
from wsserver.core.history import HistorySettings
from wsserver.core.limits import SessionLimits
from wsserver.core.logins import LoginLimits
from wsserver.delivery import carry_out
from wsserver.demo import HISTORY as DEMO_HISTORY
from wsserver.demo import DemoProducer
from wsserver.health import HEALTH_PATH, READY_PATH
from wsserver.metrics import MetricsService
from wsserver.service import WampServer
from wsserver.site import default_web_dir
from wsserver.transports.echo import ECHO_PATH
from wsserver.transports.sse import SSE_PATH
from wsserver.transports.stream import STREAM_PATH
from wsserver.transports.flashpolicy import DEFAULT_PORT as DEFAULT_FLASH_POLICY_PORT
from wsserver.transports.flashpolicy import DOMAIN_PATTERN, FlashPolicy, FlashPolicyService
from wsserver.transports.longpoll import LongPollSettings
from wsserver.transports.admission import SLOW_CONSUMER_POLICIES, ConnectionLimits
from wsserver.transports.deflate import COMPRESSION_CHOICES
from wsserver.transports.http_api import HttpApiSettings
from wsserver.workers import (DEFAULT_WORKERS, STOP_GRACE, SpawnedWorkers, Supervisor, WorkerIdentity, own_port,
                              serve_as_worker)

#: A listen queue of 4096, not Twisted's 50: when thousands of clients reconnect at once, one
#: waiting in the queue waits for an accept, while one the kernel drops from a full queue waits for
#: its SYN to be sent again (1 s, then 3 s, 7 s). Linux caps it at net.core.somaxconn (4096 since 5.4).
DEFAULT_BACKLOG = 4096
DEFAULT_LISTEN = "tcp:8080"
#: The --listen endpoint types that have a listen queue (Twisted's strports).
QUEUED_ENDPOINTS = ("tcp:", "tcp6:", "ssl:", "unix:")
DEFAULT_REALM = "realm1"


def with_backlog(endpoint: str) -> str:
    """``endpoint``, given a listen queue of DEFAULT_BACKLOG when it has a queue and names none."""
    if endpoint.startswith(QUEUED_ENDPOINTS) and ":backlog=" not in endpoint:
        return f"{endpoint}:backlog={DEFAULT_BACKLOG}"
    return endpoint


def compression_choice(value: str) -> str:
    """--compression's value, checked."""
    if value not in COMPRESSION_CHOICES:
        raise ValueError(f"not one of {', '.join(COMPRESSION_CHOICES)}: {value!r}")
    return value


compression_choice.coerceDoc = "One of: deflate, off."  # type: ignore[attr-defined]


class Options(usage.Options):
    synopsis = "[wsserver options]"
    longdesc = (
        "Serve a static web site and a WAMP v2 broker (WebSocket, subprotocols wamp.2.json, "
        "wamp.2.msgpack, wamp.2.cbor) on the same port. Browser pages connect with AutobahnJS to "
        "ws://HOST:PORT/ws; Python code in the server publishes with WampServer.publish()."
    )

    optParameters = [
        ["config", None, None, "Read realms, roles, principals and server options from this TOML file (see the README); options given on the command line override it. [default: realm1, open to anyone]"],
        ["max-publish-rate", None, 1000.0, "Publications a second one WAMP session may make, sustained; more get ERROR wsserver.error.publish_rate_exceeded. 0 turns the limit off.", float],
        ["publish-burst", None, 10_000, "Publications one WAMP session may make at once before --max-publish-rate applies.", int],
        ["max-subscriptions", None, 1000, "Subscriptions one WAMP session may hold; more get ERROR wsserver.error.too_many_subscriptions. 0 turns the limit off.", int],
        ["max-uri-length", None, SessionLimits().max_uri_length, "Bytes (UTF-8) in any URI a WAMP session sends: topics, patterns, procedures, error URIs; longer ones get ERROR wsserver.error.uri_too_long. 0 turns the limit off.", int],
        ["max-registrations", None, SessionLimits().max_registrations, "Procedures one WAMP session may register; more get ERROR wsserver.error.too_many_registrations. 0 turns the limit off.", int],
        ["max-calls-in-flight", None, SessionLimits().max_calls_in_flight, "Calls one WAMP session may wait on at once (to other sessions' procedures); more get ERROR wsserver.error.too_many_calls_in_flight. 0 turns the limit off.", int],
        ["web", None, None, "Serve the site from this directory. [default: the site installed with wsserver]"],
        ["ws-path", None, "ws", "Path of the WAMP WebSocket endpoint on the site."],
        ["max-message-size", None, 1024 * 1024, "Refuse WebSocket messages larger than this many bytes (close 1009).", int],
        ["max-send-buffer", None, 1024 * 1024, "Bytes a client may leave unread (beyond the socket buffers) before the slow-consumer policy applies.", int],
        ["slow-consumer", None, "disconnect", "What to do with a client that does not read its events: disconnect (close 1008) or drop (its events are dropped and counted)."],
        ["max-connections", None, 10_000, "WebSocket connections the server accepts in all; more get HTTP 503.", int],
        ["max-connections-per-ip", None, 256, "Connections one client address may hold: every TCP connection to the site counts (HTTP, WebSocket, draft 76); more get HTTP 429 at once (a TLS port closes them without an answer). With --trust-proxy only WebSockets are counted, by X-Forwarded-For address.", int],
        ["handshake-timeout", None, 10.0, "Seconds a client has to send a request head (any HTTP request, including the WebSocket opening handshake), in all, not per byte (its first byte may take as long again); also how long a kept-alive connection may wait for its next request. Late clients are closed (HTTP 408 if they had begun).", float],
        ["hello-timeout", None, 10.0, "Seconds a WebSocket may stay open without a WAMP HELLO (then close 1008).", float],
        ["ping-interval", None, 30.0, "Ping a connection after this many idle seconds; 0 turns pings off.", float],
        ["ping-timeout", None, 10.0, "Drop a connection whose pong does not come back within this many seconds.", float],
        ["max-fragments", None, ConnectionLimits.max_fragments, "Frames one WebSocket message may come in (browsers send one); more: close 1009. 0 turns the limit off.", int],
        ["max-frame-rate", None, ConnectionLimits.max_frame_rate, "WebSocket frames (pings too) one connection may send a second, sustained; more: close 1008. 0 turns the limit off.", float],
        ["frame-burst", None, ConnectionLimits.frame_burst, "WebSocket frames one connection may send at once before --max-frame-rate applies.", int],
        ["compression", None, ConnectionLimits.compression, "permessage-deflate on WebSockets (/ws, /echo, /stream): deflate (offered by every browser; each event is compressed once for all its subscribers, messages under 128 bytes go out plain) or off.", compression_choice],
        ["flash-policy-interface", None, None, "Interface for the Flash socket policy port. [default: all]"],
        ["flash-allow-ports", None, None, "Ports the Flash policy allows, comma-separated. [default: the ports of --listen]"],
        ["shutdown-timeout", None, 5.0, "On stop, wait this many seconds for clients to say GOODBYE.", float],
        ["retain-ttl", None, None, "Forget a retained event (PUBLISH retain: true) this many seconds after it was published. [default: keep it until the next one replaces it]", float],
        ["longpoll-path", None, LongPollSettings.path, "Path of WAMP over HTTP long-poll on the site (AutobahnJS {type: 'longpoll', url: 'http://HOST:PORT/lp'}), for clients whose WebSocket does not get through."],
        ["longpoll-timeout", None, LongPollSettings.session_timeout, "Seconds a long-poll session may go without a request before it ends like a lost connection.", float],
        ["history-size", None, 0, "Keep the last N events of every topic for wamp.subscription.get_events (event history); 0 turns it off.", int],
        ["max-resume-events", None, HistorySettings().max_resume_events, "Events one wsserver.history.since answer (and one SSE or /stream resume) returns at most; a client that missed more is told recovered: false and reloads.", int],
        ["max-store-bytes", None, StoreLimits().max_bytes, "Bytes (estimated, in memory) the retained events and event history of all realms may hold together; past it the oldest events are forgotten first. 0 turns the limit off.", int],
        ["max-store-topics", None, StoreLimits().max_topics, "Topics with a retained event or history the server keeps, in all realms together; past it the oldest events are forgotten first. 0 turns the limit off.", int],
        ["max-login-failures", None, LoginLimits().per_address, "Failed logins one client address may make per --login-failure-window; past that its logins are refused without a check (the same ABORT, after the same delay). 0 turns the limit off.", int],
        ["max-login-failures-per-authid", None, LoginLimits().per_authid, "Failed logins one authid may make per --login-failure-window, from any address; past that its logins are refused without a check, the right secret too, until the window has passed. 0 turns the limit off.", int],
        ["login-failure-window", None, LoginLimits().window, "Seconds in which failed logins are forgiven (gradually: one per window / limit).", float],
        ["http-call-timeout", None, HttpApiSettings.call_timeout, "Seconds a POST /call of the HTTP API waits for its result; then HTTP 504.", float],
        ["metrics-listen", None, None, "Serve Prometheus metrics at /metrics on this Twisted endpoint, apart from the site so that it stays private (e.g. tcp:9100:interface=127.0.0.1). [default: no metrics]"],
        ["workers", None, DEFAULT_WORKERS, "Run this many worker processes that share the listening ports (bound first, port 843 too, before --uid/--gid drop root) and publications (through --redis, which more than one needs); a worker that dies is started again. Linux.", int],
        ["admin-role", None, ADMIN_ROLE, "The role (of --config's principals) that may use the admin page /admin.html: its live figures on wsserver.stats, wsserver.admin.topics, and client addresses in wamp.session.get; others get wamp.error.not_authorized. An empty value turns the admin page off."],
        ["redis", None, None, "Share publications with every other wsserver on this Redis (redis://[:PASSWORD@]HOST[:PORT][/DB], rediss:// for TLS; through Sentinel: redis+sentinel://[:PASSWORD@]HOST[:PORT][,HOST[:PORT]...]/MASTER[/DB]): a subscriber on any of them receives what is published on any. [default: this process only]"],
        ["redis-probe-interval", None, ProbeSettings.interval, "Seconds between two probes that check the Redis subscription still delivers (see --redis-probe-timeout).", float],
        ["redis-probe-timeout", None, ProbeSettings.timeout, "Seconds a probe may take to come back through Redis; past that, both Redis connections are dropped and made again (a Redis paused or a connection silently dead is found within --redis-probe-interval plus this).", float],
        ["cluster-ttl", None, PRESENCE_TTL, "With --redis: seconds a node that died without a word (SIGKILL, a lost machine) stays in the cluster: within this (and a third of it) its sessions leave the session meta API of the others and its registrations vanish. Live nodes refresh their presence every third of it.", float],
    ]

    optFlags = [
        ["trust-proxy", None, "Take the client address for --max-connections-per-ip from X-Forwarded-For (only behind a proxy such as nginx that sets it); plain HTTP connections, which all come from the proxy, are then not counted per address (limit them in the proxy)."],
        ["demo", None, "Run the demo producer: com.example.ticker and com.example.clock (see the dashboard page), each with history, so pages resume after a reconnect; the chat page's rooms (com.example.chat.room.*) keep their last 50 messages."],
        ["http-api", None, "Serve the HTTP API: POST /publish and POST /call (see the README). Its keys are [realms.NAME.http-keys.KEY] tables in --config; without any, it accepts requests from loopback addresses only."],
        ["hixie76", None, "Also accept the old draft-76 (hixie-76) WebSocket handshake on /echo and the WAMP path (JSON only), for Safari 5, iOS 4-5, Chrome 6-13 and old web-socket-js builds."],
    ]

    compData = usage.Completions(
        optActions={"web": usage.CompleteDirs(descr="site directory")},
    )

    #: Options that may be given several times (lists in the --config file).
    repeatable = ("listen", "realm", "allowed-origin", "flash-allow-domain")

    def __init__(self) -> None:
        super().__init__()
        self.config: Config | None = None
        self["listen"] = []
        self["realm"] = []
        self["allowed-origin"] = []
        self["flash-allow-domain"] = []
        self["flash-policy-port"] = DEFAULT_FLASH_POLICY_PORT
        self["flash-policy-port-explicit"] = False

    def opt_listen(self, endpoint: str) -> None:
        """Listen on this Twisted endpoint string; repeat for several. Examples: tcp:8080, tcp:8080:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey=cert.pem (https and wss); a tcp, tcp6, ssl or unix endpoint that names no :backlog= gets a listen queue of 4096, not Twisted's 50, for the moment thousands of clients reconnect at once. [default: tcp:8080]"""
        self["listen"].append(endpoint)

    def opt_flash_policy_port(self, port: str) -> None:
        """Serve the Flash socket policy (for the web-socket-js shim) on this port; 0 turns it off. Port 843 needs root (with --uid/--gid) or CAP_NET_BIND_SERVICE: without it, the default port is skipped with a warning, an explicit one stops the server. [default: 843]"""
        try:
            self["flash-policy-port"] = int(port)
        except ValueError:
            raise usage.UsageError(f"--flash-policy-port: not a port number: {port!r}") from None
        self["flash-policy-port-explicit"] = True

    def opt_flash_allow_domain(self, domain: str) -> None:
        """A domain whose Flash movies may connect (*, example.com, *.example.com); repeat for several. [default: *]"""
        self["flash-allow-domain"].append(domain)

    def opt_realm(self, name: str) -> None:
        """A realm clients may join; repeat for several. [default: realm1]"""
        self["realm"].append(name)

    def opt_allowed_origin(self, pattern: str) -> None:
        """Accept WebSocket connections from browser pages of this origin only (* is a wildcard, e.g. https://*.example.com); repeat for several. Others get HTTP 403. [default: any origin]"""
        self["allowed-origin"].append(pattern)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Read --config first: its [server] options go before the command line, which overrides them."""
        arguments = sys.argv[1:] if options is None else list(options)
        #: The command line as given (a worker of --workers gets it again).
        self.arguments = list(arguments)
        try:
            found = getopt.getopt(arguments, self.shortOpt, self.longOpt)[0]
        except getopt.GetoptError:
            found = []  # the parse below says what is wrong
        given = {name.lstrip("-"): value for name, value in found}
        if given.get("config"):
            flags = {name for name, *_ in self.optFlags}
            kinds = {
                name: FLAG if name in flags else LIST if name in self.repeatable else VALUE
                for name in self.synonyms if name not in ("help", "version")
            }
            try:
                self.config = load_config(given["config"], kinds)
            except ConfigError as error:
                raise usage.UsageError(str(error)) from None
            arguments = self.config.arguments(set(given)) + arguments
        super().parseOptions(arguments)

    def postOptions(self) -> None:
        self["listen"] = [with_backlog(endpoint) for endpoint in self["listen"] or [DEFAULT_LISTEN]]
        self["realm"] = self["realm"] or (list(self.config.realms) if self.config else [DEFAULT_REALM])
        self["allowed-origin"] = self["allowed-origin"] or ["*"]
        self["flash-allow-domain"] = self["flash-allow-domain"] or ["*"]
        for domain in self["flash-allow-domain"]:
            if not DOMAIN_PATTERN.match(domain):
                raise usage.UsageError(f"--flash-allow-domain: not a domain Flash can match: {domain!r}")
        try:
            self["flash-allow-ports"] = tuple(
                int(port) for port in (self["flash-allow-ports"] or "").split(",") if port.strip()
            )
        except ValueError:
            raise usage.UsageError("--flash-allow-ports takes port numbers separated by commas") from None
        if not 0 <= self["flash-policy-port"] <= 65535:
            raise usage.UsageError("--flash-policy-port must be from 0 to 65535")
        web = Path(self["web"]) if self["web"] else default_web_dir()
        if not web.is_dir():
            raise usage.UsageError(f"--web: {web} is not a directory")
        self["web"] = web
        if self["slow-consumer"] not in SLOW_CONSUMER_POLICIES:
            raise usage.UsageError(f"--slow-consumer must be one of {', '.join(SLOW_CONSUMER_POLICIES)}")
        if self["max-send-buffer"] < 1024:
            raise usage.UsageError("--max-send-buffer must be at least 1024")
        for name in ("max-connections", "max-connections-per-ip"):
            if self[name] < 1:
                raise usage.UsageError(f"--{name} must be at least 1")
        for name in ("handshake-timeout", "hello-timeout", "ping-timeout", "login-failure-window"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be more than 0")
        if self["max-message-size"] < 1:
            raise usage.UsageError("--max-message-size must be at least 1")
        if not self["ws-path"].strip("/"):
            raise usage.UsageError("--ws-path must not be empty")
        if self["ws-path"].strip("/") == ECHO_PATH:
            raise usage.UsageError(f"--ws-path {ECHO_PATH} is taken by the echo service")
        if self["ws-path"].strip("/") in (SSE_PATH, STREAM_PATH):
            raise usage.UsageError(f"--ws-path {self['ws-path'].strip('/')} is taken by the event streams")
        longpoll_path = self["longpoll-path"].strip("/")
        if not longpoll_path:
            raise usage.UsageError("--longpoll-path must not be empty")
        if longpoll_path in (self["ws-path"].strip("/"), ECHO_PATH, SSE_PATH, STREAM_PATH, "publish", "call"):
            raise usage.UsageError(f"--longpoll-path {longpoll_path} is taken by another endpoint")
        for name in ("ws-path", "longpoll-path"):
            if self[name].strip("/") in (HEALTH_PATH, READY_PATH):
                raise usage.UsageError(f"--{name} {self[name].strip('/')} is taken by the health checks")
        if self["longpoll-timeout"] <= 0:
            raise usage.UsageError("--longpoll-timeout must be more than 0")
        if self["retain-ttl"] is not None and self["retain-ttl"] <= 0:
            raise usage.UsageError("--retain-ttl must be more than 0")
        if self["max-resume-events"] < 1:
            raise usage.UsageError("--max-resume-events must be at least 1")
        if self["history-size"] < 0:
            raise usage.UsageError("--history-size must not be negative")
        if self["http-call-timeout"] <= 0:
            raise usage.UsageError("--http-call-timeout must be more than 0")
        for name in ("max-publish-rate", "max-subscriptions", "max-uri-length", "max-registrations",
                     "max-calls-in-flight", "max-store-bytes", "max-store-topics", "max-login-failures",
                     "max-login-failures-per-authid"):
            if self[name] < 0:
                raise usage.UsageError(f"--{name} must not be negative")
        if self["publish-burst"] < 1:
            raise usage.UsageError("--publish-burst must be at least 1")
        for name in ("max-fragments", "max-frame-rate"):
            if self[name] < 0:
                raise usage.UsageError(f"--{name} must not be negative")
        if self["frame-burst"] < 1:
            raise usage.UsageError("--frame-burst must be at least 1")
        for name in ("redis-probe-interval", "redis-probe-timeout"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be more than 0")
        if self["redis"] is not None:
            try:
                self["redis"] = RedisAddress.parse(self["redis"])
            except ValueError as error:
                raise usage.UsageError(f"--redis: {error}") from None
        if self["workers"] < 1:
            raise usage.UsageError("--workers must be at least 1")
        if self["workers"] > 1 and self["redis"] is None:
            raise usage.UsageError(f"--workers {self['workers']} needs --redis URL: workers share publications "
                                   "only through Redis (a subscriber on one would miss what is published on another)")
        if self["cluster-ttl"] < 1:
            raise usage.UsageError("--cluster-ttl must be at least 1 (second)")


def makeService(options: Options, reactor: Any = None) -> IService:
    """Build the server from parsed options (twistd calls this)."""
    if reactor is None:
        from twisted.internet import reactor
    worker = WorkerIdentity.from_environment()
    if worker is None and options["workers"] > 1:
        return makeSupervisor(options, reactor)
    backplane = None if options["redis"] is None else RedisBackplane(
        options["redis"], realms=options["realm"], reactor=reactor,
        probe=ProbeSettings(interval=options["redis-probe-interval"], timeout=options["redis-probe-timeout"]),
    )
    cluster = None if backplane is None else RedisCluster(
        backplane, reactor=reactor, carry_out=carry_out, ttl=options["cluster-ttl"]
    )
    server = WampServer(
        reactor,
        listen=options["listen"],
        web_dir=options["web"],
        ws_path=options["ws-path"],
        realms=options.config.policies(options["realm"]) if options.config else options["realm"],
        allowed_origins=options["allowed-origin"],
        limits=ConnectionLimits(
            max_message_size=options["max-message-size"],
            max_send_buffer=options["max-send-buffer"],
            slow_consumer_policy=options["slow-consumer"],
            max_connections=options["max-connections"],
            max_connections_per_ip=options["max-connections-per-ip"],
            trust_proxy=bool(options["trust-proxy"]),
            handshake_timeout=options["handshake-timeout"],
            hello_timeout=options["hello-timeout"],
            ping_interval=options["ping-interval"],
            ping_timeout=options["ping-timeout"],
            max_fragments=options["max-fragments"],
            max_frame_rate=options["max-frame-rate"],
            frame_burst=options["frame-burst"],
            compression=options["compression"],
        ),
        shutdown_timeout=options["shutdown-timeout"],
        flash_policy=FlashPolicy(
            port=options["flash-policy-port"],
            interface=options["flash-policy-interface"] or "",
            domains=tuple(options["flash-allow-domain"]),
            ports=options["flash-allow-ports"],
            required=options["flash-policy-port-explicit"],
        ),
        retain_ttl=options["retain-ttl"],
        history_size=options["history-size"],
        hixie76=bool(options["hixie76"]),
        session_limits=SessionLimits(
            publish_rate=options["max-publish-rate"],
            publish_burst=options["publish-burst"],
            max_subscriptions=options["max-subscriptions"],
            max_uri_length=options["max-uri-length"],
            max_registrations=options["max-registrations"],
            max_calls_in_flight=options["max-calls-in-flight"],
        ),
        store_limits=StoreLimits(max_bytes=options["max-store-bytes"], max_topics=options["max-store-topics"]),
        login_limits=LoginLimits(
            per_address=options["max-login-failures"],
            per_authid=options["max-login-failures-per-authid"],
            window=options["login-failure-window"],
        ),
        history=HistorySettings(
            size=options["history-size"],
            rules=(options.config.history if options.config else ()) + (DEMO_HISTORY if options["demo"] else ()),
            max_resume_events=options["max-resume-events"],
        ),
        http_api=HttpApiSettings(
            keys=options.config.http_keys if options.config else (),
            call_timeout=options["http-call-timeout"],
        ) if options["http-api"] else None,
        longpoll=LongPollSettings(path=options["longpoll-path"], session_timeout=options["longpoll-timeout"]),
        backplane=backplane,
        admin_role=options["admin-role"] or None,
        cluster=cluster,
        shared_store=None if backplane is None else RedisStore(backplane, reactor=reactor),
    )
    if worker is not None:
        serve_as_worker(server, worker, reactor)
    if options["metrics-listen"]:
        metrics = options["metrics-listen"] if worker is None else own_port(options["metrics-listen"], worker.index)
        MetricsService(reactor, metrics, server, backplane=backplane).setServiceParent(server)
    if options["demo"] and (worker is None or worker.index == 0):  # one demo producer, not one per worker
        realm = options["realm"][0]
        producer = DemoProducer(lambda topic, args: server.publish(realm, topic, args), reactor)
        producer.setServiceParent(server)
    return server


def makeSupervisor(options: Options, reactor: Any) -> IService:
    """``--workers N``: a supervisor that binds the ports and runs N workers (see workers.py)."""
    workers = SpawnedWorkers(reactor, options.arguments, count=options["workers"])

    def bind_flash_policy(binding: Any) -> None:
        if options["flash-policy-port"]:
            FlashPolicyService(binding, None, options["flash-policy-port"], options["flash-policy-interface"] or "",
                               options["flash-policy-port-explicit"]).privilegedStartService()

    return Supervisor(reactor, count=options["workers"], launch=workers,
                      bind=lambda: workers.bind(options["listen"], bind_flash_policy),
                      stop_timeout=options["shutdown-timeout"] + STOP_GRACE, release=workers.release)
