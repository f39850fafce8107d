"""
Who may join a realm and what each may do there, as plain data: what ``--config`` describes
(:mod:`wsserver.config` reads the file into these) and what the router enforces.

Theory of operation
-------------------
A realm (:class:`RealmPolicy`) has named roles. A role is a list of :class:`Permission`: a URI
pattern with a match policy (exact, prefix or wildcard, the same patterns as subscriptions, see
:mod:`~wsserver.core.matching`) and the actions it allows:

==========  ==================================================================================
publish     PUBLISH to the topic
subscribe   SUBSCRIBE to the topic (or pattern), and receive its events: an event reaches a
            session only if its role may subscribe to the event's concrete topic
call        CALL the procedure (the router's ``wamp.`` meta procedures too)
register    REGISTER the procedure
disclose    have its identity disclosed to subscribers when it asks (PUBLISH ``disclose_me``), or
           to the callee (CALL ``disclose_me``)
==========  ==================================================================================

For one concrete URI, the most specific pattern that matches it decides, alone (see
:mod:`~wsserver.core.authorization`); a URI no pattern matches allows nothing. So a broad grant
can carve out a narrower denial: ``com.example.`` (prefix) allows subscribe, and
``com.example.admin.`` (prefix) allows nothing.

A session gets its role by authenticating (:mod:`~wsserver.core.authentication`): anonymously,
when the realm names a role for anonymous sessions (``anonymous_role``), or as one of the realm's
:class:`Principal` (an authid, its role, and its credentials for one or more methods).

Without a configuration, every realm is :func:`open_realm`: anonymous sessions, role
``anonymous``, allowed everything, which is what :attr:`RealmPolicy.open_to_anyone` tells.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from wsserver.core.matching import PREFIX

PUBLISH = "publish"
SUBSCRIBE = "subscribe"
CALL = "call"
REGISTER = "register"
DISCLOSE = "disclose"
ACTIONS = (PUBLISH, SUBSCRIBE, CALL, REGISTER, DISCLOSE)

ANONYMOUS = "anonymous"
TICKET = "ticket"
WAMPCRA = "wampcra"
CRYPTOSIGN = "cryptosign"
#: The authentication methods, in the order the router prefers them when a client offers several
#: (the client's own order decides first, see authentication.py).
AUTHMETHODS = (ANONYMOUS, TICKET, WAMPCRA, CRYPTOSIGN)


@dataclass(frozen=True, slots=True)
class Permission:
    """What a role may do on the URIs ``uri`` matches with ``match`` (exact, prefix, wildcard)."""

    uri: str
    match: str
    allow: frozenset[str]


#: A permission that lets a role do everything everywhere.
EVERYTHING = Permission("", PREFIX, frozenset(ACTIONS))


@dataclass(frozen=True, slots=True)
class WampCraSecret:
    """
    A WAMP-CRA secret. Without ``salt``, ``secret`` is the shared secret itself; with it,
    ``secret`` is the key autobahn's ``derive_key(password, salt, iterations, keylen)`` derives
    from the password, which is what a client signs with (the password itself is not stored).
    """

    secret: str
    salt: str | None = None
    iterations: int = 1000
    keylen: int = 32


@dataclass(frozen=True, slots=True)
class Principal:
    """
    A user of a realm: ``authid``, its ``role``, and its credentials, one per method it may use:
    ``ticket`` a salted hash (``authentication.hash_ticket``), ``wampcra`` a secret,
    ``cryptosign`` Ed25519 public keys (64 hex digits each).
    """

    authid: str
    role: str
    ticket: str | None = None
    wampcra: WampCraSecret | None = None
    cryptosign: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RealmPolicy:
    """
    One realm: its ``roles`` (name -> permissions), the role anonymous sessions get (None: no
    anonymous sessions) and its ``principals`` by authid.
    """

    name: str
    roles: Mapping[str, tuple[Permission, ...]]
    anonymous_role: str | None = None
    principals: Mapping[str, Principal] = field(default_factory=dict)

    @property
    def open_to_anyone(self) -> bool:
        """Whether anyone may join without credentials and do everything."""
        return self.anonymous_role is not None and self.roles.get(self.anonymous_role) == (EVERYTHING,)

    @property
    def unrestricted(self) -> bool:
        """Whether every role may do everything (so nothing needs checking)."""
        return all(permissions == (EVERYTHING,) for permissions in self.roles.values())


def open_realm(name: str) -> RealmPolicy:
    """A realm without configuration: anonymous sessions in role ``anonymous`` may do everything."""
    return RealmPolicy(name, {ANONYMOUS: (EVERYTHING,)}, anonymous_role=ANONYMOUS)
