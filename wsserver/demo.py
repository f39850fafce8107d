"""
The demo producer (``--demo``): the classic "producer server" feeding the dashboard page.

- ``com.example.ticker``: a value that grows by a random 1..10, published at random intervals
  under one second; event args ``[value]``.
- ``com.example.clock``: the current server time every second; event args ``[iso_time]``, an
  ISO 8601 UTC timestamp with seconds.

Clock and randomness are injected, so tests drive it with ``twisted.internet.task.Clock``.

Both topics keep history (:data:`HISTORY`), so that the dashboard, which subscribes with
``{resume: true}``, recovers what it missed across a dropped connection without any option. So do
the chat page's rooms (:data:`CHAT_ROOM_PREFIX`), though nothing here publishes to them: their
last :data:`CHAT_HISTORY` messages are what a page entering a room shows first, and what it
resumes from.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from wsserver.core.history import MAX_RESUME_EVENTS, HistoryRule
from wsserver.core.matching import PREFIX

TICKER_TOPIC = "com.example.ticker"
CLOCK_TOPIC = "com.example.clock"
#: The chat page's rooms: one topic each, ``com.example.chat.room.<name>`` (see web/js/chat.js).
CHAT_ROOM_PREFIX = "com.example.chat.room."
#: Messages a chat room keeps: what a page shows on entering it.
CHAT_HISTORY = 50

#: History rules ``--demo`` adds after those of ``--config`` (an exact rule there for one of these
#: topics wins): as many events as one resume returns by default, about two and a half minutes
#: of the ticker; and the chat rooms' last messages.
HISTORY = tuple(HistoryRule(topic, size=MAX_RESUME_EVENTS) for topic in (TICKER_TOPIC, CLOCK_TOPIC)) + (
    HistoryRule(CHAT_ROOM_PREFIX, match=PREFIX, size=CHAT_HISTORY),
)

Publish = Callable[[str, list[Any]], None]


class DemoProducer(Service):
    """Publishes the ticker and the clock through ``publish(topic, args)`` while running."""

    def __init__(self, publish: Publish, clock: IReactorTime, rng: random.Random | None = None) -> None:
        self._publish = publish
        self._clock = clock
        self._rng = rng or random.Random()
        self.ticker_value = 0
        self._calls: dict[str, IDelayedCall] = {}

    def startService(self) -> None:
        super().startService()
        self._schedule_ticker()
        self._schedule_clock()

    def stopService(self) -> None:
        super().stopService()
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()

    def _schedule_ticker(self) -> None:
        self._calls["ticker"] = self._clock.callLater(self._rng.uniform(0.05, 0.95), self._tick)

    def _tick(self) -> None:
        self.ticker_value += self._rng.randint(1, 10)
        self._publish(TICKER_TOPIC, [self.ticker_value])
        self._schedule_ticker()

    def _schedule_clock(self) -> None:
        # Aim for the next whole second, so the page's clock ticks evenly.
        now = self._clock.seconds()
        self._calls["clock"] = self._clock.callLater(1.0 - now % 1.0, self._clock_tick)

    def _clock_tick(self) -> None:
        now = datetime.fromtimestamp(round(self._clock.seconds()), tz=timezone.utc)
        self._publish(CLOCK_TOPIC, [now.isoformat().replace("+00:00", "Z")])
        self._schedule_clock()
