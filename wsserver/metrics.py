"""
Prometheus metrics on an endpoint of their own (``--metrics-listen``), so that they stay private.

Theory of operation
-------------------
Nothing on the fan-out path calls prometheus_client (its counters take a lock per increment, a
delivery is one dict lookup and one buffered write). The numbers come from three places, all read
when Prometheus scrapes, on the reactor thread, by :class:`ServerCollector`:

- what the server holds now, from its own objects: connections per transport (each endpoint's
  open connections), sessions and subscriptions per realm (the router's realms), the bytes waiting
  in the send buffers (a sum over the open connections: a scrape costs time proportional to them),
  the backplane's connection;
- what the core has done, from its plain counts: publications (``Broker.published``) and refused
  logins by method (``Router.refused_logins``): the core stays free of I/O and of this module;
- what the transports have done, from the process's :data:`wsserver.tally.TALLY`: deliveries
  (counted once per EVENT and batch of recipients), events dropped, connections closed by reason;
  and the backplane's counters (``forwarded``, ``unforwarded``, ``received``, ``lost``, ``rebuilt``).

One metric is a prometheus_client object: the ``wsserver_publish_to_write_seconds`` histogram,
observed once per publication (not per recipient) while the metrics service runs.

The site does not serve ``/metrics`` and this endpoint serves nothing else; more resources (a
health check) go beside it with ``putChild`` on :attr:`MetricsService.root`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from twisted.logger import Logger
from twisted.web import resource
from twisted.web.server import Site

from wsserver.service import EndpointService, WampServer
from wsserver.tally import (
    CLOSE_REASONS,
    FRAME_RATE,
    HELLO_TIMEOUT,
    HTTP_KEY,
    INTERNAL_ERROR,
    PING_TIMEOUT,
    SLOW_CONSUMER,
    TALLY,
    TOO_MANY_FRAGMENTS,
    Tally,
)

log = Logger()

METRICS_PATH = "metrics"
#: Upper bounds of the publish-to-write histogram, in seconds: a fan-out to a few subscribers takes
#: tens of microseconds, to thousands some milliseconds; a second or more is a server in trouble.
PUBLISH_TO_WRITE_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"),
)
#: Every reason a counter may count, listed at 0 before the first (a series that appears late hides
#: its first increase from ``rate()``).
DISCONNECT_REASONS = (SLOW_CONSUMER, PING_TIMEOUT, HELLO_TIMEOUT, FRAME_RATE, TOO_MANY_FRAGMENTS, INTERNAL_ERROR,
                      *CLOSE_REASONS.values())
DROP_REASONS = (SLOW_CONSUMER,)
#: The transports that carry EVENTs (echo connections only echo).
EVENT_TRANSPORTS = ("websocket", "longpoll", "sse", "stream", "hixie76")


def open_connections(server: WampServer) -> dict[str, Any]:
    """Each transport's open connections (or sessions, for long-poll), by the transport's name."""
    return {
        "websocket": server.ws_factory.connections,
        "longpoll": server.longpoll.connections,
        "sse": server.sse.streams,
        "stream": server.stream_factory.connections,
        "hixie76": server.hixie76.connections,
        "echo": server.echo_factory.connections,
    }


def _counter(name: str, documentation: str, label: str, counts: dict[str, int], known: Iterable[str]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value in dict.fromkeys([*known, *counts]):
        family.add_metric([value], counts.get(value, 0))
    return family


class ServerCollector(Collector):
    """
    The server's metrics, read from ``server`` (and ``backplane``, when there is one) and from
    ``tally`` on every scrape (see the module docstring). Register it in a registry.
    """

    def __init__(self, server: WampServer, *, backplane: Any = None, tally: Tally = TALLY) -> None:
        self.server = server
        self.backplane = backplane
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        router = self.server.router
        connections = GaugeMetricFamily("wsserver_connections", "Open connections (long-poll: sessions), by transport.",
                                        labels=["transport"])
        buffered = GaugeMetricFamily(
            "wsserver_send_buffer_bytes",
            "Bytes waiting for clients that do not read as fast as they are sent to (beyond the sockets' own "
            "buffers; what --max-send-buffer bounds per connection), summed by transport.",
            labels=["transport"],
        )
        for transport, opened in open_connections(self.server).items():
            connections.add_metric([transport], len(opened))
            buffered.add_metric([transport], sum(
                send_buffer.counted for send_buffer in (getattr(c, "send_buffer", None) for c in opened)
                if send_buffer is not None
            ))
        yield connections
        yield buffered
        sessions = GaugeMetricFamily("wsserver_sessions", "WAMP sessions joined, by realm.", labels=["realm"])
        subscriptions = GaugeMetricFamily(
            "wsserver_subscriptions", "Subscriptions (topics and patterns with a subscriber), by realm.", labels=["realm"]
        )
        subscribers = GaugeMetricFamily(
            "wsserver_subscribers", "Sessions subscribed, counted once per subscription, by realm.", labels=["realm"]
        )
        publications = CounterMetricFamily(
            "wsserver_publications_total", "Publications from clients and the server routed, by realm.", labels=["realm"]
        )
        for name, realm in router.realms.items():
            sessions.add_metric([name], len(realm.sessions))
            subscriptions.add_metric([name], len(realm.subscriptions))
            subscribers.add_metric([name], sum(len(s.subscribers) for s in realm.subscriptions))
            publications.add_metric([name], realm.broker.published)
        yield from (sessions, subscriptions, subscribers, publications)
        tally = self.tally
        yield _counter("wsserver_deliveries_total", "EVENTs handed to connections (dropped ones too), by transport.",
                       "transport", tally.deliveries, EVENT_TRANSPORTS)
        yield _counter("wsserver_dropped_events_total", "EVENTs dropped, not sent, by reason (slow_consumer: "
                       "under --slow-consumer drop).", "reason", tally.dropped_events, DROP_REASONS)
        yield _counter("wsserver_disconnects_total", "Connections the server closed, by reason.", "reason",
                       tally.disconnects, DISCONNECT_REASONS)
        yield _counter("wsserver_auth_failures_total", "Logins refused (ABORT; HTTP 401 for the HTTP API's keys), by "
                       "the authentication method asked for.", "method",
                       {**router.refused_logins, **tally.auth_failures}, (HTTP_KEY,))
        if self.backplane is not None:
            yield from self._backplane(self.backplane)

    @staticmethod
    def _backplane(backplane: Any) -> Iterator[Metric]:
        yield GaugeMetricFamily("wsserver_backplane_connected", "1 while the backplane (--redis) reaches the other "
                                "nodes, else 0.", value=int(backplane.not_ready() is None))
        yield CounterMetricFamily("wsserver_backplane_forwarded_total", "Publications sent to the other nodes.",
                                  value=backplane.forwarded)
        yield CounterMetricFamily("wsserver_backplane_unforwarded_total", "Publications delivered on this node only: "
                                  "the backplane was unreachable.", value=backplane.unforwarded)
        yield CounterMetricFamily("wsserver_backplane_received_total", "Publications received from the other nodes.",
                                  value=backplane.received)
        yield CounterMetricFamily("wsserver_backplane_lost_total", "Publications of other nodes that never arrived "
                                  "here (counted from the gaps in each node's numbers).", value=backplane.lost)
        yield CounterMetricFamily("wsserver_backplane_rebuilt_total", "Times both Redis connections were made again "
                                  "because a probe through the subscription did not come back.", value=backplane.rebuilt)


class MetricsResource(resource.Resource):
    """
    ``GET /metrics``: ``registry`` in the Prometheus text format (or OpenMetrics, when asked for
    with Accept), collected on the reactor thread, where the server's objects live (unlike
    prometheus_client's own Twisted resource, which collects on the thread pool).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Any) -> bytes:
        encoder, content_type = choose_encoder(request.getHeader("accept"))
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return encoder(self.registry)


