"""
AutobahnJS on Node (npm ``autobahn``, pinned in package-lock.json) as a real WAMP peer: it subscribes
through the server, Python publishes, and Node must print exactly what was published.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .prerequisites import node_command
from .wampclient import publish_once

if TYPE_CHECKING:
    from .conftest import ServerProcess

REPO = Path(__file__).resolve().parents[2]
SUBSCRIBE_ONCE = Path(__file__).with_name("node") / "subscribe_once.js"


class NodeProcess:
    """The Node script with its stdout lines in a queue and its stderr kept for failure messages."""

    def __init__(self, command: list[str]) -> None:
        # Run from the repository root; Node finds ``autobahn`` in REPO/node_modules by walking up
        # from the script's own directory, so this also works from any other cwd.
        self.proc = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_lines: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # end of output

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr_lines.extend(self.proc.stderr)

    def next_line(self, timeout: float) -> str:
        """The next line Node printed; fails the test on timeout or if Node exited first."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"node printed nothing within {timeout}s; stderr:\n{self.stderr}")
        if line is None:
            pytest.fail(f"node exited with {self.proc.wait()} first; stderr:\n{self.stderr}")
        return line

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines) or "(empty)"

    def kill(self) -> None:
        """SIGKILL by PID if still running, and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def run_node() -> Iterator[Callable[..., NodeProcess]]:
    """A factory: ``run_node(*args)`` starts subscribe_once.js; every process is killed after the test."""
    started: list[NodeProcess] = []

    def run(*args: str) -> NodeProcess:
        node = NodeProcess(node_command(SUBSCRIBE_ONCE, *args))
        started.append(node)
        return node

    yield run
    for node in started:
        node.kill()


def test_autobahnjs_on_node_receives_an_event_published_from_python(
    server: ServerProcess, run_node: Callable[..., NodeProcess]
) -> None:
    """Node subscribes, Python publishes, and Node prints the event's args exactly as published."""
    topic = "com.example.node.greeting"
    node = run_node(server.ws_url, topic)
    assert node.next_line(timeout=20) == "READY"

    payload = ["hello from Python", 42, {"nested": [1.5, None, True]}, "Grüße ✓"]
    publish_once(server.ws_url, topic, *payload)

    assert json.loads(node.next_line(timeout=10)) == payload
    assert node.proc.wait(timeout=10) == 0, node.stderr


def test_autobahnjs_on_node_exits_nonzero_when_no_server_listens(
    run_node: Callable[..., NodeProcess]
) -> None:
    """The script fails fast and visibly (not by timing out) when it cannot connect."""
    with socket.socket() as probe:  # a port that was free a moment ago, on which nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    node = run_node(f"ws://127.0.0.1:{port}/ws", "com.example.nobody")
    assert node.proc.wait(timeout=10) == 1, node.stderr
    assert "connection ended before an event" in node.stderr
