"""
The Flash path in a browser: the pages on web-socket-js, whose SWF runs in headless Chromium under
Ruffle, its socket tunnelled by websockify to ``twistd -n wsserver`` (see legacy/ruffle.py). The
echo page round-trips messages through the SWF; the pub/sub page (AutobahnJS over the shim,
``wamp.2.json``) receives an event published from Python.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest

from .legacy.browser import open_page, scripts_fetched
from .legacy.ruffle import glue_source, site_with_ruffle, socket_proxy
from .legacy.websocketjs import random_text
from .test_pages import (  # noqa: F401
    browser,
    js_string,
    wait_for_active_subscription,
    wait_for_event_containing,
    wait_for_state,
)
from .wampclient import publish_once

if TYPE_CHECKING:
    from .cdp import Chromium, Page
    from .conftest import ServerProcess

#: Ruffle compiles a 14 MB WebAssembly module first: about 2-3 s from page load to `open` here.
FLASH_OPEN_TIMEOUT = 45


class FlashSite(NamedTuple):
    server: ServerProcess
    glue: str


@pytest.fixture
def start_flash_site(start_server: Callable[..., ServerProcess], tmp_path: Path) -> Iterator[Callable[..., FlashSite]]:
    """``start_flash_site(*server_args)``: the server, its site with Ruffle, and a socket proxy to it."""
    with ExitStack() as running:

        def start(*args: str) -> FlashSite:
            server = start_server("--web", str(site_with_ruffle(tmp_path)), *args)
            proxy_port = running.enter_context(socket_proxy(server.port, tmp_path / "websockify.log"))
            return FlashSite(server, glue_source(server.port, proxy_port))

        yield start


@pytest.fixture
def flash_site(start_flash_site: Callable[..., FlashSite]) -> FlashSite:
    return start_flash_site()


def open_on_flash(browser: Chromium, site: FlashSite, path: str) -> Page:  # noqa: F811
    page = open_page(browser, site.server.http_url + path, site.glue)
    assert page.evaluate("document.documentElement.dataset.websocket") == "web-socket-js"
    assert "/vendor/web-socket-js/web_socket.js" in scripts_fetched(page)
    return page


def test_echo_page_round_trips_through_the_swf(flash_site: FlashSite, browser: Chromium) -> None:  # noqa: F811
    page = open_on_flash(browser, flash_site, "/echo.html")
    assert page.evaluate("document.getElementById('send-binary').disabled") is True
    assert page.evaluate("document.getElementById('binary-hint').hidden") is False
    started = time.monotonic()
    page.evaluate("document.getElementById('connect').click()")
    page.wait_for("document.getElementById('state').textContent === 'open'", FLASH_OPEN_TIMEOUT)
    opened_after = time.monotonic() - started

    messages = ["hello through Flash", "h\u00e9llo \u2603 \u4e2d\u6587", random_text(20_000)]
    for message in messages:
        page.evaluate(f"document.getElementById('message').value = {js_string(message)};"
                      "document.getElementById('send').click()")  # fmt: skip
    page.wait_for(f"document.querySelectorAll('#log li[data-kind=received]').length === {len(messages)}", 20)
    received = page.evaluate(
        "[...document.querySelectorAll('#log li[data-kind=received]')].reverse()"
        ".map((li) => [li.querySelector('.log-text').textContent, Number(li.dataset.rtt)])"
    )
    assert [text for text, _ in received] == [f"text {json.dumps(message, ensure_ascii=False)}" for message in messages]
    assert all(0 <= rtt < 10_000 for _, rtt in received)

    page.evaluate("document.getElementById('message').value = 'quit'; document.getElementById('send').click()")
    page.wait_for("document.getElementById('state').textContent === 'closed'", 20)
    closed = page.text("#log li[data-kind=closed] .log-text") or ""
    assert closed.startswith("code 1000 (quit)"), closed
    print(f"Flash echo: open {opened_after:.1f} s after the click; round trips {[rtt for _, rtt in received]} ms")


def test_pubsub_page_receives_an_event_published_from_python(flash_site: FlashSite, browser: Chromium) -> None:  # noqa: F811
    topic = "com.example.legacy.flash"
    page = open_on_flash(browser, flash_site, f"/pubsub.html?subscribe={topic}")
    wait_for_state(page, "open", FLASH_OPEN_TIMEOUT)
    assert (page.text("#state-reason") or "").endswith("over wamp.2.json")
    wait_for_active_subscription(page, topic, 20)

    publish_once(flash_site.server.ws_url, topic, "from python", 1, note="\u00e9\u2603")
    event = wait_for_event_containing(page, "from python", 20)
    assert '["from python",1]' in event and '{"note":"\u00e9\u2603"}' in event


def test_dashboard_shows_the_demo_through_the_swf(start_flash_site: Callable[..., FlashSite], browser: Chromium) -> None:  # noqa: F811
    page = open_on_flash(browser, start_flash_site("--demo"), "/dashboard.html")
    wait_for_state(page, "open", FLASH_OPEN_TIMEOUT)
    first = int(page.wait_for("/^\\d+$/.test(document.getElementById('ticker-value').textContent)"
                              " && document.getElementById('ticker-value').textContent", 20))
    page.wait_for(f"Number(document.getElementById('ticker-value').textContent) > {first}", 20)
    page.wait_for("!isNaN(Date.parse(document.getElementById('clock-value').textContent))", 20)  # once a second
