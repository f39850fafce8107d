#!/usr/bin/env python3
"""
Take the README's screenshots of the demo pages in headless Chromium: ``make screenshots``.

It starts ``twistd -n wsserver --demo`` from ``.venv`` (as users start it, on a free loopback port),
opens each page of ``PAGES`` in Debian's Chromium, waits until the page shows live data (its
``ready`` expression), and writes ``docs/screenshots/<name>.png`` at 1200 x 800. Adding a page is
adding a row. The pages, the browser driver (``tests/e2e/cdp.py``) and the server process
(``tests/e2e/conftest.py``) are the ones the tests use, so a screenshot shows what the tests check.

    .venv/bin/python tools/screenshots.py [--out DIR] [NAME ...]
"""

from __future__ import annotations

import argparse
import sys
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.e2e.cdp import Chromium  # noqa: E402
from tests.e2e.conftest import ServerProcess  # noqa: E402


@dataclass(frozen=True)
class Shot:
    """One page to photograph: its path on the site and a JavaScript expression true once it shows live data."""

    name: str
    path: str
    ready: str
    #: JavaScript run once the page is ready, before settling (e.g. fill in and submit a form).
    setup: str = ""
    #: Seconds to let live data accumulate after ``ready`` (a chart's line, an age counter).
    settle: float = 0.0
    #: A program to run against the server (its URL appended) before the page opens, e.g. a publisher.
    before: tuple[str, ...] = ()


def state_is(state: str) -> str:
    return f"document.getElementById('state')?.textContent === '{state}'"


PAGES = [
    Shot("index", "/", "document.readyState === 'complete'"),
    Shot("dashboard", "/dashboard.html",
         f"{state_is('open')} && document.getElementById('clock-value').textContent !== '–'"
         " && document.getElementById('ticker-age').textContent !== 'never'", settle=4.0),
    Shot("pubsub", "/pubsub.html", state_is("open"), settle=3.0,
         setup="document.getElementById('topic').value = 'com.example.ticker';"
               " document.getElementById('subscribe').click()"),
    Shot("ticker", "/ticker.html", "document.getElementById('value').textContent !== '–'"),
    Shot("chat", "/chat.html?room=lobby&nick=alice", state_is("open"), settle=2.0,
         setup="document.getElementById('message').value = 'Hello, is anyone here?';"
               " document.getElementById('send').click()"),
    Shot("status", "/status.html", "document.getElementById('updated').textContent !== 'never'", settle=3.0,
         before=(sys.executable, str(REPO / "examples" / "status_publisher.py"), "--count", "1", "--url")),
    # Last: the pages before it are still open, so it lists their sessions.
    Shot("admin", "/admin.html", "document.readyState === 'complete'", settle=12.0,
         setup="document.getElementById('authid').value = 'admin';"
               " document.getElementById('password').value = 'screenshots';"
               " document.getElementById('log-in').click()"),
]
#: The server's options for every shot: the demo producer feeds the pages, the HTTP API the status page's
#: publisher (and see CONFIG).
SERVER_ARGS = ["--demo", "--http-api"]
#: Realm1 open to anyone, as without --config, and a principal of the admin role to log in as
#: on the admin page (ticket "screenshots"; the server listens on loopback only).
CONFIG = """
[realms.realm1]
anonymous = "anonymous"

[realms.realm1.roles.anonymous]
permissions = [{ uri = "", match = "prefix", allow = ["publish", "subscribe", "call", "register", "disclose"] }]

[realms.realm1.roles.admin]
permissions = [
  { uri = "wsserver.", match = "prefix", allow = ["subscribe", "call"] },
  { uri = "wamp.session.", match = "prefix", allow = ["call"] },
]

[realms.realm1.principals.admin]
role = "admin"
ticket = "pbkdf2-sha256$1000$5c4ee45b0751$p9Jg21u5yK4A26vvkZt15ug8Di2xquwTrQ/HS5tgQfM="
"""


def take(shots: list[Shot], out: Path, workdir: Path) -> list[Path]:
    """Photograph ``shots`` into ``out``; returns the files written. Raises if a page never gets ready."""
    out.mkdir(parents=True, exist_ok=True)
    config = workdir / "screenshots.toml"
    config.write_text(CONFIG)
    server = ServerProcess(workdir, [*SERVER_ARGS, "--config", str(config)]).start()
    written = []
    try:
        with Chromium.launch(workdir / "profile") as browser:
            for shot in shots:
                if shot.before:
                    subprocess.run([*shot.before, server.http_url], check=True, timeout=30)
                page = browser.new_page(server.http_url + shot.path)
                page.wait_for(shot.ready, timeout=20)
                if shot.setup:
                    page.evaluate(shot.setup)
                time.sleep(shot.settle)
                target = out / f"{shot.name}.png"
                target.write_bytes(page.screenshot())
                written.append(target)
    finally:
        server.stop()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "screenshots")
    parser.add_argument("names", nargs="*", help="pages to photograph (default: all)", metavar="NAME")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {shot.name for shot in PAGES}
    if unknown:
        parser.error(f"no such page: {', '.join(sorted(unknown))}")
    shots = [shot for shot in PAGES if not args.names or shot.name in args.names]
    with tempfile.TemporaryDirectory(prefix="wsserver-screenshots-") as workdir:
        for path in take(shots, args.out, Path(workdir)):
            print(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
