"""
A graceful shutdown, then the server back on the same port: an AutobahnJS client (Node) that
reopens its connection on GOODBYE ``wamp.close.system_shutdown`` (the README's client-side
pattern, as web/js/wsclient.js does) joins again, subscribes again, and gets events again.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.prerequisites import node_command
from tests.e2e.wampclient import publish_once

SUBSCRIBER = Path(__file__).with_name("node") / "reconnect_subscriber.js"
REPO = Path(__file__).resolve().parents[2]
TOPIC = "com.example.reconnect"


class Subscriber:
    """A Node subscriber (``node/reconnect_subscriber.js`` unless ``script``): its JSON lines, one at a time, each wait bounded."""

    def __init__(self, ws_url: str, topic: str = TOPIC, script: Path = SUBSCRIBER, *more: str) -> None:
        self.proc = subprocess.Popen(
            node_command(script, ws_url, topic, *more), cwd=REPO, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr or ()), daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def next(self, key: str, timeout: float = 20.0) -> Any:
        """The value of the next line that has ``key`` (lines without it are skipped)."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                pytest.fail(f"node printed no {key!r} within {timeout}s; stderr:\n{''.join(self.stderr)}")
            if key in line:
                return line[key]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def subscriber_and_server(start_server: Any) -> Iterator[tuple[Subscriber, Any]]:
    server = start_server()
    subscriber = Subscriber(server.ws_url)
    yield subscriber, server
    subscriber.close()


def test_autobahnjs_comes_back_after_a_graceful_shutdown_and_gets_events_again(
    subscriber_and_server: tuple[Subscriber, Any],
) -> None:
    subscriber, server = subscriber_and_server
    first_session = subscriber.next("joined")
    publish_once(server.ws_url, TOPIC, "before")
    assert subscriber.next("event") == ["before"]

    port = server.port
    server.stop()  # SIGTERM: GOODBYE wamp.close.system_shutdown, then close 1001
    closed = subscriber.next("closed")
    assert closed == {"reason": "closed", "wamp_reason": "wamp.close.system_shutdown", "will_retry": False, "reopening": True}

    server.start()
    assert server.port == port
    second_session = subscriber.next("joined")
    assert second_session != first_session
    publish_once(server.ws_url, TOPIC, "after")
    assert subscriber.next("event") == ["after"]
