"""
How many failed logins a client address, and an authid, may make before the router stops checking.

Theory of operation
-------------------
Checking a login costs the server what the credential costs (a ticket: 100000 PBKDF2 iterations,
about 17 ms of CPU), and each check is a guess at a secret. So every AUTHENTICATE that is checked
first takes a token from two :class:`~wsserver.core.limits.TokenBucket`: its client address's
(``per_address`` tokens) and its authid's in its realm (``per_authid`` tokens), each refilled at
that many per ``window`` seconds (the router's clock). A login that succeeds gives both back, so
what is spent is failures, and attempts in flight count until they end: one address cannot queue
more than ``per_address`` checks. With either bucket empty, the attempt is not checked at all: the
router refuses it like a wrong secret (the same ABORT after the same delay), and counts it in
:attr:`FailedLogins.refused`.

The per-authid limit stops guessing one account from many addresses; the price is that such
guessing also keeps that account's owner out until the window has passed (the usual trade of an
account lockout). An unknown authid gets a bucket like a known one, so the limit does not tell
which exist.

Addresses and authids are keys clients choose, so each table keeps at most ``tracked`` of them,
forgetting the least recently used first (forgetting a bucket forgives its failures).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

from wsserver.core.limits import TokenBucket


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """Failed logins allowed per ``window`` seconds; 0 turns a limit off."""

    per_address: int = 10
    per_authid: int = 20
    window: float = 60.0
    #: Addresses (and authids) remembered at most, each.
    tracked: int = 10_000


class FailedLogins:
    """The buckets of :class:`LoginLimits`: ask :meth:`attempt` before checking a login, and tell :meth:`succeeded`."""

    def __init__(self, limits: LoginLimits = LoginLimits()) -> None:
        self.limits = limits
        self._by_address: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        self._by_authid: OrderedDict[Hashable, TokenBucket] = OrderedDict()
        #: Attempts refused without a check, since the start.
        self.refused = 0

    def attempt(self, address: str | None, realm: str, authid: str, now: float) -> bool:
        """
        Whether a login from ``address`` as ``authid`` of ``realm`` may be checked now. If so it
        counts as failed until :meth:`succeeded` says otherwise; if not, refuse it unchecked.
        """
        buckets = self._buckets(address, realm, authid, now)
        allowed = all([bucket.take(now) for bucket in buckets])  # a list: take from every bucket
        if not allowed:
            self.refused += 1
        return allowed

    def succeeded(self, address: str | None, realm: str, authid: str, now: float) -> None:
        """A login :meth:`attempt` allowed proved its identity: it was no failure."""
        for bucket in self._buckets(address, realm, authid, now):
            bucket.tokens = min(float(bucket.burst), bucket.tokens + 1)

    def _buckets(self, address: str | None, realm: str, authid: str, now: float) -> list[TokenBucket]:
        limits = self.limits
        buckets = []
        if limits.per_address and address is not None:
            buckets.append(self._bucket(self._by_address, address, limits.per_address, now))
        if limits.per_authid and authid:
            buckets.append(self._bucket(self._by_authid, (realm, authid), limits.per_authid, now))
        return buckets

    def _bucket(self, table: OrderedDict[Hashable, TokenBucket], key: Hashable, burst: int, now: float) -> TokenBucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = TokenBucket(burst / self.limits.window, burst, now)
            if len(table) > self.limits.tracked:
                table.popitem(last=False)
        else:
            table.move_to_end(key)
        return bucket
