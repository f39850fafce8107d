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

Who may join and what each may do is the realm's too: its
:class:`~wsserver.core.authentication.Authenticator` turns a HELLO into an identity, and
:meth:`Realm.forbids` asks its :class:`~wsserver.core.authorization.Authorizer` (None when every
role may do everything: nothing is checked then) before a request reaches the broker or dealer.
One thing is refused even where nothing else is: in a realm open to anyone (its anonymous role may
do everything, see :attr:`~wsserver.core.policy.RealmPolicy.open_to_anyone`), the anonymous
sessions may not call the procedures that act on other sessions (``wamp.session.kill``): any
visitor could end everyone's session. A role given permission for them in --config may.

The admin API (:mod:`~wsserver.core.admin`: the stats topic, ``wsserver.admin.*``) is the admin
role's alone, whatever the permissions say; the admin role needs permissions for it as well.

In a cluster (see :mod:`wsserver.core.cluster`), the realm tells ``elsewhere`` of each join and
leave, and keeps the other nodes' sessions (their details, by node) in ``elsewhere_sessions``:
the meta API counts and lists them with its own, and their joins and leaves are announced here
as this node's are (:meth:`Realm.joined_elsewhere`, :meth:`Realm.left_elsewhere`).

``wsserver.history.since`` needs no permission to call: it checks SUBSCRIBE on the topic it
names instead (see procedures.py). The realm's procedures include the meta API (:mod:`wsserver.core.procedures`), registered in its
dealer with the router as the callee.
"""

from __future__ import annotations

from typing import Any, Generic

from autobahn.wamp import message as wamp
from autobahn.wamp.exception import ApplicationError

from wsserver.core import admin, meta, procedures
from wsserver.core.actions import Action, Send
from wsserver.core.authentication import Authenticator
from wsserver.core.authorization import Authorizer
from wsserver.core.broker import Audience, Broker
from wsserver.core.cluster import Elsewhere
from wsserver.core.dealer import Dealer
from wsserver.core.policy import CALL
from wsserver.core.session import PeerT, Session, State
from wsserver.core.subscriptions import SubscriptionTable


class Realm(Generic[PeerT]):
    """
    A routing namespace: its joined sessions by id, its broker and its dealer, who may join
    (``authenticator``) and what each role may do (``authorizer``; None: everything).
    """

    __slots__ = (
        "name", "sessions", "broker", "dealer", "authenticator", "authorizer", "admin_role", "_open_role", "_admins",
        "elsewhere_sessions", "_elsewhere",
    )

    def __init__(
        self,
        name: str,
        broker: Broker[PeerT],
        dealer: Dealer[PeerT],
        authenticator: Authenticator,
        authorizer: Authorizer | None = None,
        *,
        admin_role: str | None = None,
        elsewhere: Elsewhere | None = None,
    ) -> None:
        self.name = name
        #: The role that may use the admin API (see admin.py; None: no role may).
        self.admin_role = admin_role
        self._admins = None if admin_role is None else Audience(eligible_authrole=frozenset({admin_role}), listed=True)
        self.sessions: dict[int, Session[PeerT]] = {}
        #: The sessions of other nodes: id -> (node, details as ``wamp.session.get`` gives them).
        self.elsewhere_sessions: dict[int, tuple[str, dict[str, Any]]] = {}
        self._elsewhere = elsewhere
        self.broker = broker
        self.dealer = dealer
        self.authenticator = authenticator
        self.authorizer = authorizer
        policy = authenticator.policy
        #: The role that may do everything without credentials (None: the realm is not open to anyone).
        self._open_role = policy.anonymous_role if policy.open_to_anyone else None
        for procedure, provider in procedures.meta_api(self).items():
            self.dealer.provide(procedure, provider)

    @property
    def subscriptions(self) -> SubscriptionTable[PeerT]:
        return self.broker.subscriptions

    def forbids(
        self, session: Session[PeerT], action: str, uri: str, error: str = ApplicationError.NOT_AUTHORIZED
    ) -> tuple[str, str] | None:
        """(``error``, why) if ``session``'s role may not ``action`` ``uri``; None if it may."""
        if action == CALL and uri in procedures.ON_TOPIC:
            return None  # permissioned by the topic it names
        admin_only = admin.refusal(session.authrole, self.admin_role, action, uri)
        if admin_only is not None:
            return error, admin_only
        if self.authorizer is not None and not self.authorizer.allows(session.authrole, action, uri):
            return error, f"role {session.authrole!r} may not {action} {uri!r}"
        open_role = self._open_role
        if action == CALL and open_role is not None and session.authrole == open_role and uri in procedures.ON_OTHER_SESSIONS:
            return error, (
                f"{uri} acts on other sessions: the anonymous sessions of realm {self.name!r}, open to anyone, "
                "may not call it; give a role permission to call it with --config"
            )
        return None

    def is_admin(self, session: Session[PeerT]) -> bool:
        """Whether ``session`` has the admin role."""
        return self.admin_role is not None and session.authrole == self.admin_role

    def publish_to_admins(self, topic: str, kwargs: dict[str, Any]) -> list[Action[PeerT]]:
        """Publish ``kwargs`` on ``topic`` to this realm's admin sessions on this node (none without an admin role)."""
        if self._admins is None:
            return []
        return self.broker.publish_local(topic, None, kwargs, self._admins)

    def join(self, session: Session[PeerT]) -> list[Action[PeerT]]:
        """``session`` was welcomed (its id and identity are set): add it and announce it."""
        self.sessions[session.id] = session
        details = meta.session_details(session)
        if self._elsewhere is not None:
            self._elsewhere.joined(self.name, details)
        return self.broker.publish_meta(meta.ON_JOIN, details)

    def leave(self, session: Session[PeerT]) -> list[Action[PeerT]]:
        """``session`` ends: forget everything about it, then tell whom it concerns."""
        actions = self.broker.drop(session) + self.dealer.drop(session)
        del self.sessions[session.id]
        if self._elsewhere is not None:
            self._elsewhere.left(self.name, session.id)
        return actions + self.broker.publish_meta(meta.ON_LEAVE, session.id, session.authid, session.authrole)

    def joined_elsewhere(self, node: str, details: dict[str, Any]) -> list[Action[PeerT]]:
        """
        A session joined this realm on ``node``: keep it (``details`` itself: do not change it
        afterwards), and announce it here.
        """
        session_id = details.get("session")
        if type(session_id) is not int or session_id in self.sessions or session_id in self.elsewhere_sessions:
            return []  # malformed, or known already (its announcement and a snapshot both told)
        # Kept as given, not copied: a copy per session of every other node adds up (60,000: 12 MiB).
        self.elsewhere_sessions[session_id] = (node, details)
        return self.broker.publish_meta(meta.ON_JOIN, details)

    def left_elsewhere(self, node: str, session_id: int) -> list[Action[PeerT]]:
        """The session ``session_id`` of ``node`` left: forget it, and announce it here."""
        known = self.elsewhere_sessions.get(session_id)
        if known is None or known[0] != node:
            return []
        del self.elsewhere_sessions[session_id]
        details = known[1]
        return self.broker.publish_meta(meta.ON_LEAVE, session_id, details.get("authid"), details.get("authrole"))

    def node_lost(self, node: str) -> list[Action[PeerT]]:
        """``node`` is gone: each of its sessions leaves, its registrations and calls with it."""
        actions = self.dealer.node_lost(node)
        for session_id in [i for i, (owner, _) in self.elsewhere_sessions.items() if owner == node]:
            actions += self.left_elsewhere(node, session_id)
        return actions

    def goodbye(self, session: Session[PeerT], reason: str, message: str | None = None) -> list[Action[PeerT]]:
        """Start the router's side of the GOODBYE handshake with an OPEN ``session``."""
        if session.state is not State.OPEN:
            return []
        session.state = State.CLOSING
        return [Send(wamp.Goodbye(reason, message), (session,))]
