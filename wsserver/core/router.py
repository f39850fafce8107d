"""
The router: realms and the life of sessions, as a function from incoming messages to actions.

Theory of operation
-------------------
A transport calls :meth:`Router.attach` when it opens and keeps the returned
:class:`~wsserver.core.session.Session`. For every decoded message it calls
:meth:`Router.receive` and carries out the returned actions (:mod:`wsserver.core.actions`), in
order. When the transport is gone it calls :meth:`Router.detach`, and carries out what that
returns too (others learn that the session left). A message the transport cannot decode goes to
:meth:`Router.violation`. Python code inside the server publishes with :meth:`Router.publish`.

What each message does in each state is the table in :mod:`wsserver.core.session`; the router
runs the session's life (HELLO, CHALLENGE / AUTHENTICATE, GOODBYE, ABORT) itself and hands requests
to the session's realm: its broker (:mod:`~wsserver.core.broker`) or its dealer
(:mod:`~wsserver.core.dealer`). Each realm follows its :class:`~wsserver.core.policy.RealmPolicy`
(realms given by name are open to anyone). Before a request reaches them, it must pass::

    PUBLISH    its topic's length (limits.py), the session's rate, its role's permission to
               publish the topic, and, with disclose_me, to disclose itself on it; its payload
               must be one every wire format carries (values.py)
    SUBSCRIBE  the pattern's length, its role's permission to subscribe to the pattern, and its
               number of subscriptions
    CALL       the procedure's length, its role's permission to call the procedure, and, with
               disclose_me, to disclose itself on it; its number of calls in flight, and its payload
    CANCEL     nothing: only the caller's own calls in flight are found (see dealer.py)
    REGISTER   the procedure's length, its role's permission to register the procedure, and its
               number of registrations
    YIELD, ERROR (a callee's answer): its error URI's length and its payload; an answer that
               fails gets its caller ERROR ``wamp.error.invalid_argument`` instead. A YIELD
               with ``progress`` for a call that did not ask for it is a protocol violation

The checks that cost nothing come first, and a URI's length before anything looks it up or keeps
it. A refused request gets an ERROR (a PUBLISH only with ``acknowledge``) and the session stays open.
A refused login gets ABORT after ``refusal_delay`` seconds, the same for every failure.

An AUTHENTICATE is checked off the reactor thread: the router returns a
:class:`~wsserver.core.actions.Compute` with the authenticator's check (a pure function) and
continues in :meth:`Router._verified` when the transport hands the answer back; meanwhile the
session is VERIFYING. Before that, the failed-login limits (:mod:`~wsserver.core.logins`, per
client address and per authid) must allow a check; when they do not, the login is refused
unchecked, exactly as a wrong secret is.

The router never calls a transport, never reads a clock and draws no random numbers: ids come
from the ``random_id`` it is given (global scope: sessions, publications) and from a counter
(router scope: subscriptions, registrations, invocations), the time from ``clock``, challenge
bytes and nonces from ``random_bytes``.

WELCOME announces exactly the features implemented (:func:`roles`).

In a cluster, the router is given ``elsewhere`` (:mod:`wsserver.core.cluster`) and its session
ids come from ``session_id`` (ids unique across the cluster, drawn by the adapter); what the other
nodes say enters through the ``*_elsewhere`` methods and :meth:`Router.node_lost`.
"""

from __future__ import annotations

import base64
import functools
import itertools
from collections.abc import Callable, Iterable
from typing import Any, Generic

from autobahn.wamp import message as wamp
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.message import check_or_raise_uri
from autobahn.wamp.role import RoleBrokerFeatures, RoleDealerFeatures, RoleFeatures

from wsserver.core.admin import ADMIN_ROLE
from wsserver.core.actions import Action, Close, CloseReason, Compute, Delay, Send, error_reply
from wsserver.core.authentication import FAILED, Authenticator, Identity, Outcome, Pending, Refusal
from wsserver.core.authorization import Authorizer
from wsserver.core.broker import Broker, Publication
from wsserver.core.cluster import Elsewhere, RemoteAnswer, RemoteCall
from wsserver.core.dealer import Dealer
from wsserver.core.decoding import CallRequest, Decoded, InvalidRequest, PublishRequest
from wsserver.core.eventstore import Position, StoreBudget, StoreLimits
from wsserver.core.shared import SharedStore
from wsserver.core.history import HistorySettings
from wsserver.core.limits import (
    PUBLISH_RATE_EXCEEDED,
    TOO_MANY_CALLS_IN_FLIGHT,
    TOO_MANY_REGISTRATIONS,
    TOO_MANY_SUBSCRIPTIONS,
    URI_TOO_LONG,
    SessionLimits,
)
from wsserver.core.logins import FailedLogins, LoginLimits
from wsserver.core.policy import (
    ANONYMOUS,
    AUTHMETHODS,
    CALL,
    DISCLOSE,
    PUBLISH,
    REGISTER,
    SUBSCRIBE,
    RealmPolicy,
    open_realm,
)
from wsserver.core.realm import Realm
from wsserver.core.session import TRANSITIONS, PeerT, Session, State, TransportInfo
from wsserver.core.values import has_utf8, unrepresentable
from wsserver.core.values import refusal as payload_refusal

