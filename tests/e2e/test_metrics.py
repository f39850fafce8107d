"""
``--metrics-listen`` against ``twistd -n wsserver``: clients of every transport, a slow consumer
under ``--slow-consumer drop`` and a failed login, then a scrape of ``/metrics`` read by
prometheus_client's own parser; the metrics port serves nothing else, the site no metrics, and
scraping in a loop costs a subscriber nothing.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import wait_for
from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import HELLO, exchange, frame, open_raw, raw_session
from tests.e2e.test_longpoll import LongPoll
from tests.e2e.test_slow_consumer import Reader
from tests.e2e.test_streams import open_sse

METRICS_ON = re.compile(r"metrics on (http://127\.0\.0\.1:\d+/metrics)")
TOPIC = "com.example.metrics"
FLOOD_TOPIC = "com.example.metrics.flood"
EVENTS = 5
FLOOD_EVENTS = 200
FLOOD_EVENT_SIZE = 50_000  # 10 MB to a client that reads nothing: far more than its socket buffers hold
MAX_SEND_BUFFER = 65536


def config_text() -> str:
    from wsserver.core.authentication import hash_ticket

    return f"""
[realms.realm1]
anonymous = "anyone"

[realms.realm1.roles.anyone]
permissions = [{{ uri = "", match = "prefix", allow = ["publish", "subscribe", "call", "register"] }}]

[realms.realm1.principals.alice]
role = "anyone"
ticket = "{hash_ticket("alice-ticket", "0123456789abcdef")}"
"""


def metrics_url(server: Any) -> str:
    found = wait_for(lambda: METRICS_ON.search(server.log))
    return str(found[1])


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels, as prometheus_client's parser reads it."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = response.read().decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


def stuck_subscriber(port: int) -> socket.socket:
    """A WAMP subscriber to FLOOD_TOPIC that reads nothing once subscribed."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    open_raw(port, sock=sock)
    sock.sendall(frame(0x1, json.dumps(HELLO).encode()))
    sock.sendall(frame(0x1, json.dumps([32, 1, {}, FLOOD_TOPIC]).encode()))
    return sock


