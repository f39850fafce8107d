"""
The router's own procedures: the session, subscription and registration meta API, and event history.

Theory of operation
-------------------
Each procedure is a function from a :class:`Invoked` (the realm, the caller and the call's
arguments) to a :class:`~wsserver.core.dealer.Reply`; it raises autobahn's ``ApplicationError``
with the spec's error URI when it cannot answer. :func:`meta_api` binds them to a realm, and the
realm registers them in its dealer, so a CALL reaches them the way it reaches any callee and gets
RESULT or ERROR the same way. They read the realm's state and change nothing but the kill family
(``wamp.session.kill``, ``kill_by_authid``, ``kill_by_authrole``, ``kill_all``), which starts the
router's GOODBYE with each victim after the RESULT (the caller is never one of them). Such a
procedure acts on other sessions (:data:`ON_OTHER_SESSIONS`): in a realm open to anyone, where
every anonymous visitor may call anything, it needs a role configured to call it instead.

In a cluster, ``wamp.session.count``, ``list`` and ``get`` answer for the other nodes' sessions
too (the realm's ``elsewhere_sessions``, a copy kept from what those nodes announce); the kill
family reaches this node's sessions only, and the subscription and registration procedures describe
this node's (the registrations of the router's own procedures are not among them).

The subscription and registration procedures are one piece of code each (:class:`Shared`
says what differs): ``list``, ``lookup``, ``get``, ``list_subscribers``/``list_callees``,
``count_subscribers``/``count_callees``; ``match`` answers every subscription a topic reaches, but
the one registration a call reaches (as the spec says).

``wamp.subscription.get_events`` exists only when the broker keeps history (``--history-size``);
it serves the subscriptions of the caller only (the spec asks that a reader of history may
subscribe to it; here it must have), and any match policy: the history is kept per topic, and a
prefix or wildcard subscription reads every topic it matches.

``wsserver.admin.topics`` lists the topics with a retained event or history, for the admin role
only (see admin.py); ``wamp.session.get`` adds to the spec's details what carries the session, its
subscriptions and its buffered bytes, and for the admin role its client's address.

``wsserver.history.since(topic, epoch, after)`` exists when any topic keeps history: what the
topic kept after a position, for a client coming back (see history.py). It is permissioned like
SUBSCRIBE on ``topic``: any session may call it (see :data:`ON_TOPIC`), and it answers only
for a topic its role may subscribe to. Every answer is either every event after the position
(``recovered: true``) or none (``recovered: false``: an epoch of another life, an evicted event
in between, more than ``--max-resume-events``, a topic with nothing kept); malformed arguments,
a position past the topic's top and a topic that keeps no history get
``wamp.error.invalid_argument`` with the reason.

With a store shared by several nodes (``--redis``), both history procedures answer from it, on
any node: they return a :class:`~wsserver.core.dealer.Later`, and the answer is built, exactly
as above, from what the store says (a store that cannot answer: ``recovered: false``, no events).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from autobahn.wamp.exception import ApplicationError, InvalidUriError
from autobahn.wamp.message import check_or_raise_uri

from wsserver.core import admin, meta
from wsserver.core.actions import Action
from wsserver.core.broker import Publication, event
from wsserver.core.decoding import is_id
from wsserver.core.eventstore import Kept, Since
from wsserver.core.dealer import Later, Provider, Reply
from wsserver.core.matching import EXACT, POLICIES, check_pattern
from wsserver.core.policy import SUBSCRIBE
from wsserver.core.session import PeerT, Session, State

if TYPE_CHECKING:
    from wsserver.core.dealer import Dealer, Registration
    from wsserver.core.realm import Realm
    from wsserver.core.subscriptions import Subscription

T = TypeVar("T")

#: How many events ``wamp.subscription.get_events`` returns without a ``limit``.
DEFAULT_EVENTS_LIMIT = 10
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Invoked(Generic[PeerT]):
    """One call of a router procedure: in which realm, by whom, with what."""

    realm: Realm[PeerT]
    caller: Session[PeerT]
    args: list[Any]
    kwargs: dict[str, Any]

    def argument(self, index: int, name: str, valid: Callable[[Any], bool], default: Any = _MISSING) -> Any:
        """Positional argument ``index``, or keyword ``name``; ``default`` if absent (required without one)."""
        value = self.args[index] if len(self.args) > index else self.kwargs.get(name, default)
        if value is _MISSING:
            raise ApplicationError(ApplicationError.INVALID_ARGUMENT, f"missing argument {name!r}")
        if value is not default and not valid(value):
            raise ApplicationError(ApplicationError.INVALID_ARGUMENT, f"invalid {name}: {value!r}")
        return value

    def identified(self, find: Callable[[int], T | None], name: str, error: str) -> T:
        """What the id in the first argument (or keyword ``name``) names; ``error`` if nothing."""
        identifier = self.argument(0, name, is_id)
        found = find(identifier)
        if found is None:
            raise ApplicationError(error, f"no {name} {identifier} in this realm")
        return found


Procedure = Callable[[Invoked[PeerT]], "Reply[PeerT] | Later[PeerT]"]


#: The admin page's list of topics with retained events or history (the admin role's only: admin.py).
ADMIN_TOPICS = admin.PROCEDURE_PREFIX + "topics"
#: The router's resume procedure.
HISTORY_SINCE = "wsserver.history.since"
#: Largest position ``since`` takes (a WAMP id's range, so every wire format and JavaScript carry it).
MAX_POSITION = 2**53


def meta_api(realm: Realm[PeerT]) -> dict[str, Provider[PeerT]]:
    """The procedures ``realm`` provides, bound to it, by URI."""
    offered = dict(PROCEDURES)
    if realm.broker.history is None:
        del offered["wamp.subscription.get_events"]
        del offered[HISTORY_SINCE]
    return {uri: _bound(procedure, realm) for uri, procedure in offered.items()}


def _bound(procedure: Procedure[PeerT], realm: Realm[PeerT]) -> Provider[PeerT]:
    return lambda caller, args, kwargs: procedure(Invoked(realm, caller, args, kwargs))


def _is_names(value: Any) -> bool:
    return type(value) is list and all(type(item) is str for item in value)


def _is_limit(value: Any) -> bool:
    return type(value) is int and value > 0


def _is_options(value: Any) -> bool:
    return type(value) is dict and value.get("match", EXACT) in POLICIES


def _is_string(value: Any) -> bool:
    return type(value) is str


# -- sessions -----------------------------------------------------------------------------------


def _session_ids(call: Invoked[PeerT]) -> list[int]:
    """The ids of the realm's sessions, on this node and on the others of a cluster (by authrole, if asked)."""
    authroles = call.argument(0, "filter_authroles", _is_names, None)
    here = [s.id for s in call.realm.sessions.values() if authroles is None or s.authrole in authroles]
    elsewhere = call.realm.elsewhere_sessions
    return here + [i for i, (_, d) in elsewhere.items() if authroles is None or d.get("authrole") in authroles]


