"""
Publications kept after routing: each topic's retained event and its event history.

Theory of operation
-------------------
Both WAMP features keep, per concrete topic, its last few publications:

- event retention keeps the last one published with ``retain: true`` (capacity 1), optionally
  forgotten ``ttl`` seconds after it was kept (``--retain-ttl``);
- event history keeps the last ``capacity`` publications (``--history-size``).

Both are read through a subscription's pattern (exact, prefix or wildcard): what was kept on
every topic the pattern matches. So one :class:`EventStore` serves both, keeping:

- ``_topics``: topic -> deque of :class:`Kept` (newest last, at most ``capacity``), ordered by
  when each topic last kept something (keeping moves a topic to the end). With a TTL, the
  expired topics are therefore at the front, and every call first drops them from there: at
  amortized constant cost, and expired events do not pile up in memory;
- a sequence number per kept item, which orders items across topics (the clock may stand still
  or step back), so the items of a pattern merge into one chronological list.

Reading an exact pattern is one dict lookup; a prefix or wildcard pattern tests each kept topic
with :func:`~wsserver.core.matching.matches`. That cost is paid on SUBSCRIBE with
``get_retained`` and on ``wamp.subscription.get_events``, never when routing a publication.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Generic, NamedTuple, TypeVar

from wsserver.core.matching import EXACT, matches

T = TypeVar("T")


class Kept(NamedTuple, Generic[T]):
    """One kept item: its place in keeping order, when it was kept (router clock) and the item."""

    sequence: int
    time: float
    item: T


class EventStore(Generic[T]):
    """
    The last ``capacity`` items kept per topic; with ``ttl`` (seconds), an item is forgotten
    that long after it was kept. ``clock`` returns the time in seconds.
    """

    def __init__(self, capacity: int, ttl: float | None, clock: Callable[[], float]) -> None:
        assert capacity >= 1
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self._topics: OrderedDict[str, deque[Kept[T]]] = OrderedDict()
        self._sequence = itertools.count()

    def __len__(self) -> int:
        """How many topics have something kept."""
        self._expire(self._clock())
        return len(self._topics)

    def keep(self, topic: str, item: T) -> None:
        """Keep ``item`` as the newest of ``topic`` (the oldest goes when the topic is full)."""
        now = self._clock()
        self._expire(now)
        kept = self._topics.get(topic)
        if kept is None:
            kept = self._topics[topic] = deque(maxlen=self.capacity)
        else:
            self._topics.move_to_end(topic)
        kept.append(Kept(next(self._sequence), now, item))

    def latest(self, pattern: str, match: str, limit: int | None = None) -> list[Kept[T]]:
        """What is kept on the topics ``pattern`` matches, oldest first; only the last ``limit``."""
        now = self._clock()
        self._expire(now)
        if match == EXACT:
            topics = [pattern] if pattern in self._topics else []
        else:
            topics = [topic for topic in self._topics if matches(pattern, match, topic)]
        fresh = [kept for topic in topics for kept in self._topics[topic] if not self._expired(kept, now)]
        fresh.sort()
        return fresh if limit is None else fresh[len(fresh) - limit :] if limit > 0 else []

    def _expired(self, kept: Kept[T], now: float) -> bool:
        return self.ttl is not None and kept.time + self.ttl <= now

    def _expire(self, now: float) -> None:
        while self._topics and self._expired(self._topics[next(iter(self._topics))][-1], now):
            self._topics.popitem(last=False)
