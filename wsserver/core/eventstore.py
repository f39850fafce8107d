"""
Publications kept after routing: each topic's retained event and its event history, within one
budget of bytes and topics for the whole router.

Theory of operation
-------------------
Both WAMP features keep, per concrete topic, its last few publications:

- event retention keeps the last one published with ``retain: true`` (capacity 1), optionally
  forgotten ``ttl`` seconds after it was kept (``--retain-ttl``);
- event history keeps the last ``capacity`` publications (``--history-size``).

Both are read through a subscription's pattern (exact, prefix or wildcard): what was kept on
every topic the pattern matches. So one :class:`EventStore` serves both, keeping:

- ``_topics``: topic -> deque of :class:`Kept` (oldest first, at most ``capacity``);
- ``_order``: every kept item as ``(topic, kept)``, in keeping order, oldest first. An item leaves
  its topic only from the front (a full topic drops its oldest; expiry and eviction take the
  oldest), so an entry still stands for a kept item exactly when its topic's oldest item is not
  newer than it. Entries of items a full topic dropped are skipped when they reach the front,
  and swept out when they outnumber the live ones (amortized constant cost);
- a sequence number per kept item (drawn from the budget, so shared by every store of a router),
  which orders items across topics and stores (the clock may stand still or step back), so the
  items of a pattern merge into one chronological list and eviction finds the oldest item.

With a TTL the expired items are at the front of ``_order``, and every call first drops them from
there: expired events do not pile up in memory.

The budget
----------
Every store of a router (retained events and history, in every realm) draws on one
:class:`StoreBudget`: memory is the process's, and an operator thinks of one figure. Its
:class:`StoreLimits` bound the estimated bytes of everything kept and the number of topics with
something kept (a topic with a retained event and history counts twice). When keeping something
takes the stores past either, the oldest items go first, across topics and stores (the store
whose oldest item is oldest gives it up; a router has few stores), until they are within both.
An item larger than the whole byte budget is not kept at all: it takes its place (a full topic
drops its oldest item for it) and is evicted at once. Every eviction is counted in
:attr:`StoreBudget.evicted` for the operator (the server logs it now and then, not per event).

What an item costs is estimated when it is kept: ``size(item)`` (for publications, the decoded
payload as :func:`estimated_size` sees it) plus :data:`ITEM_OVERHEAD`, and per topic
:data:`TOPIC_OVERHEAD` plus its name.

Reading an exact pattern is one dict lookup; a prefix or wildcard pattern tests each kept topic
with :func:`~wsserver.core.matching.matches`. That cost is paid on SUBSCRIBE with
``get_retained`` and on ``wamp.subscription.get_events``, never when routing a publication.

Positions
---------
Every topic also has a position: an **epoch**, drawn from ``new_epoch`` when the topic comes into
the store (it was never kept, or everything it kept was lost: the whole topic evicted, expired or
dropped for the budget), and ``top``, the sequence number of its newest item, which grows by one
per item kept (the first is 1). :meth:`EventStore.keep` returns the position it gave, and
:meth:`EventStore.since` answers what was kept after one: every item, or ``recovered: false``
when the epoch is another or an item in between is gone. Losing some items of a topic keeps
its epoch; ``since`` a position before its oldest kept item is then not recovered.

The interface a router uses (``keep``, ``latest``, ``since``, ``len``) is all a store elsewhere
(Redis) would have to offer (see :class:`wsserver.core.history.History`).
"""

from __future__ import annotations

import itertools
import sys
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from wsserver.core.matching import EXACT, matches

T = TypeVar("T")

#: Estimated bytes of one kept item besides its payload: its Kept, publication and audience
#: objects, timestamp, ids and its entry in the keeping order (sys.getsizeof, CPython 3.11).
ITEM_OVERHEAD = 400
#: Estimated bytes of one topic besides its name: its deque and dict slot.
TOPIC_OVERHEAD = 800


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """What the event stores of a router may hold together; 0 turns a limit off."""

    #: Estimated bytes of everything kept (payloads and bookkeeping).
    max_bytes: int = 64 * 2**20
    #: Topics with a retained event or history (a topic with both counts twice).
    max_topics: int = 10_000