def _session(call: Invoked[PeerT]) -> Session[PeerT]:
    return call.identified(call.realm.sessions.get, "session", ApplicationError.NO_SUCH_SESSION)


def _session_details(session_id: int, realm: Realm[PeerT]) -> dict[str, Any] | None:
    """The details of a session of ``realm``, here or on another node; None if there is none."""
    session = realm.sessions.get(session_id)
    if session is not None:
        return meta.session_details(session)
    elsewhere = realm.elsewhere_sessions.get(session_id)
    return None if elsewhere is None else dict(elsewhere[1])


def session_count(call: Invoked[PeerT]) -> Reply[PeerT]:
    return Reply([len(_session_ids(call))])


def session_list(call: Invoked[PeerT]) -> Reply[PeerT]:
    return Reply([_session_ids(call)])


def session_get(call: Invoked[PeerT]) -> Reply[PeerT]:
    session = call.realm.sessions.get(call.argument(0, "session", is_id))
    if session is None:
        # Another node's session: the details it announced (its connection's stay on its node).
        details = call.identified(lambda i: _session_details(i, call.realm), "session", ApplicationError.NO_SUCH_SESSION)
        return Reply([details])
    connection = meta.connection_details(session, with_address=call.realm.is_admin(call.caller))
    return Reply([{**meta.session_details(session), **connection}])


