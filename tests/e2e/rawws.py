"""
For end-to-end tests that need what no client library will send: a raw WebSocket (the websockets
library) speaking wamp.2.json, and the server process's resident memory.

    with raw_session(server.ws_url) as ws:                  # joined to realm1
        assert exchange(ws, [32, 7, {}, "com..bad"])[4] == "wamp.error.invalid_uri"
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}, "caller": {}, "callee": {}}}]


def exchange(ws: ClientConnection, message: list[Any]) -> list[Any]:
    """Send one message and return the next one received."""
    ws.send(json.dumps(message))
    return list(json.loads(ws.recv(timeout=5)))


def join(ws: ClientConnection, topic: str | None = None) -> list[Any]:
    """HELLO (and SUBSCRIBE ``topic``, if given) on ``ws``; return the WELCOME."""
    welcome = exchange(ws, HELLO)
    assert welcome[0] == 2, welcome
    if topic:
        assert exchange(ws, [32, 1, {}, topic])[0] == 33
    return welcome


@contextlib.contextmanager
def raw_session(
    ws_url: str, subprotocol: str = "wamp.2.json", hello: bool = True, **options: Any
) -> Iterator[ClientConnection]:
    """A raw WebSocket, joined to realm1 unless ``hello`` is false; closed on exit."""
    with ws_connect(ws_url, subprotocols=[subprotocol], open_timeout=5, **options) as ws:
        if hello:
            join(ws)
        yield ws


def rss(pid: int) -> int:
    """Resident memory of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))