__all__ = ["Action", "Close", "CloseReason", "Compute", "Delay", "Router", "Send", "roles"]

#: The broker features WELCOME announces; ``event_history`` is added when history is kept.
BROKER_FEATURES: dict[str, bool] = {
    "pattern_based_subscription": True,
    "subscriber_blackwhite_listing": True,
    "publisher_exclusion": True,
    "publisher_identification": True,
    "event_retention": True,
    "subscription_meta_api": True,
    "session_meta_api": True,
}
#: The dealer features WELCOME announces (the session meta API needs both roles, says the spec).
DEALER_FEATURES: dict[str, bool] = {
    "progressive_call_results": True,
    "call_canceling": True,
    "call_timeout": True,
    "caller_identification": True,
    "shared_registration": True,
    "pattern_based_registration": True,
    "registration_meta_api": True,
    "session_meta_api": True,
}

#: Not among autobahn's ApplicationError constants.
ERROR_PROTOCOL_VIOLATION = "wamp.error.protocol_violation"
#: The spec's ERROR for a publisher that may not disclose itself (publisher identification).
OPTION_DISALLOWED_DISCLOSE_ME = "wamp.error.option_disallowed.disclose_me"
CLOSE_GOODBYE_AND_OUT = "wamp.close.goodbye_and_out"
CLOSE_SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"
#: How ``Router.refused_logins`` counts a login that asked for no method the router knows.
OTHER_METHOD = "other"
#: Seconds between a failed login and its ABORT.
REFUSAL_DELAY = 0.5


