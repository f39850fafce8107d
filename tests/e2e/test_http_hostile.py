"""
Hostile HTTP clients against the running server: slow request heads, many connections from one
address, more connections than the process has descriptors, and paths that reach for what the
site must not serve; and a port that cannot be bound. Throughout, a well-behaved subscriber keeps
every event (tests/e2e/hostile.py).
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from wsserver.transports.listening import SPARE_DESCRIPTORS

from tests.e2e.conftest import TWISTD, wait_for
from tests.e2e.hostile import Bystander, MemoryWatch

MiB = 2**20
GET_PAGE = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
GET_PAGE_AND_CLOSE = b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


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


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used (/proc/PID/stat), in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Herd:
    """``count`` raw connections to ``port``, driven from one selector (no thread per socket)."""

    def __init__(self, port: int, count: int = 0) -> None:
        self.port = port
        self.selector = selectors.DefaultSelector()
        self.open: set[socket.socket] = set()
        self.answers: dict[socket.socket, bytes] = {}
        #: Connections :meth:`request_each` has not sent its request on yet.
        self.unsent: set[socket.socket] = set()
        #: Why each socket the server closed is closed: "eof" or the error.
        self.endings: dict[socket.socket, str] = {}
        self.connect(count)

    def connect(self, count: int) -> None:
        """``count`` more connections (past the server's backlog of 50, some wait in the kernel)."""
        port, connecting = self.port, set[socket.socket]()
        for _ in range(count):
            # Not blocking: past the server's backlog a connect waits, and the herd with it.
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
            self.selector.register(sock, selectors.EVENT_WRITE)
            self.open.add(sock)
            self.unsent.add(sock)
            self.answers[sock] = b""
            connecting.add(sock)
        # Connected (a handshake the kernel completed, accepted by the server or not), or 2 s.
        deadline = time.monotonic() + 2
        while connecting and (left := deadline - time.monotonic()) > 0:
            for key, _ in self.selector.select(left):
                if key.fileobj in connecting:
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

    def drop(self, count: int) -> None:
        """Close the first ``count`` connections and forget them."""
        for sock in list(self.answers)[:count]:
            self._closed(sock, "dropped")
            self.endings.pop(sock)
            self.answers.pop(sock)
            self.unsent.discard(sock)
            sock.close()

    def request_each(self, request: bytes, seconds: float, at_once: int | None = None) -> None:
        """
        Send ``request`` once on each open connection, as soon as it is connected, with at most
        ``at_once`` answers awaited at a time (a request that closes its connection); read for
        ``seconds``.
        """
        deadline = time.monotonic() + seconds
        while self.open and time.monotonic() < deadline:
            waiting = len(self.open - self.unsent)
            room = len(self.unsent) if at_once is None else max(0, at_once - waiting)
            for sock in list(self.unsent & self.open)[:room]:
                try:
                    sock.send(request)
                except (BlockingIOError, OSError):  # still connecting: a SYN the backlog dropped
                    continue
                self.unsent.discard(sock)
            self.poll(0.1)

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


# -- connections per address -----------------------------------------------------------------------


def test_connections_beyond_the_per_address_limit_are_refused_at_once(start_server: Any) -> None:
    server = start_server("--max-connections-per-ip", "50", "--handshake-timeout", "30")
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        herd = Herd(server.port)
        try:
            for _ in range(5):  # plain HTTP, kept alive: before the fix, all 200 were served and held
                herd.connect(40)  # within the server's backlog, so that each is accepted now
                herd.request_each(GET_PAGE, 0.5)
            herd.poll(0.5)
            refused = 200 - len(herd.open)
            answers = Counter(herd.statuses())
        finally:
            herd.close()
        # Once they are gone, the address may connect again.
        wait_for(lambda: page_loads(server.port), timeout=5)
    # The bystander holds 2 of the address's 50.
    assert (refused, answers) == (152, {b"HTTP/1.1 200": 48, b"HTTP/1.1 429": 152})
    bystander.check()
    memory.check(64 * MiB)


# -- out of descriptors ----------------------------------------------------------------------------


def test_out_of_descriptors_pauses_accepting_and_resumes(start_server: Any) -> None:
    server = start_server("--handshake-timeout", "60", max_open_files=128)
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        herd = Herd(server.port, 200)  # more than the server has descriptors: the rest wait
        try:
            # Until the server has run out (on a loaded machine its accepts, and the kernel's
            # retries of SYNs past the backlog, take a while).
            wait_for(lambda: herd.poll(0.2) or "out of file descriptors" in server.log, timeout=40)
            herd.poll(1.0)
            cpu_before = cpu_seconds(server.proc.pid)
            herd.poll(3.0)
            cpu_used = cpu_seconds(server.proc.pid) - cpu_before
            dropped_while_full = 200 - len(herd.open)
            endings = list(herd.endings.values())
            # Some go: those that waited are accepted and served.
            herd.drop(120)
            # As many page loads at once as the server keeps descriptors for the files it serves:
            # with every other descriptor taken by a connection, more would find none (500).
            herd.request_each(GET_PAGE_AND_CLOSE, 20, at_once=SPARE_DESCRIPTORS)
            served = Counter(herd.statuses())
        finally:
            herd.close()
        assert page_loads(server.port)
    assert served == {b"HTTP/1.1 200": 80}, served
    figures = (f"server CPU {cpu_used:.2f} s in 3 s out of descriptors, {dropped_while_full} of 200 closed "
               f"instead of waiting ({sorted(set(endings))}), {server.log.count('EMFILE')} EMFILE log lines")
    # Not a busy loop: the bystander's 50 events a second cost far less than 3 s of CPU.
    assert cpu_used < 1.0, figures
    assert dropped_while_full == 0, figures
    assert server.log.count("out of file descriptors") == 1, server.log[-3000:]
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


# -- WebSocket handshakes that arrive whole (given to Autobahn without twisted.web) -------------------

WS_HEAD = ("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
           "Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n")
#: Whole heads that must not open a WebSocket, each with the status it gets.
BAD_WHOLE_HEADS = [
    (WS_HEAD.replace("Version: 13", "Version: 99"), 400),
    (WS_HEAD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400),
    (WS_HEAD.replace("Host:", "Sec-WebSocket-Key: eHh4eHh4eHh4eHh4eHh4eA==\r\nHost:"), 400),  # two keys
    (WS_HEAD.replace("GET ", "POST "), 405),  # not the direct way: twisted.web's, to Autobahn as before
    (WS_HEAD.replace("Host: 127.0.0.1\r\n", "Host: 127.0.0.1\r\nOrigin: https://elsewhere.example\r\n"), 403),
    (WS_HEAD.replace("\r\n\r\n", "\r\n" + "X-Pad: y\r\n" * 600 + "\r\n"), 400),  # more headers than twisted.web takes
]


def refusal(port: int, head: str) -> int:
    """The status a raw ``head`` gets, sent in one piece."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode("latin-1"))
        response = b""
        while b"\r\n" not in response and (chunk := sock.recv(65536)):
            response += chunk
    return int(response.split()[1])


def test_whole_websocket_heads_that_are_wrong_are_refused_and_everyone_else_is_served(start_server: Any) -> None:
    server = start_server("--allowed-origin", "http://127.0.0.1:*")
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        for _ in range(20):
            answers = [(refusal(server.port, head), expected) for head, expected in BAD_WHOLE_HEADS]
            assert [got for got, _ in answers] == [expected for _, expected in answers]
    bystander.check()
    memory.check(64 * MiB)
