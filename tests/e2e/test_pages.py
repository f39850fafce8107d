"""
The site's pages in a real browser: headless Chromium (Debian's /usr/bin/chromium, driven over the
DevTools pipe by ``cdp.py``) loads them from ``twistd -n wsserver`` and talks WAMP to it through
AutobahnJS, while Python publishes with autobahn-python. Plus plain HTTP checks of what is served.
"""

from __future__ import annotations

import hashlib
import json
import runpy
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .cdp import Chromium, Page, chromium_path
from .prerequisites import unavailable
from .wampclient import publish_once

if TYPE_CHECKING:
    from .conftest import ServerProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    """A headless Chromium with a fresh profile; skipped (failed in CI) if Chromium is not installed."""
    executable = chromium_path()
    if executable is None:
        unavailable("chromium is not installed (Debian: apt-get install chromium)")
    with Chromium.launch(tmp_path / "chromium-profile", executable) as chromium:
        yield chromium


# -- what a test asks the page --------------------------------------------------------------------


def js_string(value: str) -> str:
    """``value`` as a JavaScript string literal."""
    return json.dumps(value)


def wait_for_state(page: Page, state: str, timeout: float = 10.0) -> None:
    """Wait until ``#state`` reads exactly ``state`` (connecting, open or closed)."""
    page.wait_for(f"document.getElementById('state').textContent === {js_string(state)}", timeout)


def wait_for_active_subscription(page: Page, topic: str, timeout: float = 10.0) -> None:
    """Wait until the pubsub page lists ``topic`` as acknowledged by the broker."""
    page.wait_for(
        f"document.querySelector('#subscriptions li[data-topic=' + CSS.escape({js_string(topic)}) + ']')"
        "?.dataset.status === 'active'",
        timeout,
    )


def wait_for_event_containing(page: Page, text: str, timeout: float = 10.0) -> str:
    """Wait until an element ``.event`` in ``#events`` contains ``text``; return its text."""
    event: str = page.wait_for(
        "[...document.querySelectorAll('#events .event')]"
        f".map((event) => event.textContent).find((content) => content.includes({js_string(text)}))",
        timeout,
    )
    return event


def notices(page: Page) -> list[str]:
    """The texts of the notices the page shows, newest first."""
    texts: list[str] = page.evaluate("[...document.querySelectorAll('#notices .notice')].map((n) => n.textContent)")
    return texts


# -- pages in the browser -------------------------------------------------------------------------


def test_pubsub_page_shows_events_and_resubscribes_after_the_server_restarts(
    server: ServerProcess, browser: Chromium
) -> None:
    """
    The page subscribes from ``?subscribe=``, shows an event published from Python, shows ``closed``
    when the server stops, and after the server is back on the same port reconnects by itself,
    says it re-subscribed, and shows events published after the restart.
    """
    topic = "com.example.e2e.restart"
    page = browser.new_page(f"{server.http_url}/pubsub.html?subscribe={topic}")
    wait_for_state(page, "open")
    wait_for_active_subscription(page, topic)

    publish_once(server.ws_url, topic, "before the restart", 1)
    event = wait_for_event_containing(page, "before the restart")
    assert topic in event
    assert '["before the restart",1]' in event
    assert "first event" in event

    server.stop()
    wait_for_state(page, "closed")
    assert page.text("#state-reason"), "the page should say why it is closed"

    server.start()
    wait_for_state(page, "open", timeout=20)
    page.wait_for(
        "[...document.querySelectorAll('#notices .notice')]"
        ".some((n) => n.textContent.includes('re-subscribed after reconnect'))",
        timeout=10,
    )
    assert any(topic in notice for notice in notices(page))
    wait_for_active_subscription(page, topic)

    publish_once(server.ws_url, topic, "after the restart", 2)
    event = wait_for_event_containing(page, "after the restart")
    assert '["after the restart",2]' in event
    assert (page.text("#events .event .event-gap") or "").endswith(" s")  # "+12.34 s" since the previous one
    assert page.evaluate("document.querySelectorAll('#events .event').length") == 2


