"""
The dashboard resumes: headless Chromium loads it through a TCP relay (``tcpproxy.py``) that the test
cuts while the demo producer (``--demo``, which keeps history for its topics) goes on publishing the
ticker. When the relay is back, the page reconnects, draws the values it missed, and says "resumed,
N missed events recovered"; after a server restart (its history gone) it says "reloaded".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from .cdp import Chromium
from .tcpproxy import CuttableProxy
from .test_pages import browser, js_string, wait_for_active_subscription, wait_for_event_containing, wait_for_state
from .wampclient import WampClient

if TYPE_CHECKING:
    from .conftest import ServerProcess

__all__ = ["browser"]  # the fixture, shared with test_pages.py

TICKER = "com.example.ticker"
POINTS = "document.querySelector('#ticker-sparkline polyline').getAttribute('points').split(' ').length"
RESUMED = re.compile(r"^resumed, (\d+) missed events? recovered$")


def ticker_value(page: object) -> int:
    return int(page.wait_for(  # type: ignore[attr-defined]
        "/^\\d+$/.test(document.getElementById('ticker-value').textContent)"
        " && document.getElementById('ticker-value').textContent", 15))


def test_dashboard_recovers_the_ticker_across_a_dropped_connection_and_reloads_after_a_restart(
    start_server: Callable[..., ServerProcess], browser: Chromium
) -> None:
    server = start_server("--demo")
    with CuttableProxy(server.port) as proxy, WampClient(server.ws_url) as watcher:
        page = browser.new_page(f"http://127.0.0.1:{proxy.port}/dashboard.html")
        wait_for_state(page, "open")
        ticker_value(page)
        assert page.evaluate("document.getElementById('ticker-resume').hidden") is True  # nothing to say yet

        ticks = watcher.subscribe(TICKER)
        proxy.cut()
        wait_for_state(page, "closed")
        shown = int(page.text("#ticker-value") or 0)
        points_before = page.evaluate(POINTS)
        missed_values: list[int] = []
        while len(missed_values) < 3:  # the producer goes on while the page is away
            value = ticks.get(timeout=10)[0][0]
            if value > shown:
                missed_values.append(value)
        proxy.restore()

        resumed = page.wait_for(
            "(() => { const line = document.getElementById('ticker-resume');"
            " return !line.hidden && line.textContent; })()", timeout=20)
        match = RESUMED.match(resumed)
        assert match, resumed
        recovered = int(match[1])
        assert recovered >= len(missed_values)
        assert page.evaluate("document.getElementById('ticker-resume').dataset.recovered") == "true"
        assert ticker_value(page) >= missed_values[-1]
        assert page.evaluate(POINTS) >= min(60, points_before + recovered)  # the missed values are drawn

        server.stop()  # no persistence: the ticker's history is gone with the process
        wait_for_state(page, "closed")
        server.start()
        page.wait_for("document.getElementById('ticker-resume').textContent === 'reloaded'", timeout=30)
        assert page.evaluate("document.getElementById('ticker-resume').dataset.recovered") == "false"
        assert "lost its history" in page.evaluate("document.getElementById('ticker-resume').title")


def test_pubsub_page_with_resume_lists_the_missed_events_as_recovered(
    start_server: Callable[..., ServerProcess], browser: Chromium
) -> None:
    topic = "com.example.e2e.resume"
    server = start_server("--history-size", "10")
    with CuttableProxy(server.port) as proxy, WampClient(server.ws_url) as publisher:
        page = browser.new_page(f"http://127.0.0.1:{proxy.port}/pubsub.html?subscribe={topic}&resume=1")
        wait_for_state(page, "open")
        wait_for_active_subscription(page, topic)
        publisher.publish(topic, "seen")
        wait_for_event_containing(page, "seen")
        proxy.cut()
        wait_for_state(page, "closed")
        for n in range(3):
            publisher.publish(topic, f"missed {n}")
        proxy.restore()
        page.wait_for(
            "[...document.querySelectorAll('#notices .notice')]"
            f".some((n) => n.textContent.includes({js_string(topic + ': resumed, 3 missed events recovered')}))",
            timeout=20,
        )
        shown = page.evaluate(
            "[...document.querySelectorAll('#events .event')].map((e) => [e.querySelector('.event-args').textContent,"
            " e.dataset.recovered === 'true'])")
    # newest first
    assert shown == [[f'args ["missed {n}"]', True] for n in (2, 1, 0)] + [['args ["seen"]', False]]
