"""
The router: realms, sessions and the broker, as a function from incoming messages to actions.

Theory of operation
-------------------
A transport calls :meth:`Router.attach` when it opens and keeps the returned
:class:`~wsserver.core.session.Session`. For every decoded message it calls
:meth:`Router.receive` and carries out the returned actions, in order:

- :class:`Send`: serialize ``message`` and write it to every session in ``recipients``. An EVENT
  is the same message for all its recipients, so a transport serializes and frames it once per
  serializer and writes those bytes to each (the fan-out fast path).
- :class:`Close`: close that session's transport, after writing what came before.

When the transport is gone it calls :meth:`Router.detach`. A message the transport cannot decode
goes to :meth:`Router.violation`. Python code inside the server publishes with
:meth:`Router.publish`. The router never calls a transport, never reads a clock and draws random
ids only from the ``random_id`` it was given.

What each message does in each state is the table in :mod:`wsserver.core.session`.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from autobahn.wamp import message as wamp
from autobahn.wamp.message import check_or_raise_uri
from autobahn.wamp.role import RoleBrokerFeatures

from wsserver.core.decoding import Decoded, InvalidRequest
from wsserver.core.session import TRANSITIONS, Handling, PeerT, Session, State
from wsserver.core.subscriptions import EXACT, SubscriptionTable

#: What WELCOME announces: exactly the features implemented.
BROKER_FEATURES: dict[str, bool] = {"publisher_exclusion": True}

ERROR_INVALID_URI = "wamp.error.invalid_uri"
ERROR_NO_SUCH_SUBSCRIPTION = "wamp.error.no_such_subscription"
ERROR_NO_SUCH_REALM = "wamp.error.no_such_realm"
ERROR_PROTOCOL_VIOLATION = "wamp.error.protocol_violation"
CLOSE_GOODBYE_AND_OUT = "wamp.close.goodbye_and_out"
CLOSE_SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"


class CloseReason(enum.Enum):
    """Why a transport is closed; the transport maps it to its own close code."""

    NORMAL = "normal"
    PROTOCOL_VIOLATION = "protocol violation"
    GOING_AWAY = "going away"


@dataclass(frozen=True, slots=True)
class Send(Generic[PeerT]):
    """Write ``message`` to each of ``recipients``."""

    message: wamp.Message
    recipients: Sequence[Session[PeerT]]


@dataclass(frozen=True, slots=True)
class Close(Generic[PeerT]):
    """Close ``session``'s transport (after the sends before this action)."""

    session: Session[PeerT]
    reason: CloseReason
    detail: str


Action = Send[PeerT] | Close[PeerT]


class Realm(Generic[PeerT]):
    """A routing namespace: its joined sessions by id, and its subscriptions."""

    __slots__ = ("name", "sessions", "subscriptions")

    def __init__(self, name: str, next_subscription_id: Callable[[], int]) -> None:
        self.name = name
        self.sessions: dict[int, Session[PeerT]] = {}
        self.subscriptions: SubscriptionTable[PeerT] = SubscriptionTable(next_subscription_id)


