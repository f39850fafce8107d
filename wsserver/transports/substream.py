"""
What ``/sse`` and ``/stream`` share: a subscription stream, one WAMP session that only listens.

Theory of operation
-------------------
A page with no WAMP library asks for events in the URL: ``?topic=URI`` (repeatable),
``&match=prefix|wildcard`` (for every topic; exact without it), ``&realm=NAME`` (the first realm
without it). :func:`parse_query` validates it the way the router validates a SUBSCRIBE (autobahn's
URI rules, :mod:`wsserver.core.decoding`), so a bad query is refused with 400 and the reason before
anything else happens.

Each stream is then one session of the router, driven by a :class:`StreamSession` as a small WAMP
client that talks to the router through :meth:`Router.receive`, so every check a WebSocket session
meets applies to it (the realm's permissions for its role, ``--max-subscriptions``)::

    anonymous / Basic authid:ticket   HELLO --> (CHALLENGE --> AUTHENTICATE) --> WELCOME --,
    Authorization: Bearer KEY         Router.join_internal (the key's realm and role) -----+
                                      SUBSCRIBE each topic --> SUBSCRIBED ... --> ready ---'

``ready`` (a Deferred) fires once every topic is SUBSCRIBED; only then does the transport start
the stream (SSE: status 200 and its headers; ``/stream``: the WebSocket handshake's 101). If
anything is refused on the way, ``ready`` fails with :class:`StreamRefused`: the status and the
router's reason (401 a failed login, 403 a role that may not subscribe, 404 no such realm), the
session is detached, and the client gets that status with the reason as text. Logins go through the
router (the ticket is checked by its authenticator, refusals come after its constant delay), so
they cost here what they cost on ``/ws``, wherever the router checks them.

After ``ready``, the router's EVENTs reach the transport as bytes: the transport is the
:class:`~wsserver.delivery.Peer`, and ``encode`` turns an EVENT into its wire's bytes once per wire
format (every SSE stream shares one, every ``/stream`` another), with :func:`event_json`. An EVENT
names its concrete topic only for a pattern subscription; for an exact one the topic is the
subscription's, which :meth:`StreamSession.topic_of` finds by subscription id (one dict lookup:
subscription ids are shared by every subscriber of the subscription, so the first recipient's
answer is everyone's). Everything else the router sends (WELCOME, SUBSCRIBED, ERROR, ABORT,
GOODBYE) is the conversation above and goes to :meth:`StreamSession.answer`.

Positions and resume
--------------------
A stream of exact topics has a position: the position (``epoch:seq``, see core/history.py) of
each of its topics, in the order of the query, ``-`` for one with nothing kept, joined by ``,``
(``Xq3v9a0bKcZt:17`` for one topic; ``Xq3v9a0bKcZt:17,-,Pz81mQ0aaVb2:4`` for three). Each event
of a topic with history carries the stream's position after it (SSE: ``id:``; ``/stream``:
``"id"``), and the stream begins with its position now, so a client that comes back with it
(SSE: the browser's ``Last-Event-ID``; both: ``&since=``) gets what it missed:
:meth:`StreamSession.resume` asks the broker for every topic's events since its position (the
session is subscribed first, and nothing reaches the client before the resume, so nothing falls
in between), merges them in publication order, and names the topics it could not recover (an
epoch of another life, evicted events, more than ``--max-resume-events``): the transport then
announces a reset for them. Topics without history are live only and never named. A prefix or
wildcard stream has no position (its topics are not known in advance): its position is ``-``,
and a resume of it is a reset.

With one topic, an event's id is its own position: the bytes of an event are still the same for
every stream. With several, the id is the stream's own, so each such stream encodes its events
itself (one JSON encoding per delivery instead of per publication).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autobahn.wamp import message as wamp
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wsserver.core.authentication import Identity
from wsserver.core.broker import Broker, Publication
from wsserver.core.eventstore import Kept, Position
from wsserver.core.decoding import InvalidRequest, ProtocolViolation, decode_one
from wsserver.core.router import CloseReason, Router
from wsserver.core.session import Session, TransportInfo
from wsserver.delivery import InThread, Peer, carry_out

log = Logger()

#: What a stream may be asked for in its URL.
QUERY_PARAMETERS = ("topic", "match", "realm", "since")
#: Topics one stream may name (each is a subscription; --max-subscriptions applies too).
MAX_TOPICS = 64
#: The HTTP status of the router's refusals on the way to a stream.
REFUSAL_STATUS = {
    ApplicationError.NOT_AUTHORIZED: 403,
    ApplicationError.AUTHENTICATION_FAILED: 401,
    ApplicationError.NO_AUTH_METHOD: 401,
    ApplicationError.NO_SUCH_REALM: 404,
    ApplicationError.INVALID_URI: 400,
    ApplicationError.INVALID_ARGUMENT: 400,
}


class StreamRefused(Exception):
    """A stream that does not start: answer ``status`` with ``reason`` (one line of text)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class StreamQuery:
    """A stream's URL, validated: the realm and one SUBSCRIBE per topic (request ids 1, 2, ...)."""

    realm: str
    subscribes: tuple[wamp.Subscribe, ...]
    #: The position to resume from (``&since=``), checked: as many as topics, each epoch:seq or -.
    since: str | None = None

    @property
    def topics(self) -> list[str]:
        return [subscribe.topic for subscribe in self.subscribes]


