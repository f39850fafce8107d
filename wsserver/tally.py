"""
What the transports have done, counted in plain integers for the metrics (see wsserver/metrics.py).

Theory of operation
-------------------
The fan-out path writes an EVENT to each recipient with one dict lookup and one buffered write
(see delivery.py); a prometheus_client counter takes a lock per increment. So the transports count
here, in plain integers, where a thing happens, and :mod:`wsserver.metrics` turns the counts into
Prometheus counters when it is scraped. What is counted, and how often:

====================  ===========================================  ==============================
count                 where                                        how often
====================  ===========================================  ==============================
``deliveries``        ``delivery.carry_out``, by transport         once per EVENT and its batch of
                                                                   recipients (once per recipient
                                                                   only when one batch mixes
                                                                   transports)
``dropped_events``    the send buffer (``--slow-consumer drop``)   per event dropped (the slow path)
``disconnects``       where the server closes a connection         per connection closed
``auth_failures``     the HTTP API's keys (the router counts WAMP  per request refused 401
                      logins: ``Router.refused_logins``)
====================  ===========================================  ==============================

The labels are the constants below, never a client's words, so each count has few keys.
:data:`TALLY` is the process's, not handed to each transport: it is counted in a dozen places,
reached from a free function (``carry_out``) and from per-connection objects, and Prometheus
counters count per process anyway. Servers in one process (tests) share it: compare differences. The time from a PUBLISH to its last EVENT written
(``publish_to_write_seconds``) is measured only while metrics are served: :meth:`Tally.published`
does nothing until :mod:`wsserver.metrics` sets ``observe_publication``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from autobahn.wamp import message as wamp

from wsserver.core.actions import CloseReason, Send

# Reasons the server closes a connection (``disconnects``) or drops an event (``dropped_events``).
#: A client left more than --max-send-buffer bytes unread (closed, or under ``drop`` its events dropped).
SLOW_CONSUMER = "slow_consumer"
#: A WebSocket's pong did not come back within --ping-timeout (an event stream read nothing as long).
PING_TIMEOUT = "ping_timeout"
#: No WAMP HELLO (or AUTHENTICATE) within --hello-timeout.
HELLO_TIMEOUT = "hello_timeout"
#: More WebSocket frames a second than --max-frame-rate allows.
FRAME_RATE = "frame_rate"
#: A WebSocket message in more than --max-fragments frames.
TOO_MANY_FRAGMENTS = "too_many_fragments"
#: An error of the server's while handling a client's message.
INTERNAL_ERROR = "internal_error"
#: The HTTP API's bearer keys and signatures (``auth_failures``), on /publish, /call, /sse and /stream.
HTTP_KEY = "http_key"
#: The router's Close actions, by CloseReason: a session's end after GOODBYE or ABORT ("normal"),
#: a protocol violation, the server shutting down ("going_away"). See delivery.carry_out.
CLOSE_REASONS = {
    CloseReason.NORMAL: "normal",
    CloseReason.PROTOCOL_VIOLATION: "protocol_violation",
    CloseReason.GOING_AWAY: "going_away",
}


def monotonic() -> float:
    """Seconds on a clock that only goes forward (for durations)."""
    return time.perf_counter()


class Tally:
    """
    The counts the transports keep (see the module docstring); read them, never reset them.
    ``observe_publication(seconds)``: what to do with the time from a PUBLISH to its last EVENT
    written (None: nothing, and the clock is not read); ``clock``: seconds, for durations.
    """

    __slots__ = ("deliveries", "dropped_events", "disconnects", "auth_failures", "observe_publication", "clock")

    def __init__(self) -> None:
        self.deliveries: defaultdict[str, int] = defaultdict(int)
        self.dropped_events: defaultdict[str, int] = defaultdict(int)
        self.disconnects: defaultdict[str, int] = defaultdict(int)
        self.auth_failures: defaultdict[str, int] = defaultdict(int)
        self.observe_publication: Callable[[float], None] | None = None
        self.clock: Callable[[], float] = monotonic

    def started(self) -> float:
        """Call before handing a PUBLISH to the router; pass the result to :meth:`published`."""
        return self.clock() if self.observe_publication is not None else 0.0

    def published(self, started: float, actions: Sequence[Any]) -> None:
        """
        The router's ``actions`` for a PUBLISH (handed to it at ``started``) are carried out:
        observe the time it took if they sent an EVENT to anyone.
        """
        observe = self.observe_publication
        if observe is not None and started and any(_is_event_send(action) for action in actions):
            observe(self.clock() - started)


def _is_event_send(action: Any) -> bool:
    return type(action) is Send and isinstance(action.message, wamp.Event)


#: The process's counts.
TALLY = Tally()
