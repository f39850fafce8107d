"""
Hostile HTTP clients against the running server: paths that reach for what the site must not
serve. Throughout, a well-behaved subscriber keeps every event (tests/e2e/hostile.py).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

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
