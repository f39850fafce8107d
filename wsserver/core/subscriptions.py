"""
Subscriptions of one realm: who is subscribed to what, and which subscriptions a topic reaches.

Theory of operation
-------------------
A subscription is one (topic pattern, match policy) pair, shared by every session subscribed to
it: the spec gives them all the same subscription id, which is what lets one EVENT message serve
every subscriber. So the table keeps:

- ``_index``: a :class:`~wsserver.core.matching.PatternIndex` from (pattern, policy) to the
  subscription, to find the shared subscription on SUBSCRIBE and the subscriptions a
  publication reaches (at a cost proportional to those, not to all subscriptions);
- ``_by_id``: subscription id -> subscription, for UNSUBSCRIBE and the meta API;
- per session, the set of its subscriptions (``Session.subscriptions``), so a session that leaves
  is dropped from each in one step, and an emptied subscription is deleted with it.

A subscription also counts its subscribers by role (``roles``), so routing can tell whether
every subscriber may receive a topic by looking at a few roles, not at every subscriber (see
authorization.py).

The table also counts the subscriptions that may hear a meta event (a pattern that may match a
topic in the router's ``wamp.`` namespace: ``wamp.session.on_join`` itself, a prefix such as
``wamp.session`` or ``w``, a wildcard such as ``.session.on_join``), kept up to date as
subscriptions are created and deleted: while it is zero the broker neither builds nor routes the
meta events of sessions opening and closing (several µs each, several per session), since
nobody could receive them.

A subscription exists exactly as long as it has a subscriber. Each change reports what happened
(created, session added, deleted) because the broker turns exactly that into meta events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import attrgetter
from typing import Generic

from wsserver.core.matching import PatternIndex, may_reach
from wsserver.core.meta import RESERVED_PREFIX
from wsserver.core.session import PeerT, Session


class Subscription(Generic[PeerT]):
    """One (topic pattern, match policy) and the sessions subscribed to it."""

    __slots__ = ("id", "topic", "match", "created", "subscribers", "roles", "_recipients", "_ids", "_but_one")

    def __init__(self, subscription_id: int, topic: str, match: str, created: float) -> None:
        self.id = subscription_id
        self.topic = topic
        self.match = match
        #: When it was created, in seconds since the epoch (the router's clock).
        self.created = created
        self.subscribers: set[Session[PeerT]] = set()
        #: authrole -> how many of the subscribers have it.
        self.roles: dict[str | None, int] = {}
        # The subscribers as every publication reads them, built on the first one after a change
        # (see recipients): a fan-out then costs nothing per subscriber until the writes.
        self._recipients: tuple[Session[PeerT], ...] | None = None
        self._ids: frozenset[int] = frozenset()
        # The recipients but the last publisher that excluded itself (exclude_me, the default), and
        # its session id: a subscriber publishing again and again is left out by one comparison.
        self._but_one: tuple[int, tuple[Session[PeerT], ...]] | None = None

    def recipients(self) -> tuple[Session[PeerT], ...]:
        """The subscribers, one tuple shared by every publication until one joins or leaves: do not change it."""
        recipients = self._recipients
        if recipients is None:
            recipients = self._recipients = tuple(self.subscribers)
            self._ids = frozenset(s.id for s in recipients)
        return recipients

    def recipients_but(self, session_id: int) -> tuple[Session[PeerT], ...]:
        """:meth:`recipients` without the session ``session_id`` (a subscriber), shared likewise: do not change it."""
        but_one = self._but_one
        if but_one is not None and but_one[0] == session_id:
            return but_one[1]
        others = tuple(s for s in self.recipients() if s.id != session_id)
        self._but_one = (session_id, others)
        return others

    def has_subscriber(self, session_id: int) -> bool:
        """Whether the session ``session_id`` is among :meth:`recipients` (call that first)."""
        return session_id in self._ids

    def changed(self) -> None:
        """A subscriber joined or left: :meth:`recipients` builds its tuple anew."""
        self._recipients = None
        self._ids = frozenset()
        self._but_one = None

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.match} {self.topic!r} x{len(self.subscribers)}>"


class SubscriptionTable(Generic[PeerT]):
    """
    The subscriptions of one realm. ``next_id`` gives new subscription ids (router scope: the
    router injects a counter or a random source).
    """

    def __init__(self, next_id: Callable[[], int]) -> None:
        self._next_id = next_id
        self._index: PatternIndex[Subscription[PeerT]] = PatternIndex()
        self._by_id: dict[int, Subscription[PeerT]] = {}
        #: How many subscriptions may match a meta event's topic (see the theory above).
        self._reaching_reserved = 0

    @property
    def reaches_reserved(self) -> bool:
        """Whether some subscription may match a topic in the router's ``wamp.`` namespace."""
        return self._reaching_reserved > 0

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Subscription[PeerT]]:
        return iter(self._by_id.values())

    def get(self, subscription_id: int) -> Subscription[PeerT] | None:
        return self._by_id.get(subscription_id)

    def lookup(self, topic: str, match: str) -> Subscription[PeerT] | None:
        """The subscription for exactly this (pattern, policy), if any."""
        return self._index.get(topic, match)

    def matching(self, topic: str) -> list[Subscription[PeerT]]:
        """The subscriptions a publication to ``topic`` reaches."""
        return self._index.matching(topic)

    def subscribe(
        self, session: Session[PeerT], topic: str, match: str, now: float
    ) -> tuple[Subscription[PeerT], bool, bool]:
        """
        Add ``session`` to the subscription for (topic, match), creating it if needed; return
        (subscription, whether it was created, whether the session was added to it).
        """
        subscription = self._index.get(topic, match)
        created = subscription is None
        if subscription is None:
            subscription = Subscription(self._next_id(), topic, match, now)
            self._index.add(topic, match, subscription)
            self._by_id[subscription.id] = subscription
            if may_reach(topic, match, RESERVED_PREFIX):
                self._reaching_reserved += 1
        added = session not in subscription.subscribers
        if added:
            subscription.subscribers.add(session)
            subscription.changed()
            subscription.roles[session.authrole] = subscription.roles.get(session.authrole, 0) + 1
            session.subscriptions.add(subscription)
        return subscription, created, added

    def unsubscribe(self, session: Session[PeerT], subscription: Subscription[PeerT]) -> bool:
        """Remove ``session`` (a subscriber) from ``subscription``; return True if that deleted the subscription."""
        subscription.subscribers.remove(session)
        subscription.changed()
        session.subscriptions.remove(subscription)
        remaining = subscription.roles.pop(session.authrole) - 1
        if remaining:
            subscription.roles[session.authrole] = remaining
        if subscription.subscribers:
            return False
        self._index.remove(subscription.topic, subscription.match)
        del self._by_id[subscription.id]
        if may_reach(subscription.topic, subscription.match, RESERVED_PREFIX):
            self._reaching_reserved -= 1
        return True

    def drop(self, session: Session[PeerT]) -> list[tuple[Subscription[PeerT], bool]]:
        """Remove ``session`` from all its subscriptions, oldest first; return each with whether it was deleted."""
        return [(s, self.unsubscribe(session, s)) for s in sorted(session.subscriptions, key=attrgetter("id"))]