def failed_login(ws_url: str) -> None:
    with ws_connect(ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as ws:
        hello = [1, "realm1", {"roles": {"subscriber": {}}, "authmethods": ["ticket"], "authid": "alice"}]
        assert exchange(ws, hello) == [4, "ticket", {}]
        abort = exchange(ws, [5, "not-alice-ticket", {}])
        assert abort[0] == 3 and abort[2] == "wamp.error.not_authorized", abort


@pytest.fixture
def metered(start_server: Any, tmp_path: Path) -> Iterator[Any]:
    config = tmp_path / "wsserver.toml"
    config.write_text(config_text())
    server = start_server("--config", str(config), "--metrics-listen", "tcp:0:interface=127.0.0.1",
                          "--slow-consumer", "drop", "--max-send-buffer", str(MAX_SEND_BUFFER))
    yield server, metrics_url(server)


def test_a_scrape_counts_every_transport_the_slow_consumer_and_the_failed_login(metered: Any) -> None:
    server, url = metered
    readers = [Reader(ws_connect(server.ws_url, subprotocols=["wamp.2.json"], open_timeout=5), TOPIC)
               for _ in range(2)]
    for reader in readers:
        reader.start()
    sse = open_sse(server.port, socket.create_connection(("127.0.0.1", server.port), timeout=10), TOPIC)
    stream = ws_connect(f"ws://127.0.0.1:{server.port}/stream?topic={TOPIC}", open_timeout=5)
    longpoll = LongPoll(server.port)
    assert longpoll.exchange(HELLO)[0] == 2
    assert longpoll.exchange([32, 1, {}, TOPIC])[0] == 33
    stuck = stuck_subscriber(server.port)
    failed_login(server.ws_url)
    with raw_session(server.ws_url) as publisher:
        # Subscribed, all six (a /stream says nothing when it is).
        wait_for(lambda: scrape(url)[("wsserver_subscribers", (("realm", "realm1"),))] == 6)
        padding = "x" * FLOOD_EVENT_SIZE
        for n in range(FLOOD_EVENTS):
            assert exchange(publisher, [16, n + 1, {"acknowledge": True}, FLOOD_TOPIC, [n, padding]])[0] == 17
        for n in range(EVENTS):
            assert exchange(publisher, [16, 1000 + n, {"acknowledge": True}, TOPIC, [n]])[0] == 17
        wait_for(lambda: all(reader.events == EVENTS for reader in readers))
        assert [json.loads(stream.recv(timeout=5))["args"] for _ in range(EVENTS)] == [[n] for n in range(EVENTS)]
        polled = 0
        while polled < EVENTS:  # wamp.2.json: one message per /receive
            code, body = longpoll.receive()
            assert code == 200, body
            polled += json.loads(body)[0] == 36
        sse_text = b""
        while sse_text.count(f"event: {TOPIC}\n".encode()) < EVENTS:
            sse_text += sse.recv(65536)
        samples = scrape(url)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    realm = {"realm": "realm1"}
    # Connections now: two readers, the stuck subscriber and the publisher (the failed login is gone).
    assert value("wsserver_connections", transport="websocket") == 4
    assert value("wsserver_connections", transport="sse") == 1
    assert value("wsserver_connections", transport="stream") == 1
    assert value("wsserver_connections", transport="longpoll") == 1
    assert value("wsserver_connections", transport="echo") == 0
    # Those seven joined realm1; two subscriptions, six subscribers.
    assert value("wsserver_sessions", **realm) == 7
    assert value("wsserver_subscriptions", **realm) == 2
    assert value("wsserver_subscribers", **realm) == 6
    assert value("wsserver_publications_total", **realm) == FLOOD_EVENTS + EVENTS
    # Every EVENT handed to a connection counts, the stuck one's too (dropped or not).
    assert value("wsserver_deliveries_total", transport="websocket") == 2 * EVENTS + FLOOD_EVENTS
    assert value("wsserver_deliveries_total", transport="sse") == EVENTS
    assert value("wsserver_deliveries_total", transport="stream") == EVENTS
    assert value("wsserver_deliveries_total", transport="longpoll") == EVENTS
    dropped = value("wsserver_dropped_events_total", reason="slow_consumer")
    assert 0 < dropped < FLOOD_EVENTS
    assert f"{int(dropped)} events were dropped" not in server.log  # it never read again: nothing says so but this
    assert 0 < value("wsserver_send_buffer_bytes", transport="websocket") <= MAX_SEND_BUFFER
    assert value("wsserver_send_buffer_bytes", transport="sse") == 0
    assert value("wsserver_auth_failures_total", method="ticket") == 1
    assert value("wsserver_auth_failures_total", method="anonymous") == 0
    # The failed login's ABORT closed its connection ("normal": the router's close after ABORT).
    assert value("wsserver_disconnects_total", reason="normal") == 1
    assert value("wsserver_disconnects_total", reason="slow_consumer") == 0  # drop, not disconnect
    # One observation per publication, each of which reached someone.
    assert value("wsserver_publish_to_write_seconds_count") == FLOOD_EVENTS + EVENTS
    assert 0 < value("wsserver_publish_to_write_seconds_sum") < FLOOD_EVENTS + EVENTS
    assert value("process_resident_memory_bytes") > 0
    assert ("wsserver_backplane_connected", ()) not in samples  # no --redis
    for closing in (stream, *[reader.ws for reader in readers]):
        closing.close()
    for sock in (sse, stuck):
        sock.close()
    longpoll.close()


def test_the_metrics_port_answers_the_health_checks_too(metered: Any) -> None:
    _, url = metered
    base = url.removesuffix("/metrics")
    assert status(f"{base}/healthz") == 200
    assert status(f"{base}/readyz") == 200


def test_the_metrics_port_serves_only_metrics_and_the_site_no_metrics(metered: Any) -> None:
    server, url = metered
    base = url.removesuffix("/metrics")
    assert status(f"{server.http_url}/") == 200
    assert status(f"{server.http_url}/metrics") == 404
    for path in ("/", "/index.html", "/ws", "/metrics/x", "/vendor/autobahn/autobahn.min.js"):
        assert status(f"{base}{path}") == 404, path
    assert status(url) == 200
    # A scrape every few seconds is not logged (the site's 404 for /metrics is).
    assert '"GET /metrics HTTP/1.1" 200' not in server.log


def test_scraping_in_a_loop_costs_a_subscriber_nothing(start_server: Any) -> None:
    # Hundreds of WebSockets open, so that each scrape walks them all (the send-buffer sum).
    server = start_server("--metrics-listen", "tcp:0:interface=127.0.0.1")
    url = metrics_url(server)
    idle = [open_raw(server.port) for _ in range(200)]
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        for _ in range(300):
            assert scrape(url)[("wsserver_connections", (("transport", "websocket"),))] >= 200
    print(bystander.check().summary(), f"server RSS +{memory.check(16 * 2**20) / 2**20:.1f} MiB")
    for sock in idle:
        sock.close()
