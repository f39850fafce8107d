"""
Authentication (WAMP Advanced Profile): from a HELLO to an identity, through at most one
CHALLENGE / AUTHENTICATE round, with autobahn's own WAMP-CRA and cryptosign conventions.

Theory of operation
-------------------
An :class:`Authenticator` serves one realm (:class:`~wsserver.core.policy.RealmPolicy`). It offers
the methods the realm has credentials for: ``anonymous`` when the realm names an anonymous role,
``ticket`` / ``wampcra`` / ``cryptosign`` when some principal has that credential. Of the
methods a HELLO lists (``authmethods``; none listed means ``anonymous``), the first one offered is
used::

    HELLO --anonymous--------------------------------------------------> Identity (WELCOME)
    HELLO --ticket / wampcra / cryptosign--> Pending (CHALLENGE) --AUTHENTICATE--> Identity
       '----- nothing offered, or a malformed request ----------> Refusal (ABORT)   '--> Refusal

==========  ===================================  ==========================================
method      CHALLENGE extra                      AUTHENTICATE signature is checked by
==========  ===================================  ==========================================
ticket      (none)                               PBKDF2 of the ticket against the stored
                                                 salted hash (:func:`hash_ticket`)
wampcra     ``challenge``: a JSON string with a  autobahn's ``compute_wcs(secret, challenge)``
            nonce; ``salt``, ``iterations``,     (HMAC-SHA256); with a salt, the secret is the
            ``keylen`` for a salted secret       key ``derive_key`` made from the password
cryptosign  ``challenge``: 32 random bytes, hex  Ed25519: the signature (64 bytes) followed by
            (``authextra.pubkey`` in HELLO       the challenge, hex, verified with the public
            names the key)                       key
==========  ===================================  ==========================================

Failing must not tell an unknown authid from a wrong secret. So an unknown principal still gets
a challenge, shaped like a real one (a salted WAMP-CRA challenge carries a salt made from the
authid and a server secret, so it is the same on every attempt), and its AUTHENTICATE is checked
against a decoy credential at the same cost (the cost of the realm's first principal with that
credential: give a realm's ticket hashes the same iterations); both end in the same :class:`Refusal`. The router
sends every refusal after the same constant delay (an action for the transport, see
:mod:`~wsserver.core.actions`), which also slows down guessing.

Checking an AUTHENTICATE is split in two: :meth:`Authenticator.check` returns the costly part as a
pure function (PBKDF2, HMAC, Ed25519), which the router hands to its transport to run off the
reactor thread, and :meth:`Authenticator.outcome` turns its answer into an identity or the refusal.

Nonces and challenges come from the ``random_bytes`` the router is given, timestamps from its
clock: this module draws no randomness and reads no clock of its own.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from autobahn.wamp import message as wamp
from autobahn.wamp.auth import compute_wcs, derive_key
from autobahn.wamp.exception import ApplicationError
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from wsserver.core import meta
from wsserver.core.policy import ANONYMOUS, AUTHMETHODS, CRYPTOSIGN, TICKET, WAMPCRA, Principal, RealmPolicy

AUTHPROVIDER = "static"
#: The scheme of ticket hashes: ``pbkdf2-sha256$ITERATIONS$SALT$KEY`` (KEY: autobahn's derive_key).
TICKET_SCHEME = "pbkdf2-sha256"
#: Iterations for new ticket hashes: about 17 ms of CPU per login here (off the reactor thread).
TICKET_ITERATIONS = 100_000
TICKET_KEYLEN = 32
#: The one refusal for a failed login, whatever failed.
FAILED = "authentication failed"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a session is. ``authid`` None: anonymous (the router names it after the session id)."""

    authid: str | None
    authrole: str
    authmethod: str
    authprovider: str = AUTHPROVIDER


@dataclass(frozen=True, slots=True)
class Refusal:
    """ABORT with ``error`` and ``message``."""

    error: str
    message: str


@dataclass(frozen=True, slots=True)
class Pending:
    """A CHALLENGE sent (``method``, ``extra``) and what its AUTHENTICATE must prove."""

    realm: str
    method: str
    extra: dict[str, Any]
    #: The authid asked for (cryptosign: the principal's, or "" if unknown).
    authid: str
    #: None: no such principal, or none with this credential (AUTHENTICATE fails).
    principal: Principal | None
    #: What the client signs: the WAMP-CRA challenge string or the cryptosign challenge bytes.
    challenge: bytes = b""
    #: cryptosign: the key the signature is checked with (the decoy for an unknown one).
    key: VerifyKey | None = None


Outcome = Identity | Pending | Refusal


