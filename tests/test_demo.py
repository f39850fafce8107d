"""The demo producer, on a task.Clock."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock

from wsserver.demo import CLOCK_TOPIC, TICKER_TOPIC, DemoProducer


def run_for(seconds: float, start: float = 1000.25) -> list[tuple[float, str, list[Any]]]:
    clock = Clock()
    clock.advance(start)
    published: list[tuple[float, str, list[Any]]] = []
    producer = DemoProducer(lambda topic, args: published.append((clock.seconds(), topic, args)), clock, random.Random(7))
    producer.startService()
    for _ in range(int(seconds * 100)):
        clock.advance(0.01)
    producer.stopService()
    assert clock.getDelayedCalls() == []  # nothing left scheduled after stop
    return published


def test_ticker_grows_by_1_to_10_at_intervals_under_a_second() -> None:
    ticks = [(t, args[0]) for t, topic, args in run_for(30) if topic == TICKER_TOPIC]
    assert len(ticks) > 30
    for (t0, v0), (t1, v1) in zip([(1000.25, 0)] + ticks, ticks):
        assert 1 <= v1 - v0 <= 10
        assert 0 < t1 - t0 < 1


def test_clock_publishes_the_time_every_whole_second() -> None:
    times = [(t, args[0]) for t, topic, args in run_for(5) if topic == CLOCK_TOPIC]
    assert [round(t) for t, _ in times] == [1001, 1002, 1003, 1004, 1005]
    assert times[0][1] == "1970-01-01T00:16:41Z"
