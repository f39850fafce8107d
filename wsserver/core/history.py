"""
Event history with positions: which topics keep how much, and resuming from a position.

Theory of operation
-------------------
A topic *with history* keeps its last publications (:mod:`~wsserver.core.eventstore`) and has a
position, ``(epoch, seq)``: ``seq`` grows by one per publication kept, and ``epoch`` (random) is
new whenever the topic's history is lost (a restart, or the whole topic evicted by the store
budget, its TTL or the topics limit). Every EVENT of such a topic carries the position of its
publication (``details._epoch``, ``details._seq``); a client that comes back asks
:meth:`History.since` for what it missed after the last position it saw::

    subscriber                                   router
        SUBSCRIBE topic  ------------------------->     live EVENTs from here on, buffered
        CALL wsserver.history.since(topic, E, n) -->    {recovered, epoch, top, events}
        deliver events (n+1 .. top), then the buffered live EVENTs whose _seq > top

``recovered`` is true only when the answer holds every event after ``n``; otherwise the list is
empty and the client must reload its state. No partial list is ever presented as complete.

Which topics keep history is :class:`HistorySettings`: ``size`` (``--history-size``) for every
topic, and per-pattern :class:`HistoryRule` s (``history = [...]`` in ``--config``), of which the
most specific matching one decides alone, as for permissions (an exact pattern, else the longest
prefix, else the wildcard with concrete components furthest left); a rule of size 0 turns
history off for its topics. Topics of one (size, TTL) share one
:class:`~wsserver.core.eventstore.EventStore` (a store has one TTL, which keeps its expiry
cheap), so a router has as many stores as distinct rules, all on one budget. A topic's rule is
found once and cached (the cache, keyed by topics clients choose, starts over when full), so a
publication on a topic without history costs one dict lookup, and none when no topic has history.

:class:`History` is the interface the broker uses; :class:`TopicHistory` keeps it in memory. A
store elsewhere (Redis: a stream per topic, its epoch in a key) implements the same five methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from wsserver.core.authorization import specificity
from wsserver.core.eventstore import EventStore, Kept, Position, Since, StoreBudget, StoreLimits
from wsserver.core.matching import EXACT, PatternIndex
from wsserver.core.policy import Permission
from wsserver.core.shared import Keeping

T = TypeVar("T")

#: Events one ``wsserver.history.since`` answer holds at most (Centrifugo's default too); past
#: it, ``recovered: false``.
MAX_RESUME_EVENTS = 300
#: Topics whose rule a :class:`TopicHistory` remembers before its cache starts over.
RULE_CACHE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """Topics matching ``uri`` (``match``: exact, prefix, wildcard) keep ``size`` events, each ``ttl`` seconds (None: no limit)."""

    uri: str
    match: str = EXACT
    size: int = 0
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """Which topics keep history, and how many events one resume may return."""

    #: Events kept per topic that no rule matches; 0: none.
    size: int = 0
    rules: tuple[HistoryRule, ...] = ()
    max_resume_events: int = MAX_RESUME_EVENTS

    @property
    def enabled(self) -> bool:
        """Whether any topic may keep history."""
        return self.size > 0 or any(rule.size > 0 for rule in self.rules)


class History(Protocol[T]):
    """What the broker needs of event history: keep, read by pattern, resume from a position."""

    def keep(self, topic: str, item: T) -> Position | None:
        """Keep ``item`` as ``topic``'s newest, if the topic keeps history; return its position (None: it keeps none)."""

    def keeps(self, topic: str) -> bool:
        """Whether ``topic`` keeps history."""

    def latest(self, pattern: str, match: str) -> list[Kept[T]]:
        """Every item kept on the topics ``pattern`` matches, oldest first."""

    def position(self, topic: str) -> Position | None:
        """Where ``topic``'s history stands now; None if it keeps none or nothing is kept."""

    def since(self, topic: str, epoch: str, after: int, limit: int) -> Since[T]:
        """What ``topic`` kept after (``epoch``, ``after``): see :meth:`EventStore.since`; ``topic`` keeps history."""

    def topics(self) -> dict[str, tuple[int, Position]]:
        """Every topic with something kept: how many items, and its position."""


class TopicHistory(Generic[T]):
    """
    :class:`History` in memory: one :class:`EventStore` per distinct (size, TTL) of
    ``settings``, on ``budget``. ``clock``, ``size`` and ``new_epoch`` are the stores'.
    """

    def __init__(
        self,
        settings: HistorySettings,
        clock: Callable[[], float],
        *,
        new_epoch: Callable[[], str],
        budget: StoreBudget | None = None,
        size: Callable[[T], int],
    ) -> None:
        stores: dict[tuple[int, float | None], EventStore[T]] = {}
        # One budget for all, also without limits: its sequence orders items across the stores.
        budget = budget if budget is not None else StoreBudget(StoreLimits(max_bytes=0, max_topics=0))

        def store(capacity: int, ttl: float | None) -> EventStore[T] | None:
            if capacity <= 0:
                return None
            if (capacity, ttl) not in stores:
                stores[(capacity, ttl)] = EventStore(capacity, ttl, clock, budget=budget, size=size, new_epoch=new_epoch)
            return stores[(capacity, ttl)]

        self._default = store(settings.size, None)
        self._rules: PatternIndex[tuple[tuple[int, ...], EventStore[T] | None]] = PatternIndex()
        for rule in settings.rules:
            if self._rules.get(rule.uri, rule.match) is None:
                rank = specificity(Permission(rule.uri, rule.match, frozenset()))
                self._rules.add(rule.uri, rule.match, (rank, store(rule.size, rule.ttl)))
        self._stores = list(stores.values())
        self._store_of: dict[str, EventStore[T] | None] = {}

    def _store(self, topic: str) -> EventStore[T] | None:
        try:
            return self._store_of[topic]
        except KeyError:
            pass
        if len(self._store_of) >= RULE_CACHE_SIZE:
            self._store_of.clear()
        found = self._rules.matching(topic)
        chosen = max(found, key=lambda ranked: ranked[0])[1] if found else self._default
        self._store_of[topic] = chosen
        return chosen

    def keep(self, topic: str, item: T) -> Position | None:
        store = self._store(topic)
        return None if store is None else store.keep(topic, item)

    def keeps(self, topic: str) -> bool:
        return self._store(topic) is not None

    def keeping(self, topic: str) -> Keeping | None:
        """How ``topic`` keeps history (its rule); None: it keeps none."""
        store = self._store(topic)
        return None if store is None else Keeping(store.capacity, store.ttl)

    def latest(self, pattern: str, match: str) -> list[Kept[T]]:
        # A topic lives in one store only; the budget's sequence orders items across stores.
        kept = [k for store in self._stores for k in store.latest(pattern, match)]
        kept.sort()
        return kept

    def position(self, topic: str) -> Position | None:
        store = self._store(topic)
        return None if store is None else store.position(topic)

    def since(self, topic: str, epoch: str, after: int, limit: int) -> Since[T]:
        store = self._store(topic)
        assert store is not None, f"{topic!r} keeps no history"
        return store.since(topic, epoch, after, limit)

    def topics(self) -> dict[str, tuple[int, Position]]:
        # A topic lives in one store only.
        return {topic: kept for store in self._stores for topic, kept in store.topics().items()}

    def __len__(self) -> int:
        """How many topics have something kept."""
        return sum(len(store) for store in self._stores)