def hash_ticket(ticket: str, salt: str, iterations: int = TICKET_ITERATIONS) -> str:
    """The stored form of a ticket (``salt``: a random string without ``$``, e.g. 32 hex digits)."""
    if "$" in salt:
        raise ValueError("a salt must not contain '$'")
    key = derive_key(ticket, salt, iterations, TICKET_KEYLEN).decode("ascii")
    return f"{TICKET_SCHEME}${iterations}${salt}${key}"


def parse_ticket_hash(stored: str) -> tuple[int, str, str]:
    """(iterations, salt, key) of a ticket hash; ``ValueError`` saying what is wrong with it."""
    parts = stored.split("$")
    if len(parts) != 4 or parts[0] != TICKET_SCHEME:
        raise ValueError(f"not a ticket hash ({TICKET_SCHEME}$ITERATIONS$SALT$KEY, see `python -m wsserver.passwd`)")
    iterations = int(parts[1]) if parts[1].isdigit() else 0
    if iterations < 1:
        raise ValueError(f"ticket hash iterations must be a positive number, not {parts[1]!r}")
    return iterations, parts[2], parts[3]


def check_ticket(stored: str, ticket: str) -> bool:
    """Whether ``ticket`` is the one ``stored`` (a :func:`hash_ticket` result) was made from."""
    iterations, salt, key = parse_ticket_hash(stored)
    derived = derive_key(ticket.encode("utf-8", "surrogatepass"), salt, iterations, TICKET_KEYLEN)
    return hmac.compare_digest(derived, key.encode("ascii", "replace"))


def _has(principal: Principal, method: str) -> bool:
    if method == TICKET:
        return principal.ticket is not None
    if method == WAMPCRA:
        return principal.wampcra is not None
    return method == CRYPTOSIGN and bool(principal.cryptosign)