class Router(Generic[PeerT]):
    """
    The WAMP router core. ``realms`` names the realms clients may join; ``random_id`` must return
    a uniformly random integer in [1, 2**53] (session and publication ids are global-scope ids).
    """

    def __init__(self, realms: Iterable[str], random_id: Callable[[], int]) -> None:
        self._random_id = random_id
        # Subscription ids are router-scope: a counter is enough and never collides.
        counter = itertools.count(1)
        self.realms: dict[str, Realm[PeerT]] = {name: Realm(name, counter.__next__) for name in realms}
        self._roles = {"broker": RoleBrokerFeatures(**BROKER_FEATURES)}

    # -- what a transport calls ------------------------------------------------------------------

    def attach(self, peer: PeerT) -> Session[PeerT]:
        """A transport opened: return the session the transport must pass to every later call."""
        return Session(peer)

    def receive(self, session: Session[PeerT], message: Decoded) -> list[Action[PeerT]]:
        """Handle one decoded message from ``session``; return the actions to carry out."""
        kind = message.kind if type(message) is InvalidRequest else type(message).__name__
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
        self._leave(session, State.CLOSED)
        abort = wamp.Abort(ERROR_PROTOCOL_VIOLATION, message=detail)
        return [Send(abort, (session,)), Close(session, CloseReason.PROTOCOL_VIOLATION, detail)]

    def detach(self, session: Session[PeerT]) -> None:
        """The transport of ``session`` is gone (cleanly or not): forget everything about it."""
        self._leave(session, State.CLOSED)

    def goodbye(self, session: Session[PeerT], reason: str = CLOSE_SYSTEM_SHUTDOWN) -> list[Action[PeerT]]:
        """Start the router's side of the GOODBYE handshake with ``session``."""
        if session.state is not State.OPEN:
            return [Close(session, CloseReason.GOING_AWAY, reason)] if session.state is State.ESTABLISHING else []
        session.state = State.CLOSING
        return [Send(wamp.Goodbye(reason), (session,))]

    # -- what Python code inside the server calls ---------------------------------------------------

    def publish(
        self, realm: str, topic: str, args: list[Any] | None = None, kwargs: dict[str, Any] | None = None
    ) -> list[Action[PeerT]]:
        """
        Publish from inside the server (no publisher session). Raises ``KeyError`` for an unknown
        realm and autobahn's ``InvalidUriError`` for an invalid topic.
        """
        target = self.realms.get(realm)
        if target is None:
            raise KeyError(f"no such realm: {realm!r}")
        check_or_raise_uri(topic, "topic")
        return self._route(target, None, topic, args, kwargs, exclude_me=False)[0]

    # -- message handlers (named in session.Handling) --------------------------------------------

    def _on_hello(self, session: Session[PeerT], hello: wamp.Hello | InvalidRequest) -> list[Action[PeerT]]:
        realm = self.realms.get(hello.realm) if isinstance(hello, wamp.Hello) else None
        if realm is None:
            name = hello.realm if isinstance(hello, wamp.Hello) else "(invalid name)"
            session.state = State.CLOSED
            abort = wamp.Abort(ERROR_NO_SUCH_REALM, message=f"no realm {name!r} on this server")
            return [Send(abort, (session,)), Close(session, CloseReason.NORMAL, ERROR_NO_SUCH_REALM)]
        session_id = self._random_id()
        while session_id in realm.sessions:
            session_id = self._random_id()
        session.id = session_id
        session.realm = realm.name
        session.authid = f"anonymous-{session_id}"
        session.authrole = "anonymous"
        session.state = State.OPEN
        realm.sessions[session_id] = session
        welcome = wamp.Welcome(
            session_id,
            self._roles,
            realm=realm.name,
            authid=session.authid,
            authrole=session.authrole,
            authmethod="anonymous",
            authprovider="static",
        )
        return [Send(welcome, (session,))]

    def _on_goodbye(self, session: Session[PeerT], goodbye: wamp.Goodbye) -> list[Action[PeerT]]:
        # The peer may HELLO again on this transport afterwards: back to ESTABLISHING.
        self._leave(session, State.ESTABLISHING)
        return [Send(wamp.Goodbye(CLOSE_GOODBYE_AND_OUT), (session,))]

    def _on_goodbye_reply(self, session: Session[PeerT], goodbye: wamp.Goodbye) -> list[Action[PeerT]]:
        self._leave(session, State.CLOSED)
        return [Close(session, CloseReason.GOING_AWAY, goodbye.reason)]

    def _on_abort(self, session: Session[PeerT], abort: wamp.Abort) -> list[Action[PeerT]]:
        self._leave(session, State.CLOSED)
        return [Close(session, CloseReason.NORMAL, abort.reason)]

    def _on_subscribe(self, session: Session[PeerT], subscribe: wamp.Subscribe) -> list[Action[PeerT]]:
        if subscribe.match != EXACT:
            return self._error(session, subscribe, ERROR_INVALID_URI, f"match policy {subscribe.match!r} is not supported")
        if not _is_valid_topic(subscribe.topic):
            return self._error(session, subscribe, ERROR_INVALID_URI, f"invalid topic {subscribe.topic!r}")
        realm = self._realm_of(session)
        subscription = realm.subscriptions.subscribe(session, subscribe.topic, subscribe.match)
        return [Send(wamp.Subscribed(subscribe.request, subscription.id), (session,))]

    def _on_unsubscribe(self, session: Session[PeerT], unsubscribe: wamp.Unsubscribe) -> list[Action[PeerT]]:
        realm = self._realm_of(session)
        subscription = realm.subscriptions.get(unsubscribe.subscription)
        if subscription is None or session not in subscription.subscribers:
            detail = f"no subscription {unsubscribe.subscription} for this session"
            return self._error(session, unsubscribe, ERROR_NO_SUCH_SUBSCRIPTION, detail)
        realm.subscriptions.unsubscribe(session, subscription)
        return [Send(wamp.Unsubscribed(unsubscribe.request), (session,))]

    def _on_publish(self, session: Session[PeerT], publish: wamp.Publish) -> list[Action[PeerT]]:
        realm = self._realm_of(session)
        exclude_me = publish.exclude_me is not False
        actions, publication = self._route(realm, session, publish.topic, publish.args, publish.kwargs, exclude_me)
        if publish.acknowledge:
            actions.append(Send(wamp.Published(publish.request, publication), (session,)))
        return actions

    def _on_invalid_request(self, session: Session[PeerT], invalid: InvalidRequest) -> list[Action[PeerT]]:
        if not invalid.wants_reply:
            return []
        error = wamp.Error(invalid.request_type, invalid.request, ERROR_INVALID_URI, args=[invalid.reason])
        return [Send(error, (session,))]

    def _ignore(self, session: Session[PeerT], message: Decoded) -> list[Action[PeerT]]:
        return []

    # -- helpers ---------------------------------------------------------------------------------

    def _route(
        self,
        realm: Realm[PeerT],
        publisher: Session[PeerT] | None,
        topic: str,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        exclude_me: bool,
    ) -> tuple[list[Action[PeerT]], int]:
        """One EVENT per matching subscription, to its subscribers; returns (actions, publication id)."""
        publication = self._random_id()
        actions: list[Action[PeerT]] = []
        for subscription in realm.subscriptions.matching(topic):
            subscribers = subscription.subscribers
            if exclude_me and publisher in subscribers:
                recipients: Sequence[Session[PeerT]] = [s for s in subscribers if s is not publisher]
            else:
                recipients = list(subscribers)
            if recipients:
                event = wamp.Event(
                    subscription.id,
                    publication,
                    args=args,
                    kwargs=kwargs,
                    topic=None if subscription.match == EXACT else topic,
                )
                actions.append(Send(event, recipients))
        return actions, publication

    def _leave(self, session: Session[PeerT], new_state: State) -> None:
        """End the WAMP session (if one is joined): drop its subscriptions and its id."""
        realm = self.realms.get(session.realm) if session.realm is not None else None
        if realm is not None:
            realm.subscriptions.drop(session)
            realm.sessions.pop(session.id, None)
        session.realm = None
        session.id = 0
        session.state = new_state

    def _realm_of(self, session: Session[PeerT]) -> Realm[PeerT]:
        assert session.realm is not None, "only OPEN sessions have a realm"
        return self.realms[session.realm]

    def _error(self, session: Session[PeerT], request: Any, error: str, detail: str) -> list[Action[PeerT]]:
        message = wamp.Error(request.MESSAGE_TYPE, request.request, error, args=[detail])
        return [Send(message, (session,))]


def _is_valid_topic(topic: str) -> bool:
    """A concrete topic: loose URI rules, no empty component (autobahn's parse allows them)."""
    try:
        check_or_raise_uri(topic, "topic")
    except Exception:
        return False
    return True
