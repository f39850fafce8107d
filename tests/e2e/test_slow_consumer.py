"""
A subscriber that stops reading must not make the server buffer without bound, nor slow down or
starve anyone else (Crossbar's RSS grows by about what is sent to such a client).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import wait_for
from tests.e2e.rawws import join, rss

EVENT_SIZE = 100_000
EVENTS = 1000  # 100 MB to each of the two readers: 200 MB flowing to others
RSS_BOUND = 64 * 1024 * 1024  # what the server may grow by meanwhile


class Reader(threading.Thread):
    """A subscriber (to ``topic``) that reads and counts every event as fast as it can."""

    def __init__(self, ws: ClientConnection, topic: str = "com.example.flood") -> None:
        super().__init__(daemon=True)
        self.ws = ws
        join(self.ws, topic)
        self.events = 0

    def run(self) -> None:
        try:
            while True:
                if json.loads(self.ws.recv())[0] == 36:
                    self.events += 1
        except ConnectionClosed:
            pass


@pytest.fixture
def flood(start_server: Any, request: Any) -> Iterator[Any]:
    server = start_server("--max-send-buffer", str(1024 * 1024), *request.param)
    connections = contextlib.ExitStack()

    def connect(**options: Any) -> ClientConnection:
        return connections.enter_context(
            ws_connect(server.ws_url, subprotocols=["wamp.2.json"], max_size=None, **options)
        )

    # max_queue=1: the client library stops reading the socket as soon as one message waits.
    stuck = connect(max_queue=1)
    join(stuck, "com.example.flood")
    readers = [Reader(connect()) for _ in range(2)]
    for reader in readers:
        reader.start()
    publisher = connect()
    join(publisher)
    baseline = rss(server.proc.pid)
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            peak[0] = max(peak[0], rss(server.proc.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # Random, so that permessage-deflate (which the client library negotiates) cannot shrink it.
    padding = base64.b64encode(os.urandom(EVENT_SIZE * 3 // 4)).decode()
    for n in range(EVENTS):
        publisher.send(json.dumps([16, n + 1, {"acknowledge": True}, "com.example.flood", [n, padding]]))
        assert json.loads(publisher.recv(timeout=10))[0] == 17
    wait_for(lambda: all(r.events == EVENTS for r in readers), timeout=120)  # ~5 s alone; CI machines are shared
    sampling.set()
    sampler.join()
    # Whatever the policy: the others got every event, and the server's memory stayed bounded.
    assert [r.events for r in readers] == [EVENTS, EVENTS]
    growth = peak[0] - baseline
    assert growth < RSS_BOUND, f"server RSS grew by {growth / 2**20:.0f} MiB"
    yield server, stuck, connect
    connections.close()


@pytest.mark.parametrize("flood", [("--slow-consumer", "disconnect")], indirect=True)
def test_a_stuck_subscriber_is_disconnected_and_others_get_every_event(flood: Any) -> None:
    server, stuck, _ = flood
    assert "is not reading: disconnecting it" in server.log
    # Whatever the stuck client still had buffered, its connection ends (1008, or reset once
    # the close handshake timed out).
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            stuck.recv(timeout=10)
    if closed.value.rcvd is not None:
        assert closed.value.rcvd.code == 1008


@pytest.mark.parametrize("flood", [("--slow-consumer", "drop")], indirect=True)
def test_with_drop_policy_a_stuck_subscriber_loses_events_but_stays(flood: Any) -> None:
    server, stuck, connect = flood
    assert "is not reading: dropping its events" in server.log
    # It reads again: it gets what was buffered (far fewer than were published), then new events.
    received = []
    while True:
        try:
            message = json.loads(stuck.recv(timeout=1))
        except TimeoutError:
            break
        received.append(message[4][0])
    assert 0 < len(received) < EVENTS
    publisher = connect()
    join(publisher)
    publisher.send(json.dumps([16, 1, {}, "com.example.flood", ["after"]]))
    assert json.loads(stuck.recv(timeout=5))[4] == ["after"]
