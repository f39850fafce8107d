"""
The broker of one realm: SUBSCRIBE, UNSUBSCRIBE and PUBLISH in, EVENTs and replies out.

Theory of operation
-------------------
A publication becomes a :class:`Publication` once, as data: its id, topic, payload, the disclosed
publisher (``disclose_me``) and its :class:`Audience` (who may receive it). Routing it is:

    for each subscription the topic matches (the index in subscriptions.py):
        recipients = the subscription's subscribers that the audience admits
        one EVENT for (subscription, publication), sent to all those recipients

so an EVENT is one message object per (subscription, publication), serialized once by the
transport however many receive it, and a session subscribed by several matching patterns gets
one EVENT per subscription, as the spec says.

With permissions (a realm with roles that may not do everything), a subscriber also receives an
event only if its role may subscribe to the concrete topic, also through a prefix or wildcard
subscription. That filter looks at the subscription's roles, not its subscribers: when every
role present may receive the topic (the usual case), the recipients are not filtered at all.
Retained events and event history are filtered the same way for whoever reads them.

The audience, per the spec's black- and whitelisting rules: a subscriber receives the event if
it is not the publisher (when ``exclude_me``, the default), is in every ``eligible*`` list given
(whitelists narrow) and in no ``exclude*`` list (blacklists remove). Without lists, routing only
drops the publisher, and builds neither the lists nor a per-subscriber test.

Two stores keep publications after routing (see eventstore.py), both per concrete topic:

- retained: the last publication with ``retain: true``; a SUBSCRIBE with ``get_retained`` gets,
  for every retained topic its pattern matches, that event (``details.retained``) if the
  audience admits it, as if it had been subscribed when the event was published;
- history (when enabled, per topic: see history.py): the last N publications. The spec asks
  that publications aimed at session ids (``exclude`` / ``eligible``) are not kept, since
  session ids do not outlive their sessions; the authid / authrole lists are applied to whoever
  reads the history.

A publication kept in history gets its topic's position (epoch, seq), and every EVENT of it
carries ``details._epoch`` and ``details._seq``, through any subscription (the concrete topic's
position). The position is the publication's, so the EVENT is still one message per
(subscription, publication), encoded once per wire format. Publications on topics without
history (and those aimed at session ids, which are not kept) carry none: routing them costs
what it did before positions.

The broker also publishes the subscription meta events (on_create, on_subscribe, on_unsubscribe,
on_delete, in that order for a subscription's life) through itself, as the router: not for
subscriptions to the router's own ``wamp.`` topics, which would only describe the meta API to
itself (Crossbar does the same). Clients may not publish to ``wamp.`` topics: those events are
the router's word.

Beyond one process: a broker given ``forward`` hands every publication a client or the server
published to it (never a meta event: those describe this node's sessions) to ``forward`` after
routing it locally; the adapter behind it (wsserver/backplane) carries it to the other nodes,
where :meth:`Broker.route_from_elsewhere` routes it as if it had been published there, with the
origin's publication id and audience. Without a shared store, retained events and history stay
per node: each node keeps what it routes, local or not, under its own positions.

With a shared store (``shared``, see shared.py: Redis), retained events, history and positions
live there instead: a publication on a topic with history (not aimed at session ids) is handed
to the store, which gives it its position and hands it to every node, this one included, where
:meth:`Broker.route_stored` routes it; the publisher's PUBLISHED follows the store's answer. A
retained publication on a topic without history is routed here at once and stored (the store
forwards it). Everything else takes the path above, without waiting. ``get_retained``,
``wamp.subscription.get_events`` and ``wsserver.history.since`` ask the store (:meth:`ask_since`,
:meth:`ask_latest`); the local stores stay empty, and meta events carry no position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from dataclasses import dataclass
from typing import Any, Generic, cast

from autobahn.wamp import message as wamp
from autobahn.wamp.exception import ApplicationError, InvalidUriError

from wsserver.core import meta
from wsserver.core.actions import Action, Ask, Send, error_reply
from wsserver.core.authorization import Authorizer
from wsserver.core.eventstore import EventStore, Kept, Position, Since, StoreBudget, estimated_size
from wsserver.core.history import History, HistorySettings, TopicHistory
from wsserver.core.matching import EXACT, check_pattern
from wsserver.core.policy import SUBSCRIBE
from wsserver.core.session import PeerT, Session
from wsserver.core.shared import Keeping, SharedStore, Turns
from wsserver.core.subscriptions import Subscription, SubscriptionTable


@dataclass(slots=True)  # not frozen: a frozen dataclass is built slower, and this one is built per publication
class Audience:
    """Who may receive a publication: publisher exclusion and the publisher's black- and whitelists."""

    #: The publisher's session id when it is excluded (``exclude_me``).
    excluded_publisher: int | None = None
    eligible: frozenset[int] | None = None
    eligible_authid: frozenset[str] | None = None
    eligible_authrole: frozenset[str] | None = None
    exclude: frozenset[int] = frozenset()
    exclude_authid: frozenset[str] = frozenset()
    exclude_authrole: frozenset[str] = frozenset()
    #: Whether any list is given (otherwise only ``excluded_publisher`` counts).
    listed: bool = False

    @classmethod
    def of(cls, request: wamp.Publish, publisher: Session[Any] | None, *, plain: bool = False) -> Audience:
        """
        The audience a PUBLISH from ``publisher`` (None: the router itself) asks for; ``plain``:
        its options are known to be at most ``acknowledge`` (see ``PublishRequest.plain``), so
        none of the others is read (a read each is an Autobahn property: most of this call's cost).
        """
        if plain:
            return EVERYONE if publisher is None else cls(publisher.id)
        excluded = publisher.id if publisher is not None and request.exclude_me is not False else None
        lists = (
            request.eligible, request.eligible_authid, request.eligible_authrole,
            request.exclude, request.exclude_authid, request.exclude_authrole,
        )
        if lists == _NO_LISTS:  # the common case, kept cheap: it is paid on every publication
            return EVERYONE if excluded is None else cls(excluded)
        # An absent whitelist admits everyone, an empty one no one; an absent blacklist is empty.
        return cls(
            excluded,
            eligible=_whitelist(request.eligible),
            eligible_authid=_whitelist(request.eligible_authid),
            eligible_authrole=_whitelist(request.eligible_authrole),
            exclude=frozenset(request.exclude or ()),
            exclude_authid=frozenset(request.exclude_authid or ()),
            exclude_authrole=frozenset(request.exclude_authrole or ()),
            listed=True,
        )

    @property
    def names_sessions(self) -> bool:
        """Whether it names session ids, which mean nothing once those sessions are gone."""
        return self.eligible is not None or bool(self.exclude)

    def admits(self, session: Session[Any]) -> bool:
        return (
            session.id != self.excluded_publisher
            and (self.eligible is None or session.id in self.eligible)
            and session.id not in self.exclude
            and self.admits_identity(session)
        )

    def admits_identity(self, session: Session[Any]) -> bool:
        """The authid and authrole lists only."""
        return (
            (self.eligible_authid is None or session.authid in self.eligible_authid)
            and (self.eligible_authrole is None or session.authrole in self.eligible_authrole)
            and session.authid not in self.exclude_authid
            and session.authrole not in self.exclude_authrole
        )

    def select(self, subscription: Subscription[PeerT]) -> Sequence[Session[PeerT]]:
        """
        The subscribers of ``subscription`` that receive the publication. Without lists, that is
        one of the subscription's own tuples of recipients (all, or all but the publisher who
        excluded itself), shared with the other publications: do not change it.
        """
        if self.listed:
            return [s for s in subscription.subscribers if self.admits(s)]
        everyone = subscription.recipients()
        excluded = self.excluded_publisher
        if excluded is None or not subscription.has_subscriber(excluded):
            return everyone
        return subscription.recipients_but(excluded)


