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
runs the session's life (HELLO, GOODBYE, ABORT) itself and hands requests to the session's realm:
its broker (:mod:`~wsserver.core.broker`) or its dealer (:mod:`~wsserver.core.dealer`).

The router never calls a transport, never reads a clock and draws no random numbers: ids come
from the ``random_id`` it is given (global scope: sessions, publications) and from a counter
(router scope: subscriptions, registrations, invocations), the time from ``clock``.

WELCOME announces exactly the features implemented (:func:`roles`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any, Generic

from autobahn.wamp import message as wamp
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.message import check_or_raise_uri
from autobahn.wamp.role import RoleBrokerFeatures, RoleDealerFeatures, RoleFeatures

from wsserver.core.actions import Action, Close, CloseReason, Send, error_reply
from wsserver.core.broker import Broker
from wsserver.core.dealer import Dealer
from wsserver.core.decoding import Decoded, InvalidRequest, PublishRequest
from wsserver.core.realm import Realm
from wsserver.core.session import TRANSITIONS, PeerT, Session, State

__all__ = ["Action", "Close", "CloseReason", "Router", "Send", "roles"]

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
DEALER_FEATURES: dict[str, bool] = {"session_meta_api": True}

#: Not among autobahn's ApplicationError constants.
ERROR_PROTOCOL_VIOLATION = "wamp.error.protocol_violation"
CLOSE_GOODBYE_AND_OUT = "wamp.close.goodbye_and_out"
CLOSE_SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"


def roles(history: bool) -> dict[str, RoleFeatures]:
    """The router's roles and features, as WELCOME announces them."""
    broker = dict(BROKER_FEATURES, event_history=True) if history else BROKER_FEATURES
    return {"broker": RoleBrokerFeatures(**broker), "dealer": RoleDealerFeatures(**DEALER_FEATURES)}


def _epoch() -> float:
    """The clock of a router that was given none: time stands still at the epoch."""
    return 0.0


class Router(Generic[PeerT]):
    """
    The WAMP router core. ``realms`` names the realms clients may join; ``random_id`` must return
    a uniformly random integer in [1, 2**53] (session and publication ids are global-scope ids);
    ``clock`` returns the time in seconds since the epoch (subscription creation times, history
    timestamps, retained event expiry). ``retain_ttl``: seconds a retained event is kept (None:
    until the next one replaces it). ``history_size``: events kept per topic for
    ``wamp.subscription.get_events`` (0: no event history).
    """

    def __init__(
        self,
        realms: Iterable[str],
        random_id: Callable[[], int],
        clock: Callable[[], float] = _epoch,
        retain_ttl: float | None = None,
        history_size: int = 0,
    ) -> None:
        self._random_id = random_id
        # Router-scope ids: a counter is enough and never collides.
        counter = itertools.count(1)
        next_id = counter.__next__
        self.realms: dict[str, Realm[PeerT]] = {
            name: Realm(name, Broker(next_id, random_id, clock, retain_ttl, history_size), Dealer(next_id))
            for name in realms
        }
        self._roles = roles(history=history_size > 0)

    # -- what a transport calls ------------------------------------------------------------------

    def attach(self, peer: PeerT) -> Session[PeerT]:
        """A transport opened: return the session the transport must pass to every later call."""
        return Session(peer)

    def receive(self, session: Session[PeerT], message: Decoded) -> list[Action[PeerT]]:
        """Handle one decoded message from ``session``; return the actions to carry out."""
        kind = type(message).__name__ if isinstance(message, wamp.Message) else message.kind
        handling = TRANSITIONS.get((session.state, kind))
        if handling is None:
            name = kind.upper()
            return self.violation(session, f"{name} is not allowed in state {session.state.value}")
        handler: Callable[[Session[PeerT], Any], list[Action[PeerT]]] = getattr(self, handling.value)
        return handler(session, message)

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
        if session.state is State.ESTABLISHING:
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
        retained event. Raises ``KeyError`` for an unknown realm and autobahn's ``InvalidUriError``
        for an invalid topic.
        """
        target = self.realms.get(realm)
        if target is None:
            raise KeyError(f"no such realm: {realm!r}")
        check_or_raise_uri(topic, "topic")
        return target.broker.publish(None, wamp.Publish(0, topic, args, kwargs, retain=retain or None))

    # -- message handlers (named in session.Handling) --------------------------------------------

    def _on_hello(self, session: Session[PeerT], hello: wamp.Hello | InvalidRequest) -> list[Action[PeerT]]:
        realm = self.realms.get(hello.realm) if isinstance(hello, wamp.Hello) else None
        if realm is None:
            name = hello.realm if isinstance(hello, wamp.Hello) else "(invalid name)"
            session.state = State.CLOSED
            error = ApplicationError.NO_SUCH_REALM
            abort = wamp.Abort(error, message=f"no realm {name!r} on this server")
            return [Send(abort, (session,)), Close(session, CloseReason.NORMAL, error)]
        session_id = self._random_id()
        while session_id in realm.sessions:
            session_id = self._random_id()
        session.id = session_id
        session.realm = realm.name
        session.authid = f"anonymous-{session_id}"
        session.authrole = "anonymous"
        session.authmethod = "anonymous"
        session.authprovider = "static"
        session.state = State.OPEN
        welcome = wamp.Welcome(
            session_id,
            self._roles,
            realm=realm.name,
            authid=session.authid,
            authrole=session.authrole,
            authmethod=session.authmethod,
            authprovider=session.authprovider,
        )
        return [Send(welcome, (session,)), *realm.join(session)]

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
        return self._realm_of(session).broker.subscribe(session, subscribe)

    def _on_unsubscribe(self, session: Session[PeerT], unsubscribe: wamp.Unsubscribe) -> list[Action[PeerT]]:
        return self._realm_of(session).broker.unsubscribe(session, unsubscribe)

    def _on_publish(self, session: Session[PeerT], publish: PublishRequest) -> list[Action[PeerT]]:
        return self._realm_of(session).broker.publish(session, publish.message, publish.disclose_me)

    def _on_register(self, session: Session[PeerT], register: wamp.Register) -> list[Action[PeerT]]:
        return self._realm_of(session).dealer.register(session, register)

    def _on_unregister(self, session: Session[PeerT], unregister: wamp.Unregister) -> list[Action[PeerT]]:
        return self._realm_of(session).dealer.unregister(session, unregister)

    def _on_call(self, session: Session[PeerT], call: wamp.Call) -> list[Action[PeerT]]:
        return self._realm_of(session).dealer.call(session, call)

    def _on_yield(self, session: Session[PeerT], answer: wamp.Yield) -> list[Action[PeerT]]:
        return self._realm_of(session).dealer.yield_result(session, answer)

    def _on_error(self, session: Session[PeerT], error: wamp.Error) -> list[Action[PeerT]]:
        if error.request_type != wamp.Invocation.MESSAGE_TYPE:
            # A client answers only INVOCATIONs; an ERROR for anything else is the router's to send.
            return self.violation(session, f"ERROR for request type {error.request_type} is not allowed")
        return self._realm_of(session).dealer.callee_error(session, error)

    def _on_invalid_request(self, session: Session[PeerT], invalid: InvalidRequest) -> list[Action[PeerT]]:
        if not invalid.wants_reply:
            return []
        return [error_reply(session, invalid.request_type, invalid.request, invalid.error, invalid.reason)]

    def _ignore(self, session: Session[PeerT], message: Decoded) -> list[Action[PeerT]]:
        return []

    # -- helpers ---------------------------------------------------------------------------------

    def _leave(self, session: Session[PeerT], new_state: State) -> list[Action[PeerT]]:
        """End the WAMP session (if one is joined); return what others must be told."""
        realm = self.realms.get(session.realm) if session.realm is not None else None
        left = realm.leave(session) if realm is not None else []
        session.realm = None
        session.id = 0
        session.state = new_state
        return left

    def _realm_of(self, session: Session[PeerT]) -> Realm[PeerT]:
        assert session.realm is not None, "only OPEN and CLOSING sessions have a realm"
        return self.realms[session.realm]
