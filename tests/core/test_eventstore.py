"""The per-topic store behind retained events and event history, with a clock the test moves."""

from __future__ import annotations

import sys

from tests.core.harness import Clock
from wsserver.core.eventstore import ITEM_OVERHEAD, TOPIC_OVERHEAD, EventStore, StoreBudget, StoreLimits, estimated_size
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


# -- the budget ---------------------------------------------------------------------------------


def sized(limits: StoreLimits, *capacities: int) -> tuple[StoreBudget, list[EventStore[str]]]:
    """Stores of these capacities on one budget; an item's size is its length."""
    budget = StoreBudget(limits)
    clock = Clock()
    return budget, [EventStore(capacity, None, clock, budget=budget, size=len) for capacity in capacities]


def test_past_the_topic_budget_the_oldest_topics_go_first_across_stores() -> None:
    budget, (retained, history) = sized(StoreLimits(max_bytes=0, max_topics=3), 1, 5)
    retained.keep("com.a", "a")
    history.keep("com.b", "b1")
    history.keep("com.b", "b2")
    retained.keep("com.c", "c")
    assert budget.topics == 3 and budget.evicted == 0
    retained.keep("com.d", "d")  # a fourth topic: com.a (the oldest item) goes
    assert items(retained, "com.", PREFIX) == ["c", "d"]
    history.keep("com.e", "e")  # then com.b, oldest item first: b1, b2
    assert items(history, "com.", PREFIX) == ["e"]
    assert (budget.topics, budget.evicted) == (3, 3)


def test_past_the_byte_budget_the_oldest_items_go_first_and_are_counted() -> None:
    per_item = ITEM_OVERHEAD + 100
    topic_cost = TOPIC_OVERHEAD + sys.getsizeof("com.a")
    budget, (history,) = sized(StoreLimits(max_bytes=2 * topic_cost + 3 * per_item, max_topics=0), 10)
    for n in range(3):
        history.keep("com.a" if n != 1 else "com.b", f"{n}".ljust(100))
    assert budget.evicted == 0 and budget.bytes == 2 * topic_cost + 3 * per_item
    history.keep("com.a", "3".ljust(100))
    assert [i.strip() for i in items(history, "com.", PREFIX)] == ["1", "2", "3"]
    assert budget.evicted == 1 and budget.bytes == 2 * topic_cost + 3 * per_item
    history.keep("com.a", "4".ljust(100))  # "1" goes, and com.b with it: room for one more
    assert [i.strip() for i in items(history, "com.", PREFIX)] == ["2", "3", "4"]
    assert budget.bytes == topic_cost + 3 * per_item and budget.topics == 1


def test_an_item_larger_than_the_budget_is_not_kept_and_replaces_the_retained_one() -> None:
    budget, (retained,) = sized(StoreLimits(max_bytes=10_000, max_topics=0), 1)
    retained.keep("com.a", "small")
    retained.keep("com.b", "kept")
    retained.keep("com.a", "x" * 20_000)
    assert items(retained, "com.", PREFIX) == ["kept"]
    assert budget.evicted == 1 and budget.topics == 1
    assert budget.bytes == TOPIC_OVERHEAD + sys.getsizeof("com.b") + ITEM_OVERHEAD + 4


def test_replacing_a_retained_event_over_and_over_keeps_the_bookkeeping_bounded() -> None:
    budget, (retained,) = sized(StoreLimits(), 1)
    for n in range(10_000):
        retained.keep(f"com.t{n % 10}", "x")
    assert len(retained) == 10 and len(retained._order) < 200
    assert budget.bytes == sum(TOPIC_OVERHEAD + sys.getsizeof(f"com.t{n}") + ITEM_OVERHEAD + 1 for n in range(10))
    assert items(retained, "com.t3", EXACT) == ["x"]


def test_expired_items_give_their_bytes_and_topics_back() -> None:
    clock = Clock(0.0)
    budget = StoreBudget(StoreLimits())
    retained: EventStore[str] = EventStore(1, 10.0, clock, budget=budget, size=len)
    retained.keep("com.a", "a")
    clock.now = 10.0
    assert len(retained) == 0 and (budget.bytes, budget.topics, budget.evicted) == (0, 0, 0)


def test_the_size_estimate_counts_objects_not_wire_bytes_and_stops_past_its_limit() -> None:
    assert estimated_size([["x" * 1000]]) > 1000
    many_lists = [[] for _ in range(1000)]  # 3 bytes each on the wire, 56 in memory
    assert estimated_size([many_lists]) > 1000 * 56
    shared: list[object] = []
    for _ in range(60):  # a graph of 2**60 paths (CBOR value sharing), built from 60 lists
        shared = [shared, shared]
    assert 10_000 < estimated_size([shared], limit=10_000) < 11_000  # returns at once
