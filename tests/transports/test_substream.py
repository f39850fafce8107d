"""
The subscription stream shared by /sse and /stream: its query, its logins, its JSON, and its WAMP
session driven through a real router (permissions, ticket logins, bearer keys), with a task.Clock.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
from typing import Any

import pytest
from autobahn.wamp import message as wamp
from twisted.internet import defer
from twisted.internet.task import Clock

from wsserver.core.authentication import Identity, hash_ticket
from wsserver.core.logins import LoginLimits
from wsserver.core.policy import Permission, Principal, RealmPolicy
from wsserver.core.router import REFUSAL_DELAY, CloseReason, Router
from wsserver.delivery import carry_out
from wsserver.transports.substream import (
    ANONYMOUS,
    Login,
    StreamQuery,
    StreamRefused,
    StreamSession,
    event_json,
    login_from,
    parse_query,
)

# -- the query ------------------------------------------------------------------------------------


def test_a_query_names_topics_match_and_realm() -> None:
    query = parse_query({"topic": ["com.example.a", "com.example.b"]}, "realm1")
    assert query.realm == "realm1" and query.topics == ["com.example.a", "com.example.b"]
    assert [(s.request, s.match) for s in query.subscribes] == [(1, "exact"), (2, "exact")]
    query = parse_query({"topic": ["com.example."], "match": ["prefix"], "realm": ["other"]}, "realm1")
    assert (query.realm, query.subscribes[0].match) == ("other", "prefix")
    assert parse_query({"topic": ["com..ticker"], "match": ["wildcard"]}, "r").subscribes[0].match == "wildcard"
    assert parse_query({"topic": ["com..x"]}, "r").topics == ["com..x"]  # the router refuses it (below)


@pytest.mark.parametrize("params, reason", [
    ({}, "no topic"),
    ({"topic": ["com x"]}, 'invalid value "com x" for URI'),
    ({"topic": ["com.x#"], "match": ["prefix"]}, "invalid value"),
    ({"topic": ["com.x"], "match": ["regex"]}, "invalid value regex for 'match'"),
    ({"topic": ["com.x"], "match": ["prefix", "wildcard"]}, "match given more than once"),
    ({"topic": ["com.x"], "realm": ["a", "b"]}, "realm given more than once"),
    ({"topic": ["com.x"], "since": ["1"]}, "since: '1' is not epoch:seq"),
    ({"topic": ["com.x"], "since": ["E:1,E:2"]}, "since: 2 positions for a stream of 1 topics"),
    ({"topic": ["com.x"], "since": ["E:-1"]}, "not a non-negative integer"),
    ({"topic": ["com.x"], "since": ["E:1", "E:2"]}, "since given more than once"),
    ({"topic": ["com."], "match": ["prefix"], "since": ["-"]}, "no position to resume from"),
    ({"topic": ["com.x"], "unsince": ["1"]}, "unknown query parameter 'unsince'"),
    ({"topic": [f"t{n}" for n in range(65)]}, "more than 64 topics"),
])
def test_a_bad_query_is_refused_with_400_and_the_reason(params: dict[str, list[str]], reason: str) -> None:
    with pytest.raises(StreamRefused) as refused:
        parse_query(params, "realm1")
    assert refused.value.status == 400 and reason in refused.value.reason


# -- credentials ----------------------------------------------------------------------------------


def basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def test_logins_from_the_authorization_header() -> None:
    assert login_from(None) == ANONYMOUS
    assert login_from(basic("alice:s3cret:with colon")) == Login(authid="alice", ticket="s3cret:with colon")
    assert login_from("Bearer abc.def") == Login(bearer="abc.def")


@pytest.mark.parametrize("header", ["Digest x", basic("no-colon"), basic(":no-authid"), "Basic !!!", "Bearer "])
def test_other_authorization_is_refused_with_401(header: str) -> None:
    with pytest.raises(StreamRefused) as refused:
        login_from(header)
    assert refused.value.status == 401


# -- the JSON of an event -------------------------------------------------------------------------


def test_an_event_is_one_line_of_json_with_topic_args_kwargs() -> None:
    data = event_json("com.example.x", ["line\nbreak", "\u2028", "\ud800"], {"k": None})
    assert b"\n" not in data and b"\r" not in data
    assert json.loads(data) == {"topic": "com.example.x", "args": ["line\nbreak", "\u2028", "\ud800"], "kwargs": {"k": None}}
    assert json.loads(event_json("t", None, None)) == {"topic": "t", "args": [], "kwargs": {}}


def test_bytes_in_an_event_are_wamp_json_base64_strings() -> None:
    assert json.loads(event_json("t", [b"\x00\x01"], None))["args"] == ["\x00" + base64.b64encode(b"\x00\x01").decode()]


# -- the session, through a router ----------------------------------------------------------------


class Recorder:
    """The transport's side of a StreamSession, as sse.py and stream.py play it: encode, answer, close."""

    wire_format = ("recorder",)

    def __init__(self) -> None:
        self.stream: StreamSession | None = None
        self.events: list[bytes] = []
        self.closed: list[CloseReason] = []

    def encode(self, message: wamp.Message) -> Any:
        if isinstance(message, wamp.Event) and self.stream is not None:
            return event_json(self.stream.topic_of(message), message.args, message.kwargs)
        return message

    def write_encoded(self, data: Any) -> None:
        if type(data) is bytes:
            self.events.append(data)
        elif self.stream is not None:
            self.stream.answer(data)

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        self.closed.append(reason)


