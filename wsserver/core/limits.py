"""
What one WAMP session may cost the router: its publish rate and its number of subscriptions.

Theory of operation
-------------------
Each joined session gets a :class:`TokenBucket` of ``publish_burst`` tokens that refills at
``publish_rate`` tokens a second (the router's clock, so tests move time by hand). A PUBLISH takes
a token; with none left it is refused. So a session may publish ``publish_burst`` events at once,
and ``publish_rate`` a second for as long as it likes.

A session may hold ``max_subscriptions`` subscriptions; a SUBSCRIBE that would add one more is
refused (subscribing again to what it already has is not "one more").

Refusals are ERRORs with these URIs, and the session stays open. As with every refused PUBLISH,
only a PUBLISH with ``acknowledge: true`` is answered (a client expects no answer otherwise:
autobahn-python treats an unexpected ERROR as a protocol violation); others are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

#: ERROR for a PUBLISH over the session's rate.
PUBLISH_RATE_EXCEEDED = "wsserver.error.publish_rate_exceeded"
#: ERROR for a SUBSCRIBE over the session's number of subscriptions.
TOO_MANY_SUBSCRIPTIONS = "wsserver.error.too_many_subscriptions"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-session limits; 0 turns one off."""

    #: Publications a second, sustained.
    publish_rate: float = 1000.0
    #: Publications at once, after a quiet while.
    publish_burst: int = 10_000
    max_subscriptions: int = 1000

    def bucket(self, now: float) -> TokenBucket | None:
        """A full bucket for a new session; None when publishing is not limited."""
        if not self.publish_rate:
            return None
        return TokenBucket(self.publish_rate, max(1, self.publish_burst), now)


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` a second; :meth:`take` spends one if there is one."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        # A clock that steps back refills nothing (and does not drain either).
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False
