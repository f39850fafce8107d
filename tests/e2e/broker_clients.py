"""
Real peers for the broker and dealer end-to-end tests.

- :class:`Client`: :class:`~tests.e2e.wampclient.WampClient` (autobahn-python) with what these tests
  need besides: events with their details, every publish option, calls and registrations::

      inbox = client.subscribe_detailed("com.example.", match="prefix")
      client.publish("com.example.a", 1, exclude_authrole=["guest"])
      args, kwargs, details = inbox.get()            # details.topic == "com.example.a"
      client.call("wamp.session.count")

- :class:`NodePeer`: AutobahnJS on Node, running ``node/broker_peer.js``, driven by JSON commands.
"""

from __future__ import annotations

import inspect
import json
import os
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.types import PublishOptions, SubscribeOptions

from tests.e2e.prerequisites import node_command
from tests.e2e.wampclient import Inbox, WampClient

REPO = Path(__file__).resolve().parents[2]
BROKER_PEER = Path(__file__).with_name("node") / "broker_peer.js"
PUBLISH_OPTIONS = set(inspect.signature(PublishOptions).parameters) - {"acknowledge"}


class DetailedInbox(Inbox):
    """Events of one subscription as (args, kwargs, details): details is autobahn's EventDetails."""

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        details = kwargs.pop("details", None)
        self.events.put((args, kwargs, details))  # type: ignore[arg-type]


class Client(WampClient):
    """A WampClient that also sees event details, publishes with any option, calls and registers."""

    def subscribe_detailed(self, topic: str, **options: Any) -> DetailedInbox:
        inbox = DetailedInbox()
        inbox.subscription = self._call(
            self.session.subscribe, inbox, topic, options=SubscribeOptions(details=True, **options)
        )
        return inbox

    def publish(self, topic: str, *args: Any, acknowledge: bool = True, **kwargs: Any) -> Any:
        """Publish with any of autobahn's PublishOptions given as keywords; the rest is the payload."""
        options = {name: kwargs.pop(name) for name in list(kwargs) if name in PUBLISH_OPTIONS}
        return self._call(
            self.session.publish, topic, *args, options=PublishOptions(acknowledge=acknowledge, **options), **kwargs
        )

    def call(self, procedure: str, *args: Any, **kwargs: Any) -> Any:
        """Call and wait for the result; a WAMP error raises ApplicationError."""
        return self._call(self.session.call, procedure, *args, **kwargs)

    def register(self, procedure: str, endpoint: Any) -> Any:
        """Register ``endpoint`` (runs on the reactor thread; may return a Deferred)."""
        return self._call(self.session.register, endpoint, procedure)


class NodePeer:
    """
    ``node/broker_peer.js`` joined to ``ws_url``: :meth:`request` sends a command and returns its
    answer, :meth:`event` the next event of a subscription. ``session_id`` is its WAMP session id.
    """

    def __init__(self, ws_url: str, timeout: float = 20.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            node_command(BROKER_PEER, ws_url), cwd=REPO, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self._answers: dict[Any, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._stderr: list[str] = []
        self._tags = iter(range(1, 1 << 30))
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr or ()), daemon=True).start()
        self.session_id = int(self._next(None)["ready"])

    def _queue(self, tag: Any) -> queue.Queue[dict[str, Any]]:
        with self._lock:
            return self._answers.setdefault(tag, queue.Queue())

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            message = json.loads(line)
            # Events have a queue of their own: one may come before its SUBSCRIBE's answer.
            self._queue((message["tag"], "event") if "event" in message else message.get("tag")).put(message)

    def _next(self, tag: Any) -> dict[str, Any]:
        try:
            return self._queue(tag).get(timeout=self.timeout)
        except queue.Empty:
            pytest.fail(f"node said nothing for {tag!r} within {self.timeout}s; stderr:\n{''.join(self._stderr)}")

    def _send(self, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        tag = next(self._tags)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"tag": tag, "op": op, **fields}) + "\n")
        self.proc.stdin.flush()
        answer = self._next(tag)
        answer["events"] = tag
        return answer

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        """Run one command; return its answer. An error answer fails the test."""
        answer = self._send(op, fields)
        assert "error" not in answer, f"{op} failed: {answer['error']}"
        return answer

    def failing(self, op: str, **fields: Any) -> dict[str, Any]:
        """Run one command that must fail; return the error: {"error": URI, "args": [...]}."""
        answer = self._send(op, fields)
        assert "error" in answer, f"{op} did not fail: {answer}"
        return dict(answer["error"])

    def event(self, subscribed: dict[str, Any]) -> dict[str, Any]:
        """The next event of the subscription ``subscribed`` (an answer of request("subscribe"))."""
        return self._next((subscribed["events"], "event"))["event"]

    def no_event(self, subscribed: dict[str, Any], seconds: float = 0.3) -> bool:
        try:
            self._queue((subscribed["events"], "event")).get(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def close(self) -> None:
        """Leave if still running, then make sure the process is gone (by its PID)."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"tag": 0, "op": "leave"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
