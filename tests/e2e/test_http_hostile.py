"""
Hostile HTTP clients against the running server: slow request heads, and paths that reach for
what the site must not serve; and a port that cannot be bound. Throughout, a well-behaved
subscriber keeps every event (tests/e2e/hostile.py).
"""

from __future__ import annotations

import selectors
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TWISTD
from tests.e2e.hostile import Bystander, MemoryWatch

MiB = 2**20


def http_get(port: int, target: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One raw GET (any bytes in ``target``, as a browser would never send); status and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode("latin-1"))
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def page_loads(port: int) -> bool:
    """The index page, as a browser would load it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=5) as response:
        return response.status == 200 and b"<html" in response.read().lower()


class Herd:
    """``count`` raw connections to ``port``, driven from one selector (no thread per socket)."""

    def __init__(self, port: int, count: int = 0) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.open: set[socket.socket] = set()
        self.answers: dict[socket.socket, bytes] = {}
        #: Why each socket the server closed is closed: "eof" or the error.
        self.endings: dict[socket.socket, str] = {}
        self.connect(count)

    def connect(self, count: int) -> None:
        """``count`` more connections (past the server's backlog of 50, some wait in the kernel)."""
        port = self.port
        for _ in range(count):
            # Not blocking: past the server's backlog a connect waits, and the herd with it.
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            self.selector.register(sock, selectors.EVENT_WRITE)
            self.open.add(sock)
            self.answers[sock] = b""
        # Connected (a handshake the kernel completed, accepted by the server or not), or 2 s.
        connecting, deadline = set(self.open), time.monotonic() + 2
        while connecting and (left := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(left):
                connecting.discard(key.fileobj)  # type: ignore[arg-type]
                self.selector.modify(key.fileobj, selectors.EVENT_READ)
        for sock in connecting:
            self.selector.modify(sock, selectors.EVENT_READ)

    def send_each(self, data: bytes) -> None:
        for sock in list(self.open):
            try:
                sock.send(data)
            except OSError as error:
                self._closed(sock, error.strerror)

    def poll(self, seconds: float) -> None:
        """Read what the server says for ``seconds``; a socket it closed leaves ``open``."""
        deadline = time.monotonic() + seconds
        while self.open and (left := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(left):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(4096)
                except OSError as error:
                    self._closed(sock, error.strerror)
                    continue
                if data:
                    self.answers[sock] += data
                else:
                    self._closed(sock, "eof")

    def _closed(self, sock: socket.socket, ending: str) -> None:
        if sock in self.open:
            self.endings[sock] = ending
            self.open.discard(sock)
            self.selector.unregister(sock)

    def statuses(self) -> list[bytes]:
        return [answer[:12] for answer in self.answers.values()]

    def close(self) -> None:
        for sock in self.answers:
            sock.close()
        self.selector.close()


# -- slow request heads ----------------------------------------------------------------------------


def test_500_slow_heads_are_closed_at_the_deadline_and_the_site_keeps_serving(start_server: Any) -> None:
    # 2.5 s: a deadline between two of the attacker's bytes, so that none arrives after the 408
    # (the server's close would then answer it with a reset, and the client lose the 408).
    server = start_server("--handshake-timeout", "2.5", "--max-connections-per-ip", "2000")
    head = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        herd = Herd(server.port, 500)
        try:
            started = time.monotonic()
            for byte in head[:7]:  # one byte a second each, as the attack does: 7 s in all
                herd.send_each(bytes([byte]))
                herd.poll(1.0)
                if time.monotonic() - started > 2:
                    assert page_loads(server.port)
            still_open = len(herd.open)
            statuses = herd.statuses()
            endings = [herd.endings.get(sock, "open") for sock in herd.answers]
        finally:
            herd.close()
    # The deadline counts from the first byte (the sniffer's own timeout covers the time before).
    assert still_open == 0, f"{still_open} of 500 slow heads still open after 7 s"
    assert statuses.count(b"HTTP/1.1 408") == 500, Counter(zip(statuses, endings))
    bystander.check()
    memory.check(64 * MiB)


# -- what the static site refuses ------------------------------------------------------------------


@pytest.fixture
def hostile_web(tmp_path_factory: Any) -> Path:
    web = tmp_path_factory.mktemp("web")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("SECRET outside")
    (web / "index.html").write_text("<html><body>hi</body></html>")
    (web / ".env").write_text("SECRET=1")
    (web / ".git").mkdir()
    (web / ".git" / "config").write_text("[remote] SECRET")
    (web / ".well-known").mkdir()
    (web / ".well-known" / "security.txt").write_text("Contact: mailto:security@example.com")
    (web / "leak.txt").symlink_to(outside / "secret.txt")
    (web / "leakdir").symlink_to(outside)
    (web / "inside.html").symlink_to(web / "index.html")
    return web


REFUSED = [("/.env", 404), ("/.git/config", 404), ("/leak.txt", 404), ("/leakdir/secret.txt", 404),
           ("/a%00b", 400), ("/index.html%00.txt", 400), ("/%ff", 400)]


def test_the_site_refuses_dotfiles_escaping_symlinks_and_bad_paths(start_server: Any, hostile_web: Path) -> None:
    server = start_server("--web", str(hostile_web))
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        for _ in range(20):
            answers = {target: http_get(server.port, target) for target, _ in REFUSED}
            assert {target: (status, b"SECRET" in body) for target, (status, body) in answers.items()} == {
                target: (status, False) for target, status in REFUSED
            }
    assert "Traceback" not in server.log and "Unhandled" not in server.log, server.log[-3000:]
    # What stays served: the well-known folder, symlinks inside the site.
    assert http_get(server.port, "/.well-known/security.txt") == (200, b"Contact: mailto:security@example.com")
    assert http_get(server.port, "/inside.html")[0] == 200
    bystander.check()
    memory.check(64 * MiB)


# -- a port that cannot be bound -------------------------------------------------------------------


def test_a_port_in_use_exits_non_zero_without_claiming_to_serve(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "wsserver", "--listen", f"tcp:{port}:interface=127.0.0.1",
             "--flash-policy-port", "0"],
            cwd=tmp_path, capture_output=True, text=True, timeout=30,
        )
    log = result.stdout + result.stderr
    assert result.returncode != 0, log
    assert "cannot listen" in log and "Address already in use" in log, log
    assert "open to anyone" not in log and "listening on" not in log, log