PUBLIC = RealmPolicy(
    "realm1",
    {
        "public": (Permission("com.example.", "prefix", frozenset({"subscribe"})),
                   Permission("com.example.internal.", "prefix", frozenset())),
        "member": (Permission("", "prefix", frozenset({"subscribe"})),),
    },
    anonymous_role="public",
    principals={"alice": Principal("alice", "member", ticket=hash_ticket("alice-ticket", "a1b2", iterations=1000))},
)


def make_router(*realms: Any) -> Router[Any]:
    return Router(realms or (PUBLIC,), itertools.count(1).__next__, random_bytes=os.urandom)


def open_stream(router: Router[Any], query: StreamQuery, login: Login = ANONYMOUS, clock: Clock | None = None,
                **options: Any) -> tuple[Recorder, list[Any]]:
    """A stream on ``router``; returns its peer and [None] once ready, or [StreamRefused]."""
    peer = Recorder()
    # A ticket is checked at once, not on the reactor's thread pool (which a Clock never runs).
    peer.stream = StreamSession(peer, router=router, clock=clock or Clock(), query=query, login=login, name="test",
                                in_thread=lambda work: defer.succeed(work()), **options)
    outcome: list[Any] = []
    peer.stream.start().addCallbacks(outcome.append, lambda failure: outcome.append(failure.value))
    return peer, outcome


def test_an_anonymous_stream_subscribes_in_the_anonymous_role_and_receives_events() -> None:
    router = make_router()
    peer, outcome = open_stream(router, parse_query({"topic": ["com.example."], "match": ["prefix"]}, "realm1"))
    assert outcome == [None]
    assert peer.stream is not None and peer.stream.session is not None
    assert peer.stream.session.authrole == "public"
    carry_out(router.publish("realm1", "com.example.a.b", [1], {"k": 2}))
    carry_out(router.publish("realm1", "com.example.internal.secret", [0]))  # the role's permissions apply per event
    assert [json.loads(e) for e in peer.events] == [{"topic": "com.example.a.b", "args": [1], "kwargs": {"k": 2}}]


def test_the_concrete_topic_of_an_exact_subscription_comes_from_its_id() -> None:
    router = make_router()
    peer, _ = open_stream(router, parse_query({"topic": ["com.example.a", "com.example.b"]}, "realm1"))
    carry_out(router.publish("realm1", "com.example.b", ["b"]))
    carry_out(router.publish("realm1", "com.example.a", ["a"]))
    assert [json.loads(e)["topic"] for e in peer.events] == ["com.example.b", "com.example.a"]


def test_a_topic_the_role_may_not_subscribe_is_refused_with_403_and_leaves_no_session() -> None:
    router = make_router()
    peer, outcome = open_stream(router, parse_query({"topic": ["com.example.ok", "org.other"]}, "realm1"))
    (refused,) = outcome
    assert isinstance(refused, StreamRefused) and refused.status == 403
    assert "wamp.error.not_authorized" in refused.reason and "org.other" in refused.reason
    assert router.realms["realm1"].sessions == {}
    assert router.realms["realm1"].subscriptions.lookup("com.example.ok", "exact") is None


