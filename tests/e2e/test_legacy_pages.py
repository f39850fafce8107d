"""
The pages in headless Chromium as a browser without WebSocket sees them (``window.WebSocket``
deleted before any page script runs) and without any Flash: they load web-socket-js and say plainly
that they need Flash. With WebSocket present, they do not load the shim at all.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import pytest

from .legacy.browser import WITHOUT_WEBSOCKET, open_page, scripts_fetched
from .test_pages import browser, fetch, pinned_checksums, wait_for_state  # noqa: F401 (browser: a fixture)

if TYPE_CHECKING:
    from .cdp import Chromium
    from .conftest import ServerProcess

SHIM_SCRIPTS = ["/vendor/web-socket-js/swfobject.js", "/vendor/web-socket-js/web_socket.js"]
PAGES = ["/pubsub.html", "/dashboard.html", "/echo.html"]


@pytest.mark.parametrize("path", PAGES)
def test_without_websocket_and_flash_the_page_loads_the_shim_and_says_it_needs_flash(
    server: ServerProcess, browser: Chromium, path: str  # noqa: F811
) -> None:
    page = open_page(browser, server.http_url + path, WITHOUT_WEBSOCKET)
    page.wait_for("document.documentElement.dataset.websocket === 'unavailable'")
    fetched = scripts_fetched(page)
    assert all(script in fetched for script in SHIM_SCRIPTS), fetched
    assert page.evaluate("window.WEB_SOCKET_SWF_LOCATION") == "/vendor/web-socket-js/WebSocketMain.swf"
    notice = page.text("#websocket-unavailable") or ""
    assert notice.startswith("This page needs Flash: your browser has no WebSocket")
    assert page.evaluate("document.querySelector('main').firstElementChild.id") == "websocket-unavailable"
    assert "Flash Player >= 10.0.0 is required." in page.log  # what web_socket.js itself says


def test_without_websocket_or_flash_the_wamp_pages_use_long_poll(server: ServerProcess, browser: Chromium) -> None:  # noqa: F811
    page = open_page(browser, server.http_url + "/pubsub.html", WITHOUT_WEBSOCKET)
    wait_for_state(page, "open")
    assert page.text("#transport") == "long-poll"
    assert page.evaluate("document.documentElement.dataset.websocket") == "unavailable"


@pytest.mark.parametrize("path", PAGES)
def test_with_websocket_the_shim_is_not_loaded(server: ServerProcess, browser: Chromium, path: str) -> None:  # noqa: F811
    page = browser.new_page(server.http_url + path)
    assert page.evaluate("document.documentElement.dataset.websocket") == "native"
    assert page.evaluate("WebSocket.__isFlashImplementation === undefined && !('WEB_SOCKET_SWF_LOCATION' in window)")
    assert not [script for script in scripts_fetched(page) if "web-socket-js" in script]
    assert page.evaluate("document.getElementById('websocket-unavailable')") is None


def test_the_shim_is_served_with_the_pinned_checksums_and_the_flash_content_type(server: ServerProcess) -> None:
    pinned = pinned_checksums()
    expected_types = {"web_socket.js": "javascript", "swfobject.js": "javascript",
                      "WebSocketMain.swf": "application/x-shockwave-flash"}  # fmt: skip
    for name, content_type in expected_types.items():
        served_type, body = fetch(f"{server.http_url}/vendor/web-socket-js/{name}")
        assert content_type in served_type, name
        assert hashlib.sha256(body).hexdigest() == pinned[f"web-socket-js/{name}"], name
