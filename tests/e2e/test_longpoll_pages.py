"""
The pages when WebSocket does not get through: headless Chromium loads them through a small HTTP
proxy that strips ``Upgrade`` (as some corporate proxies do), so every WebSocket handshake reaches
the server as a plain GET and fails; ``wsclient.js`` falls back to long-poll, and the pages work
and say "long-poll". Without the proxy, the same pages say "WebSocket".
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from .cdp import Chromium
from .test_pages import browser, js_string, wait_for_active_subscription, wait_for_event_containing, wait_for_state
from .wampclient import publish_once

if TYPE_CHECKING:
    from .conftest import ServerProcess

__all__ = ["browser"]  # the fixture, shared with test_pages.py

HOP_BY_HOP = re.compile(rb"^(upgrade|connection|keep-alive|proxy-connection):", re.IGNORECASE)


class UpgradeStrippingProxy(socketserver.ThreadingTCPServer):
    """
    One request per connection: reads a request head (and its Content-Length body), drops
    ``Upgrade`` and ``Connection``, asks the server with ``Connection: close`` and relays the answer.
    With ``swallow_websockets`` it instead accepts every WebSocket upgrade itself and then passes
    nothing on, either way (a proxy that buffers frames forever).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream_port: int, swallow_websockets: bool = False) -> None:
        self.upstream_port = upstream_port
        self.swallow_websockets = swallow_websockets
        self.requests: list[bytes] = []
        super().__init__(("127.0.0.1", 0), ProxyHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ProxyHandler(socketserver.BaseRequestHandler):
    server: UpgradeStrippingProxy

    def handle(self) -> None:
        client: socket.socket = self.request
        client.settimeout(30)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = client.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in lines if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            chunk = client.recv(65536)
            if not chunk:
                return
            body += chunk
        self.server.requests.append(lines[0])
        key = next((line.split(b":", 1)[1].strip() for line in lines if line.lower().startswith(b"sec-websocket-key:")), None)
        if self.server.swallow_websockets and key is not None:
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            client.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n")
            while client.recv(65536):  # the HELLO, and whatever follows, goes nowhere
                pass
            return
        kept = [line for line in lines if not HOP_BY_HOP.match(line)] + [b"Connection: close"]
        with socket.create_connection(("127.0.0.1", self.server.upstream_port), timeout=30) as upstream:
            upstream.sendall(b"\r\n".join(kept) + b"\r\n\r\n" + body)
            while chunk := upstream.recv(65536):
                client.sendall(chunk)


@pytest.fixture
def proxy(server: ServerProcess) -> Iterator[UpgradeStrippingProxy]:
    with UpgradeStrippingProxy(server.port) as running:
        thread = threading.Thread(target=running.serve_forever, daemon=True)
        thread.start()
        yield running
        running.shutdown()


def wait_for_transport(page: object, transport: str, timeout: float = 20.0) -> None:
    page.wait_for(  # type: ignore[attr-defined]
        f"document.getElementById('transport').textContent === {js_string(transport)}", timeout
    )


def test_pubsub_page_falls_back_to_long_poll_behind_a_proxy_that_strips_upgrade(
    server: ServerProcess, proxy: UpgradeStrippingProxy, browser: Chromium
) -> None:
    topic = "com.example.e2e.longpoll"
    page = browser.new_page(f"{proxy.url}/pubsub.html?subscribe={topic}")
    wait_for_state(page, "open", timeout=20)
    wait_for_transport(page, "long-poll")
    assert any(line.startswith(b"GET /ws ") for line in proxy.requests), "the page tried WebSocket first"
    wait_for_active_subscription(page, topic)
    publish_once(server.ws_url, topic, "from python", 1)
    assert '["from python",1]' in wait_for_event_containing(page, "from python")
    page.evaluate(
        f"document.getElementById('publish-topic').value = {js_string(topic)};"
        "document.getElementById('publish-payload').value = '{\"from\": \"the page\"}';"
        "document.getElementById('publish').click()"
    )
    wait_for_event_containing(page, '[{"from":"the page"}]')
    assert page.evaluate("document.getElementById('transport').textContent") == "long-poll"


def test_dashboard_shows_the_demo_over_long_poll_behind_a_proxy_that_strips_upgrade(
    start_server: Callable[..., ServerProcess], browser: Chromium
) -> None:
    server = start_server("--demo")
    with UpgradeStrippingProxy(server.port) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        page = browser.new_page(f"{proxy.url}/dashboard.html")
        wait_for_state(page, "open", timeout=20)
        wait_for_transport(page, "long-poll")
        first = int(page.wait_for("/^\\d+$/.test(document.getElementById('ticker-value').textContent)"
                                  " && document.getElementById('ticker-value').textContent", timeout=15))
        page.wait_for(f"Number(document.getElementById('ticker-value').textContent) > {first}", timeout=10)
        assert page.evaluate("document.getElementById('demo-hint').hidden") is True
        proxy.shutdown()


def test_pubsub_page_falls_back_to_long_poll_when_its_websocket_opens_but_nothing_comes_through(
    server: ServerProcess, browser: Chromium
) -> None:
    with UpgradeStrippingProxy(server.port, swallow_websockets=True) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        page = browser.new_page(f"{proxy.url}/pubsub.html")
        wait_for_state(page, "open", timeout=20)
        wait_for_transport(page, "long-poll")
        assert any(line.startswith(b"GET /ws ") for line in proxy.requests)
        proxy.shutdown()


def test_pages_say_websocket_when_it_gets_through(server: ServerProcess, browser: Chromium) -> None:
    page = browser.new_page(f"{server.http_url}/pubsub.html")
    wait_for_state(page, "open")
    wait_for_transport(page, "WebSocket", timeout=10)


#: AutobahnJS in the page, over its long-poll transport only: join, subscribe, publish to itself,
#: call the meta API; resolves to what it saw.
AUTOBAHNJS_OVER_LONG_POLL = """
new Promise((resolve, reject) => {
  const connection = new autobahn.Connection({
    transports: [{ type: "longpoll", url: %s }], realm: "realm1", max_retries: 0,
  });
  const seen = {};
  connection.onopen = async (session, details) => {
    try {
      seen.transport = details.transport.type;
      const events = [];
      await session.subscribe("com.example.browser.lp", (args) => events.push(args[0]));
      await session.publish("com.example.browser.lp", ["to myself"], {}, { acknowledge: true, exclude_me: false });
      seen.count = await session.call("wamp.session.count");
      while (!events.length) await new Promise((r) => setTimeout(r, 20));
      seen.events = events;
      connection.close();
    } catch (error) { reject(String(error.error || error)); }
  };
  connection.onclose = (reason) => { seen.closed = reason; resolve(seen); };
  connection.open();
})
"""


def test_autobahnjs_in_chromium_over_long_poll_from_another_allowed_origin(
    start_server: Callable[..., ServerProcess], browser: Chromium
) -> None:
    """
    A page of http://127.0.0.1:PORT uses long-poll at http://localhost:PORT (another origin that
    --allowed-origin allows): CORS with credentials, as AutobahnJS sends its requests.
    """
    server = start_server("--allowed-origin", "http://127.0.0.1:*")
    page = browser.new_page(f"{server.http_url}/pubsub.html")
    wait_for_state(page, "open")
    seen = page.evaluate(AUTOBAHNJS_OVER_LONG_POLL % js_string(f"http://localhost:{server.port}/lp"), timeout=20)
    assert seen == {"transport": "longpoll", "count": 2, "events": ["to myself"], "closed": "closed"}