EVERYONE = Audience()
_NO_LISTS = (None,) * 6


def _whitelist(given: list[Any] | None) -> frozenset[Any] | None:
    return None if given is None else frozenset(given)


@dataclass(frozen=True, slots=True)
class Publisher:
    """A publisher's identity, as disclosed to subscribers (``disclose_me``)."""

    session: int
    authid: str | None
    authrole: str | None


@dataclass(slots=True)  # not frozen: a frozen dataclass is built slower, and this one is built per publication
class Publication:
    """One publication, as routed, retained and kept in history."""

    id: int
    topic: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    audience: Audience
    publisher: Publisher | None = None
    #: Its place in its topic's history; None when the topic keeps none.
    position: Position | None = None


class RoutedEvent(wamp.Event):
    """
    An EVENT as :func:`event` builds it: autobahn's, whose ``marshal`` gives the same list as
    autobahn's (the same details in the same order, so the same bytes in every wire format) for
    about a third of its cost. Autobahn's reads each of its dozen fields through a property that
    would decode it lazily from FlatBuffers; an EVENT built here comes from no FlatBuffers, so its
    fields are read directly, and only those :func:`event` sets.
    """

    __slots__ = ()

    def marshal(self) -> list[Any]:
        if (self._payload is not None or self._transaction_hash is not None or self._forward_for is not None
                or self._x_acknowledged_delivery is not None):
            return cast(list[Any], super().marshal())  # fields event() never sets: autobahn's way
        details: dict[str, Any] = {}
        if self._publisher is not None:
            details["publisher"] = self._publisher
        if self._publisher_authid is not None:
            details["publisher_authid"] = self._publisher_authid
        if self._publisher_authrole is not None:
            details["publisher_authrole"] = self._publisher_authrole
        if self._topic is not None:
            details["topic"] = self._topic
        if self._retained is not None:
            details["retained"] = self._retained
        if self._kwargs:
            return [EVENT, self._subscription, self._publication, details, self._args, self._kwargs]
        if self._args:
            return [EVENT, self._subscription, self._publication, details, self._args]
        return [EVENT, self._subscription, self._publication, details]


