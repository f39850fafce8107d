"""
The router's own procedures: the session and subscription meta API, and event history.

Theory of operation
-------------------
Each procedure is a function ``(realm, caller, args, kwargs) -> Reply`` that raises autobahn's
``ApplicationError`` with the spec's error URI when it cannot answer. :func:`meta_api` binds them
to a realm, and the realm registers them in its dealer, so a CALL reaches them the way it reaches
any callee and gets RESULT or ERROR the same way. They read the realm's state and change nothing
but ``wamp.session.kill``, which starts the router's GOODBYE with the victim after the RESULT.

``wamp.subscription.get_events`` exists only when the broker keeps history (``--history-size``);
it serves the subscriptions of the caller only (the spec asks that a reader of history may
subscribe to it; here it must have), and any match policy: the history is kept per topic, and a
prefix or wildcard subscription reads every topic it matches.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autobahn.wamp.exception import ApplicationError, InvalidUriError
from autobahn.wamp.message import check_or_raise_uri

from wsserver.core import meta
from wsserver.core.broker import Publication, event
from wsserver.core.decoding import is_id
from wsserver.core.dealer import Provider, Reply
from wsserver.core.matching import EXACT, POLICIES, check_pattern
from wsserver.core.session import PeerT, Session

if TYPE_CHECKING:
    from wsserver.core.realm import Realm
    from wsserver.core.subscriptions import Subscription

Procedure = Callable[["Realm[PeerT]", Session[PeerT], list[Any], dict[str, Any]], Reply[PeerT]]

#: How many events ``wamp.subscription.get_events`` returns without a ``limit``.
DEFAULT_EVENTS_LIMIT = 10
_MISSING: Any = object()


def meta_api(realm: Realm[PeerT]) -> dict[str, Provider[PeerT]]:
    """The procedures ``realm`` provides, bound to it, by URI."""
    offered = dict(PROCEDURES)
    if realm.broker.history is None:
        del offered["wamp.subscription.get_events"]
    return {uri: functools.partial(procedure, realm) for uri, procedure in offered.items()}


# -- arguments ----------------------------------------------------------------------------------


def _argument(
    args: list[Any], kwargs: dict[str, Any], index: int, name: str, valid: Callable[[Any], bool], default: Any = _MISSING
) -> Any:
    """Positional argument ``index``, or keyword ``name``; ``default`` if absent (required without one)."""
    value = args[index] if len(args) > index else kwargs.get(name, default)
    if value is _MISSING:
        raise ApplicationError(ApplicationError.INVALID_ARGUMENT, f"missing argument {name!r}")
    if value is not default and not valid(value):
        raise ApplicationError(ApplicationError.INVALID_ARGUMENT, f"invalid {name}: {value!r}")
    return value


def _is_names(value: Any) -> bool:
    return type(value) is list and all(type(item) is str for item in value)


def _is_limit(value: Any) -> bool:
    return type(value) is int and value > 0


def _is_options(value: Any) -> bool:
    return type(value) is dict and value.get("match", EXACT) in POLICIES


def _is_string(value: Any) -> bool:
    return type(value) is str


# -- sessions -----------------------------------------------------------------------------------


def _sessions(realm: Realm[PeerT], args: list[Any], kwargs: dict[str, Any]) -> list[Session[PeerT]]:
    authroles = _argument(args, kwargs, 0, "filter_authroles", _is_names, None)
    return [s for s in realm.sessions.values() if authroles is None or s.authrole in authroles]


def _session(realm: Realm[PeerT], args: list[Any], kwargs: dict[str, Any]) -> Session[PeerT]:
    session_id = _argument(args, kwargs, 0, "session", is_id)
    session = realm.sessions.get(session_id)
    if session is None:
        raise ApplicationError(ApplicationError.NO_SUCH_SESSION, f"no session {session_id} in this realm")
    return session


def session_count(realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]) -> Reply[PeerT]:
    return Reply([len(_sessions(realm, args, kwargs))])


def session_list(realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]) -> Reply[PeerT]:
    return Reply([[s.id for s in _sessions(realm, args, kwargs)]])


def session_get(realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]) -> Reply[PeerT]:
    return Reply([meta.session_details(_session(realm, args, kwargs))])


def session_kill(realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]) -> Reply[PeerT]:
    victim = _session(realm, args, kwargs)
    if victim is caller:
        # As the spec says: no *other* session has that id.
        raise ApplicationError(ApplicationError.NO_SUCH_SESSION, "a session cannot kill itself")
    reason = _argument(args, kwargs, 1, "reason", _is_string, "wamp.close.normal")
    message = _argument(args, kwargs, 2, "message", _is_string, None)
    try:
        check_or_raise_uri(reason, "reason")
    except InvalidUriError:
        raise ApplicationError(ApplicationError.INVALID_URI, f"invalid reason {reason!r}") from None
    return Reply(then=realm.goodbye(victim, reason, message))


# -- subscriptions ------------------------------------------------------------------------------


def _subscription(realm: Realm[PeerT], args: list[Any], kwargs: dict[str, Any]) -> Subscription[PeerT]:
    subscription_id = _argument(args, kwargs, 0, "subscription", is_id)
    subscription = realm.subscriptions.get(subscription_id)
    if subscription is None:
        raise ApplicationError(ApplicationError.NO_SUCH_SUBSCRIPTION, f"no subscription {subscription_id} in this realm")
    return subscription


def subscription_list(
    realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]
) -> Reply[PeerT]:
    lists: dict[str, list[int]] = {policy: [] for policy in POLICIES}
    for subscription in realm.subscriptions:
        lists[subscription.match].append(subscription.id)
    return Reply([lists])


def subscription_lookup(
    realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]
) -> Reply[PeerT]:
    topic = _argument(args, kwargs, 0, "topic", _is_string)
    options = _argument(args, kwargs, 1, "options", _is_options, {})
    subscription = realm.subscriptions.lookup(topic, options.get("match", EXACT))
    return Reply([None if subscription is None else subscription.id])


def subscription_match(
    realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]
) -> Reply[PeerT]:
    topic = _argument(args, kwargs, 0, "topic", _is_string)
    try:
        check_pattern(topic, EXACT)
    except InvalidUriError:
        raise ApplicationError(ApplicationError.INVALID_URI, f"invalid topic {topic!r}") from None
    ids = [s.id for s in realm.subscriptions.matching(topic)]
    return Reply([ids or None])


def subscription_get(realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]) -> Reply[PeerT]:
    return Reply([meta.subscription_details(_subscription(realm, args, kwargs))])


def subscription_list_subscribers(
    realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]
) -> Reply[PeerT]:
    return Reply([[s.id for s in _subscription(realm, args, kwargs).subscribers]])


def subscription_count_subscribers(
    realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]
) -> Reply[PeerT]:
    return Reply([len(_subscription(realm, args, kwargs).subscribers)])


def subscription_get_events(
    realm: Realm[PeerT], caller: Session[PeerT], args: list[Any], kwargs: dict[str, Any]
) -> Reply[PeerT]:
    subscription = _subscription(realm, args, kwargs)
    if caller not in subscription.subscribers:
        detail = f"subscription {subscription.id} is not this session's"
        raise ApplicationError(ApplicationError.NO_SUCH_SUBSCRIPTION, detail)
    limit = _argument(args, kwargs, 1, "limit", _is_limit, DEFAULT_EVENTS_LIMIT)
    kept = realm.broker.history_of(subscription, caller)[-limit:]
    return Reply([[_history_entry(subscription, k.time, k.item) for k in kept]])


def _history_entry(subscription: Subscription[Any], time: float, publication: Publication) -> dict[str, Any]:
    """The spec's event history entry: the EVENT's fields and when the router kept it."""
    details = event(subscription, publication).marshal()[3]
    return {
        "timestamp": meta.iso8601(time),
        "subscription": subscription.id,
        "publication": publication.id,
        "topic": publication.topic,
        "details": details,
        "args": publication.args,
        "kwargs": publication.kwargs,
    }


PROCEDURES: dict[str, Procedure[Any]] = {
    "wamp.session.count": session_count,
    "wamp.session.list": session_list,
    "wamp.session.get": session_get,
    "wamp.session.kill": session_kill,
    "wamp.subscription.list": subscription_list,
    "wamp.subscription.lookup": subscription_lookup,
    "wamp.subscription.match": subscription_match,
    "wamp.subscription.get": subscription_get,
    "wamp.subscription.list_subscribers": subscription_list_subscribers,
    "wamp.subscription.count_subscribers": subscription_count_subscribers,
    "wamp.subscription.get_events": subscription_get_events,
}