def session_kill(call: Invoked[PeerT]) -> Reply[PeerT]:
    victim = _session(call)
    if victim is call.caller:
        # As the spec says: no *other* session has that id.
        raise ApplicationError(ApplicationError.NO_SUCH_SESSION, "a session cannot kill itself")
    return Reply(then=_killed([victim], call, after=1))


def session_kill_by_authid(call: Invoked[PeerT]) -> Reply[PeerT]:
    authid = call.argument(0, "authid", _is_string)
    return _kill_others(call, lambda s: s.authid == authid, after=1)


def session_kill_by_authrole(call: Invoked[PeerT]) -> Reply[PeerT]:
    authrole = call.argument(0, "authrole", _is_string)
    return _kill_others(call, lambda s: s.authrole == authrole, after=1)


def session_kill_all(call: Invoked[PeerT]) -> Reply[PeerT]:
    return _kill_others(call, lambda s: True, after=0)


def _kill_others(call: Invoked[PeerT], chosen: Callable[[Session[PeerT]], bool], *, after: int) -> Reply[PeerT]:
    """
    GOODBYE to this node's open sessions ``chosen`` picks, never the caller (as the spec says);
    the RESULT is how many (as Crossbar answers). ``after``: where the reason and message arguments start.
    """
    victims = [s for s in call.realm.sessions.values() if s is not call.caller and s.state is State.OPEN and chosen(s)]
    return Reply([len(victims)], then=_killed(victims, call, after=after))


def _killed(victims: list[Session[PeerT]], call: Invoked[PeerT], *, after: int) -> list[Action[PeerT]]:
    """The GOODBYEs that end ``victims``, with the call's ``reason`` and ``message`` (arguments ``after``, ``after + 1``)."""
    reason = call.argument(after, "reason", _is_string, "wamp.close.normal")
    message = call.argument(after + 1, "message", _is_string, None)
    try:
        check_or_raise_uri(reason, "reason")
    except InvalidUriError:
        raise ApplicationError(ApplicationError.INVALID_URI, f"invalid reason {reason!r}") from None
    return [action for victim in victims for action in call.realm.goodbye(victim, reason, message)]


# -- subscriptions and registrations -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shared(Generic[T]):
    """
    What the meta API says the same way of subscriptions and registrations (things sessions share):
    ``kind`` its name, ``uri`` the argument naming its URI, ``missing`` the error for an unknown
    id; from a realm ``table`` (get by id, lookup by (URI, match), iterate), ``route`` (what a
    URI reaches), and of a thing its ``sessions`` and ``details``.
    """

    kind: str
    uri: str
    missing: str
    table: Callable[[Realm[Any]], Any]
    route: Callable[[Realm[Any], str], list[T]]
    sessions: Callable[[T], Any]
    details: Callable[[T], dict[str, Any]]

    def find(self, call: Invoked[Any]) -> T:
        found: T = call.identified(self.table(call.realm).get, self.kind, self.missing)
        return found


def _dealer(realm: Realm[Any]) -> Dealer[Any]:
    return realm.dealer


def _routed(realm: Realm[Any], procedure: str) -> list[Registration[Any]]:
    """The registration a call of ``procedure`` reaches, if a session's (as a list of at most one)."""
    registration = _dealer(realm).route(procedure)
    return [] if registration is None or registration.provider is not None else [registration]


SUBSCRIPTIONS: Shared[Subscription[Any]] = Shared(
    "subscription", "topic", ApplicationError.NO_SUCH_SUBSCRIPTION,
    table=lambda realm: realm.subscriptions,
    route=lambda realm, topic: realm.subscriptions.matching(topic),
    sessions=attrgetter("subscribers"),
    details=meta.subscription_details,
)
REGISTRATIONS: Shared[Registration[Any]] = Shared(
    "registration", "procedure", ApplicationError.NO_SUCH_REGISTRATION,
    table=_dealer,
    route=_routed,
    sessions=attrgetter("callees"),
    details=meta.registration_details,
)


def _listed(shared: Shared[Any], call: Invoked[PeerT]) -> Reply[PeerT]:
    lists: dict[str, list[int]] = {policy: [] for policy in POLICIES}
    for thing in shared.table(call.realm):
        lists[thing.match].append(thing.id)
    return Reply([lists])


