"""The service's own pieces: the log of event store evictions."""

from __future__ import annotations

from typing import Any

from twisted.logger import globalLogPublisher

from wsserver.core.eventstore import EventStore, StoreBudget, StoreLimits
from wsserver.service import EvictionReport


def test_evictions_are_logged_once_per_report_with_their_count() -> None:
    budget = StoreBudget(StoreLimits(max_bytes=0, max_topics=2))
    retained: EventStore[str] = EventStore(1, None, lambda: 0.0, budget=budget)
    report = EvictionReport(budget)
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        report()
        for n in range(5):
            retained.keep(f"com.t{n}", "x")
        report()
        report()  # nothing new: nothing logged
    finally:
        globalLogPublisher.removeObserver(logged.append)
    (line,) = [event for event in logged if "forgotten" in event.get("log_format", "")]
    assert (line["count"], line["total"], line["topics"], line["max_topics"]) == (3, 3, 2, 2)
