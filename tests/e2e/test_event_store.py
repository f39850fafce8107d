"""
The event store (retained events, event history) against a running server: however many topics
or bytes publishers retain, the server keeps within ``--max-store-topics`` and
``--max-store-bytes``, evicting the oldest first, while a bystander keeps its events and latency.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from websockets.sync.client import ClientConnection

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import exchange, raw_session

#: The defaults of --max-store-topics and --max-store-bytes (StoreLimits), as a user sees them.
DEFAULT_MAX_TOPICS = 10_000
DEFAULT_MAX_BYTES = 64 * 2**20


def retain_all(ws: ClientConnection, topics: Sequence[str], args: list[Any], batch: int = 500, retain: bool = True) -> None:
    """
    Publish ``args`` (with ``retain``) on every topic, ``batch`` at a time, each batch handled before
    the next: a flood of publications is another attack (--max-publish-rate); this one is what they keep.
    """
    for start in range(0, len(topics), batch):
        for topic in topics[start : start + batch]:
            ws.send(json.dumps([16, 1, {"retain": retain}, topic, args]))
        ws.send(json.dumps([16, 2, {"acknowledge": True}, "com.example.done"]))
        while json.loads(ws.recv(timeout=60))[:2] != [17, 2]:
            pass
        time.sleep(0.02)


def retained_on(ws: ClientConnection, pattern: str, match: str = "exact") -> list[list[Any]]:
    """The retained EVENTs a new subscription to ``pattern`` gets (then it is unsubscribed)."""
    ws.send(json.dumps([32, 1, {"match": match, "get_retained": True}, pattern]))
    subscribed = json.loads(ws.recv(timeout=10))
    assert subscribed[0] == 33, subscribed
    ws.send(json.dumps([48, 2, {}, "wamp.session.count", []]))  # its RESULT marks the end of the retained events
    events = []
    while (message := json.loads(ws.recv(timeout=30)))[0] != 50:
        assert message[0] == 36, message
        events.append(message)
    ws.send(json.dumps([34, 3, subscribed[2]]))
    assert json.loads(ws.recv(timeout=10))[0] == 35
    return events


#: The attacker publishes 100k events as fast as it can: neither its publish rate nor its frame
#: rate may stop it before the store's budget is what is tested.
UNLIMITED_PUBLISHER = ("--max-publish-rate", "0", "--max-frame-rate", "0")


def test_retaining_on_100k_topics_keeps_the_newest_topics_within_the_budget(start_server: Any) -> None:
    server = start_server(*UNLIMITED_PUBLISHER)
    topics = [f"com.example.retained.t{n}" for n in range(100_000)]
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        with raw_session(server.ws_url) as ws:
            retain_all(ws, topics, ["on"])
    bystander.check()
    memory.check(64 * 2**20)  # before: +142 MiB, every topic kept; after: +15 MiB
    with raw_session(server.ws_url, max_size=None) as ws:
        kept = [event[3]["topic"] for event in retained_on(ws, "com.example.retained.", "prefix")]
    assert kept == topics[-DEFAULT_MAX_TOPICS:]  # the oldest went first


def test_retaining_1000_events_of_500_kb_keeps_the_newest_within_the_byte_budget(start_server: Any) -> None:
    server = start_server(*UNLIMITED_PUBLISHER)
    topics = [f"com.example.big.t{n}" for n in range(1000)]
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        with raw_session(server.ws_url) as ws:
            retain_all(ws, topics, ["x" * 500_000], batch=10)
    bystander.check()
    memory.check(DEFAULT_MAX_BYTES + 32 * 2**20)  # before: +481 MiB, every event kept; after: +67 MiB
    with raw_session(server.ws_url, max_size=None) as ws:
        # The kept events are the newest ones: a tail of the topics, as long as the budget allows.
        kept = [n for n in range(0, 1000, 10) if retained_on(ws, topics[n])]
        assert kept and kept == list(range(kept[0], 1000, 10)), kept
        assert 100 <= 1000 - kept[0] <= DEFAULT_MAX_BYTES // 500_000 + 10, kept[0]
        assert retained_on(ws, topics[-1])[0][4] == ["x" * 500_000]


def test_history_on_100k_topics_keeps_the_newest_topics_within_the_budget(start_server: Any) -> None:
    server = start_server(*UNLIMITED_PUBLISHER, "--history-size", "10")
    topics = [f"com.example.history.t{n}" for n in range(100_000)]
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        with raw_session(server.ws_url) as ws:
            retain_all(ws, topics, ["on"], retain=False)
    bystander.check()
    memory.check(64 * 2**20)  # before: +142 MiB, every topic's history kept; after: +15 MiB
    with raw_session(server.ws_url) as ws:
        # The newest topics are kept (a few of the budget's topics are others': the bystander's, meta events).
        for topic, kept in ((topics[0], 0), (topics[-DEFAULT_MAX_TOPICS - 1], 0), (topics[-9_900], 1), (topics[-1], 1)):
            subscription = exchange(ws, [32, 1, {}, topic])[2]
            events = exchange(ws, [48, 2, {}, "wamp.subscription.get_events", [subscription]])[3][0]
            assert len(events) == kept, (topic, events)
