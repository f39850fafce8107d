"""
Debian's nginx for end-to-end tests, running ``examples/nginx.conf`` (the file the README shows) with
only its ports and paths substituted: an unprivileged-style instance with its own main config, pid
file, temp directories, error and access logs in the test's directory, on free loopback ports,
stopped by its PID.

The access log records which backend served each request (``$upstream_addr``), so a test can tell
that nginx spread the connections over both wsserver processes.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

from tests.e2e.conftest import terminate
from tests.e2e.prerequisites import REPO, nginx_binary
from tests.e2e.redisserver import free_port

EXAMPLE = REPO / "examples" / "nginx.conf"
#: The example's backend addresses, in the order the test's wsserver processes replace them.
EXAMPLE_BACKENDS = ("127.0.0.1:8080", "127.0.0.1:8081")
EXAMPLE_CERTIFICATE = "/etc/ssl/certs/example.com.pem"
EXAMPLE_KEY = "/etc/ssl/private/example.com.key"

MAIN_CONFIG = """\
{user}worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    log_format upstream '$request_method $uri $status $upstream_addr';
    access_log {dir}/access.log upstream;
    include {dir}/wsserver.conf;
}}
"""


def substitute(example: str, *, backends: list[int], http_port: int, https_port: int,
               certificate: Path, key: Path) -> str:
    """
    ``example`` with its ports and paths replaced, and nothing else: the backends of each upstream,
    the two ``listen`` lines (on 127.0.0.1), the certificate and key. Fails if the example no longer
    has exactly what is replaced, so that a changed example cannot go untested.
    """
    replacements = [
        *((f"server {address};", f"server 127.0.0.1:{port};", 2) for address, port in zip(EXAMPLE_BACKENDS, backends)),
        ("listen 80;", f"listen 127.0.0.1:{http_port};", 1),
        ("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;", 1),
        (EXAMPLE_CERTIFICATE, str(certificate), 1),
        (EXAMPLE_KEY, str(key), 1),
    ]
    for old, new, count in replacements:
        assert example.count(old) == count, f"examples/nginx.conf should have {old!r} {count} time(s)"
        example = example.replace(old, new)
    directives = re.sub(r"#.*", "", example)
    assert not re.search(r"\b(8080|8081)\b", directives), "a backend port left unsubstituted"
    return example


class NginxServer:
    """One nginx master (and one worker) on two free loopback ports: plain http and https."""

    def __init__(self, workdir: Path, *, backends: list[int], certificate: Path, key: Path) -> None:
        self.binary = nginx_binary()
        self.dir = workdir / "nginx"
        self.dir.mkdir()
        self.http_port, self.https_port = free_port(), free_port()
        (self.dir / "wsserver.conf").write_text(substitute(
            EXAMPLE.read_text(), backends=backends, http_port=self.http_port, https_port=self.https_port,
            certificate=certificate, key=key))
        # As root, nginx's workers would switch to "nobody", who cannot enter the test's directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        self.config = self.dir / "nginx.conf"
        self.config.write_text(MAIN_CONFIG.format(dir=self.dir, user=user))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def access_log(self) -> list[str]:
        path = self.dir / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def start(self, timeout: float = 10.0) -> NginxServer:
        """Start nginx in the foreground (``daemon off``) and wait until both ports accept."""
        command = [self.binary, "-p", str(self.dir), "-c", str(self.config), "-e", str(self.dir / "error.log"),
                   "-g", "daemon off;"]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, f"nginx -t refused the configuration:\n{check.stderr}"
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        for port in (self.http_port, self.https_port):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"nginx exited with {self.proc.returncode}:\n{self.error_log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"nginx did not listen on {port}:\n{self.error_log()}") from None
                    time.sleep(0.05)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the master by its PID (nginx's fast shutdown: open connections are closed)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc, timeout)
