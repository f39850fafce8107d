"""
The echo service at ``/echo`` from a real WebSocket client (python-websockets) and ``echo.html`` in
headless Chromium: text and binary come back unchanged, ``quit`` closes with 1000, the page logs
every message with its round-trip time and every close with its code.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from websockets.exceptions import ConnectionClosedOK
from websockets.sync.client import connect

from .test_pages import browser, js_string  # noqa: F401 (browser: a fixture)

if TYPE_CHECKING:
    from .cdp import Chromium, Page
    from .conftest import ServerProcess


def echo_url(server: ServerProcess) -> str:
    return server.ws_url.removesuffix("/ws") + "/echo"


def test_text_and_binary_come_back_unchanged_and_quit_closes(server: ServerProcess) -> None:
    with connect(echo_url(server), open_timeout=5, close_timeout=5) as websocket:
        assert websocket.subprotocol is None
        for message in ["hello", "\u00e9\u2603 \U0001f600", "x" * 100_000, os.urandom(70_000), b"\x00\xff"]:
            websocket.send(message)
            assert websocket.recv(timeout=5) == message
        websocket.send(b"quit")  # binary: just echoed
        assert websocket.recv(timeout=5) == b"quit"
        websocket.send("quit")
        try:
            websocket.recv(timeout=5)
            raise AssertionError("the server should have closed the connection")
        except ConnectionClosedOK as closed:
            assert closed.rcvd is not None and (closed.rcvd.code, closed.rcvd.reason) == (1000, "quit")


def log_entries(page: Page, kind: str) -> list[dict[str, str]]:
    """The page's log lines of one kind, oldest first: their text and round-trip time."""
    entries: list[dict[str, str]] = page.evaluate(
        f"[...document.querySelectorAll('#log li[data-kind={kind}]')].reverse()"
        ".map((li) => ({text: li.querySelector('.log-text').textContent, rtt: li.dataset.rtt || ''}))"
    )
    return entries


def test_echo_page_round_trips_text_and_binary_and_logs_closes(server: ServerProcess, browser: Chromium) -> None:  # noqa: F811
    page = browser.new_page(f"{server.http_url}/echo.html")
    assert page.evaluate("document.getElementById('url').value") == echo_url(server)
    page.evaluate("document.getElementById('connect').click()")
    page.wait_for("document.getElementById('state').textContent === 'open'")

    def send(message: str, button: str = "send") -> None:
        page.evaluate(f"document.getElementById('message').value = {js_string(message)};"
                      f"document.getElementById({js_string(button)}).click()")  # fmt: skip

    send("hello \u2603")
    send("bytes", "send-binary")
    page.wait_for("document.querySelectorAll('#log li[data-kind=received]').length === 2")
    first, second = log_entries(page, "received")
    assert first["text"] == 'text "hello \u2603"'
    assert second["text"] == "binary, 5 bytes: 62 79 74 65 73"
    for entry in (first, second):
        assert 0 <= float(entry["rtt"]) < 5000

    send("quit")
    page.wait_for("document.getElementById('state').textContent === 'closed'")
    # "not clean" in Chromium: Autobahn resets the TCP connection once a close it started completes
    assert log_entries(page, "closed")[-1]["text"].startswith("code 1000 (quit), ")

    page.evaluate("document.getElementById('connect').click()")
    page.wait_for("document.getElementById('state').textContent === 'open'")
    page.evaluate("document.getElementById('disconnect').click()")
    page.wait_for("document.querySelectorAll('#log li[data-kind=closed]').length === 2")
    assert log_entries(page, "closed")[-1]["text"] == "code 1000, clean"  # closed by the page