EVENT = wamp.Event.MESSAGE_TYPE


class PositionedEvent(RoutedEvent):
    """An EVENT whose details carry its publication's position (``_epoch``, ``_seq``): WAMP leaves ``_`` keys to routers."""

    __slots__ = ("position",)  # as autobahn's messages: no __dict__ per EVENT
    position: Position

    def marshal(self) -> list[Any]:
        raw: list[Any] = super().marshal()
        raw[3]["_epoch"], raw[3]["_seq"] = self.position
        return raw


def event(subscription: Subscription[Any], publication: Publication, retained: bool = False) -> wamp.Event:
    """The EVENT that delivers ``publication`` on ``subscription``."""
    publisher = publication.publisher
    disclosed = {} if publisher is None else {
        "publisher": publisher.session, "publisher_authid": publisher.authid, "publisher_authrole": publisher.authrole
    }
    position = publication.position
    message = (RoutedEvent if position is None else PositionedEvent)(
        subscription.id,
        publication.id,
        args=publication.args,
        kwargs=publication.kwargs,
        topic=None if subscription.match == EXACT else publication.topic,
        retained=retained or None,
        **disclosed,
    )
    if position is not None:
        cast(PositionedEvent, message).position = position
    return message


def _nothing(answer: Any) -> list[Action[Any]]:
    return []


#: Hand a publication routed here to the other nodes: ``forward(publication, retain)``. It must
#: copy what it needs before returning (the history keeps the object, and sets its position).
Forward = Callable[[Publication, bool], None]


