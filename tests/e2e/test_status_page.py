"""
The status page in headless Chromium against ``twistd -n wsserver --http-api``: a separate
process, ``examples/status_publisher.py`` (and the README's ``curl`` line), publishes through the
HTTP API; the page shows the values and how long ago they were measured, a page opened later is
sent the last status at once (retained), and when the server stops the page says the connection is
lost and greys the values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .cdp import Chromium, Page
from .test_http_api import require
from .test_pages import browser, wait_for_state

if TYPE_CHECKING:
    from .conftest import ServerProcess

__all__ = ["browser"]  # the fixture, shared with test_pages.py

REPO = Path(__file__).resolve().parents[2]
STATUS_PUBLISHER = REPO / "examples" / "status_publisher.py"
#: The README's curl line (under "A status page fed by a backend process"), with the server's URL put in.
CURL = (
    "curl -sS --fail-with-body {url}/publish -H 'Content-Type: application/json' \\\n"
    """  -d '{{"topic": "com.example.status", "kwargs": {{"deploy": "v42", "updated": "'"$(date -u +%FT%TZ)"'"}}, """
    """"options": {{"retain": true}}}}'"""
)


def shown(page: Page) -> dict[str, str]:
    """The values the card shows, by name."""
    values: dict[str, str] = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#values dd')].map((dd) => [dd.dataset.name, dd.textContent]))"
    )
    return values


def test_the_page_shows_what_the_example_publishes_and_degrades_when_the_server_is_gone(
    start_server: Callable[..., ServerProcess], browser: Chromium
) -> None:
    server = start_server("--http-api")
    page = browser.new_page(f"{server.http_url}/status.html")
    wait_for_state(page, "open")
    assert page.text("#updated") == "never"

    done = subprocess.run(
        [sys.executable, str(STATUS_PUBLISHER), "--url", server.http_url, "--count", "2", "--interval", "0.2"],
        capture_output=True, text=True, timeout=30,
    )
    assert done.returncode == 0, done.stderr
    published = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(published) == 2
    status = published[-1]["kwargs"]
    assert set(status) == {"host", "load", "memory used", "uptime", "updated"}
    expected = {name: value for name, value in status.items() if name != "updated"}
    page.wait_for(f"document.querySelector('#values dd[data-name=\"host\"]')?.textContent === {json.dumps(status['host'])}")
    assert shown(page) == expected
    assert page.wait_for("/^\\d+ s ago$/.test(document.getElementById('updated').textContent)")
    assert page.evaluate("document.getElementById('status').dataset.fresh") == "true"
    assert page.evaluate("document.getElementById('banner').hidden") is True

    # The same with curl: the page updates itself again.
    require("curl")
    curl = subprocess.run(["bash", "-c", CURL.format(url=server.http_url)], capture_output=True, text=True, timeout=30)
    assert curl.returncode == 0, curl.stdout + curl.stderr
    page.wait_for("document.querySelector('#values dd[data-name=\"deploy\"]')?.textContent === 'v42'")
    assert "host" not in shown(page)

    # A page opened now is sent the last status at once: it was published with retain.
    later = browser.new_page(f"{server.http_url}/status.html")
    later.wait_for("document.querySelector('#values dd[data-name=\"deploy\"]')?.textContent === 'v42'")

    server.stop()
    wait_for_state(page, "closed")
    banner = page.wait_for("!document.getElementById('banner').hidden && document.getElementById('banner').textContent")
    assert banner.startswith("Connection lost, retrying")
    assert page.evaluate("document.getElementById('status').dataset.fresh") == "false"
    assert page.evaluate("getComputedStyle(document.querySelector('#values dd')).textDecorationLine") == "line-through"
    assert shown(page) == {"deploy": "v42"}  # still shown, greyed

    server.start()  # back: the banner goes, and the retained status is sent again
    wait_for_state(page, "open", timeout=20)
    assert page.evaluate("document.getElementById('banner').hidden") is True
    page.wait_for("document.getElementById('status').dataset.fresh === 'true'")