def test_pubsub_page_subscribes_and_publishes_from_its_forms(server: ServerProcess, browser: Chromium) -> None:
    """
    Subscribe with the form, then publish with the form: the page receives its own events
    (``exclude_me: false``); a payload that parses as JSON is sent as JSON, anything else as text.
    """
    topic = "com.example.e2e.forms"
    page = browser.new_page(f"{server.http_url}/pubsub.html")
    wait_for_state(page, "open")

    page.evaluate(
        f"document.getElementById('topic').value = {js_string(topic)};"
        "document.getElementById('subscribe').click()"
    )
    wait_for_active_subscription(page, topic)

    def publish_from_form(payload: str) -> None:
        page.evaluate(
            f"document.getElementById('publish-topic').value = {js_string(topic)};"
            f"document.getElementById('publish-payload').value = {js_string(payload)};"
            "document.getElementById('publish').click()"
        )

    publish_from_form('{"text": "as JSON", "n": [1, 2]}')
    wait_for_event_containing(page, '[{"text":"as JSON","n":[1,2]}]')
    publish_from_form("not { JSON")
    wait_for_event_containing(page, '["not { JSON"]')
    assert page.text("#event-count") == "2"
    assert (page.text("#events .event .event-gap") or "").startswith("+")  # the newest is listed first


def test_pubsub_page_connection_settings_follow_the_page_address(server: ServerProcess, browser: Chromium) -> None:
    """
    The WebSocket URL follows the page's location (ws: or wss:, same host and port, path /ws)
    unless ?url= and ?realm= say otherwise; long-poll lives next to it at /lp.
    """
    page = browser.new_page(f"{server.http_url}/index.html")
    settings = page.evaluate(
        "import('/js/wsclient.js').then(({ connectionSettings }) => [\n"
        "  connectionSettings(new URL('http://example.com:8080/pubsub.html')),\n"
        "  connectionSettings(new URL('https://example.com/dashboard.html')),\n"
        "  connectionSettings(new URL('http://h:1/p.html?url=ws%3A%2F%2Fother%3A2%2Fx&realm=r2')),\n"
        "])"
    )
    assert settings == [
        {"url": "ws://example.com:8080/ws", "longPollUrl": "http://example.com:8080/lp", "realm": "realm1"},
        {"url": "wss://example.com/ws", "longPollUrl": "https://example.com/lp", "realm": "realm1"},
        {"url": "ws://other:2/x", "longPollUrl": "http://other:2/lp", "realm": "r2"},
    ]


def test_dashboard_shows_the_demo_ticker_and_clock(
    start_server: Callable[..., ServerProcess], browser: Chromium
) -> None:
    """With ``--demo`` the dashboard shows a growing integer ticker, its sparkline, and the server's clock."""
    server = start_server("--demo")
    page = browser.new_page(f"{server.http_url}/dashboard.html")
    wait_for_state(page, "open")

    first = int(page.wait_for("/^\\d+$/.test(document.getElementById('ticker-value').textContent)"
                              " && document.getElementById('ticker-value').textContent"))
    page.wait_for(f"Number(document.getElementById('ticker-value').textContent) > {first}", timeout=10)
    clock = page.wait_for(
        "(() => { const text = document.getElementById('clock-value').textContent;"
        " return !isNaN(Date.parse(text)) && text; })()"
    )
    assert clock.startswith("20") and "T" in clock  # an ISO 8601 timestamp
    assert page.evaluate("document.querySelector('#ticker-sparkline polyline').getAttribute('points')")
    assert page.evaluate("document.getElementById('demo-hint').hidden") is True


@pytest.mark.parametrize("page_path", ["/ticker.html", "/ticker-sse.html"])
def test_the_pages_without_a_library_show_the_demo_ticker(
    start_server: Callable[..., ServerProcess], browser: Chromium, page_path: str
) -> None:
    """A plain WebSocket on /stream and an EventSource on /sse: JSON.parse and nothing else."""
    server = start_server("--demo")
    page = browser.new_page(f"{server.http_url}{page_path}")
    wait_for_state(page, "open")
    first = int(page.wait_for("/^\\d+$/.test(document.getElementById('value').textContent)"
                              " && document.getElementById('value').textContent"))
    page.wait_for(f"Number(document.getElementById('value').textContent) > {first}", timeout=10)
    assert page.evaluate("typeof autobahn") == "undefined"  # no library on the page