class Welcome(wamp.Welcome):
    """
    Autobahn's WELCOME, with the router's roles marshalled once (``marshalled_roles``, from
    :func:`marshal_roles`) rather than for every session: they never change, and walking the role
    objects' features was a quarter of what answering a HELLO cost.
    """

    __slots__ = ("marshalled_roles",)

    def __init__(self, *args: Any, marshalled_roles: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marshalled_roles = marshalled_roles

    def marshal(self) -> list[Any]:
        roles, self._roles = self._roles, {}
        try:
            message: list[Any] = super().marshal()
        finally:
            self._roles = roles
        message[2]["roles"] = self.marshalled_roles
        return message


def marshal_roles(roles: dict[str, RoleFeatures]) -> dict[str, Any]:
    """``roles`` as a WELCOME carries them (Autobahn's marshalling); shared, so never change the result."""
    marshalled: dict[str, Any] = wamp.Welcome(1, roles).marshal()[2]["roles"]
    return marshalled


def roles(history: bool) -> dict[str, RoleFeatures]:
    """The router's roles and features, as WELCOME announces them."""
    broker = dict(BROKER_FEATURES, event_history=True) if history else BROKER_FEATURES
    return {"broker": RoleBrokerFeatures(**broker), "dealer": RoleDealerFeatures(**DEALER_FEATURES)}


def _epochs(random_bytes: Callable[[int], bytes] | None, random_id: Callable[[], int]) -> Callable[[], str]:
    """Draws epochs: 72 random bits as 12 URL-safe characters (53, as hex, without ``random_bytes``)."""
    if random_bytes is None:
        return lambda: format(random_id(), "x")
    draw = random_bytes
    return lambda: base64.urlsafe_b64encode(draw(9)).decode("ascii")


def _epoch() -> float:
    """The clock of a router that was given none: time stands still at the epoch."""
    return 0.0


#: (state, class of a decoded message) -> the Router method that handles it: TRANSITIONS, looked up
#: once per pair rather than by name for every message.
_HANDLERS: dict[tuple[State, type], Callable[[Router[Any], Session[Any], Any], list[Action[Any]]]] = {}


class Router(Generic[PeerT]):
    """
    The WAMP router core. ``realms`` are the realms clients may join: policies, or names of
    realms open to anyone. ``random_id`` must return a uniformly random integer in [1, 2**53]
    (session and publication ids are global-scope ids); ``clock`` returns the time in seconds
    since the epoch (subscription creation times, history timestamps, retained event expiry,
    publish rates). ``retain_ttl``: seconds a retained event is kept (None: until the next one
    replaces it). ``history_size``: events kept per topic for ``wamp.subscription.get_events``
    (0: no event history). ``random_bytes(n)``: ``n`` random bytes, for challenges (needed when
    a realm has principals). ``limits``: what one session may cost. ``refusal_delay``: seconds
    between a failed login and its ABORT. ``store_limits``: what the retained events and history
    of all realms may hold together (``store_budget`` counts what they hold and what was evicted).
    ``login_limits``: failed logins allowed per client address and per authid (``failed_logins``
    counts those refused unchecked; ``refused_logins`` counts every refused login by the
    authentication method it asked for, ``other`` when it asked for none we know). ``history``: which topics keep history and how much one
    resume returns (it wins over ``history_size``); each topic's epoch is drawn from
    ``random_bytes`` (or, without it, ``random_id``). ``forward(realm, publication, retain)``:
    hands each publication from a client or the server to the other nodes after local routing
    (a backplane, see :mod:`wsserver.backplane`); those nodes call :meth:`route_from_elsewhere`.
    ``admin_role``: the role of every realm that may use the admin API (see
    :mod:`~wsserver.core.admin`; None: no role may).
    ``elsewhere``: the other nodes of a cluster, told of this node's sessions, registrations and
    calls across nodes (see :mod:`wsserver.core.cluster`). ``session_id``: draws session ids
    (default: ``random_id``), e.g. from a range this node holds in the cluster.
    ``shared_store``: where retained events, history and positions live when several nodes
    share them (see :mod:`wsserver.core.shared`); it hands stored publications to
    :meth:`route_stored`. None: each realm keeps them in memory.
    """

    def __init__(
        self,
        realms: Iterable[str | RealmPolicy],
        random_id: Callable[[], int],
        clock: Callable[[], float] = _epoch,
        retain_ttl: float | None = None,
        history_size: int = 0,
        random_bytes: Callable[[int], bytes] | None = None,
        limits: SessionLimits = SessionLimits(),
        refusal_delay: float = REFUSAL_DELAY,
        store_limits: StoreLimits = StoreLimits(),
        login_limits: LoginLimits = LoginLimits(),
        history: HistorySettings | None = None,
        *,
        forward: Callable[[str, Publication, bool], None] | None = None,
        admin_role: str | None = ADMIN_ROLE,
        elsewhere: Elsewhere | None = None,
        session_id: Callable[[], int] | None = None,
        shared_store: SharedStore | None = None,
    ) -> None:
        self._random_id = random_id
        self._session_id = session_id
        self._clock = clock
        self.limits = limits
        self.refusal_delay = refusal_delay
        # Router-scope ids: a counter is enough and never collides.
        counter = itertools.count(1)
        next_id = counter.__next__
        self.realms: dict[str, Realm[PeerT]] = {}
        self.store_budget = StoreBudget(store_limits)
        self.failed_logins = FailedLogins(login_limits)
        self.refused_logins: dict[str, int] = dict.fromkeys((*AUTHMETHODS, OTHER_METHOD), 0)
        settings = history if history is not None else HistorySettings(size=history_size)
        new_epoch = _epochs(random_bytes, random_id)
        for given in realms:
            policy = open_realm(given) if isinstance(given, str) else given
            authorizer = None if policy.unrestricted else Authorizer(policy.roles)
            broker: Broker[PeerT] = Broker(
                next_id, random_id, clock, retain_ttl, authorizer=authorizer, store_budget=self.store_budget,
                history=settings, new_epoch=new_epoch,
                forward=None if forward is None else functools.partial(forward, policy.name),
                shared=shared_store, realm=policy.name,
            )
            authenticator = Authenticator(policy, random_bytes, clock)
            dealer: Dealer[PeerT] = Dealer(
                next_id, realm=policy.name, elsewhere=elsewhere, clock=clock, random_id=random_id,
                publish_meta=broker.publish_meta,
            )
            self.realms[policy.name] = Realm(
                policy.name, broker, dealer, authenticator, authorizer, admin_role=admin_role, elsewhere=elsewhere
            )
        self._roles = roles(history=settings.enabled)
        self._marshalled_roles = marshal_roles(self._roles)

    # -- what a transport calls ------------------------------------------------------------------

    def attach(self, peer: PeerT, address: str | None = None, transport: TransportInfo | None = None) -> Session[PeerT]:
        """
        A transport opened, for a client at ``address`` (None: unknown), described by
        ``transport`` (for ``wamp.session.get`` and the admin page): return the session the
        transport must pass to every later call.
        """
        return Session(peer, address, transport)

    def receive(self, session: Session[PeerT], message: Decoded) -> list[Action[PeerT]]:
        """Handle one decoded message from ``session``; return the actions to carry out."""
        key = (session.state, type(message))
        handler = _HANDLERS.get(key)
        if handler is None:
            kind = type(message).__name__ if isinstance(message, wamp.Message) else message.kind
            handling = TRANSITIONS.get((session.state, kind))
            if handling is None:
                name = kind.upper()
                return self.violation(session, f"{name} is not allowed in state {session.state.value}")
            handler = getattr(Router, handling.value)
            if not isinstance(message, InvalidRequest):  # its kind is its own, not its class's
                _HANDLERS[key] = handler
        return handler(self, session, message)

    def violation(self, session: Session[PeerT], detail: str) -> list[Action[PeerT]]:
        """``session`` sent something invalid: ABORT it and close its transport."""
        if session.state is State.CLOSED:
            return []
        left = self._leave(session, State.CLOSED)
        abort = wamp.Abort(ERROR_PROTOCOL_VIOLATION, message=detail)
        return [Send(abort, (session,)), Close(session, CloseReason.PROTOCOL_VIOLATION, detail), *left]

    def detach(self, session: Session[PeerT]) -> list[Action[PeerT]]:
        """
        The transport of ``session`` is gone (cleanly or not): forget everything about it. The
        actions returned tell other sessions (meta events, callers of its procedures).
        """
        return self._leave(session, State.CLOSED)

    def goodbye(
        self, session: Session[PeerT], reason: str = CLOSE_SYSTEM_SHUTDOWN, message: str | None = None
    ) -> list[Action[PeerT]]:
        """Start the router's side of the GOODBYE handshake with ``session``."""
        if session.state in (State.ESTABLISHING, State.AUTHENTICATING, State.VERIFYING):
            return [Close(session, CloseReason.GOING_AWAY, reason)]
        if session.state is not State.OPEN:
            return []
        return self._realm_of(session).goodbye(session, reason, message)

    # -- what Python code inside the server calls ---------------------------------------------------

    def publish(
        self,
        realm: str,
        topic: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        retain: bool = False,
    ) -> list[Action[PeerT]]:
        """
        Publish from inside the server (no publisher session); ``retain`` keeps it as the topic's
        retained event. Raises ``KeyError`` for an unknown realm, autobahn's ``InvalidUriError``
        for an invalid topic, and ``ValueError`` for a payload that not every wire format can
        carry (see :mod:`wsserver.core.values`).
        """
        target = self.realms.get(realm)
        if target is None:
            raise KeyError(f"no such realm: {realm!r}")
        check_or_raise_uri(topic, "topic")
        reason = unrepresentable(args, kwargs)
        if reason is not None:
            raise ValueError(reason)
        return target.broker.publish(None, wamp.Publish(0, topic, args, kwargs, retain=retain or None))

    def publish_to_admins(self, topic: str, kwargs: dict[str, Any]) -> list[Action[PeerT]]:
        """
        Publish ``kwargs`` on ``topic`` in every realm, to the sessions of the admin role only and
        on this node only (see :mod:`wsserver.core.admin`): the server's own figures.
        """
        actions: list[Action[PeerT]] = []
        for realm in self.realms.values():
            actions += realm.publish_to_admins(topic, kwargs)
        return actions

    def route_from_elsewhere(self, realm: str, publication: Publication, *, retain: bool = False) -> list[Action[PeerT]]:
        """
        Route ``publication``, published in ``realm`` on another node, to this node's subscribers
        exactly as the origin routed it to its own (its id, disclosed publisher and audience);
        ``retain``: keep it as its topic's retained event. A realm this node does not serve
        routes nothing.
        """
        target = self.realms.get(realm)
        if target is None:
            return []
        return target.broker.route_from_elsewhere(publication, retain)

    # -- what the other nodes of a cluster say (see wsserver.core.cluster) ----------------------------

    def joined_elsewhere(self, node: str, realm: str, details: dict[str, Any]) -> list[Action[PeerT]]:
        """A session joined ``realm`` on ``node`` (``details`` as ``wamp.session.get`` gives them): ``on_join`` here."""
        target = self.realms.get(realm)
        return [] if target is None else target.joined_elsewhere(node, details)

    def left_elsewhere(self, node: str, realm: str, session_id: int) -> list[Action[PeerT]]:
        """The session ``session_id`` of ``realm`` left ``node``: ``on_leave`` here."""
        target = self.realms.get(realm)
        return [] if target is None else target.left_elsewhere(node, session_id)

    def registered_elsewhere(self, node: str, realm: str, procedure: str, registration_id: int) -> None:
        """A callee on ``node`` registered ``procedure`` in ``realm``: CALLs here go there."""
        target = self.realms.get(realm)
        if target is not None:
            target.dealer.registered_elsewhere(node, procedure, registration_id)

    def unregistered_elsewhere(self, node: str, realm: str, procedure: str) -> None:
        """``node`` no longer has ``procedure`` of ``realm``."""
        target = self.realms.get(realm)
        if target is not None:
            target.dealer.unregistered_elsewhere(node, procedure)

    def call_from_elsewhere(self, node: str, call: RemoteCall) -> list[Action[PeerT]]:
        """A caller on ``node`` calls a procedure registered here: INVOCATION to its callee (or ERROR back there)."""
        target = self.realms.get(call.realm)
        return [] if target is None else target.dealer.call_from_elsewhere(node, call)

    def answer_from_elsewhere(self, node: str, answer: RemoteAnswer) -> list[Action[PeerT]]:
        """``node`` answered a call made here: RESULT or ERROR to the caller, if it still waits."""
        target = self.realms.get(answer.realm)
        return [] if target is None else target.dealer.answer_from_elsewhere(node, answer)

    def node_lost(self, node: str) -> list[Action[PeerT]]:
        """
        ``node`` left the cluster or died: its sessions leave (``on_leave`` here), its
        registrations vanish, and calls to its callees end with ERROR ``wsserver.error.node_lost``.
        """
        actions: list[Action[PeerT]] = []
        for realm in self.realms.values():
            actions += realm.node_lost(node)
        return actions

    def calls_elsewhere_lost(self, why: str) -> list[Action[PeerT]]:
        """
        The way to the other nodes is cut: calls to callees elsewhere end with ERROR
        ``wsserver.error.node_lost`` (``why`` its detail); calls from elsewhere are forgotten.
        """
        actions: list[Action[PeerT]] = []
        for realm in self.realms.values():
            actions += realm.dealer.calls_elsewhere_lost(why)
        return actions

    def route_stored(self, realm: str, publication: Publication, position: Position | None) -> list[Action[PeerT]]:
        """
        Route ``publication``, as the shared store hands it to every node (published here or
        elsewhere), at ``position``, to this node's subscribers. A realm this node does not
        serve routes nothing.
        """
        target = self.realms.get(realm)
        if target is None:
            return []
        return target.broker.route_stored(publication, position)

    def join_internal(self, session: Session[PeerT], realm: str, identity: Identity) -> list[Action[PeerT]]:
        """
        Join ``session`` (attached, not yet joined) to ``realm`` as ``identity``, without HELLO or
        WELCOME: for a transport that authenticated its client by other means (the HTTP API's
        keys). The session is then OPEN like any other, and its role's permissions and the
        session limits apply to what it sends through :meth:`receive`. Carry out the returned
        actions (``wamp.session.on_join``); :meth:`detach` ends it. Raises ``KeyError`` for an
        unknown realm.
        """
        target = self.realms.get(realm)
        if target is None:
            raise KeyError(f"no such realm: {realm!r}")
        assert session.state is State.ESTABLISHING, "join_internal takes a session that has not joined"
        self._open(session, target, identity)
        return target.join(session)

    def forget_call(self, session: Session[PeerT], request: int) -> None:
        """
        ``session`` stops waiting for the answer to its CALL ``request`` (a timeout of its own):
        the call is forgotten now, and the callee's late answer will be dropped.
        """
        if session.realm is not None:
            self._realm_of(session).dealer.forget_call(session, request)

    def expire_calls(self) -> list[Action[PeerT]]:
        """
        End the calls whose ``timeout`` passed (by ``clock``): the adapter must call this often
        (its granularity is that of call timeouts) and carry out what it returns.
        """
        return [action for realm in self.realms.values() for action in realm.dealer.expire()]

    # -- message handlers (named in session.Handling) --------------------------------------------

    def _on_hello(self, session: Session[PeerT], hello: wamp.Hello | InvalidRequest) -> list[Action[PeerT]]:
        realm = self.realms.get(hello.realm) if isinstance(hello, wamp.Hello) else None
        if realm is None:
            name = hello.realm if isinstance(hello, wamp.Hello) else "(invalid name)"
            session.state = State.CLOSED
            error = ApplicationError.NO_SUCH_REALM
            abort = wamp.Abort(error, message=f"no realm {name!r} on this server")
            return [Send(abort, (session,)), Close(session, CloseReason.NORMAL, error)]
        assert isinstance(hello, wamp.Hello)
        # Only a callee that announced call canceling understands INTERRUPT (AutobahnJS does not).
        session.interruptible = getattr(hello.roles.get("callee"), "call_canceling", None) is True
        asked = next((method for method in hello.authmethods or [ANONYMOUS] if method in AUTHMETHODS), OTHER_METHOD)
        return self._authenticated(session, realm, realm.authenticator.hello(hello), asked)

    def _on_authenticate(self, session: Session[PeerT], answer: wamp.Authenticate) -> list[Action[PeerT]]:
        pending, session.pending = session.pending, None
        assert pending is not None, "only AUTHENTICATING sessions have a challenge pending"
        realm = self.realms[pending.realm]
        if not self.failed_logins.attempt(session.address, realm.name, pending.authid, self._clock()):
            return self._authenticated(session, realm, Refusal(ApplicationError.NOT_AUTHORIZED, FAILED), pending.method)
        session.state = State.VERIFYING
        check = realm.authenticator.check(pending, answer)
        return [Compute(check, lambda proven: self._verified(session, pending, proven))]

    def _verified(self, session: Session[PeerT], pending: Pending, proven: bool) -> list[Action[PeerT]]:
        """The check of ``session``'s AUTHENTICATE answered ``proven``: WELCOME or ABORT."""
        if session.state is not State.VERIFYING:
            return []  # the transport went away meanwhile
        realm = self.realms[pending.realm]
        outcome = realm.authenticator.outcome(pending, proven)
        if isinstance(outcome, Identity):
            self.failed_logins.succeeded(session.address, realm.name, pending.authid, self._clock())
        return self._authenticated(session, realm, outcome, pending.method)

    def _authenticated(
        self, session: Session[PeerT], realm: Realm[PeerT], outcome: Outcome, method: str
    ) -> list[Action[PeerT]]:
        """
        Carry on with what authentication said: WELCOME, CHALLENGE, or ABORT after the refusal
        delay (counted in ``refused_logins`` under ``method``, the one the login asked for).
        """
        if isinstance(outcome, Identity):
            return self._welcome(session, realm, outcome)
        if isinstance(outcome, Refusal):
            self.refused_logins[method] += 1
            session.state = State.CLOSED
            abort = wamp.Abort(outcome.error, message=outcome.message)
            return [Delay(self.refusal_delay, [Send(abort, (session,)), Close(session, CloseReason.NORMAL, outcome.error)])]
        session.state = State.AUTHENTICATING
        session.pending = outcome
        return [Send(wamp.Challenge(outcome.method, outcome.extra), (session,))]

    def _welcome(self, session: Session[PeerT], realm: Realm[PeerT], identity: Identity) -> list[Action[PeerT]]:
        self._open(session, realm, identity)
        welcome = Welcome(
            session.id,
            self._roles,
            realm=realm.name,
            authid=session.authid,
            authrole=session.authrole,
            authmethod=session.authmethod,
            authprovider=session.authprovider,
            marshalled_roles=self._marshalled_roles,
        )
        return [Send(welcome, (session,)), *realm.join(session)]

    def _open(self, session: Session[PeerT], realm: Realm[PeerT], identity: Identity) -> None:
        """Give ``session`` an id in ``realm``, ``identity`` and its limits: it is OPEN."""
        draw = self._session_id or self._random_id
        session_id = draw()
        while session_id in realm.sessions or session_id in realm.elsewhere_sessions:
            session_id = draw()
        session.id = session_id
        session.realm = realm.name
        session.authid = identity.authid or f"anonymous-{session_id}"
        session.authrole = identity.authrole
        session.authmethod = identity.authmethod
        session.authprovider = identity.authprovider
        session.publish_bucket = self.limits.bucket(self._clock())
        session.state = State.OPEN

    def _on_goodbye(self, session: Session[PeerT], goodbye: wamp.Goodbye) -> list[Action[PeerT]]:
        # The peer may HELLO again on this transport afterwards: back to ESTABLISHING.
        left = self._leave(session, State.ESTABLISHING)
        return [Send(wamp.Goodbye(CLOSE_GOODBYE_AND_OUT), (session,)), *left]

    def _on_goodbye_reply(self, session: Session[PeerT], goodbye: wamp.Goodbye) -> list[Action[PeerT]]:
        left = self._leave(session, State.CLOSED)
        return [Close(session, CloseReason.GOING_AWAY, goodbye.reason), *left]

    def _on_abort(self, session: Session[PeerT], abort: wamp.Abort) -> list[Action[PeerT]]:
        left = self._leave(session, State.CLOSED)
        return [Close(session, CloseReason.NORMAL, abort.reason), *left]

    def _on_subscribe(self, session: Session[PeerT], subscribe: wamp.Subscribe) -> list[Action[PeerT]]:
        realm = self._realm_of(session)
        refused = (
            self._uri_refusal(subscribe.topic)
            or realm.forbids(session, SUBSCRIBE, subscribe.topic)
            or self._subscriptions_full(session, realm, subscribe)
        )
        if refused is not None:
            return [error_reply(session, subscribe.MESSAGE_TYPE, subscribe.request, *refused)]
        return realm.broker.subscribe(session, subscribe)

    def _on_unsubscribe(self, session: Session[PeerT], unsubscribe: wamp.Unsubscribe) -> list[Action[PeerT]]:
        return self._realm_of(session).broker.unsubscribe(session, unsubscribe)

    def _on_publish(self, session: Session[PeerT], publish: PublishRequest) -> list[Action[PeerT]]:
        realm = self._realm_of(session)
        message = publish.message
        refused = (
            self._uri_refusal(message.topic)
            or self._over_rate(session)
            or realm.forbids(session, PUBLISH, message.topic)
            or (realm.forbids(session, DISCLOSE, message.topic, OPTION_DISALLOWED_DISCLOSE_ME) if publish.disclose_me else None)
            or payload_refusal(message.args, message.kwargs)
        )
        if refused is not None:
            # Only an acknowledged PUBLISH expects an answer.
            return [error_reply(session, message.MESSAGE_TYPE, message.request, *refused)] if message.acknowledge else []
        return realm.broker.publish(session, message, publish.disclose_me, plain=publish.plain)

    def _on_register(self, session: Session[PeerT], register: wamp.Register) -> list[Action[PeerT]]:
        realm = self._realm_of(session)
        refused = (
            self._uri_refusal(register.procedure)
            or realm.forbids(session, REGISTER, register.procedure)
            or self._registrations_full(session)
        )
        if refused is not None:
            return [error_reply(session, register.MESSAGE_TYPE, register.request, *refused)]
        return realm.dealer.register(session, register)

    def _on_unregister(self, session: Session[PeerT], unregister: wamp.Unregister) -> list[Action[PeerT]]:
        return self._realm_of(session).dealer.unregister(session, unregister)

    def _on_call(self, session: Session[PeerT], request: CallRequest | wamp.Call) -> list[Action[PeerT]]:
        # A CALL built inside the server (the HTTP API) is autobahn's message, without disclose_me.
        call, disclose_me = (request.message, request.disclose_me) if isinstance(request, CallRequest) else (request, False)
        realm = self._realm_of(session)
        refused = (
            self._uri_refusal(call.procedure)
            or realm.forbids(session, CALL, call.procedure)
            or (realm.forbids(session, DISCLOSE, call.procedure, OPTION_DISALLOWED_DISCLOSE_ME) if disclose_me else None)
            or self._calls_full(session, realm)
            or payload_refusal(call.args, call.kwargs)
        )
        if refused is not None:
            return [error_reply(session, call.MESSAGE_TYPE, call.request, *refused)]
        return realm.dealer.call(session, call, disclose_me=disclose_me)

    def _on_cancel(self, session: Session[PeerT], cancel: wamp.Cancel) -> list[Action[PeerT]]:
        return self._realm_of(session).dealer.cancel(session, cancel)

    def _on_yield(self, session: Session[PeerT], answer: wamp.Yield) -> list[Action[PeerT]]:
        dealer = self._realm_of(session).dealer
        if answer.progress:
            violation = dealer.progress_refusal(session, answer.request)
            if violation is not None:
                return self.violation(session, violation)
        reason = unrepresentable(answer.args, answer.kwargs)
        if reason is not None:
            return dealer.undeliverable(session, answer.request, reason)
        return dealer.yield_result(session, answer)

    def _on_error(self, session: Session[PeerT], error: wamp.Error) -> list[Action[PeerT]]:
        if error.request_type != wamp.Invocation.MESSAGE_TYPE:
            # A client answers only INVOCATIONs; an ERROR for anything else is the router's to send.
            return self.violation(session, f"ERROR for request type {error.request_type} is not allowed")
        dealer = self._realm_of(session).dealer
        refused = self._uri_refusal(error.error) or payload_refusal(error.args, error.kwargs)
        if refused is not None:
            return dealer.undeliverable(session, error.request, refused[1])
        return dealer.callee_error(session, error)

    def _on_invalid_request(self, session: Session[PeerT], invalid: InvalidRequest) -> list[Action[PeerT]]:
        if not invalid.wants_reply:
            return []
        return [error_reply(session, invalid.request_type, invalid.request, invalid.error, invalid.reason)]

    def _ignore(self, session: Session[PeerT], message: Decoded) -> list[Action[PeerT]]:
        return []

    # -- helpers ---------------------------------------------------------------------------------

    def _over_rate(self, session: Session[PeerT]) -> tuple[str, str] | None:
        """Why ``session`` may not publish now (its rate limit), or None."""
        bucket = session.publish_bucket
        if bucket is None or bucket.take(self._clock()):
            return None
        limits = self.limits
        return PUBLISH_RATE_EXCEEDED, f"over {limits.publish_rate:g} publications a second (bursts of {limits.publish_burst})"

    def _uri_refusal(self, uri: str) -> tuple[str, str] | None:
        """Why ``session`` may not send ``uri``: too long, or with no UTF-8 (a lone surrogate); or None."""
        limit = self.limits.max_uri_length
        # Up to a quarter of the limit in characters always fits: a character is at most 4 bytes.
        if limit and len(uri) > limit // 4:
            size = len(uri.encode("utf-8", "surrogatepass"))
            if size > limit:
                return URI_TOO_LONG, f"a URI of {size} bytes; at most {limit} are accepted"
        if not uri.isascii() and not has_utf8(uri):
            return ApplicationError.INVALID_URI, "a URI with a lone surrogate (no UTF-8 for it)"
        return None

    def _registrations_full(self, session: Session[PeerT]) -> tuple[str, str] | None:
        """Why ``session`` may not register one more procedure, or None."""
        limit = self.limits.max_registrations
        if not limit or len(session.registrations) < limit:
            return None
        return TOO_MANY_REGISTRATIONS, f"a session may register {limit} procedures"

    def _calls_full(self, session: Session[PeerT], realm: Realm[PeerT]) -> tuple[str, str] | None:
        """Why ``session`` may not make one more call now (as many wait for answers as it may have), or None."""
        limit = self.limits.max_calls_in_flight
        if not limit or realm.dealer.calls_in_flight(session) < limit:
            return None
        return TOO_MANY_CALLS_IN_FLIGHT, f"a session may wait for {limit} calls at once"

    def _subscriptions_full(
        self, session: Session[PeerT], realm: Realm[PeerT], subscribe: wamp.Subscribe
    ) -> tuple[str, str] | None:
        """Why ``session`` may not add this subscription (it holds as many as it may), or None."""
        limit = self.limits.max_subscriptions
        if not limit or len(session.subscriptions) < limit:
            return None
        existing = realm.subscriptions.lookup(subscribe.topic, subscribe.match)
        if existing is not None and session in existing.subscribers:
            return None
        return TOO_MANY_SUBSCRIPTIONS, f"a session may hold {limit} subscriptions"

    def _leave(self, session: Session[PeerT], new_state: State) -> list[Action[PeerT]]:
        """End the WAMP session (if one is joined); return what others must be told."""
        realm = self.realms.get(session.realm) if session.realm is not None else None
        left = realm.leave(session) if realm is not None else []
        session.realm = None
        session.id = 0
        session.pending = None
        session.publish_bucket = None
        session.state = new_state
        return left

    def _realm_of(self, session: Session[PeerT]) -> Realm[PeerT]:
        assert session.realm is not None, "only OPEN and CLOSING sessions have a realm"
        return self.realms[session.realm]