class Authenticator:
    """
    Authentication for one realm. ``random_bytes(n)`` returns ``n`` random bytes (needed when
    the realm has principals); ``clock`` the time in seconds since the epoch.
    """

    def __init__(
        self, policy: RealmPolicy, random_bytes: Callable[[int], bytes] | None, clock: Callable[[], float]
    ) -> None:
        self.policy = policy
        self._clock = clock
        principals = list(policy.principals.values())
        self.offered = tuple(
            method for method in AUTHMETHODS
            if (policy.anonymous_role is not None if method == ANONYMOUS else any(_has(p, method) for p in principals))
        )
        self._by_pubkey = {key: p for p in principals for key in sorted(p.cryptosign)}
        if not principals:
            return
        if random_bytes is None:
            raise ValueError(f"realm {policy.name!r} has principals: the router needs random_bytes for challenges")
        self._random_bytes = random_bytes
        # The decoys: what an unknown principal is checked against, at the cost of a real one.
        self._server_secret = random_bytes(32)
        tickets = [parse_ticket_hash(p.ticket) for p in principals if p.ticket is not None]
        iterations = tickets[0][0] if tickets else TICKET_ITERATIONS
        self._decoy_ticket = hash_ticket(random_bytes(16).hex(), random_bytes(16).hex(), iterations)
        salted = [p.wampcra for p in principals if p.wampcra is not None and p.wampcra.salt is not None]
        self._decoy_salting = (salted[0].iterations, salted[0].keylen) if salted else None
        self._decoy_key = VerifyKey(hashlib.sha256(self._server_secret).digest())

    # -- HELLO ------------------------------------------------------------------------------------

    def hello(self, hello: wamp.Hello) -> Outcome:
        """Who the HELLO's sender is (anonymous), or the challenge to send, or why not."""
        asked = hello.authmethods or [ANONYMOUS]
        method = next((m for m in asked if m in self.offered), None)
        if method is None:
            offered = ", ".join(self.offered) or "none"
            return Refusal(
                ApplicationError.NO_AUTH_METHOD,
                f"no authentication method of {', '.join(asked)} on this realm (offered: {offered})",
            )
        if method == ANONYMOUS:
            assert self.policy.anonymous_role is not None
            return Identity(None, self.policy.anonymous_role, ANONYMOUS)
        if method == CRYPTOSIGN:
            return self._cryptosign_challenge(hello)
        authid = hello.authid
        if not authid:
            return Refusal(ApplicationError.NOT_AUTHORIZED, f"{method} authentication needs an authid")
        principal = self.policy.principals.get(authid)
        if principal is not None and not _has(principal, method):
            principal = None
        if method == TICKET:
            return Pending(self.policy.name, TICKET, {}, authid, principal)
        return self._wampcra_challenge(authid, principal)

    def _wampcra_challenge(self, authid: str, principal: Principal | None) -> Pending:
        challenge = json.dumps(
            {
                "authid": authid,
                "authmethod": WAMPCRA,
                "authprovider": AUTHPROVIDER,
                "nonce": self._random_bytes(16).hex(),
                "timestamp": meta.iso8601(self._clock()),
            },
            separators=(",", ":"),
        )
        extra: dict[str, Any] = {"challenge": challenge}
        secret = principal.wampcra if principal is not None else None
        if secret is not None and secret.salt is not None:
            extra.update(salt=secret.salt, iterations=secret.iterations, keylen=secret.keylen)
        elif secret is None and self._decoy_salting is not None:
            # Shaped like a real salted challenge, and the same on every attempt for this authid.
            salt = hmac.new(self._server_secret, authid.encode("utf-8", "surrogatepass"), "sha256").hexdigest()[:32]
            iterations, keylen = self._decoy_salting
            extra.update(salt=salt, iterations=iterations, keylen=keylen)
        return Pending(self.policy.name, WAMPCRA, extra, authid, principal, challenge.encode("utf-8"))

    def _cryptosign_challenge(self, hello: wamp.Hello) -> Outcome:
        authextra = hello.authextra or {}
        pubkey = authextra.get("pubkey")
        if not isinstance(pubkey, str) or len(pubkey) != 64 or not _is_hex(pubkey):
            return Refusal(ApplicationError.NOT_AUTHORIZED, "cryptosign needs authextra.pubkey: 64 hex digits")
        if authextra.get("channel_binding") is not None:
            return Refusal(ApplicationError.NOT_AUTHORIZED, "cryptosign channel binding is not supported")
        principal = self._by_pubkey.get(pubkey.lower())
        if principal is not None and hello.authid and hello.authid != principal.authid:
            principal = None
        challenge = self._random_bytes(32)
        key = VerifyKey(bytes.fromhex(pubkey)) if principal is not None else self._decoy_key
        extra = {"challenge": challenge.hex(), "channel_binding": None}
        authid = principal.authid if principal is not None else ""
        return Pending(self.policy.name, CRYPTOSIGN, extra, authid, principal, challenge, key)

    # -- AUTHENTICATE -----------------------------------------------------------------------------

    def check(self, pending: Pending, answer: wamp.Authenticate) -> Callable[[], bool]:
        """
        The check of ``answer`` to ``pending``: a function of no arguments that says whether it
        proves the identity, at the cost of the credential (a ticket: its PBKDF2 iterations). It
        reads nothing but what it holds and never raises, so it may run on any thread: give its
        result to :meth:`outcome`.
        """
        principal = pending.principal
        signature: str = answer.signature
        if pending.method == TICKET:
            stored = principal.ticket if principal and principal.ticket else self._decoy_ticket
            return partial(_proves, check_ticket, stored, signature)
        if pending.method == WAMPCRA:
            secret = principal.wampcra.secret if principal and principal.wampcra else self._server_secret.hex()
            return partial(_proves, _wampcra_proves, secret, pending.challenge, signature)
        assert pending.key is not None
        return partial(_proves, _cryptosign_proves, pending.key, pending.challenge, signature)

    def outcome(self, pending: Pending, proven: bool) -> Identity | Refusal:
        """The identity ``pending`` asked for if its :meth:`check` said ``proven``, or the one refusal for every failure."""
        principal = pending.principal
        if not proven or principal is None:
            return Refusal(ApplicationError.NOT_AUTHORIZED, FAILED)
        return Identity(principal.authid, principal.role, pending.method)

    def authenticate(self, pending: Pending, answer: wamp.Authenticate) -> Identity | Refusal:
        """:meth:`check` and :meth:`outcome` at once, on the caller's thread."""
        return self.outcome(pending, self.check(pending, answer)())


def _proves(check: Callable[..., bool], *arguments: Any) -> bool:
    """``check(*arguments)``; False if it raises (whatever a client sent, a failed login, not an error)."""
    try:
        return check(*arguments)
    except Exception:
        return False


def _wampcra_proves(secret: str, challenge: bytes, signature: str) -> bool:
    """A WAMP-CRA signature: HMAC-SHA256 of the challenge with the secret, base64."""
    expected = compute_wcs(secret.encode("utf-8"), challenge)
    return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))


def _cryptosign_proves(key: VerifyKey, challenge: bytes, signature: str) -> bool:
    """A cryptosign signature: 64 bytes of signature, then the challenge, in hex."""
    if len(signature) != 192 or not _is_hex(signature):
        return False
    signed = bytes.fromhex(signature)
    try:
        key.verify(challenge, signed[:64])
    except BadSignatureError:
        return False
    return hmac.compare_digest(signed[64:], challenge)


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
