"""
Subscriptions of one realm: who is subscribed to what, and which subscriptions a topic reaches.

Theory of operation
-------------------
A subscription is one (topic pattern, match policy) pair, shared by every session subscribed to
it: the spec gives them all the same subscription id, which is what lets one EVENT message serve
every subscriber. So the table keeps:

- ``_by_key``: (topic, match) -> Subscription, to find the shared subscription on SUBSCRIBE;
- ``_by_id``: subscription id -> Subscription, for UNSUBSCRIBE;
- ``_exact``: topic -> Subscription for exact matches, the index PUBLISH consults: routing a
  publication costs one dict lookup, whatever else is subscribed;
- per session, the set of its subscriptions (``Session.subscriptions``), so a session that leaves
  is dropped from each in one step, and an emptied subscription is deleted with it.

A subscription exists exactly as long as it has a subscriber.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic

from wsserver.core.session import PeerT, Session

EXACT = "exact"


class Subscription(Generic[PeerT]):
    """One (topic, match) and the sessions subscribed to it."""

    __slots__ = ("id", "topic", "match", "subscribers")

    def __init__(self, subscription_id: int, topic: str, match: str) -> None:
        self.id = subscription_id
        self.topic = topic
        self.match = match
        self.subscribers: set[Session[PeerT]] = set()

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.match} {self.topic!r} x{len(self.subscribers)}>"


class SubscriptionTable(Generic[PeerT]):
    """
    The subscriptions of one realm. ``next_id`` gives new subscription ids (router scope: the
    router injects a counter or a random source).
    """

    def __init__(self, next_id: Callable[[], int]) -> None:
        self._next_id = next_id
        self._by_key: dict[tuple[str, str], Subscription[PeerT]] = {}
        self._by_id: dict[int, Subscription[PeerT]] = {}
        self._exact: dict[str, Subscription[PeerT]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[Subscription[PeerT]]:
        return iter(self._by_id.values())

    def get(self, subscription_id: int) -> Subscription[PeerT] | None:
        return self._by_id.get(subscription_id)

    def subscribe(self, session: Session[PeerT], topic: str, match: str) -> Subscription[PeerT]:
        """Add ``session`` to the subscription for (topic, match), creating it if needed."""
        subscription = self._by_key.get((topic, match))
        if subscription is None:
            subscription = Subscription(self._next_id(), topic, match)
            self._by_key[(topic, match)] = subscription
            self._by_id[subscription.id] = subscription
            if match == EXACT:
                self._exact[topic] = subscription
        subscription.subscribers.add(session)
        session.subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, session: Session[PeerT], subscription: Subscription[PeerT]) -> bool:
        """Remove ``session`` from ``subscription``; return True if that deleted the subscription."""
        subscription.subscribers.discard(session)
        session.subscriptions.discard(subscription)
        if subscription.subscribers:
            return False
        del self._by_key[(subscription.topic, subscription.match)]
        del self._by_id[subscription.id]
        if subscription.match == EXACT:
            del self._exact[subscription.topic]
        return True

    def drop(self, session: Session[PeerT]) -> list[Subscription[PeerT]]:
        """Remove ``session`` from all its subscriptions; return those that were deleted."""
        return [s for s in list(session.subscriptions) if self.unsubscribe(session, s)]

    def matching(self, topic: str) -> list[Subscription[PeerT]]:
        """The subscriptions a publication to ``topic`` reaches."""
        exact = self._exact.get(topic)
        return [exact] if exact is not None else []
