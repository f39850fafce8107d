"""
Pages opened with a script that runs before any of the page's own (``Page.addScriptToEvaluateOnNewDocument``),
e.g. to delete ``window.WebSocket`` as a browser without WebSocket would lack it.
"""

from __future__ import annotations

from ..cdp import Chromium, Page

#: Run before the page's scripts: a browser without WebSocket (and nothing to replace it).
WITHOUT_WEBSOCKET = "delete window.WebSocket;"


def open_page(browser: Chromium, url: str, before_page_scripts: str) -> Page:
    """A new tab that evaluates ``before_page_scripts`` in every document it loads, then ``url``."""
    target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    browser.call("Runtime.enable", session=session)
    browser.call("Page.enable", session=session)
    browser.call("Page.addScriptToEvaluateOnNewDocument", {"source": before_page_scripts}, session=session)
    page = Page(browser, session)
    page.goto(url)
    return page


def scripts_fetched(page: Page) -> list[str]:
    """Paths of the scripts the page has fetched so far, e.g. ``/vendor/web-socket-js/web_socket.js``."""
    paths: list[str] = page.evaluate(
        "performance.getEntriesByType('resource')"
        ".filter((entry) => entry.initiatorType === 'script' || entry.name.endsWith('.js'))"
        ".map((entry) => new URL(entry.name).pathname)"
    )
    return paths
