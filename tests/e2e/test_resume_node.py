"""
Never miss an event, from the pages' helper: ``web/js/wsclient.js`` itself, under Node with AutobahnJS
(``node/resume_subscriber.mjs``), subscribes with ``{ resume: true }`` through a TCP relay the test
cuts (the network drops; the server and its history stay). 50 events are published while it is
away; when the relay is back it reconnects and gets exactly those 50, in order, marked recovered,
no duplicate, then the live ones, and is told ``recovered: true, missed: 50``. After a server
restart (history lost) it is told ``recovered: false`` instead: the page must reload.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .tcpproxy import CuttableProxy
from .test_reconnect import Subscriber
from .wampclient import WampClient

if TYPE_CHECKING:
    from .conftest import ServerProcess

SCRIPT = Path(__file__).with_name("node") / "resume_subscriber.mjs"
TOPIC = "com.example.resume"


Relayed = tuple["ServerProcess", CuttableProxy, Subscriber]


@pytest.fixture
def relay(start_server: Callable[..., ServerProcess]) -> Iterator[Callable[..., Relayed]]:
    """A factory: ``start_server(*args)``, a relay in front of it, and the Node subscriber (to ``topic``, ``match``) behind the relay."""
    opened: list[tuple[CuttableProxy, Subscriber]] = []

    def make(*args: str, topic: str = TOPIC, match: str = "exact") -> Relayed:
        server = start_server(*args)
        proxy = CuttableProxy(server.port)
        subscriber = Subscriber(f"ws://127.0.0.1:{proxy.port}/ws", topic, SCRIPT, match)
        opened.append((proxy, subscriber))
        assert subscriber.next("active") == topic
        return server, proxy, subscriber

    yield make
    for proxy, subscriber in opened:
        subscriber.close()
        proxy.close()


@pytest.fixture
def relayed(relay: Callable[..., Relayed]) -> Relayed:
    """A server keeping 100 events per topic, with the subscriber behind a relay."""
    return relay("--history-size", "100")


def drop_while(proxy: CuttableProxy, subscriber: Subscriber, publish: Callable[[], object]) -> None:
    """Cut the subscriber's connection, ``publish()`` while it is away, and let it back."""
    proxy.cut()
    assert subscriber.next("state") == "closed"
    publish()
    proxy.restore()


def events(subscriber: Subscriber, count: int) -> list[dict[str, Any]]:
    """The next ``count`` event lines: {"event": args, "seq", "recovered"}."""
    return [line for line in lines_until(subscriber, lambda found: sum("event" in line for line in found) == count)
            if "event" in line]


