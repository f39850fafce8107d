"""
Routing cost per publication in the pure core, with many subscriptions: a benchmark, not a test.

    python bench/routing.py            # 100k exact topics, 1k prefix and 1k wildcard patterns
    python bench/routing.py --quick    # the same tables, fewer publications (a few seconds)

What is measured: ``Broker.publish`` for one PUBLISH (find the matching subscriptions, build one
EVENT per subscription and its recipient list: everything but serialization and I/O), and the
index lookup alone (``SubscriptionTable.matching``). Each subscription has one subscriber. The
same publications run against a small table (1k exact, 10 prefix, 10 wildcard) to show that the
cost depends on the subscriptions that match, not on how many exist; a linear scan of every
pattern, as an unindexed broker would do, is timed once for scale. Times are the best of several
runs, per publication; no network, no reactor, one CPU.

The tables (``j`` < prefixes, ``i`` < exact topics):

- exact: ``com.bench.exact.{i}``, plus ``com.bench.feed{j}.x0.value`` for each prefix;
- prefix: ``com.bench.feed{j}.``;
- wildcard: ``com.bench.feed{j}..value``;

and the publications: an exact hit (``com.bench.exact.{i}``: 1 match), a miss (``org.other.{i}``:
0), a topic under a prefix and a wildcard (``com.bench.feed{j}.x7.value``: 2) and one that also
has an exact subscription (``com.bench.feed{j}.x0.value``: 3).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from autobahn.wamp import message as wamp  # noqa: E402

from wsserver.core.broker import Broker  # noqa: E402
from wsserver.core.matching import EXACT, PREFIX, WILDCARD, matches  # noqa: E402
from wsserver.core.session import Session  # noqa: E402

#: Distinct topics each case cycles through (so no single dict slot stays hot).
TOPICS_PER_CASE = 1000
SUBSCRIBER_SESSIONS = 1000


def build(exact: int, patterns: int, history: int = 0) -> tuple[Broker[None], Session[None], list[tuple[str, str]]]:
    """
    A broker with the tables above (keeping ``history`` events of every topic: positions on
    every EVENT); returns it, a publisher and every (pattern, policy).
    """
    ids = itertools.count(1)
    broker: Broker[None] = Broker(ids.__next__, ids.__next__, time.time, history_size=history, new_epoch=lambda: "epoch")
    sessions = []
    for _ in range(SUBSCRIBER_SESSIONS):
        session: Session[None] = Session(None)
        session.id = next(ids)
        sessions.append(session)
    table = [(f"com.bench.exact.{i}", EXACT) for i in range(exact - patterns)]
    for j in range(patterns):
        table += [
            (f"com.bench.feed{j}.x0.value", EXACT),
            (f"com.bench.feed{j}.", PREFIX),
            (f"com.bench.feed{j}..value", WILDCARD),
        ]
    for n, (pattern, match) in enumerate(table):
        broker.subscriptions.subscribe(sessions[n % len(sessions)], pattern, match, 0.0)
    publisher: Session[None] = Session(None)
    publisher.id = next(ids)
    return broker, publisher, table


def cases(exact: int, patterns: int) -> dict[str, list[str]]:
    step = max(1, (exact - patterns) // TOPICS_PER_CASE)
    return {
        "exact hit": [f"com.bench.exact.{i}" for i in range(0, exact - patterns, step)][:TOPICS_PER_CASE],
        "miss": [f"org.other.{i}" for i in range(TOPICS_PER_CASE)],
        "prefix + wildcard": [f"com.bench.feed{j % patterns}.x7.value" for j in range(TOPICS_PER_CASE)],
        "exact + prefix + wildcard": [f"com.bench.feed{j % patterns}.x0.value" for j in range(TOPICS_PER_CASE)],
    }


def best_per_call(function: Callable[[str], object], topics: list[str], calls: int, repeats: int) -> float:
    """Seconds per call of ``function(topic)``, cycling through ``topics``: the best of ``repeats`` runs."""
    rounds = max(1, calls // len(topics))
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(rounds):
            for topic in topics:
                function(topic)
        best = min(best, (time.perf_counter() - started) / (rounds * len(topics)))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer publications per measurement")
    parser.add_argument("--history", type=int, default=0, metavar="N",
                        help="every topic keeps N events: the cost of positions (default: no history)")
    options = parser.parse_args()
    calls, repeats = (10_000, 3) if options.quick else (100_000, 3)

    largest: list[tuple[str, str]] = []
    print(f"{'table':<34} {'publication':<26} {'matches':>7} {'index µs':>9} {'publish µs':>11}")
    for label, exact, patterns in [
        ("100k exact, 1k prefix, 1k wildcard", 100_000, 1_000),
        ("1k exact, 10 prefix, 10 wildcard", 1_000, 10),
    ]:
        started = time.perf_counter()
        broker, publisher, table = build(exact, patterns, options.history)
        built = time.perf_counter() - started
        for case, topics in cases(exact, patterns).items():
            found = {len(broker.subscriptions.matching(topic)) for topic in topics}
            assert len(found) == 1, (case, found)
            requests = {topic: wamp.Publish(1, topic, args=[1]) for topic in topics}
            index = best_per_call(broker.subscriptions.matching, topics, calls, repeats)
            publish = best_per_call(lambda topic: broker.publish(publisher, requests[topic]), topics, calls, repeats)
            print(f"{label:<34} {case:<26} {found.pop():>7} {index * 1e6:>9.2f} {publish * 1e6:>11.2f}")
        print(f"  ({len(table):,} subscriptions built in {built:.1f} s)")
        largest = largest or table

    topic = "com.bench.feed7.x0.value"
    started = time.perf_counter()
    hits = sum(matches(pattern, match, topic) for pattern, match in largest)
    scan = time.perf_counter() - started
    print(f"for scale, a linear scan of all {len(largest):,} patterns: {scan * 1e3:.1f} ms per publication", end="")
    print(f" ({hits} matches)")


if __name__ == "__main__":
    main()