class Kept(NamedTuple, Generic[T]):
    """
    One kept item: its place in keeping order, when it was kept (router clock), the item, its
    estimated bytes and its sequence number in its topic (its position, with the topic's epoch).
    """

    sequence: int
    time: float
    item: T
    size: int = 0
    seq: int = 0


class Position(NamedTuple):
    """Where a topic's history stands: its epoch (a life of its history) and a sequence number in it."""

    epoch: str
    seq: int


@dataclass(frozen=True, slots=True)
class Since(Generic[T]):
    """
    The answer to "what was kept on a topic after a position": ``recovered`` when ``items`` are
    every item after it (oldest first), otherwise ``items`` is empty and the caller must reload
    its state. ``epoch`` and ``top``: the topic's position now ("" and 0: nothing kept).
    """

    recovered: bool
    epoch: str
    top: int
    items: list[Kept[T]]


class _Topic(deque[Kept[T]]):
    """A topic's kept items, oldest first, with its position."""

    def __init__(self, epoch: str) -> None:
        super().__init__()
        self.epoch = epoch
        self.top = 0


def _no_epoch() -> str:
    return ""


def estimated_size(values: Iterable[object], limit: int | None = None) -> int:
    """
    The bytes decoded payload ``values`` (lists, dicts, strings, numbers) take in memory, by
    ``sys.getsizeof`` of every object reached (an object reached twice counts twice). The walk
    needs no recursion, and stops once past ``limit``: it then returns more than ``limit``.
    """
    total = 0
    pending = list(values)
    sizeof = sys.getsizeof
    while pending:
        value = pending.pop()
        total += sizeof(value)
        if limit is not None and total > limit:
            return total
        kind = type(value)
        if kind is list or kind is tuple:
            pending.extend(value)  # type: ignore[arg-type]
        elif kind is dict:
            pending.extend(value.keys())  # type: ignore[attr-defined]
            pending.extend(value.values())  # type: ignore[attr-defined]
    return total


class StoreBudget:
    """
    The bytes and topics every :class:`EventStore` of a router holds, within ``limits``; pass
    it to each store. ``evicted`` counts the items evicted to stay within them.
    """

    def __init__(self, limits: StoreLimits = StoreLimits()) -> None:
        self.limits = limits
        self.bytes = 0
        self.topics = 0
        self.evicted = 0
        self._stores: list[EventStore[Any]] = []
        self._sequence = itertools.count()

    def _over(self) -> bool:
        limits = self.limits
        return 0 < limits.max_bytes < self.bytes or 0 < limits.max_topics < self.topics

    def _make_room(self) -> None:
        """Evict the oldest item of all stores until they are within the limits."""
        while self._over():
            fronts = [(sequence, store) for store in self._stores if (sequence := store._oldest()) is not None]
            min(fronts, key=lambda front: front[0])[1]._evict_oldest()
            self.evicted += 1


def _topic_cost(topic: str) -> int:
    return TOPIC_OVERHEAD + sys.getsizeof(topic)


def _nothing(item: Any) -> int:
    return 0