def lines_until(
    subscriber: Subscriber, done: Callable[[list[dict[str, Any]]], bool], found: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Every line Node prints until ``done(lines)``, appended to ``found`` if given; each line within 20 s."""
    found = [] if found is None else found
    while not done(found):
        try:
            found.append(subscriber.lines.get(timeout=20))
        except queue.Empty:
            pytest.fail(f"node printed nothing more within 20 s after {found}; stderr:\n{''.join(subscriber.stderr)}")
    return found


def test_wsclient_resumes_exactly_the_50_events_published_while_the_network_was_down(
    relayed: Relayed,
) -> None:
    server, proxy, subscriber = relayed
    with WampClient(server.ws_url) as publisher:
        for n in range(5):
            publisher.publish(TOPIC, n)
        before = events(subscriber, 5)
        assert [(e["event"], e["seq"], e["recovered"]) for e in before] == [([n], n + 1, False) for n in range(5)]
        drop_while(proxy, subscriber, lambda: [publisher.publish(TOPIC, n) for n in range(5, 55)])
        after = lines_until(subscriber, lambda found: any("resume" in line for line in found))
        publisher.publish(TOPIC, 55)
        after += events(subscriber, 1)

    got = [line for line in after if "event" in line]
    assert [e["event"] for e in got] == [[n] for n in range(5, 56)]  # exactly the missed ones, in order, then live
    assert [e["seq"] for e in got] == list(range(6, 57))
    assert [e["recovered"] for e in got] == [True] * 50 + [False]
    resumed = next(line["resume"] for line in after if "resume" in line)
    assert resumed == {"topic": TOPIC, "recovered": True, "missed": 50, "reason": None}


def test_wsclient_delivers_live_events_that_come_during_its_resume_once_and_after_the_missed_ones(
    relayed: Relayed,
) -> None:
    """A publisher that never stops: whatever the client gets while it resubscribes and resumes, no gap, no duplicate."""
    server, proxy, subscriber = relayed
    with WampClient(server.ws_url) as publisher:
        published = 0
        stop = threading.Event()

        def publish_all_along() -> None:
            nonlocal published
            # every 30 ms: the second or so the client is away stays within the 100 events kept
            while not stop.wait(0.03) and published < 2000:
                publisher.publish(TOPIC, published)
                published += 1

        seen: list[dict[str, Any]] = []
        running = threading.Thread(target=publish_all_along)
        running.start()
        try:
            lines_until(subscriber, lambda found: sum("event" in line for line in found) >= 5, seen)
            proxy.cut()
            lines_until(subscriber, lambda found: {"state": "closed"} in found, seen)
            proxy.restore()
            lines_until(subscriber, lambda found: any("resume" in line for line in found), seen)
        finally:
            stop.set()
            running.join(20)
        last = published - 1
        lines_until(subscriber, lambda found: any(line.get("event") == [last] for line in found), seen)

    resumed = next(line["resume"] for line in seen if "resume" in line)
    got = [line for line in seen if "event" in line]
    assert [e["event"][0] for e in got] == list(range(last + 1)), resumed
    recovered = [e["event"][0] for e in got if e["recovered"]]
    assert resumed["recovered"] is True and resumed["missed"] == len(recovered) > 0, resumed
    first_recovered = got.index(next(e for e in got if e["recovered"]))
    assert all(e["recovered"] for e in got[first_recovered:first_recovered + len(recovered)])  # missed ones come first


def test_wsclient_says_reloaded_after_a_server_restart(
    relayed: Relayed,
) -> None:
    server, proxy, subscriber = relayed
    with WampClient(server.ws_url) as publisher:
        publisher.publish(TOPIC, "before")
        assert events(subscriber, 1)[0]["event"] == ["before"]
    server.stop()  # a server without persistence: its history is gone
    server.start()
    resumed = subscriber.next("resume", timeout=30)
    assert resumed["recovered"] is False and resumed["missed"] == 0, resumed
    assert "lost its history" in resumed["reason"]
    with WampClient(server.ws_url) as publisher:
        publisher.publish(TOPIC, "after the restart")
        after = events(subscriber, 1)[0]
    assert after == {"event": ["after the restart"], "seq": 1, "recovered": False}


def test_wsclient_says_reloaded_when_the_topic_keeps_no_history(relay: Callable[..., Relayed]) -> None:
    """A server without history: the resume cannot be, and the page is told so, not told "recovered"."""
    server, proxy, subscriber = relay()
    with WampClient(server.ws_url) as publisher:
        publisher.publish(TOPIC, "before")
        assert events(subscriber, 1)[0] == {"event": ["before"], "recovered": False}  # no position
        drop_while(proxy, subscriber, lambda: publisher.publish(TOPIC, "missed"))
        resumed = subscriber.next("resume", timeout=30)
    assert resumed == {"topic": TOPIC, "recovered": False, "missed": 0, "reason": "no position to resume from"}


def test_wsclient_resumes_each_topic_a_prefix_subscription_has_seen(relay: Callable[..., Relayed]) -> None:
    server, proxy, subscriber = relay("--history-size", "100", topic="com.example.resume.", match="prefix")
    topics = ["com.example.resume.a", "com.example.resume.b"]
    with WampClient(server.ws_url) as publisher:
        for topic in topics:
            publisher.publish(topic, f"{topic} seen")
        events(subscriber, 2)

        def publish_missed() -> None:
            for n in range(3):
                for topic in topics:
                    publisher.publish(topic, f"{topic} {n}")

        drop_while(proxy, subscriber, publish_missed)
        after = lines_until(subscriber, lambda found: any("resume" in line for line in found))
    got = [line["event"][0] for line in after if "event" in line]
    assert sorted(got) == sorted(f"{topic} {n}" for topic in topics for n in range(3))  # each once
    for topic in topics:
        assert [event for event in got if event.startswith(topic)] == [f"{topic} {n}" for n in range(3)]
    resumed = next(line["resume"] for line in after if "resume" in line)
    assert resumed == {"topic": "com.example.resume.", "recovered": True, "missed": 6, "reason": None}