def parse_query(params: Mapping[str, Sequence[str]], default_realm: str) -> StreamQuery:
    """
    The stream asked for by ``params`` (name -> values, as a URL's query parses); raises
    :class:`StreamRefused` (400) with what is wrong: no topic, an invalid URI, an unknown match.
    """
    unknown = sorted(set(params) - set(QUERY_PARAMETERS))
    if unknown:
        raise StreamRefused(400, f"unknown query parameter {unknown[0]!r}: a stream takes {', '.join(QUERY_PARAMETERS)}")
    topics = list(params.get("topic", ()))
    if not topics:
        raise StreamRefused(400, "no topic: ask for ?topic=URI (repeatable), &match=prefix|wildcard")
    if len(topics) > MAX_TOPICS:
        raise StreamRefused(400, f"more than {MAX_TOPICS} topics")
    for name in ("match", "realm", "since"):
        if len(params.get(name, ())) > 1:
            raise StreamRefused(400, f"{name} given more than once")
    match = params.get("match", ["exact"])[0]
    realm = params.get("realm", [default_realm])[0]
    options = {} if match == "exact" else {"match": match}
    subscribes = []
    for request, topic in enumerate(topics, start=1):
        try:
            decoded = decode_one([wamp.Subscribe.MESSAGE_TYPE, request, options, topic])
        except ProtocolViolation as violation:
            raise StreamRefused(400, str(violation)) from None
        if isinstance(decoded, InvalidRequest):
            raise StreamRefused(400, decoded.reason)
        assert isinstance(decoded, wamp.Subscribe)
        subscribes.append(decoded)
    since = params.get("since", [None])[0]
    if since is not None:
        if match != "exact":
            raise StreamRefused(400, "since: a prefix or wildcard stream has no position to resume from")
        try:
            parse_positions(since, len(topics))
        except ValueError as error:
            raise StreamRefused(400, f"since: {error} (epoch:seq or - per topic, joined by commas)") from None
    return StreamQuery(realm, tuple(subscribes), since)


# -- credentials ----------------------------------------------------------------------------------

#: The seam for the HTTP API's bearer keys (``--config`` http-keys): the realm and the identity
#: a presented key stands for, or :class:`StreamRefused` (401).
BearerKeys = Callable[[str], tuple[str, Identity]]


def no_bearer_keys(presented: str) -> tuple[str, Identity]:
    """The bearer keys of a server that has none."""
    raise StreamRefused(401, "this server has no bearer keys (--config http-keys)")


@dataclass(frozen=True)
class Login:
    """How a stream logs in: anonymously (``authid`` None), with a ticket, or with a bearer key."""

    authid: str | None = None
    ticket: str | None = None
    bearer: str | None = None


ANONYMOUS = Login()


def login_from(authorization: str | None) -> Login:
    """
    The login an ``Authorization`` header asks for: ``Basic`` (authid:ticket, a WAMP ticket
    login), ``Bearer`` (a key), none (anonymous); raises :class:`StreamRefused` (401) for any other.
    """
    if not authorization:
        return ANONYMOUS
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer" and credentials:
        return Login(bearer=credentials)
    if scheme.lower() == "basic":
        try:
            authid, colon, ticket = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise StreamRefused(401, "Basic credentials must be base64 of authid:ticket") from None
        if colon and authid:
            return Login(authid=authid, ticket=ticket)
        raise StreamRefused(401, "Basic credentials must be base64 of authid:ticket")
    raise StreamRefused(401, "Authorization must be Basic (authid:ticket) or Bearer (a key)")


