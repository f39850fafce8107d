"""The per-topic store behind retained events and event history, with a clock the test moves."""

from __future__ import annotations

from tests.core.harness import Clock
from wsserver.core.eventstore import EventStore
from wsserver.core.matching import EXACT, PREFIX, WILDCARD


def items(store: EventStore[str], pattern: str, match: str, limit: int | None = None) -> list[str]:
    return [kept.item for kept in store.latest(pattern, match, limit)]


def test_each_topic_keeps_its_last_items_up_to_capacity() -> None:
    store: EventStore[str] = EventStore(2, None, Clock())
    for item in ("a1", "a2", "a3"):
        store.keep("com.a", item)
    store.keep("com.b", "b1")
    assert items(store, "com.a", EXACT) == ["a2", "a3"]
    assert items(store, "com.b", EXACT) == ["b1"]
    assert items(store, "com.c", EXACT) == []


def test_a_pattern_reads_every_topic_it_matches_in_keeping_order() -> None:
    clock = Clock()
    store: EventStore[str] = EventStore(10, None, clock)
    store.keep("com.a.x", "1")
    clock.now -= 100  # a clock that steps back does not reorder what was kept
    store.keep("com.b.x", "2")
    store.keep("com.a.x", "3")
    store.keep("org.a.x", "4")
    assert items(store, "com.", PREFIX) == ["1", "2", "3"]
    assert items(store, "..x", WILDCARD) == ["1", "2", "3", "4"]
    assert items(store, "..x", WILDCARD, limit=2) == ["3", "4"]
    assert items(store, "..x", WILDCARD, limit=0) == []


def test_items_are_timestamped_by_the_injected_clock() -> None:
    clock = Clock(1000.0)
    store: EventStore[str] = EventStore(1, None, clock)
    store.keep("com.a", "x")
    clock.now = 2000.0
    (kept,) = store.latest("com.a", EXACT)
    assert kept.time == 1000.0


def test_with_a_ttl_items_expire_and_expired_topics_are_dropped_from_memory() -> None:
    clock = Clock(0.0)
    store: EventStore[str] = EventStore(1, 10.0, clock)
    store.keep("com.old", "old")
    clock.now = 5.0
    store.keep("com.new", "new")
    clock.now = 9.9
    assert items(store, "com.", PREFIX) == ["old", "new"]
    clock.now = 10.0
    assert items(store, "com.", PREFIX) == ["new"]
    assert len(store) == 1
    clock.now = 14.0
    store.keep("com.old", "again")  # keeping renews a topic
    clock.now = 16.0
    assert items(store, "com.", PREFIX) == ["again"] and len(store) == 1


def test_an_expired_item_is_not_read_even_before_its_topic_reaches_the_front() -> None:
    clock = Clock(0.0)
    store: EventStore[str] = EventStore(3, 10.0, clock)
    store.keep("com.a", "first")
    clock.now = 8.0
    store.keep("com.a", "second")
    clock.now = 12.0
    assert items(store, "com.a", EXACT) == ["second"]