class Broker(Generic[PeerT]):
    """
    The broker of one realm. ``next_id`` gives subscription ids, ``random_id`` publication ids,
    ``clock`` the time in seconds since the epoch. ``retain_ttl``: seconds a retained event is
    kept (None: until replaced). ``history_size``: events kept per topic for
    ``wamp.subscription.get_events`` (0: no history), unless ``history`` says which topics keep
    how many (it wins). ``authorizer``: who may receive which topics (None: everyone
    everything). ``new_epoch()``: a random epoch for a topic whose history begins.
    ``forward``: called with each publication from a client or the server after local routing
    (see "Beyond one process" above); None: nothing leaves this node. ``shared``: the store of
    retained events, history and positions that several nodes share, and ``realm`` this
    broker's realm there (None: this node keeps them in memory). ``published`` counts the
    publications from clients and the server that were routed (for metrics, read when asked).
    """

    def __init__(
        self,
        next_id: Callable[[], int],
        random_id: Callable[[], int],
        clock: Callable[[], float],
        retain_ttl: float | None = None,
        history_size: int = 0,
        authorizer: Authorizer | None = None,
        *,
        store_budget: StoreBudget | None = None,
        history: HistorySettings | None = None,
        new_epoch: Callable[[], str] = lambda: "",
        forward: Forward | None = None,
        shared: SharedStore | None = None,
        realm: str = "",
    ) -> None:
        self._random_id = random_id
        self.shared = shared
        self._realm = realm
        #: Publishers' publications to store: a few asked at once per publisher, the others wait, in order.
        self._storing: Turns[PeerT] = Turns()
        #: (session, subscription) whose retained events the shared store was asked for.
        self._asking_retained: set[tuple[Session[PeerT], Subscription[PeerT]]] = set()
        self._forward = forward
        self.published = 0
        self._clock = clock
        self._authorizer = authorizer
        self.subscriptions: SubscriptionTable[PeerT] = SubscriptionTable(next_id)
        limit = (store_budget.limits.max_bytes or None) if store_budget is not None else None

        def size(publication: Publication) -> int:
            return estimated_size((publication.args, publication.kwargs), limit)

        self.retained: EventStore[Publication] = EventStore(1, retain_ttl, clock, budget=store_budget, size=size)
        settings = history if history is not None else HistorySettings(size=history_size)
        self.max_resume_events = settings.max_resume_events
        topic_history = (
            TopicHistory(settings, clock, new_epoch=new_epoch, budget=store_budget, size=size)
            if settings.enabled else None
        )
        #: With a shared store, only its rules are used: which topics keep how much.
        self._rules: TopicHistory[Publication] | None = topic_history
        self.history: History[Publication] | None = topic_history

    # -- client requests -------------------------------------------------------------------------

    def subscribe(self, session: Session[PeerT], request: wamp.Subscribe) -> list[Action[PeerT]]:
        try:
            check_pattern(request.topic, request.match)
        except InvalidUriError:
            detail = f"invalid {request.match} pattern {request.topic!r}"
            return [error_reply(session, request.MESSAGE_TYPE, request.request, ApplicationError.INVALID_URI, detail)]
        subscription, created, added = self.subscriptions.subscribe(
            session, request.topic, request.match, self._clock()
        )
        actions: list[Action[PeerT]] = [Send(wamp.Subscribed(request.request, subscription.id), (session,))]
        if request.get_retained and self.shared is not None:
            # One question per (session, subscription) at a time: a SUBSCRIBE repeated before the
            # answer came gets the retained events with that answer, and queues nothing on Redis.
            if (session, subscription) not in self._asking_retained:
                self._asking_retained.add((session, subscription))
                ask = partial(self.shared.retained, self._realm, subscription.topic, subscription.match,
                              ttl=self.retained.ttl)
                actions.append(Ask(ask, partial(self._retained_to, session, subscription)))
        elif request.get_retained:
            for kept in self.retained.latest(subscription.topic, subscription.match):
                if kept.item.audience.admits(session) and self._may_receive(session, kept.item.topic):
                    actions.append(Send(event(subscription, kept.item, retained=True), (session,)))
        if added and not meta.is_reserved(subscription.topic) and self._meta_heard():
            details = meta.subscription_details(subscription)
            for topic, args in meta.SUBSCRIPTION_EVENTS.joined(session.id, details, created=created):
                actions += self.publish_meta(topic, *args)
        return actions

    def unsubscribe(self, session: Session[PeerT], request: wamp.Unsubscribe) -> list[Action[PeerT]]:
        subscription = self.subscriptions.get(request.subscription)
        if subscription is None or session not in subscription.subscribers:
            detail = f"no subscription {request.subscription} for this session"
            error = ApplicationError.NO_SUCH_SUBSCRIPTION
            return [error_reply(session, request.MESSAGE_TYPE, request.request, error, detail)]
        deleted = self.subscriptions.unsubscribe(session, subscription)
        actions: list[Action[PeerT]] = [Send(wamp.Unsubscribed(request.request), (session,))]
        return actions + self._unsubscribed(session.id, [(subscription, deleted)])

    def publish(
        self, publisher: Session[PeerT] | None, request: wamp.Publish, disclose_me: bool = False, *, plain: bool = False
    ) -> list[Action[PeerT]]:
        """
        A PUBLISH from ``publisher``, or from the router itself (None: Python code in the
        server); ``disclose_me``: tell subscribers who published it; ``plain``: its options are
        known to be at most ``acknowledge`` (see ``PublishRequest.plain``).
        """
        if publisher is not None and meta.is_reserved(request.topic):
            if not request.acknowledge:
                return []
            detail = f"topic {request.topic!r} is reserved for the router's meta events"
            return [error_reply(publisher, request.MESSAGE_TYPE, request.request, ApplicationError.INVALID_URI, detail)]
        disclosed = (
            Publisher(publisher.id, publisher.authid, publisher.authrole)
            if publisher is not None and disclose_me
            else None
        )
        publication = Publication(
            self._random_id(), request.topic, request.args, request.kwargs, Audience.of(request, publisher, plain=plain),
            disclosed,
        )
        if self.shared is not None:
            return self._publish_shared(self.shared, publisher, request, publication)
        if not plain and request.retain:
            self.retained.keep(publication.topic, publication)
        self.published += 1
        actions = self._route(publication)
        if self._forward is not None:
            self._forward(publication, bool(request.retain))
        if request.acknowledge and publisher is not None:
            actions.append(Send(wamp.Published(request.request, publication.id), (publisher,)))
        return actions

    def route_from_elsewhere(self, publication: Publication, retain: bool = False) -> list[Action[PeerT]]:
        """
        Route ``publication``, published on another node (its id, publisher and audience are the
        origin's), to this node's subscribers; ``retain``: keep it as its topic's retained event
        here too. It is not forwarded again.
        """
        publication.position = None  # the origin's position means nothing in this node's history
        if self.shared is not None:  # the shared store keeps it, and positions only come from there
            return self._send(publication)
        if retain:
            self.retained.keep(publication.topic, publication)
        return self._route(publication)

    def route_stored(self, publication: Publication, position: Position | None) -> list[Action[PeerT]]:
        """
        Route ``publication`` as the shared store handed it to every node (this one too, when it
        was published here), at ``position``: it is kept there already.
        """
        publication.position = position
        return self._send(publication)

    def _publish_shared(
        self, shared: SharedStore, publisher: Session[PeerT] | None, request: wamp.Publish, publication: Publication
    ) -> list[Action[PeerT]]:
        """``publish`` with a shared store (see "Beyond one process" above)."""
        ack: list[Action[PeerT]] = []
        if request.acknowledge and publisher is not None:
            ack.append(Send(wamp.Published(request.request, publication.id), (publisher,)))
        retain = bool(request.retain)
        keeping = self.keeping(publication.topic) if not publication.audience.names_sessions else None
        if keeping is None and not retain:
            actions = self._send(publication)
            if self._forward is not None:
                self._forward(publication, False)
            return actions + ack
        store = partial(shared.store, self._realm, publication, retain=retain, history=keeping)
        if keeping is None:  # retained, no history: no position to wait for
            return [*self._send(publication), *self._storing.ask(publisher, store, _nothing), *ack]

        def stored(done: bool) -> Sequence[Action[PeerT]]:
            # Stored: every node, this one too, routes it as the store hands it back.
            return ack if done else self._send(publication) + ack

        return self._storing.ask(publisher, store, stored)

    def keeping(self, topic: str) -> Keeping | None:
        """How ``topic`` keeps history; None: it keeps none."""
        return None if self._rules is None else self._rules.keeping(topic)

    def _retained_to(
        self, session: Session[PeerT], subscription: Subscription[PeerT], retained: list[Publication] | None
    ) -> list[Action[PeerT]]:
        """The retained events the shared store answered, to ``session`` if still subscribed."""
        self._asking_retained.discard((session, subscription))
        if session not in subscription.subscribers:
            return []
        return [
            Send(event(subscription, publication, retained=True), (session,))
            for publication in retained or ()
            if publication.audience.admits(session) and self._may_receive(session, publication.topic)
        ]

    def ask_since(self, topic: str, epoch: str, after: int) -> Callable[[], Any] | None:
        """The question for :meth:`since` to the shared store (answer: a ``Since`` or None); None: ``topic`` keeps no history."""
        keeping = self.keeping(topic)
        if self.shared is None or keeping is None:
            return None
        return partial(self.shared.since, self._realm, topic, epoch, after, limit=self.max_resume_events, ttl=keeping.ttl)

    def since_answered(self, answer: Since[Publication] | None, reader: Session[PeerT]) -> Since[Publication]:
        """The shared store's answer to :meth:`ask_since`, for ``reader`` (as :meth:`since`)."""
        if answer is None:  # the store could not say: never claim to have recovered
            return Since(False, "", 0, [])
        return self._for_reader(answer, reader)

    def ask_latest(self, subscription: Subscription[PeerT], limit: int) -> Callable[[], Any]:
        """The question for :meth:`history_of` to the shared store (answer: ``Kept`` list or None)."""
        assert self.shared is not None
        return partial(self.shared.latest, self._realm, subscription.topic, subscription.match, limit=limit)

    def latest_answered(self, answer: list[Kept[Publication]] | None, reader: Session[PeerT]) -> list[Kept[Publication]]:
        """The shared store's answer to :meth:`ask_latest`, for ``reader`` (as :meth:`history_of`), oldest first."""
        now = self._clock()
        kept = []
        for k in answer or ():
            keeping = self.keeping(k.item.topic)
            if keeping is None or (keeping.ttl is not None and k.time + keeping.ttl <= now):
                continue
            if k.item.audience.admits_identity(reader) and self._may_receive(reader, k.item.topic):
                kept.append(k)
        kept.sort(key=lambda k: (k.time, k.item.topic, k.seq))
        return kept

    # -- the router's own ------------------------------------------------------------------------

    def publish_meta(self, topic: str, *args: Any) -> list[Action[PeerT]]:
        """
        Publish a meta event (positional payload ``args``) as the router; nothing at all (no
        publication id drawn, no routing) when no subscription may match it and no history keeps it.
        """
        if not self.subscriptions.reaches_reserved and not self._keeps_meta(topic):
            return []
        return self.publish_local(topic, list(args), None, EVERYONE)

    def _meta_heard(self) -> bool:
        """Whether a meta event may be heard or kept at all: else its details need not be built."""
        return self.subscriptions.reaches_reserved or self._local_history is not None

    def _keeps_meta(self, topic: str) -> bool:
        history = self._local_history
        return history is not None and history.keeps(topic)

    @property
    def _local_history(self) -> History[Publication] | None:
        """The history that keeps what is published here: none with a shared store (it keeps them)."""
        return self.history if self.shared is None else None

    def publish_local(
        self, topic: str, args: list[Any] | None, kwargs: dict[str, Any] | None, audience: Audience
    ) -> list[Action[PeerT]]:
        """
        Publish as the router to ``audience`` among this node's subscribers only (never
        forwarded): what describes this node, as meta events and the admin stats do.
        """
        return self._route(Publication(self._random_id(), topic, args, kwargs, audience))

    def drop(self, session: Session[PeerT]) -> list[Action[PeerT]]:
        """``session`` left: remove it from every subscription, then tell the meta API subscribers."""
        return self._unsubscribed(session.id, self.subscriptions.drop(session))

    def history_of(self, subscription: Subscription[PeerT], reader: Session[PeerT]) -> list[Kept[Publication]]:
        """What the history keeps on the topics ``subscription`` matches that ``reader`` may see, oldest first."""
        assert self.history is not None, "history is off"
        kept = self.history.latest(subscription.topic, subscription.match)
        return [k for k in kept if k.item.audience.admits_identity(reader) and self._may_receive(reader, k.item.topic)]

    def since(self, topic: str, epoch: str, after: int, reader: Session[PeerT]) -> Since[Publication] | None:
        """
        What ``topic`` kept after position (``epoch``, ``after``) that ``reader`` may see (at
        most ``max_resume_events``); None if the topic keeps no history. The caller checks that
        ``reader`` may subscribe to ``topic``.
        """
        history = self.history
        if history is None or not history.keeps(topic):
            return None
        return self._for_reader(history.since(topic, epoch, after, self.max_resume_events), reader)

    def _for_reader(self, answer: Since[Publication], reader: Session[PeerT]) -> Since[Publication]:
        if answer.items and self._has_lists(answer.items):
            # Events a whitelist kept from the reader are not its to recover: left out, as live.
            kept = [k for k in answer.items if k.item.audience.admits_identity(reader)]
            return Since(answer.recovered, answer.epoch, answer.top, kept)
        return answer

    # -- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _has_lists(items: list[Kept[Publication]]) -> bool:
        return any(k.item.audience.listed for k in items)

    def _route(self, publication: Publication) -> list[Action[PeerT]]:
        """Keep ``publication`` in the history (its position) and send one EVENT per matching subscription."""
        history = self._local_history
        if history is not None and not publication.audience.names_sessions:
            publication.position = history.keep(publication.topic, publication)
        return self._send(publication)

    def _send(self, publication: Publication) -> list[Action[PeerT]]:
        """One EVENT per matching subscription, to the subscribers that may receive it."""
        actions: list[Action[PeerT]] = []
        authorizer = self._authorizer
        for subscription in self.subscriptions.matching(publication.topic):
            recipients = publication.audience.select(subscription)
            if authorizer is not None and recipients:
                denied = authorizer.denied(subscription.roles, publication.topic)
                if denied:
                    recipients = [s for s in recipients if s.authrole not in denied]
            if recipients:
                actions.append(Send(event(subscription, publication), recipients))
        return actions

    def _may_receive(self, session: Session[PeerT], topic: str) -> bool:
        return self._authorizer is None or self._authorizer.allows(session.authrole, SUBSCRIBE, topic)

    def _unsubscribed(
        self, session_id: int, removed: Iterable[tuple[Subscription[PeerT], bool]]
    ) -> list[Action[PeerT]]:
        """The meta events for ``session_id`` leaving these subscriptions (and deleting the emptied ones)."""
        actions: list[Action[PeerT]] = []
        if not self._meta_heard():
            return actions
        for subscription, deleted in removed:
            if meta.is_reserved(subscription.topic):
                continue
            for topic, args in meta.SUBSCRIPTION_EVENTS.left(session_id, subscription.id, deleted=deleted):
                actions += self.publish_meta(topic, *args)
        return actions
