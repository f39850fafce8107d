"""
The Flash socket policy from raw sockets, as Flash Player asks for it: on its own port (an
ephemeral one here, 843 in production) and inline on the site's port, mixed with HTTP and WAMP.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
import urllib.request
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import TWISTD
from tests.e2e.wampclient import WampClient, publish_once

REQUEST = b"<policy-file-request/>\0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(port: int, data: bytes = REQUEST, timeout: float = 5) -> bytes:
    """Send ``data`` and read until the server closes; return what it said."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except ConnectionResetError:  # an abort: no answer is the answer
            pass
    return answer


def allowed(document: bytes) -> list[tuple[str, str]]:
    assert document.endswith(b"\0"), "the policy must end with a NUL byte"
    text = document[:-1].decode()
    root = ElementTree.fromstring(text[text.index("<cross-domain-policy>"):])
    return [(a.attrib["domain"], a.attrib["to-ports"]) for a in root.findall("allow-access-from")]


@pytest.fixture
def policy_server(start_server: Any) -> Any:
    policy_port = free_port()
    server = start_server("--flash-policy-port", str(policy_port), "--flash-policy-interface", "127.0.0.1",
                          "--flash-allow-domain", "*.example.com", "--flash-allow-domain", "localhost")
    server.policy_port = policy_port
    return server


def test_policy_port_allows_the_sites_port_for_each_domain(policy_server: Any) -> None:
    site_port = str(policy_server.port)
    assert allowed(ask(policy_server.policy_port)) == [("*.example.com", site_port), ("localhost", site_port)]


def test_site_port_answers_inline_and_still_serves_http_and_wamp(policy_server: Any) -> None:
    port = policy_server.port
    with WampClient(policy_server.ws_url) as watcher:
        inbox = watcher.subscribe("com.example.mixed")
        for n in range(20):  # policy requests, pages and events interleaved
            assert allowed(ask(port))[0] == ("*.example.com", str(port))
            with urllib.request.urlopen(f"{policy_server.http_url}/index.html", timeout=5) as page:
                assert page.status == 200
            publish_once(policy_server.ws_url, "com.example.mixed", n)
            assert inbox.get() == ((n,), {})


@pytest.mark.parametrize("data", [b"GARBAGE\0", REQUEST + b"and then some", b"<policy-file-request/>x"])
def test_policy_port_closes_on_anything_else_without_an_answer(policy_server: Any, data: bytes) -> None:
    started = time.monotonic()
    assert ask(policy_server.policy_port, data) == b""
    assert time.monotonic() - started < 1  # at once, not at the timeout


def test_silent_clients_are_dropped_and_do_not_pile_up(policy_server: Any) -> None:
    silent = [socket.create_connection(("127.0.0.1", policy_server.policy_port)) for _ in range(300)]
    try:
        started = time.monotonic()
        for sock in silent:
            sock.settimeout(10)
            try:
                assert sock.recv(1) == b""  # closed by the server...
            except ConnectionResetError:  # ...or aborted
                pass
        assert time.monotonic() - started < 8
        assert allowed(ask(policy_server.policy_port))  # and it still answers
    finally:
        for sock in silent:
            sock.close()


# Without CAP_NET_BIND_SERVICE, even root cannot bind port 843: setpriv drops the capability, so
# these run as the same user (who can read the virtualenv) with exactly the privilege missing.
UNPRIVILEGED = ["setpriv", "--bounding-set", "-net_bind_service", "--inh-caps", "-net_bind_service", "--"]


def unprivileged_available() -> bool:
    return shutil.which("setpriv") is not None and os.geteuid() == 0


@pytest.mark.skipif(not unprivileged_available(), reason="needs root and setpriv (util-linux)")
def test_without_privilege_the_default_port_is_skipped_and_the_site_serves(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*UNPRIVILEGED, TWISTD, "-n", "--pidfile=", "wsserver", "--listen", "tcp:0:interface=127.0.0.1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        log = "".join(lines)
        assert proc.poll() is None, log
        (warning,) = [line for line in lines if "Flash socket policy not served on port 843" in line]
        assert "permission denied" in warning and "--flash-policy-port 0" in warning
        port = int(log.rsplit("127.0.0.1:", 1)[1].split("/")[0])
        assert allowed(ask(port))  # the inline policy still answers
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.skipif(not unprivileged_available(), reason="needs root and setpriv (util-linux)")
def test_without_privilege_an_explicit_port_refuses_to_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [*UNPRIVILEGED, TWISTD, "-n", "--pidfile=", "wsserver", "--listen", "tcp:0:interface=127.0.0.1",
         "--flash-policy-port", "843"],
        cwd=tmp_path, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "cannot serve the Flash socket policy on port 843: permission denied" in result.stdout + result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_twistd_binds_the_policy_port_as_root_then_drops_privileges(tmp_path: Path) -> None:
    """``twistd --uid/--gid``: the policy port is bound in privilegedStartService, before the drop."""
    nobody = pwd.getpwnam("nobody")
    policy_port = free_port()  # a stand-in for 843: binding happens before the drop either way
    os.chmod(tmp_path, 0o777)
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", f"--uid={nobody.pw_uid}", f"--gid={nobody.pw_gid}", "wsserver",
         "--listen", "tcp:0:interface=127.0.0.1", "--flash-policy-port", str(policy_port)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if "set uid/gid" in line:
                break
        assert proc.poll() is None
        assert allowed(ask(policy_port))
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        assert uid_line.split()[1] == str(nobody.pw_uid)  # privileges dropped
    finally:
        proc.terminate()
        proc.wait(10)