# -- the session ----------------------------------------------------------------------------------


def event_json(topic: str, args: Any, kwargs: Any, event_id: str | None = None) -> bytes:
    """
    One event as the JSON object the streams carry, ``{"topic", "args", "kwargs"}`` (and
    ``"id"``, the stream's position after it, when given), on one line (JSON escapes line
    breaks inside strings). Bytes in the payload are WAMP JSON's base64 strings.
    """
    if event_id is None:
        return _serialize({"topic": topic, "args": args or [], "kwargs": kwargs or {}})
    return _serialize({"topic": topic, "args": args or [], "kwargs": kwargs or {}, "id": event_id})


#: A topic's place in a stream's position when it has nothing kept.
NO_POSITION = "-"
#: The characters of an epoch (router.py draws URL-safe base64, or hex).
_EPOCH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def format_positions(positions: Sequence[Position | None]) -> str:
    """A stream's position, as its ids carry it (see the module docstring)."""
    return ",".join(NO_POSITION if p is None else f"{p.epoch}:{p.seq}" for p in positions)


def parse_positions(text: str, count: int) -> list[Position | None]:
    """The positions of a stream of ``count`` topics in ``text``; ValueError says what is wrong."""
    entries = text.strip().split(",")
    if len(entries) != count:
        raise ValueError(f"{len(entries)} positions for a stream of {count} topics")
    positions: list[Position | None] = []
    for entry in entries:
        if entry == NO_POSITION:
            positions.append(None)
            continue
        epoch, colon, seq = entry.rpartition(":")
        if not colon or not epoch or not set(epoch) <= _EPOCH or len(epoch) > 32:
            raise ValueError(f"{entry[:40]!r} is not epoch:seq")
        if not seq.isascii() or not seq.isdigit() or len(seq) > 16 or int(seq) > 2**53:
            raise ValueError(f"{entry[:40]!r}: the sequence number is not a non-negative integer")
        positions.append(Position(epoch, int(seq)))
    return positions


class Resumed:
    """
    What a stream missed: ``events`` (its topic's place in the stream, the kept publication) in
    publication order, each with the id :meth:`event_id` gives it as it leaves (in this order);
    ``reset``: the topics it could not recover, and ``reason`` why; ``id``: the stream's
    position after all of it. The ids are made as the events leave, not all at once: a stream of
    many topics would otherwise hold an id of every topic for every missed event.
    """

    def __init__(
        self, events: list[tuple[int, Kept[Publication]]], reset: list[str], reason: str, final: list[Position | None],
        *, topics: list[str], epochs: dict[int, str], own_ids: bool, start: list[Position | None],
    ) -> None:
        self.events = events
        self.reset = reset
        self.reason = reason
        self.id = format_positions(final)
        self.topics = topics
        self._epochs = epochs
        self._own_ids = own_ids
        self._positions = start

    def event_id(self, place: int, kept: Kept[Publication]) -> str:
        """The stream's id after missed event ``kept`` of topic ``place`` (call in the order of ``events``)."""
        position = self._positions[place] = Position(self._epochs[place], kept.seq)
        return format_positions(self._positions) if self._own_ids else f"{position.epoch}:{position.seq}"


def _nothing_missed(topics: list[str], reason: str, final: list[Position | None]) -> Resumed:
    return Resumed([], topics, reason, final, topics=topics, epochs={}, own_ids=False, start=final)


def _serialize(value: Any) -> bytes:
    try:
        # ASCII: a lone surrogate (JSON publishers can send one) has no UTF-8, but has an escape.
        return json.dumps(value, separators=(",", ":")).encode("ascii")
    except TypeError:  # bytes somewhere in the payload: WAMP's JSON way ("\0" + base64)
        from autobahn.wamp.serializer import JsonObjectSerializer

        serialized: bytes = JsonObjectSerializer().serialize(value)
        return serialized


