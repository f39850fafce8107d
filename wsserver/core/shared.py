"""
The seam to a store several nodes share (Redis, ``--redis``): retained events, history and positions.

Theory of operation
-------------------
In one process the broker keeps retained events and history itself (eventstore.py, history.py)
and gives each kept publication its topic's next position at once. With several nodes, the
positions must be the same on every node, so a store they share gives them, and the broker only
asks: it returns an :class:`~wsserver.core.actions.Ask` whose ``ask`` calls one method of the
:class:`SharedStore` it was given, and whose ``then`` carries on with the answer. The methods
return the answer or a Deferred of it (the broker never looks inside: the delivery loop waits);
they never fail: a store that cannot answer says so with the value documented per method.

A publication on a topic with history (or retained) is stored, and the store hands it to every
node, this one included, with its position: each routes it from there
(``Router.route_stored``), so every node delivers a topic's events in the store's order, once.
A publication the store could not take (unreachable) is delivered on this node only, without
a position; the store must then make sure that no later resume of that topic says
``recovered: true`` across it.

Publications on topics without history or retention never wait for the store: they are routed
at once, as in one process, and forwarded through the backplane.

Every question goes down one connection to the store, answered in order, so a burst from one
session (thousands of publications, or reads) would delay everyone's publications behind it.
:class:`Turns` gives each session a few questions at once; its others wait their turn on the
node, in order, while other sessions' questions go ahead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol

from wsserver.core.actions import Action, Ask
from wsserver.core.session import PeerT

if TYPE_CHECKING:
    from wsserver.core.broker import Publication

#: Questions to the store one session has asked at once; its others wait their turn. A resume
#: asks one per topic, a publisher one per publication; answers come back in about a round trip.
AT_ONCE = 4


class Keeping(NamedTuple):
    """How a topic keeps history: its last ``size`` events, each for ``ttl`` seconds (None: no limit)."""

    size: int
    ttl: float | None


class SharedStore(Protocol):
    """What the broker asks of a shared store; every method returns the answer or a Deferred of it."""

    def store(self, realm: str, publication: Publication, *, retain: bool, history: Keeping | None) -> Any:
        """
        Keep ``publication`` (in ``history`` with the topic's next position, and as the topic's
        retained event if ``retain``) and hand it to every node; answer True. False: it was
        not stored (the caller delivers it here only).
        """

    def since(self, realm: str, topic: str, epoch: str, after: int, *, limit: int, ttl: float | None) -> Any:
        """What ``topic`` kept after (``epoch``, ``after``), as ``History.since``; None: the store cannot say."""

    def latest(self, realm: str, pattern: str, match: str, *, limit: int) -> Any:
        """
        Up to the last ``limit`` kept events (``Kept``, expired ones too) of each topic ``pattern``
        matches, oldest first; None: the store cannot say.
        """

    def retained(self, realm: str, pattern: str, match: str, *, ttl: float | None) -> Any:
        """The retained publications (positions set) of the topics ``pattern`` matches; None: cannot say."""


class Turns(Generic[PeerT]):
    """
    At most ``at_once`` questions asked per key (a session; None: the server's own), the others
    kept, in order, until an answer makes room: :meth:`ask` returns the ``Ask`` to carry out now,
    or nothing while the key waits its turn.
    """

    def __init__(self, at_once: int = AT_ONCE) -> None:
        self.at_once = at_once
        self._asking: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, deque[tuple[Callable[[], Any], Callable[[Any], Sequence[Action[PeerT]]]]]] = {}

    def ask(
        self, key: Hashable, ask: Callable[[], Any], then: Callable[[Any], Sequence[Action[PeerT]]]
    ) -> list[Action[PeerT]]:
        """``Ask(ask, then)`` now if ``key`` has room, else later (in order); ``then``'s actions come first."""
        if self._asking.get(key, 0) >= self.at_once:
            self._waiting.setdefault(key, deque()).append((ask, then))
            return []
        return [self._asked(key, ask, then)]

    def forget(self, key: Hashable) -> None:
        """Drop what ``key`` still waits to ask (it left)."""
        self._waiting.pop(key, None)

    def _asked(self, key: Hashable, ask: Callable[[], Any], then: Callable[[Any], Sequence[Action[PeerT]]]) -> Ask[PeerT]:
        self._asking[key] = self._asking.get(key, 0) + 1

        def answered(answer: Any) -> list[Action[PeerT]]:
            asking = self._asking.pop(key) - 1
            if asking:
                self._asking[key] = asking
            actions = list(then(answer))
            waiting = self._waiting.get(key)
            if waiting:
                next_ask, next_then = waiting.popleft()
                if not waiting:
                    del self._waiting[key]
                actions.append(self._asked(key, next_ask, next_then))
            return actions

        return Ask(ask, answered)
