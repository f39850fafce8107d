"""
The admin page's figures: what the server publishes on ``wsserver.stats`` once a second.

Theory of operation
-------------------
A :class:`StatsPublisher` (a Twisted service, started with the server) asks its ``source`` for
the server's :class:`Figures` every :data:`INTERVAL` seconds while some session is subscribed
to the stats topic, turns the counters among them into rates per second since the previous
reading, and publishes one event, kwargs only::

    {"time": 1764432000.0,          # the reading's time, seconds since the epoch
     "sessions": 12,                # joined WAMP sessions, every realm
     "publications_per_s": 3.0,     # null when the source does not count it
     "deliveries_per_s": 36.0,      # null when the source does not count it
     "dropped_per_s": 0.0,          # events dropped for slow consumers; null when not counted
     "send_buffer_bytes": 0}        # bytes waiting for clients in send buffers now

through :meth:`~wsserver.core.router.Router.publish_to_admins`: to the admin role's sessions of
every realm, on this process only (see wsserver/core/admin.py). The page keeps 300 of them: the
last 5 minutes. A counter that went down (a restart of whatever counts it) gives a rate of 0.

The source is a seam: any callable that returns :class:`Figures`, read on the reactor thread.
:func:`live_figures` reads the counts the metrics read too (one count per idea): the brokers'
``published``, and the tally the transports keep (wsserver/tally.py: deliveries, events dropped
for slow consumers, closed connections included), and it walks the joined sessions for their
number and the bytes waiting in their send buffers. It needs no ``--metrics-listen``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from wsserver.core.admin import STATS_TOPIC
from wsserver.core.router import Router
from wsserver.delivery import Peer, carry_out
from wsserver.tally import TALLY, Tally

log = Logger()

#: Seconds between two stats events.
INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class Figures:
    """One reading of the server's figures; None: not counted by this source."""

    #: Joined WAMP sessions, every realm.
    sessions: int
    #: Bytes waiting for clients in their connections' send buffers.
    send_buffer_bytes: int
    #: Publications routed since some start (a counter).
    publications: int | None = None
    #: Events written to subscribers since some start (a counter).
    deliveries: int | None = None
    #: Events dropped for slow consumers since some start (a counter).
    dropped: int | None = None


def live_figures(router: Router[Any], tally: Tally = TALLY) -> Figures:
    """The figures the router, the open connections and the tally know (see the module docstring)."""
    sessions = buffered = published = 0
    for realm in router.realms.values():
        sessions += len(realm.sessions)
        published += realm.broker.published
        for session in realm.sessions.values():
            transport = session.transport
            if transport is not None:
                buffered += transport.buffered_bytes()
    return Figures(sessions=sessions, send_buffer_bytes=buffered, publications=published,
                   deliveries=sum(tally.deliveries.values()), dropped=sum(tally.dropped_events.values()))


def _rate(now: int | None, before: int | None, seconds: float) -> float | None:
    if now is None or before is None or seconds <= 0:
        return None
    return max(0, now - before) / seconds


class StatsPublisher(Service):
    """
    Publishes ``source()``'s figures on the stats topic every ``interval`` seconds of ``clock``
    while the service runs and someone listens (see the module docstring).
    """

    def __init__(self, router: Router[Peer], clock: IReactorTime, source: Callable[[], Figures],
                 interval: float = INTERVAL) -> None:
        self.router = router
        self.clock = clock
        self.source = source
        self.interval = interval
        self._loop: LoopingCall | None = None
        #: The previous reading and its time, for rates.
        self._previous: tuple[float, Figures] | None = None

    def startService(self) -> None:
        super().startService()
        self._loop = LoopingCall(self.tick)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=False).addErrback(
            lambda failure: log.failure("the admin stats stopped", failure)
        )

    def stopService(self) -> None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def listened(self) -> bool:
        """Whether any session is subscribed to the stats topic (else a tick costs nothing)."""
        return any(realm.subscriptions.matching(STATS_TOPIC) for realm in self.router.realms.values())

    def tick(self) -> None:
        """Read the figures and publish them with the rates since the previous reading."""
        if not self.listened():
            self._previous = None  # the first event for a new listener has no rates, not an old average
            return
        now = self.clock.seconds()
        figures = self.source()
        previous = self._previous
        self._previous = (now, figures)
        before = previous[1] if previous is not None else None
        seconds = now - previous[0] if previous is not None else 0.0

        def rate(name: str) -> float | None:
            return _rate(getattr(figures, name), getattr(before, name, None), seconds)

        carry_out(self.router.publish_to_admins(STATS_TOPIC, {
            "time": now,
            "sessions": figures.sessions,
            "publications_per_s": rate("publications"),
            "deliveries_per_s": rate("deliveries"),
            "dropped_per_s": rate("dropped"),
            "send_buffer_bytes": figures.send_buffer_bytes,
        }))