def test_the_ticker_page_is_a_websocket_and_json_parse_in_under_40_lines() -> None:
    """What /ticker.html shows people: no script loaded, no module imported, one WebSocket, JSON.parse."""
    page = (REPO / "web" / "ticker.html").read_text()
    assert len(page.splitlines()) < 40
    assert "<script src" not in page and "import" not in page and "<link rel=\"stylesheet\"" in page
    assert page.count("new WebSocket(") == 1 and '"/stream?topic=com.example.ticker"' in page
    assert page.count("JSON.parse(") == 1


def test_dashboard_hints_at_demo_when_no_events_arrive(server: ServerProcess, browser: Chromium) -> None:
    """Without ``--demo`` nothing is published, and after a few seconds the dashboard says to use it."""
    page = browser.new_page(f"{server.http_url}/dashboard.html")
    wait_for_state(page, "open")
    page.wait_for("!document.getElementById('demo-hint').hidden", timeout=15)
    assert "--demo" in (page.text("#demo-hint") or "")
    assert page.text("#ticker-value") == "–"


# -- what the server sends ------------------------------------------------------------------------


def pinned_checksums() -> dict[str, str]:
    """web/vendor/ path -> SHA-256, from the table in tools/copy_assets.py (a script, not a package)."""
    assets = runpy.run_path(str(REPO / "tools" / "copy_assets.py"))["ASSETS"]
    return {asset.dest: asset.sha256 for asset in assets}


def fetch(url: str) -> tuple[str, bytes]:
    """GET ``url``; return the Content-Type and the body."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.headers.get("Content-Type", ""), response.read()


#: path -> (a substring of the Content-Type, a substring of the body)
SITE_FILES = {
    "/": ("text/html", b"WAMP v2"),
    "/index.html": ("text/html", b"/pubsub.html"),
    "/pubsub.html": ("text/html", b'id="state"'),
    "/dashboard.html": ("text/html", b'id="ticker-value"'),
    "/ticker.html": ("text/html", b'new WebSocket(url)'),
    "/ticker-sse.html": ("text/html", b'new EventSource("/sse?topic=com.example.ticker")'),
    "/chat.html": ("text/html", b'id="presence-count"'),
    "/status.html": ("text/html", b'id="banner"'),
    "/css/site.css": ("text/css", b"--accent"),
    "/css/pubsub.css": ("text/css", b".event"),
    "/css/dashboard.css": ("text/css", b".sparkline"),
    "/js/wsclient.js": ("javascript", b"export class WampClient"),
    "/js/ui.js": ("javascript", b"export function showState"),
    "/js/pubsub.js": ("javascript", b"exclude_me: false"),
    "/js/dashboard.js": ("javascript", b"com.example.ticker"),
    "/js/chat.js": ("javascript", b"com.example.chat.room."),
    "/js/status.js": ("javascript", b"com.example.status"),
    "/css/chat.css": ("text/css", b".messages"),
    "/css/status.css": ("text/css", b".banner"),
}


def test_site_files_are_served_with_their_content_types(server: ServerProcess) -> None:
    """Each page, stylesheet and script is served with a content type a browser accepts for it."""
    problems = []
    for path, (content_type, contains) in SITE_FILES.items():
        served_type, body = fetch(server.http_url + path)
        if content_type not in served_type:
            problems.append(f"{path}: Content-Type {served_type!r}, expected {content_type}")
        if contains not in body:
            problems.append(f"{path}: body lacks {contains!r}")
    assert not problems, "\n".join(problems)


def test_the_index_links_every_page(server: ServerProcess) -> None:
    _, index = fetch(server.http_url + "/index.html")
    pages = sorted(path.name for path in (REPO / "web").glob("*.html") if path.name != "index.html")
    assert {"chat.html", "status.html", "ticker.html"} <= set(pages)
    assert [page for page in pages if f'href="/{page}"'.encode() not in index] == []


def test_autobahnjs_is_served_from_vendor_with_the_pinned_checksum(server: ServerProcess) -> None:
    """/vendor/autobahn/autobahn.min.js is JavaScript and exactly the file tools/copy_assets.py pinned."""
    pinned = pinned_checksums()
    served_type, body = fetch(f"{server.http_url}/vendor/autobahn/autobahn.min.js")
    assert "javascript" in served_type
    assert hashlib.sha256(body).hexdigest() == pinned["autobahn/autobahn.min.js"]
