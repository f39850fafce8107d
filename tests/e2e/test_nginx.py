"""
nginx in front, as the README shows it: Debian's nginx runs ``examples/nginx.conf`` (the block the
README includes verbatim; only ports and paths substituted) in front of two ``twistd -n wsserver
--redis URL --trust-proxy --http-api`` processes on one redis-server. Through it: pages in Chromium
(over http and over https with HTTP/2), AutobahnJS on Node over WebSocket and over long-poll, SSE,
``/stream`` and the HTTP API; and whatever enters on one backend reaches subscribers on the other.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.e2e.broker_clients import Client, NodePeer
from tests.e2e.cdp import Chromium
from tests.e2e.conftest import ServerProcess, wait_for
from tests.e2e.nginxserver import EXAMPLE, NginxServer
from tests.e2e.prerequisites import REPO
from tests.e2e.redisserver import RedisServer, redis_server  # noqa: F401 (a fixture)
from tests.e2e.test_backplane import connected
from tests.e2e.test_longpoll_pages import wait_for_transport
from tests.e2e.test_pages import browser, wait_for_active_subscription, wait_for_event_containing, wait_for_state
from tests.e2e.test_tls import self_signed
from tests.e2e.wampclient import WampClient, publish_once

__all__ = ["browser", "redis_server"]  # fixtures

TOPIC = "com.example.behind.nginx"


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    nginx: NginxServer
    certificate: Path

    @property
    def backends(self) -> dict[str, ServerProcess]:
        """The backends by the address nginx logs for them (``$upstream_addr``)."""
        return {f"127.0.0.1:{node.port}": node for node in (self.a, self.b)}

    def served(self, method: str, path: str) -> list[str]:
        """The backend addresses nginx's access log gives for requests of ``path``, in order."""
        return [line.split()[3] for line in self.nginx.access_log()
                if line.split()[:2] == [method, path] and len(line.split()) == 4]


@pytest.fixture
def start_cluster(start_server: Any, redis_server: RedisServer, tmp_path: Path) -> Iterator[Any]:  # noqa: F811
    """A factory: ``start_cluster(*options)`` starts Redis, two wsserver processes with ``options`` and nginx."""
    started: list[NginxServer] = []

    def start(*options: str) -> Cluster:
        redis_server.start()
        arguments = ("--redis", redis_server.url, "--trust-proxy", "--http-api", *options)
        a, b = start_server(*arguments), start_server(*arguments)
        connected(a), connected(b)
        key, certificate = self_signed(tmp_path)
        nginx = NginxServer(tmp_path, backends=[a.port, b.port], certificate=certificate, key=key).start()
        started.append(nginx)
        return Cluster(a, b, nginx, certificate)

    yield start
    for nginx in started:
        nginx.stop()


@pytest.fixture
def cluster(start_cluster: Any) -> Cluster:
    cluster: Cluster = start_cluster()
    return cluster