def _lookup(shared: Shared[Any], call: Invoked[PeerT]) -> Reply[PeerT]:
    uri = call.argument(0, shared.uri, _is_string)
    options = call.argument(1, "options", _is_options, {})
    thing = shared.table(call.realm).lookup(uri, options.get("match", EXACT))
    return Reply([None if thing is None else thing.id])


def _matched(shared: Shared[Any], call: Invoked[PeerT]) -> list[int]:
    uri = call.argument(0, shared.uri, _is_string)
    try:
        check_pattern(uri, EXACT)
    except InvalidUriError:
        raise ApplicationError(ApplicationError.INVALID_URI, f"invalid {shared.uri} {uri!r}") from None
    return [thing.id for thing in shared.route(call.realm, uri)]


def _get(shared: Shared[Any], call: Invoked[PeerT]) -> Reply[PeerT]:
    return Reply([shared.details(shared.find(call))])


def _members(shared: Shared[Any], call: Invoked[PeerT]) -> Reply[PeerT]:
    return Reply([[session.id for session in shared.sessions(shared.find(call))]])


def _member_count(shared: Shared[Any], call: Invoked[PeerT]) -> Reply[PeerT]:
    return Reply([len(shared.sessions(shared.find(call)))])


def subscription_match(call: Invoked[PeerT]) -> Reply[PeerT]:
    """Every subscription a publication to the topic reaches (the spec's: a list, or null)."""
    return Reply([_matched(SUBSCRIPTIONS, call) or None])


def registration_match(call: Invoked[PeerT]) -> Reply[PeerT]:
    """The registration a call of the procedure reaches (the spec's: one id, or null)."""
    return Reply([next(iter(_matched(REGISTRATIONS, call)), None)])


def _subscription(call: Invoked[PeerT]) -> Subscription[PeerT]:
    return SUBSCRIPTIONS.find(call)


def subscription_get_events(call: Invoked[PeerT]) -> Reply[PeerT] | Later[PeerT]:
    """The last ``limit`` events kept on the topics of one of the caller's subscriptions, oldest first."""
    subscription = _subscription(call)
    if call.caller not in subscription.subscribers:
        detail = f"subscription {subscription.id} is not this session's"
        raise ApplicationError(ApplicationError.NO_SUCH_SUBSCRIPTION, detail)
    limit = call.argument(1, "limit", _is_limit, DEFAULT_EVENTS_LIMIT)
    broker = call.realm.broker
    if broker.shared is not None:

        def answer(latest: list[Kept[Publication]] | None) -> Reply[PeerT]:
            return _events_reply(subscription, broker.latest_answered(latest, call.caller)[-limit:])

        return Later(broker.ask_latest(subscription, limit), answer)
    return _events_reply(subscription, broker.history_of(subscription, call.caller)[-limit:])


def _events_reply(subscription: Subscription[PeerT], kept: list[Kept[Publication]]) -> Reply[PeerT]:
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


# -- the admin API (admin.py) ------------------------------------------------------------------------

#: How many topics ``wsserver.admin.topics`` returns without a ``limit``.
DEFAULT_TOPICS_LIMIT = 1000


def admin_topics(call: Invoked[PeerT]) -> Reply[PeerT]:
    """
    The topics with a retained event or history, in order, the first ``limit``: each with
    ``retained`` (whether it has a retained event), ``history`` (events kept) and, with history,
    ``epoch`` and ``position`` (its newest event's seq). Kwargs: topics, total.
    """
    limit = call.argument(0, "limit", _is_limit, DEFAULT_TOPICS_LIMIT)
    broker = call.realm.broker
    retained = broker.retained.topics()
    kept = broker.history.topics() if broker.history is not None else {}
    names = sorted(retained.keys() | kept.keys())
    topics = []
    for topic in names[:limit]:
        entry: dict[str, Any] = {"topic": topic, "retained": topic in retained, "history": 0}
        if topic in kept:
            count, position = kept[topic]
            entry.update(history=count, epoch=position.epoch, position=position.seq)
        topics.append(entry)
    return Reply([], {"topics": topics, "total": len(names)})


# -- history -------------------------------------------------------------------------------------