def test_an_invalid_pattern_is_refused_by_the_router_with_400() -> None:
    _, outcome = open_stream(make_router(), parse_query({"topic": ["com.example..x"]}, "realm1"))
    assert isinstance(outcome[0], StreamRefused) and outcome[0].status == 400
    assert outcome[0].reason == "wamp.error.invalid_uri: invalid exact pattern 'com.example..x'"


def test_an_unknown_realm_is_404_and_a_realm_without_anonymous_role_401() -> None:
    router = make_router(PUBLIC, RealmPolicy("closed", {"member": ()}, principals=PUBLIC.principals))
    _, outcome = open_stream(router, parse_query({"topic": ["com.x"], "realm": ["nowhere"]}, "realm1"))
    assert isinstance(outcome[0], StreamRefused) and outcome[0].status == 404
    clock = Clock()
    _, outcome = open_stream(router, parse_query({"topic": ["com.x"], "realm": ["closed"]}, "realm1"), clock=clock)
    clock.advance(REFUSAL_DELAY)
    assert isinstance(outcome[0], StreamRefused) and outcome[0].status == 401 and "no_auth_method" in outcome[0].reason


def test_basic_credentials_log_in_with_the_ticket_through_the_router() -> None:
    router = make_router()
    query = parse_query({"topic": ["org.other"]}, "realm1")
    peer, outcome = open_stream(router, query, login_from(basic("alice:alice-ticket")))
    assert outcome == [None]
    assert peer.stream is not None and peer.stream.session is not None
    assert (peer.stream.session.authid, peer.stream.session.authrole) == ("alice", "member")


def test_a_wrong_ticket_is_refused_with_401_after_the_routers_delay() -> None:
    router, clock = make_router(), Clock()
    _, outcome = open_stream(router, parse_query({"topic": ["com.example.a"]}, "realm1"),
                             login_from(basic("alice:wrong")), clock=clock)
    assert outcome == []  # the router answers every failed login after the same delay
    clock.advance(REFUSAL_DELAY)
    assert isinstance(outcome[0], StreamRefused) and outcome[0].status == 401
    assert router.realms["realm1"].sessions == {}


def test_failed_stream_logins_count_against_the_client_address() -> None:
    router = Router((PUBLIC,), itertools.count(1).__next__, random_bytes=os.urandom,
                    login_limits=LoginLimits(per_address=1, per_authid=0))
    query = parse_query({"topic": ["org.other"]}, "realm1")

    def log_in(credentials: str, address: str) -> Any:
        clock = Clock()
        _, outcome = open_stream(router, query, login_from(basic(credentials)), clock=clock, address=address)
        clock.advance(REFUSAL_DELAY)
        return outcome[0]

    assert isinstance(log_in("alice:wrong", "10.0.0.9"), StreamRefused)
    # That address has spent its failures: even the right ticket is refused there, unchecked.
    assert isinstance(log_in("alice:alice-ticket", "10.0.0.9"), StreamRefused)
    assert log_in("alice:alice-ticket", "10.0.0.10") is None


def test_a_bearer_key_joins_the_keys_realm_in_its_role() -> None:
    router = make_router()

    def keys(presented: str) -> tuple[str, Identity]:
        if presented != "k1":
            raise StreamRefused(401, "no such key")
        return "realm1", Identity("backend", "member", "http-api")

    query = parse_query({"topic": ["org.other"]}, "realm1")
    peer, outcome = open_stream(router, query, Login(bearer="k1"), bearer_keys=keys)
    assert outcome == [None]
    assert peer.stream is not None and peer.stream.session is not None
    assert peer.stream.session.authrole == "member"
    _, outcome = open_stream(router, query, Login(bearer="k2"), bearer_keys=keys)
    assert isinstance(outcome[0], StreamRefused) and outcome[0].status == 401
    _, outcome = open_stream(router, query, Login(bearer="k1"))  # a server without keys
    assert isinstance(outcome[0], StreamRefused) and outcome[0].status == 401


def test_the_routers_goodbye_ends_the_stream_and_its_session() -> None:
    router = make_router()
    peer, _ = open_stream(router, parse_query({"topic": ["com.example.a"]}, "realm1"))
    assert peer.stream is not None and peer.stream.session is not None
    carry_out(router.goodbye(peer.stream.session))
    assert peer.closed == [CloseReason.GOING_AWAY]
    assert peer.stream.session is None and router.realms["realm1"].sessions == {}
