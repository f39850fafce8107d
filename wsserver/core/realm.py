"""
A realm: a routing namespace with its joined sessions, its broker and its dealer.

Theory of operation
-------------------
Sessions of one realm see each other's publications and procedures and nothing of other realms.
Joining and leaving are the realm's business because both touch everything in it:

- :meth:`Realm.join` adds a session (after WELCOME) and publishes ``wamp.session.on_join``;
- :meth:`Realm.leave` drops it from every subscription, registration and call in flight, then
  publishes what that changed (subscription meta events, ``wamp.session.on_leave``) and answers
  the calls it can no longer serve. The session is gone before any of that is published, so it
  is never told about its own leaving.

The realm's procedures include the meta API (:mod:`wsserver.core.procedures`), registered in its
dealer with the router as the callee.
"""

from __future__ import annotations

from typing import Generic

from autobahn.wamp import message as wamp

from wsserver.core import meta, procedures
from wsserver.core.actions import Action, Send
from wsserver.core.broker import Broker
from wsserver.core.dealer import Dealer
from wsserver.core.session import PeerT, Session, State
from wsserver.core.subscriptions import SubscriptionTable


class Realm(Generic[PeerT]):
    """A routing namespace: its joined sessions by id, its broker and its dealer."""

    __slots__ = ("name", "sessions", "broker", "dealer")

    def __init__(self, name: str, broker: Broker[PeerT], dealer: Dealer[PeerT]) -> None:
        self.name = name
        self.sessions: dict[int, Session[PeerT]] = {}
        self.broker = broker
        self.dealer = dealer
        for procedure, provider in procedures.meta_api(self).items():
            self.dealer.provide(procedure, provider)

    @property
    def subscriptions(self) -> SubscriptionTable[PeerT]:
        return self.broker.subscriptions

    def join(self, session: Session[PeerT]) -> list[Action[PeerT]]:
        """``session`` was welcomed (its id and identity are set): add it and announce it."""
        self.sessions[session.id] = session
        return self.broker.publish_meta(meta.ON_JOIN, meta.session_details(session))

    def leave(self, session: Session[PeerT]) -> list[Action[PeerT]]:
        """``session`` ends: forget everything about it, then tell whom it concerns."""
        actions = self.broker.drop(session) + self.dealer.drop(session)
        del self.sessions[session.id]
        return actions + self.broker.publish_meta(meta.ON_LEAVE, session.id, session.authid, session.authrole)

    def goodbye(self, session: Session[PeerT], reason: str, message: str | None = None) -> list[Action[PeerT]]:
        """Start the router's side of the GOODBYE handshake with an OPEN ``session``."""
        if session.state is not State.OPEN:
            return []
        session.state = State.CLOSING
        return [Send(wamp.Goodbye(reason, message), (session,))]