def _is_position(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_POSITION


def history_since(call: Invoked[PeerT]) -> Reply[PeerT] | Later[PeerT]:
    """
    Every event ``topic`` kept after position (``epoch``, ``after``), oldest first, with
    ``recovered: true``; or ``recovered: false`` and none. Kwargs: recovered, epoch, top, events.
    """
    topic = call.argument(0, "topic", _is_string)
    epoch = call.argument(1, "epoch", _is_string)
    after = call.argument(2, "after", _is_position)
    try:
        check_pattern(topic, EXACT)
    except InvalidUriError:
        raise ApplicationError(ApplicationError.INVALID_ARGUMENT, f"invalid topic {topic!r}") from None
    refused = call.realm.forbids(call.caller, SUBSCRIBE, topic)
    if refused is not None:
        raise ApplicationError(*refused)
    broker = call.realm.broker
    ask = broker.ask_since(topic, epoch, after)
    if ask is not None:
        return Later(ask, lambda answer: _since_reply(topic, epoch, after, broker.since_answered(answer, call.caller)))
    answer = broker.since(topic, epoch, after, call.caller)
    if answer is None:
        detail = f"topic {topic!r} keeps no history (see --history-size and history in --config)"
        raise ApplicationError(ApplicationError.INVALID_ARGUMENT, detail)
    return _since_reply(topic, epoch, after, answer)


def _since_reply(topic: str, epoch: str, after: int, answer: Since[Publication]) -> Reply[PeerT]:
    """The RESULT of ``wsserver.history.since`` for ``answer``; raises for a position past the top."""
    if epoch == answer.epoch and after > answer.top:
        detail = f"after {after} is past the newest event of {topic!r} in this epoch ({answer.top})"
        raise ApplicationError(ApplicationError.INVALID_ARGUMENT, detail)
    events = [
        {"seq": k.seq, "topic": topic, "args": k.item.args or [], "kwargs": k.item.kwargs or {}, "timestamp": meta.iso8601(k.time)}
        for k in answer.items
    ]
    return Reply([], {"recovered": answer.recovered, "epoch": answer.epoch, "top": answer.top, "events": events})


#: The procedures any session may call, checked against what they name instead (here: SUBSCRIBE
#: on the topic): see realm.py.
ON_TOPIC = frozenset({HISTORY_SINCE})

#: The procedures that act on other sessions (the spec's kill family): the anonymous sessions of
#: a realm open to anyone
#: may not call them (see realm.py), whatever else they may do.
ON_OTHER_SESSIONS = frozenset(
    {"wamp.session.kill", "wamp.session.kill_by_authid", "wamp.session.kill_by_authrole", "wamp.session.kill_all"}
)

PROCEDURES: dict[str, Procedure[Any]] = {
    "wamp.session.count": session_count,
    "wamp.session.list": session_list,
    "wamp.session.get": session_get,
    "wamp.session.kill": session_kill,
    "wamp.session.kill_by_authid": session_kill_by_authid,
    "wamp.session.kill_by_authrole": session_kill_by_authrole,
    "wamp.session.kill_all": session_kill_all,
    "wamp.subscription.list": partial(_listed, SUBSCRIPTIONS),
    "wamp.subscription.lookup": partial(_lookup, SUBSCRIPTIONS),
    "wamp.subscription.match": subscription_match,
    "wamp.subscription.get": partial(_get, SUBSCRIPTIONS),
    "wamp.subscription.list_subscribers": partial(_members, SUBSCRIPTIONS),
    "wamp.subscription.count_subscribers": partial(_member_count, SUBSCRIPTIONS),
    "wamp.registration.list": partial(_listed, REGISTRATIONS),
    "wamp.registration.lookup": partial(_lookup, REGISTRATIONS),
    "wamp.registration.match": registration_match,
    "wamp.registration.get": partial(_get, REGISTRATIONS),
    "wamp.registration.list_callees": partial(_members, REGISTRATIONS),
    "wamp.registration.count_callees": partial(_member_count, REGISTRATIONS),
    "wamp.subscription.get_events": subscription_get_events,
    HISTORY_SINCE: history_since,
    ADMIN_TOPICS: admin_topics,
}
