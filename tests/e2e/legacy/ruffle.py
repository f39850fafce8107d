"""
The Flash path for real: web-socket-js's SWF running in headless Chromium under Ruffle.

Chain (see shared/notes/flash-in-chromium.md): page -> web_socket.js -> WebSocketMain.swf in Ruffle ->
Ruffle's socket, which a browser cannot open, so Ruffle tunnels it as a binary WebSocket to a proxy
(websockify, PyPI) -> a plain TCP connection to the server's port, where the server sees exactly
what Flash Player would send. Ruffle's files (npm ``@ruffle-rs/ruffle``, a devDependency) are served
by the server under test from a copy of the installed site with ``/test-ruffle/`` added, so nothing
Ruffle-specific is in the pages users get; ``ruffle-glue.js`` does the page-side work.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..conftest import wait_for
from ..prerequisites import REPO, unavailable
from ..test_flashpolicy import free_port

RUFFLE = REPO / "node_modules" / "@ruffle-rs" / "ruffle"
GLUE = Path(__file__).with_name("ruffle-glue.js")
#: Where the copied site serves Ruffle's files.
RUFFLE_PATH = "/test-ruffle/"


def site_with_ruffle(workdir: Path) -> Path:
    """A copy of the installed site (``--web`` for the server) that also serves Ruffle at RUFFLE_PATH."""
    if not (RUFFLE / "ruffle.js").is_file():
        unavailable("node_modules/@ruffle-rs/ruffle is missing: run `make assets` (npm ci)")
    # Asked of a fresh interpreter in workdir, so that the installed package answers, not the source tree.
    installed = subprocess.run(
        [sys.executable, "-c", "import wsserver.site; print(wsserver.site.default_web_dir())"],
        cwd=workdir, capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    web = workdir / "web-with-ruffle"
    shutil.copytree(installed, web)
    # A copy, not a symlink: the site refuses symlinks that lead out of --web.
    shutil.copytree(RUFFLE, web / RUFFLE_PATH.strip("/"))
    return web


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@contextmanager
def socket_proxy(target_port: int, log_path: Path) -> Iterator[int]:
    """websockify from ``127.0.0.1:<yielded port>`` (WebSocket) to ``127.0.0.1:target_port`` (TCP)."""
    websockify = shutil.which("websockify", path=str(Path(sys.executable).parent))
    if websockify is None:
        unavailable("websockify is not installed: pip install '.[test]' (make install)")
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [websockify, f"127.0.0.1:{port}", f"127.0.0.1:{target_port}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is not None or accepts_connections(port), timeout=15)
        if proc.poll() is not None:
            raise RuntimeError(f"websockify exited: {log_path.read_text(errors='replace')}")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def glue_source(server_port: int, proxy_port: int) -> str:
    """What runs before the page's scripts: the glue with its settings, then ruffle.js itself."""
    settings = {
        "socketHost": "127.0.0.1",  # exactly what the SWF passes to Socket.connect: the ws:// URL's host
        "socketPort": server_port,
        "proxyUrl": f"ws://127.0.0.1:{proxy_port}",
        "publicPath": RUFFLE_PATH,
    }
    return "\n".join([
        f"var RUFFLE_TEST = {json.dumps(settings)};",
        GLUE.read_text(encoding="utf-8"),
        (RUFFLE / "ruffle.js").read_text(encoding="utf-8"),
    ])  # fmt: skip