class EventStore(Generic[T]):
    """
    The last ``capacity`` items kept per topic; with ``ttl`` (seconds), an item is forgotten
    that long after it was kept. ``clock`` returns the time in seconds. ``budget``: shared with
    the router's other stores (None: a budget of its own, without limits); ``size(item)``: the
    item's estimated bytes; ``new_epoch()``: a fresh random epoch for a topic whose history
    begins (a store that serves no positions needs none).
    """

    def __init__(
        self,
        capacity: int,
        ttl: float | None,
        clock: Callable[[], float],
        *,
        budget: StoreBudget | None = None,
        size: Callable[[T], int] = _nothing,
        new_epoch: Callable[[], str] = _no_epoch,
    ) -> None:
        assert capacity >= 1
        self.capacity = capacity
        self.ttl = ttl
        self._clock = clock
        self.budget = budget if budget is not None else StoreBudget(StoreLimits(max_bytes=0, max_topics=0))
        self.budget._stores.append(self)
        self._size = size
        self._new_epoch = new_epoch
        self._topics: dict[str, _Topic[T]] = {}
        self._order: deque[tuple[str, Kept[T]]] = deque()
        #: Entries of ``_order`` whose item a full topic dropped.
        self._stale = 0

    def __len__(self) -> int:
        """How many topics have something kept."""
        self._expire(self._clock())
        return len(self._topics)

    def keep(self, topic: str, item: T) -> Position:
        """
        Keep ``item`` as the newest of ``topic`` (the oldest goes when the topic is full); return
        its position, which the item's readers may resume from.
        """
        now = self._clock()
        self._expire(now)
        budget = self.budget
        items = self._topics.get(topic)
        if items is None:
            items = self._topics[topic] = _Topic(self._new_epoch())
            budget.topics += 1
            budget.bytes += _topic_cost(topic)
        elif len(items) == self.capacity:
            budget.bytes -= items.popleft().size
            self._stale += 1
        items.top += 1
        position = Position(items.epoch, items.top)
        kept = Kept(next(budget._sequence), now, item, ITEM_OVERHEAD + self._size(item), items.top)
        items.append(kept)
        self._order.append((topic, kept))
        budget.bytes += kept.size
        if 0 < budget.limits.max_bytes < kept.size:
            # Larger than the whole budget: evicting everything else would not make room.
            self._order.pop()
            self._forget(topic, items, items.pop())
            budget.evicted += 1
        budget._make_room()
        if self._stale > 64 and self._stale * 2 > len(self._order):
            self._order = deque(entry for entry in self._order if self._live(entry))
            self._stale = 0
        return position

    def position(self, topic: str) -> Position | None:
        """Where ``topic``'s history stands now; None if nothing is kept."""
        self._expire(self._clock())
        items = self._topics.get(topic)
        return None if items is None else Position(items.epoch, items.top)

    def since(self, topic: str, epoch: str, after: int, limit: int) -> Since[T]:
        """
        What ``topic`` kept after position (``epoch``, ``after``), oldest first: recovered when
        the epoch is the topic's, no item after ``after`` is gone and at most ``limit`` came
        after it. A position past the top is not recovered either (the caller tells that apart
        from a lost one by comparing it with the answer's position).
        """
        self._expire(self._clock())
        items = self._topics.get(topic)
        if items is None:
            return Since(False, "", 0, [])
        top = items.top
        # An item after ``after`` is gone when the oldest kept came later, or the newest was
        # evicted at once (larger than the whole budget).
        lost = after < top and (items[0].seq > after + 1 or items[-1].seq != top)
        if epoch != items.epoch or after > top or top - after > limit or lost:
            return Since(False, items.epoch, top, [])
        missed = top - after
        return Since(True, items.epoch, top, list(itertools.islice(items, len(items) - missed, None)))

    def topics(self) -> dict[str, tuple[int, Position]]:
        """Every topic with something kept: how many items, and its position."""
        self._expire(self._clock())
        return {topic: (len(items), Position(items.epoch, items.top)) for topic, items in self._topics.items()}

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

    # -- the keeping order -------------------------------------------------------------------------

    def _live(self, entry: tuple[str, Kept[T]]) -> bool:
        items = self._topics.get(entry[0])
        return items is not None and items[0].sequence <= entry[1].sequence

    def _front(self) -> tuple[str, Kept[T]] | None:
        """The entry of the oldest kept item (dropping stale entries on the way), or None."""
        order = self._order
        while order and not self._live(order[0]):
            order.popleft()
            self._stale -= 1
        return order[0] if order else None

    def _oldest(self) -> int | None:
        """The sequence number of the oldest kept item, or None if nothing is kept."""
        front = self._front()
        return None if front is None else front[1].sequence

    def _evict_oldest(self) -> None:
        """Forget the oldest kept item (there is one)."""
        front = self._front()
        assert front is not None
        self._order.popleft()
        topic = front[0]
        items = self._topics[topic]
        self._forget(topic, items, items.popleft())

    def _forget(self, topic: str, items: _Topic[T], kept: Kept[T]) -> None:
        """``kept`` has left ``topic``'s ``items``: give back its bytes, and the topic's if it is now empty."""
        budget = self.budget
        budget.bytes -= kept.size
        if not items:
            del self._topics[topic]
            budget.topics -= 1
            budget.bytes -= _topic_cost(topic)

    def _expired(self, kept: Kept[T], now: float) -> bool:
        return self.ttl is not None and kept.time + self.ttl <= now

    def _expire(self, now: float) -> None:
        if self.ttl is None:
            return
        while (front := self._front()) is not None and self._expired(front[1], now):
            self._evict_oldest()
