"""
The metrics service: what a scrape reads from the server, the core and the tally, parsed by
prometheus_client's own parser; the resource, the service and the option. Twisted's doubles
only (MemoryReactorClock, DummyRequest); the scrape of a running server is tests/e2e/test_metrics.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import capturedLogs
from twisted.web.test.requesthelper import DummyRequest

from wsserver.core.decoding import decode
from wsserver.delivery import carry_out
from wsserver.metrics import METRICS_PATH, MetricsResource, MetricsService, ServerCollector
from wsserver.service import WampServer
from wsserver.tally import Tally
from wsserver.tap import Options, makeService
from wsserver.transports.flashpolicy import FlashPolicy

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Peer:
    """A connection as the router and the collector see it: it keeps nothing it is sent."""

    wire_format = "test"
    transport_kind = "websocket"

    def __init__(self, buffered: int = 0) -> None:
        self.send_buffer = type("Buffer", (), {"counted": buffered})()

    def encode(self, message: Any) -> Any:
        return message

    def write_encoded(self, data: Any) -> None:
        pass

    def close_transport(self, reason: Any, detail: str) -> None:
        pass


class Backplane:
    """What the collector reads of a RedisBackplane."""

    def __init__(self, *, reason: str | None) -> None:
        self.reason = reason
        self.forwarded, self.unforwarded, self.received, self.lost, self.rebuilt = 5, 2, 7, 3, 1

    def not_ready(self) -> str | None:
        return self.reason


def server(tmp_path: Path, realms: tuple[str, ...] = ("realm1",)) -> WampServer:
    return WampServer(MemoryReactorClock(), listen=["tcp:0"], web_dir=tmp_path, realms=realms,
                      flash_policy=FlashPolicy(port=0))


def samples(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def collected(wamp: WampServer, **options: Any) -> Samples:
    registry = CollectorRegistry()
    registry.register(ServerCollector(wamp, **options))
    return samples(registry)


def joined(wamp: WampServer, peer: Peer, realm: str = "realm1", topic: str | None = None) -> None:
    session = wamp.router.attach(peer)
    for raw in ([1, realm, {"roles": {"subscriber": {}, "publisher": {}}}], [32, 1, {}, topic]):
        if raw[-1] is not None:
            (message,) = decode([raw])
            carry_out(wamp.router.receive(session, message))


def test_a_scrape_reads_connections_sessions_subscriptions_and_buffered_bytes_from_the_server(tmp_path: Path) -> None:
    wamp = server(tmp_path, realms=("realm1", "realm2"))
    peers = [Peer(buffered=100), Peer(buffered=20), Peer()]
    for peer in peers[:2]:
        wamp.ws_factory.connections.add(peer)
        joined(wamp, peer, topic="com.example.a")
    wamp.longpoll.connections.add(peers[2])
    joined(wamp, peers[2], "realm2", topic="com.example.c")
    joined(wamp, Peer(), "realm2", topic="com.example.b")
    wamp.publish("realm1", "com.example.a", [1])
    wamp.publish("realm1", "com.example.a", [2])
    found = collected(wamp)
    assert found[("wsserver_connections", (("transport", "websocket"),))] == 2
    assert found[("wsserver_connections", (("transport", "longpoll"),))] == 1
    assert found[("wsserver_connections", (("transport", "sse"),))] == 0
    assert found[("wsserver_send_buffer_bytes", (("transport", "websocket"),))] == 120
    assert found[("wsserver_send_buffer_bytes", (("transport", "longpoll"),))] == 0
    assert found[("wsserver_sessions", (("realm", "realm1"),))] == 2
    assert found[("wsserver_sessions", (("realm", "realm2"),))] == 2
    assert found[("wsserver_subscriptions", (("realm", "realm1"),))] == 1
    assert found[("wsserver_subscribers", (("realm", "realm1"),))] == 2
    assert found[("wsserver_subscriptions", (("realm", "realm2"),))] == 2
    assert found[("wsserver_publications_total", (("realm", "realm1"),))] == 2
    assert found[("wsserver_publications_total", (("realm", "realm2"),))] == 0


def test_counters_come_from_the_tally_and_the_routers_refused_logins_with_every_label_from_zero(tmp_path: Path) -> None:
    wamp = server(tmp_path)
    tally = Tally()
    tally.deliveries["websocket"] += 1000
    tally.deliveries["other"] += 1  # a peer that names no transport still counts
    tally.dropped_events["slow_consumer"] += 12
    tally.disconnects["ping_timeout"] += 3
    wamp.router.refused_logins["ticket"] += 2
    found = collected(wamp, tally=tally)
    assert found[("wsserver_deliveries_total", (("transport", "websocket"),))] == 1000
    assert found[("wsserver_deliveries_total", (("transport", "other"),))] == 1
    assert found[("wsserver_deliveries_total", (("transport", "sse"),))] == 0
    assert found[("wsserver_dropped_events_total", (("reason", "slow_consumer"),))] == 12
    assert found[("wsserver_disconnects_total", (("reason", "ping_timeout"),))] == 3
    assert found[("wsserver_disconnects_total", (("reason", "slow_consumer"),))] == 0
    assert found[("wsserver_disconnects_total", (("reason", "protocol_violation"),))] == 0
    assert found[("wsserver_auth_failures_total", (("method", "ticket"),))] == 2
    assert found[("wsserver_auth_failures_total", (("method", "wampcra"),))] == 0
    assert not any(name.startswith("wsserver_backplane") for name, _ in found)


@pytest.mark.parametrize("reason, connected", [(None, 1), ("Redis unreachable", 0)])
def test_the_backplanes_connection_and_counters_are_read_from_it(tmp_path: Path, reason: str | None,
                                                                 connected: int) -> None:
    found = collected(server(tmp_path), backplane=Backplane(reason=reason))
    assert found[("wsserver_backplane_connected", ())] == connected
    assert found[("wsserver_backplane_forwarded_total", ())] == 5
    assert found[("wsserver_backplane_unforwarded_total", ())] == 2
    assert found[("wsserver_backplane_received_total", ())] == 7
    assert found[("wsserver_backplane_lost_total", ())] == 3
    assert found[("wsserver_backplane_rebuilt_total", ())] == 1


def test_the_resource_answers_in_the_text_format_or_openmetrics_when_asked(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(ServerCollector(server(tmp_path)))
    plain = DummyRequest([b""])
    body = MetricsResource(registry).render_GET(plain)
    assert plain.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"text/plain; version=0.0.4")
    assert b'wsserver_sessions{realm="realm1"} 0.0' in body
    openmetrics = DummyRequest([b""])
    openmetrics.requestHeaders.setRawHeaders(b"accept", [b"application/openmetrics-text; version=1.0.0"])
    body = MetricsResource(registry).render_GET(openmetrics)
    assert openmetrics.responseHeaders.getRawHeaders(b"content-type")[0].startswith(b"application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_the_service_times_publications_while_it_runs_and_serves_metrics_and_health_alone(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    wamp = WampServer(reactor, listen=["tcp:0"], web_dir=tmp_path, flash_policy=FlashPolicy(port=0))
    tally = Tally()
    metrics = MetricsService(reactor, "tcp:0:interface=127.0.0.1", wamp, tally=tally)
    with capturedLogs() as events:
        metrics.startService()  # binds a real port (the site's guarded ports do), on loopback
    assert tally.observe_publication == metrics.publish_to_write.observe
    assert metrics.port is not None and metrics.factory.resource is metrics.root
    assert set(metrics.root.children) == {METRICS_PATH.encode(), b"healthz", b"readyz"}
    port = metrics.port.getHost().port
    assert [e["url"] for e in events if "url" in e] == [f"http://127.0.0.1:{port}/metrics"]
    tally.observe_publication(0.002)
    found = samples(metrics.registry)
    assert found[("wsserver_publish_to_write_seconds_count", ())] == 1
    assert found[("wsserver_publish_to_write_seconds_bucket", (("le", "0.0025"),))] == 1
    assert found[("wsserver_publish_to_write_seconds_bucket", (("le", "0.001"),))] == 0
    assert ("process_resident_memory_bytes", ()) in found
    metrics.stopService()
    reactor.advance(0)  # the port closes
    assert tally.observe_publication is None


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_metrics_are_off_by_default_and_on_with_the_option_or_the_config_file(tmp_path: Path) -> None:
    def metrics_of(options: Options) -> list[MetricsService]:
        return [s for s in makeService(options, reactor=MemoryReactorClock()) if isinstance(s, MetricsService)]

    assert parse()["metrics-listen"] is None and metrics_of(parse()) == []
    [given] = metrics_of(parse("--metrics-listen", "tcp:9100:interface=127.0.0.1"))
    assert given.description == "tcp:9100:interface=127.0.0.1"
    path = tmp_path / "wsserver.toml"
    path.write_text('[server]\nmetrics-listen = "tcp:9200"\n\n[realms.realm1]\n')
    [configured] = metrics_of(parse("--config", str(path)))
    assert configured.description == "tcp:9200"


def test_refused_http_api_keys_count_as_auth_failures_beside_the_routers(tmp_path: Path) -> None:
    wamp = server(tmp_path)
    tally = Tally()
    tally.auth_failures["http_key"] += 4
    wamp.router.refused_logins["wampcra"] += 1
    found = collected(wamp, tally=tally)
    assert found[("wsserver_auth_failures_total", (("method", "http_key"),))] == 4
    assert found[("wsserver_auth_failures_total", (("method", "wampcra"),))] == 1