class UnloggedSite(Site):
    """A site that writes no access log line: Prometheus scrapes every few seconds, forever."""

    noisy = False

    def log(self, request: Any) -> None:
        pass


class MetricsService(EndpointService):
    """
    Serve ``/metrics`` for ``server`` on the endpoint ``description`` (a Twisted endpoint string);
    ``backplane``: the server's, when it has one. ``registry``: where the metrics are registered
    (a new one by default; the process's own metrics, RSS and CPU, are in it too). Add resources
    beside ``/metrics`` with ``root.putChild``. While it runs, ``tally`` times publications.
    """

    def __init__(self, reactor: Any, description: str, server: WampServer, *, backplane: Any = None,
                 registry: CollectorRegistry | None = None, tally: Tally = TALLY) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        self.registry.register(ServerCollector(server, backplane=backplane, tally=tally))
        ProcessCollector(registry=self.registry)
        self.publish_to_write = Histogram(
            "wsserver_publish_to_write_seconds",
            "Seconds from a publication handed to the router to its EVENT written to the last local recipient's "
            "connection (or send buffer); publications no one receives are not observed.",
            buckets=PUBLISH_TO_WRITE_BUCKETS, registry=self.registry,
        )
        self.tally = tally
        self.root = resource.Resource()
        self.root.putChild(METRICS_PATH.encode("ascii"), MetricsResource(self.registry))
        server.mount_health(self.root)  # a monitoring system polls them where it scrapes
        super().__init__(reactor, description, UnloggedSite(self.root))

    def startService(self) -> None:
        self.tally.observe_publication = self.publish_to_write.observe
        super().startService()

    def stopService(self) -> Any:
        self.tally.observe_publication = None
        return super().stopService()

    def _listened(self, port: Any) -> Any:
        # Not "listening on": that line is the site's address, which scripts and tests look for.
        self.port = port
        address = port.getHost()
        log.info("metrics on {url}", url=f"http://{address.host}:{address.port}/{METRICS_PATH}",
                 endpoint=self.description)
        return port