class StreamSession:
    """
    The WAMP side of one stream (see the module docstring). ``peer`` is the transport (the
    router's Peer): its ``write_encoded`` must hand every message that is not event bytes to
    :meth:`answer`, and its ``close_transport`` close the stream. Call :meth:`start` once, then
    wait for ``ready``; call :meth:`end` when the connection is gone, however it went.
    """

    def __init__(
        self, peer: Peer, *, router: Router[Peer], clock: IReactorTime, query: StreamQuery, login: Login,
        bearer_keys: BearerKeys = no_bearer_keys, name: str, address: str | None = None,
        in_thread: InThread | None = None, transport: TransportInfo | None = None,
    ) -> None:
        """
        ``address``: the client's, as the Admission counted it (failed logins are limited per
        address); ``in_thread``: where a ticket login is checked (None: the reactor's thread pool);
        ``transport``: what the connection tells about itself (``wamp.session.get``, the admin page).
        """
        self.peer = peer
        self.address = address
        self.transport = transport
        self.in_thread = in_thread
        self.router = router
        self.clock = clock
        self.query = query
        self.login = login
        self.bearer_keys = bearer_keys
        self.name = name
        self.session: Session[Peer] | None = None
        #: Fires when every topic is subscribed; fails with StreamRefused.
        self.ready: defer.Deferred[None] = defer.Deferred()
        #: Subscription id -> topic, for EVENTs of exact subscriptions.
        self.topics: dict[int, str] = {}
        self._subscribed = 0
        exact = all(subscribe.match == "exact" for subscribe in query.subscribes)
        #: Topic -> its place in the stream's position (None: a pattern stream has no position).
        self.places: dict[str, int] | None = {topic: n for n, topic in enumerate(query.topics)} if exact else None
        #: The stream's position (see the module docstring).
        self.positions: list[Position | None] = [None] * len(query.subscribes)
        #: Whether each stream encodes its own events (its ids are its own: several exact topics).
        self.own_ids = exact and len(query.subscribes) > 1

    def start(self) -> defer.Deferred[None]:
        """Log in and subscribe; returns ``ready``."""
        session = self.session = self.router.attach(self.peer, self.address, self.transport)
        login = self.login
        try:
            if login.bearer is not None:
                realm, identity = self.bearer_keys(login.bearer)
                if realm != self.query.realm:
                    raise StreamRefused(403, f"this key is for realm {realm!r}, not {self.query.realm!r}")
                try:
                    self._carry_out(self.router.join_internal(session, realm, identity))
                except KeyError:
                    raise StreamRefused(404, f"no realm {realm!r} on this server") from None
                self._subscribe()
            else:
                details: dict[str, Any] = {"roles": {"subscriber": {}}}
                if login.authid is not None:
                    details.update(authmethods=["ticket"], authid=login.authid)
                hello = decode_one([wamp.Hello.MESSAGE_TYPE, self.query.realm, details])
                if isinstance(hello, InvalidRequest):
                    raise StreamRefused(400, f"realm: {hello.reason}")
                self._carry_out(self.router.receive(session, hello))
        except StreamRefused as refused:
            self._refuse(refused)
        return self.ready

    def topic_of(self, event: wamp.Event) -> str:
        """The concrete topic of ``event`` (sent to this stream's session)."""
        return event.topic or self.topics[event.subscription]

    # -- positions ---------------------------------------------------------------------------------

    def _broker(self) -> Broker[Peer] | None:
        session = self.session
        if session is None or session.realm is None:
            return None
        return self.router.realms[session.realm].broker

    def current_id(self) -> str | None:
        """The stream's position now (None: no topic of its realm keeps history), once subscribed."""
        broker = self._broker()
        if broker is None or broker.history is None:
            return None
        if self.places is None:
            return NO_POSITION
        history = broker.history
        self.positions = [history.position(topic) for topic in self.query.topics]
        return format_positions(self.positions)

    def event_id(self, event: wamp.Event) -> str | None:
        """The stream's position after ``event`` (None: it carries none); for :attr:`own_ids` streams, moves it."""
        position: Position | None = getattr(event, "position", None)
        if position is None or self.places is None:
            return None
        if not self.own_ids:
            return f"{position.epoch}:{position.seq}"
        self.positions[self.places[self.topic_of(event)]] = position
        return format_positions(self.positions)

    def resume(self, last_id: str) -> Resumed:
        """
        What the stream missed since its position ``last_id`` (as a client gives it back);
        call it once subscribed, before any event reaches the client.
        """
        topics = self.query.topics
        broker = self._broker()
        session = self.session
        if broker is None or session is None or broker.history is None:
            return _nothing_missed([], "", [])
        if self.places is None:
            return _nothing_missed(topics, "a prefix or wildcard stream has no position to resume from: reload", [None])
        try:
            given = parse_positions(last_id, len(topics))
        except ValueError as error:
            self.current_id()
            return _nothing_missed(topics, f"cannot resume from {last_id[:80]!r}: {error}", self.positions)
        missed: list[tuple[int, Kept[Publication]]] = []
        lost: list[int] = []
        start: list[Position | None] = []
        tops: dict[int, Position | None] = {}
        for place, (topic, position) in enumerate(zip(topics, given)):
            epoch, after = position if position is not None else ("", 0)
            answer = broker.since(topic, epoch, after, session)
            if answer is None:  # keeps no history: live only
                start.append(None)
                continue
            start.append(position)
            tops[place] = Position(answer.epoch, answer.top) if answer.epoch else None
            if answer.recovered:
                missed += [(place, kept) for kept in answer.items]
            else:
                lost.append(place)
        if len(missed) > broker.max_resume_events:
            # The whole replay is bounded too (a stream may name 64 topics): past it, all is reset.
            lost = sorted(set(lost) | {place for place, _ in missed})
            missed = []
        missed.sort(key=lambda entry: entry[1].sequence)
        final = [tops.get(place) for place in range(len(topics))]
        self.positions = final
        epochs = {place: top.epoch for place, top in tops.items() if top is not None}
        reason = "" if not lost else "events of these topics were lost (another epoch, evicted, or more than --max-resume-events): reload"
        return Resumed(missed, [topics[place] for place in lost], reason, final,
                       topics=topics, epochs=epochs, own_ids=self.own_ids, start=start)

    def answer(self, message: Any) -> None:
        """The router's answer to what this session sent (see the module docstring)."""
        kind = type(message)
        if issubclass(kind, wamp.Welcome):
            self._subscribe()
        elif kind is wamp.Challenge:
            if message.method == "ticket" and self.login.ticket is not None and self.session is not None:
                self._carry_out(self.router.receive(self.session, wamp.Authenticate(self.login.ticket)))
            else:
                self._refuse(StreamRefused(401, f"the realm asks for a {message.method} login, which a stream cannot answer"))
        elif kind is wamp.Subscribed:
            self.topics[message.subscription] = self.query.subscribes[message.request - 1].topic
            self._subscribed += 1
            if self._subscribed == len(self.query.subscribes) and not self.ready.called:
                self.ready.callback(None)
        elif kind is wamp.Error:
            status = REFUSAL_STATUS.get(message.error, 403)
            self._refuse(StreamRefused(status, _reason(message.error, message.args)))
        elif kind is wamp.Abort:
            # A refused login: not_authorized is "authentication failed" here (401), unlike on SUBSCRIBE.
            status = 404 if message.reason == ApplicationError.NO_SUCH_REALM else 401
            self._refuse(StreamRefused(status, f"{message.reason}: {message.message or ''}".rstrip(": ")))
        elif kind is wamp.Goodbye:
            # The router ends the session (shutdown, wamp.session.kill): the stream ends with it.
            self.end()
            self.peer.close_transport(CloseReason.GOING_AWAY, message.reason)

    def end(self) -> None:
        """The stream is over: the session leaves its realm (idempotent)."""
        session, self.session = self.session, None
        if session is not None:
            self._carry_out(self.router.detach(session))

    def _subscribe(self) -> None:
        session = self.session
        for subscribe in self.query.subscribes:
            if session is None or self.ready.called:
                return  # refused on the way
            self._carry_out(self.router.receive(session, subscribe))

    def _refuse(self, refused: StreamRefused) -> None:
        self.end()
        if not self.ready.called:
            log.info("refused stream for {peer}: {status} {reason}", peer=self.name, status=refused.status,
                     reason=refused.reason)
            self.ready.errback(refused)

    def _carry_out(self, actions: Any) -> None:
        carry_out(actions, self.clock.callLater, self.in_thread)


def _reason(error: str, args: Sequence[Any] | None) -> str:
    return f"{error}: {args[0]}" if args else error
