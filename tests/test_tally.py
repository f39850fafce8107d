"""The transports' counts: the publish-to-write time is observed once per publication that reached someone."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message as wamp

from wsserver.core.actions import Send
from wsserver.core.session import Session
from wsserver.tally import Tally


class Ticking:
    """A clock that moves ``step`` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now = 100.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_publications_are_timed_only_while_observed_and_only_when_an_event_went_out() -> None:
    tally, observed = Tally(), []
    tally.clock = clock = Ticking(0.25)
    session: Session[Any] = Session("peer")
    event = Send(wamp.Event(1, 2, args=[3]), (session,))
    published = Send(wamp.Published(1, 2), (session,))

    started = tally.started()
    tally.published(started, [event])
    assert clock.now == 100.0, "not observed: the clock is not read"

    tally.observe_publication = observed.append
    started = tally.started()
    tally.published(started, [published, event])
    tally.published(tally.started(), [published])  # a publication no one received: nothing to time
    assert observed == [0.25]