def post(base_url: str, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(base_url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_readme_shows_examples_nginx_conf_verbatim() -> None:
    block = "```nginx\n" + EXAMPLE.read_text() + "```\n"
    assert block in (REPO / "README.md").read_text(), \
        "README.md must show examples/nginx.conf exactly, in an ```nginx block (the test runs that file)"


def test_autobahnjs_over_websocket_and_long_poll_through_nginx_gets_what_either_backend_publishes(
    cluster: Cluster,
) -> None:
    nginx = cluster.nginx
    websocket_url = f"ws://127.0.0.1:{nginx.http_port}/ws"
    peers = [NodePeer(websocket_url), NodePeer(websocket_url), NodePeer(f"{nginx.http_url}/lp")]
    try:
        subscriptions = [peer.request("subscribe", topic=TOPIC) for peer in peers]
        for name, node in (("a", cluster.a), ("b", cluster.b)):  # straight into each backend, not via nginx
            publish_once(node.ws_url, TOPIC, f"entered on {name}")
        for peer, subscribed in zip(peers, subscriptions):
            assert sorted(peer.event(subscribed)["args"][0] for _ in range(2)) == ["entered on a", "entered on b"]
        peers[2].request("publish", topic=TOPIC, args=["from long-poll"])
        for peer, subscribed in zip(peers[:2], subscriptions):
            assert peer.event(subscribed)["args"] == ["from long-poll"]
        assert all(peer.no_event(subscribed) for peer, subscribed in zip(peers, subscriptions))  # once each
    finally:
        for peer in peers:
            peer.close()
    # nginx put the two WebSockets on different processes (least_conn) and every request of the
    # long-poll session on one (hashed by the client's address).
    websockets = wait_for(lambda: len(cluster.served("GET", "/ws")) == 2 and cluster.served("GET", "/ws"))
    assert set(websockets) == set(cluster.backends)
    long_poll = [address for line in nginx.access_log() if "/lp/" in line for address in [line.split()[3]]]
    assert len(long_poll) >= 3 and len(set(long_poll)) == 1, long_poll


def test_sse_stream_and_the_http_api_through_nginx(cluster: Cluster) -> None:
    nginx = cluster.nginx
    sse = http.client.HTTPConnection("127.0.0.1", nginx.http_port, timeout=10)
    sse.request("GET", f"/sse?topic={TOPIC}")
    response = sse.getresponse()
    assert response.status == 200 and response.getheader("Content-Type", "").startswith("text/event-stream")
    assert response.readline().startswith(b": subscribed to")
    with ws_connect(f"ws://127.0.0.1:{nginx.http_port}/stream?topic={TOPIC}", open_timeout=5) as stream:
        for n in range(4):  # through nginx, so from any backend; the subscribers may sit on the other
            status, answer = post(nginx.http_url, "/publish", {"topic": TOPIC, "args": [n]})
            assert status == 200 and isinstance(answer["id"], int), answer
        streamed = [json.loads(stream.recv(timeout=5))["args"][0] for _ in range(4)]
    sse_args: list[Any] = []
    while len(sse_args) < 4:  # each event: "event: TOPIC", "data: {...}", blank line; passed on at once
        line = response.readline()
        if line.startswith(b"data: "):
            sse_args.append(json.loads(line[len(b"data: "):])["args"][0])
    sse.close()
    # Every one, once; but publications that enter on different processes have no common order,
    # even one after another from one client: a subscriber's own process delivers its publications
    # at once, the other's after their trip through Redis.
    assert sorted(streamed) == sorted(sse_args) == [0, 1, 2, 3]
    assert {*cluster.served("POST", "/publish")} == set(cluster.backends)  # nginx spread them over both
    # nginx appends the client's address to X-Forwarded-For: a remote client that claims to be local
    # is still remote to the HTTP API, which accepts only local requests without keys.
    status, answer = post(nginx.http_url, "/publish", {"topic": TOPIC}, {"X-Forwarded-For": "127.0.0.1"})
    assert status == 200, answer
    status, answer = post(nginx.http_url, "/publish", {"topic": TOPIC}, {"X-Forwarded-For": "203.0.113.9"})
    assert status == 403 and answer["error"] == "wamp.error.not_authorized", answer


def test_the_client_address_is_the_one_nginx_saw_whatever_x_forwarded_for_the_client_sends(
    start_cluster: Any,
) -> None:
    # One WebSocket per client address on each process: the two processes take one each, then the
    # address is full everywhere, however each client fills its own X-Forwarded-For.
    cluster = start_cluster("--max-connections-per-ip", "1")
    url = f"ws://127.0.0.1:{cluster.nginx.http_port}/ws"
    with contextlib.ExitStack() as stack:
        for n in range(2):
            stack.enter_context(ws_connect(url, subprotocols=["wamp.2.json"], open_timeout=5,
                                           additional_headers={"X-Forwarded-For": f"203.0.113.{n}"}))
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(url, subprotocols=["wamp.2.json"], open_timeout=5,
                       additional_headers={"X-Forwarded-For": "203.0.113.2"})
        assert refused.value.response.status_code == 429
    # The HTTP API without keys, which takes only local requests: a client that says it is local.
    status, answer = post(cluster.nginx.http_url, "/publish", {"topic": TOPIC}, {"X-Forwarded-For": "127.0.0.1"})
    assert status == 200, answer  # it is: the test runs on this machine


def test_tls_through_nginx_https_wss_and_http2(cluster: Cluster) -> None:
    nginx, pem = cluster.nginx, cluster.certificate.read_bytes()
    context = ssl.create_default_context(cafile=str(cluster.certificate))
    with urllib.request.urlopen(nginx.https_url + "/index.html", context=context, timeout=10) as page:
        assert page.status == 200 and b"wsserver" in page.read()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with context.wrap_socket(socket.create_connection(("127.0.0.1", nginx.https_port), timeout=5),
                             server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "h2"
    wss_url = f"wss://127.0.0.1:{nginx.https_port}/ws"
    with WampClient(wss_url, trust_pem=pem) as subscriber, WampClient(wss_url, trust_pem=pem) as publisher:
        inbox = subscriber.subscribe(TOPIC)
        publisher.publish(TOPIC, "over wss through nginx")
        publish_once(cluster.b.ws_url, TOPIC, "entered on b")
        publish_once(cluster.a.ws_url, TOPIC, "entered on a")
        assert sorted(inbox.get()[0][0] for _ in range(3)) == ["entered on a", "entered on b", "over wss through nginx"]


def test_pages_in_chromium_through_nginx_over_http_and_https(cluster: Cluster, browser: Chromium) -> None:
    browser.call("Security.setIgnoreCertificateErrors", {"ignore": True})  # the test's self-signed certificate
    for base, protocol in ((cluster.nginx.http_url, "http/1.1"), (cluster.nginx.https_url, "h2")):
        page = browser.new_page(f"{base}/pubsub.html?subscribe={TOPIC}")
        wait_for_state(page, "open")
        wait_for_transport(page, "WebSocket", timeout=10)
        wait_for_active_subscription(page, TOPIC)
        assert page.evaluate("performance.getEntriesByType('navigation')[0].nextHopProtocol") == protocol
        page.evaluate(  # an EventSource beside the page's WebSocket: over HTTP/2 on https
            f"window.sse = []; window.source = new EventSource('/sse?topic={TOPIC}');"
            f"source.addEventListener('{TOPIC}', (message) => window.sse.push(JSON.parse(message.data).args[0]))")
        page.wait_for("source.readyState === EventSource.OPEN")
        for name, node in (("a", cluster.a), ("b", cluster.b)):
            publish_once(node.ws_url, TOPIC, f"{protocol}: entered on {name}")
            wait_for_event_containing(page, f"{protocol}: entered on {name}")
            page.wait_for(f"window.sse.includes({json.dumps(f'{protocol}: entered on {name}')})")


def test_when_a_backend_stops_nginx_sends_everyone_to_the_other(cluster: Cluster) -> None:
    nginx = cluster.nginx
    websocket_url = f"ws://127.0.0.1:{nginx.http_port}/ws"
    with ws_connect(f"ws://127.0.0.1:{nginx.http_port}/stream?topic={TOPIC}", open_timeout=5) as first, \
            ws_connect(f"ws://127.0.0.1:{nginx.http_port}/stream?topic={TOPIC}", open_timeout=5) as second:
        cluster.b.stop()  # one of the two streams was on it (least_conn); its shutdown closed it
        closed = [stream for stream in (first, second) if closes(stream)]
        assert len(closed) == 1
    # New connections, requests and long-poll sessions all land on the process that is left: nginx
    # finds the other refusing connections and passes each request on (POST too: nothing was sent).
    peers = [NodePeer(websocket_url), NodePeer(websocket_url), NodePeer(f"{nginx.http_url}/lp")]
    try:
        subscriptions = [peer.request("subscribe", topic=TOPIC) for peer in peers]
        for n in range(4):
            status, _ = post(nginx.http_url, "/publish", {"topic": TOPIC, "args": [n]})
            assert status == 200
        for peer, subscribed in zip(peers, subscriptions):
            assert [peer.event(subscribed)["args"][0] for _ in range(4)] == [0, 1, 2, 3]
    finally:
        for peer in peers:
            peer.close()
    assert "connect() failed (111: Connection refused)" in nginx.error_log()


def closes(stream: Any, timeout: float = 2.0) -> bool:
    """Whether ``stream`` is closed by the server within ``timeout`` (what it receives meanwhile is skipped)."""
    try:
        while True:
            stream.recv(timeout=timeout)
    except TimeoutError:
        return False
    except ConnectionClosed:
        return True
