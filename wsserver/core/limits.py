"""
What one WAMP session may cost the router: its publish rate, its numbers of subscriptions,
registrations and calls in flight, and the length of the URIs it sends.

Theory of operation
-------------------
Each joined session gets a :class:`TokenBucket` of ``publish_burst`` tokens that refills at
``publish_rate`` tokens a second (the router's clock, so tests move time by hand). A PUBLISH takes
a token; with none left it is refused. So a session may publish ``publish_burst`` events at once,
and ``publish_rate`` a second for as long as it likes.

A session may hold ``max_subscriptions`` subscriptions; a SUBSCRIBE that would add one more is
refused (subscribing again to what it already has is not "one more"). Likewise a session may
provide ``max_registrations`` procedures and, as a caller, wait for ``max_calls_in_flight``
answers from callees at once (a callee that never answers cannot make its callers hold the
router's memory without end). Every URI a session sends (topics, patterns, procedures, error URIs)
may be ``max_uri_length`` bytes long in UTF-8; it is checked before the URI is looked up or kept.

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
#: ERROR for a REGISTER over the session's number of registrations.
TOO_MANY_REGISTRATIONS = "wsserver.error.too_many_registrations"
#: ERROR for a CALL over the session's number of calls in flight.
TOO_MANY_CALLS_IN_FLIGHT = "wsserver.error.too_many_calls_in_flight"
#: ERROR for a request naming a URI longer than the session may send.
URI_TOO_LONG = "wsserver.error.uri_too_long"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Per-session limits; 0 turns one off."""

    #: Publications a second, sustained.
    publish_rate: float = 1000.0
    #: Publications at once, after a quiet while.
    publish_burst: int = 10_000
    max_subscriptions: int = 1000
    #: Bytes (UTF-8) in any URI a session sends. Real URIs are well under 200 bytes; 1 KiB leaves
    #: room for ids in topics and keeps 1000 subscriptions' URIs near 1 MiB.
    max_uri_length: int = 1024
    #: Procedures one session may provide (as many as it may hold subscriptions).
    max_registrations: int = 1000
    #: CALLs to other sessions' procedures one session may wait on at once. An answer pending
    #: costs the router a few hundred bytes, so 1000 is ~0.3 MiB, far above what a client pipelines.
    max_calls_in_flight: int = 1000

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
