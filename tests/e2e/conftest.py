"""
Fixtures for end-to-end tests: the server started as users start it (``twistd -n wsserver``), on an
ephemeral loopback port, stopped by its PID when the test is done.

The server is the *installed* package (``make test`` runs ``pip install .`` first); it runs in a
temporary directory so that the source tree cannot shadow the installed plugin.
"""

from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TWISTD = str(Path(sys.executable).with_name("twistd"))
LISTENING = re.compile(r"listening on (?P<scheme>https?)://(?P<host>[\d.]+):(?P<port>\d+)/")


class ServerProcess:
    """
    One ``twistd -n wsserver`` process. ``start()`` waits until the server logs its address;
    ``stop()`` sends SIGTERM to the PID and waits for the exit. ``log`` holds everything it printed.
    """

    def __init__(self, workdir: Path, args: list[str], listen: str = "tcp:{port}:interface=127.0.0.1",
                 max_open_files: int | None = None) -> None:
        self.workdir = workdir
        self.args = args
        self.listen = listen
        #: The server's ``ulimit -n`` (None: the test runner's).
        self.max_open_files = max_open_files
        self.scheme = "http"
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self.log_lines: list[str] = []
        self._listening = threading.Event()

    @property
    def http_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.scheme == 'https' else 'ws'}://127.0.0.1:{self.port}/ws"

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def start(self, timeout: float = 20.0) -> ServerProcess:
        """Start the server; reuse the previous port on a restart so clients can reconnect."""
        listen = self.listen.format(port=self.port)
        # Port 843 is a real, machine-wide port: tests ask for a policy port only when they test it.
        policy = [] if "--flash-policy-port" in self.args else ["--flash-policy-port", "0"]
        cmd = [TWISTD, "-n", "--pidfile=", "wsserver", "--listen", listen, *policy, *self.args]
        self._listening.clear()
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=self._limit_open_files if self.max_open_files else None,
        )
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        if not self._listening.wait(timeout):
            self.stop()
            raise RuntimeError(f"server did not start; it printed:\n{self.log}")
        return self

    def _limit_open_files(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.max_open_files, self.max_open_files))

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.log_lines.append(line)
            found = LISTENING.search(line)
            if found and not self._listening.is_set():
                self.port = int(found["port"])
                self.scheme = found["scheme"]
                self._listening.set()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process by its PID and wait; SIGKILL if it does not exit in time."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        terminate(proc, timeout)
        return proc.returncode


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM ``proc`` by its PID and wait; SIGKILL if it does not exit within ``timeout`` seconds."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[object]:
    """
    A factory: ``start_server("--demo", ...)`` returns a started ServerProcess, stopped after the
    test; ``listen=`` replaces the endpoint template (``{port}`` is 0 at first, then the port got).
    """
    started: list[ServerProcess] = []

    def start(*args: str, **options: Any) -> ServerProcess:
        server = ServerProcess(tmp_path, list(args), **options).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(start_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    """A server with default options."""
    return start_server()


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {predicate!r}")
        time.sleep(interval)
