"""
The broker's Advanced Profile features, driven through the router with raw WAMP lists: pattern
subscriptions, black- and whitelisting, publisher exclusion and identification, retained events,
event history and the subscription meta events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from autobahn.wamp import message as wamp

from tests.core.harness import Harness, outbox, wire
from wsserver.core.router import BROKER_FEATURES
from wsserver.core.session import State

EVENT, SUBSCRIBED, PUBLISHED, ERROR, RESULT = 36, 33, 17, 8, 50


@pytest.fixture
def h() -> Harness:
    return Harness()


def events(received: dict[str, list[Any]], name: str) -> list[list[Any]]:
    """The EVENTs ``name`` received, as wire lists."""
    return [m for m in received.get(name, []) if m[0] == EVENT]


# -- pattern-based subscriptions --------------------------------------------------------------


def test_prefix_and_wildcard_events_carry_the_concrete_topic_exact_ones_do_not(h: Harness) -> None:
    h.join("a"), h.join("p")
    exact = h.subscribe("a", "com.app.sensor.1")
    prefix = h.subscribe("a", "com.app.", match="prefix")
    wildcard = h.subscribe("a", "com..sensor.", match="wildcard")
    received = wire(h.send("p", [16, 1, {}, "com.app.sensor.1", ["v"]]))
    by_subscription = {e[1]: e for e in events(received, "a")}
    assert set(by_subscription) == {exact, prefix, wildcard}, "one EVENT per matching subscription"
    assert by_subscription[exact][3] == {}
    assert by_subscription[prefix][3] == {"topic": "com.app.sensor.1"}
    assert by_subscription[wildcard][3] == {"topic": "com.app.sensor.1"}
    assert len({e[2] for e in by_subscription.values()}) == 1, "the same publication id on each"


def test_subscribers_of_one_pattern_share_one_event_message(h: Harness) -> None:
    h.join("a"), h.join("b"), h.join("p")
    assert h.subscribe("a", "com.", match="prefix") == h.subscribe("b", "com.", match="prefix")
    (send,) = h.send("p", [16, 1, {}, "com.x"])
    assert isinstance(send.message, wamp.Event)
    assert sorted(s.peer for s in send.recipients) == ["a", "b"]


def test_one_subscription_per_pattern_and_policy(h: Harness) -> None:
    h.join("a")
    ids = {h.subscribe("a", "com.x", match=policy) for policy in ("exact", "prefix", "wildcard")}
    assert len(ids) == 3
    assert h.subscribe("a", "com.x", match="prefix") in ids


def test_unsubscribing_a_pattern_removes_it_from_routing(h: Harness) -> None:
    h.join("a"), h.join("p")
    sub = h.subscribe("a", "com..x", match="wildcard")
    assert events(wire(h.send("p", [16, 1, {}, "com.y.x"])), "a")
    h.send("a", [34, 2, sub])
    assert h.send("p", [16, 3, {}, "com.y.x"]) == []
    assert len(h.router.realms["realm1"].subscriptions) == 0


@pytest.mark.parametrize(
    "match, pattern",
    [("exact", "com..x"), ("exact", "com.x."), ("prefix", "com..x"), ("wildcard", "com.x y")],
)
def test_a_pattern_invalid_for_its_policy_is_invalid_uri_and_the_session_stays_open(
    h: Harness, match: str, pattern: str
) -> None:
    h.join("a")
    (error,) = wire(h.send("a", [32, 7, {"match": match}, pattern]))["a"]
    assert error[:5] == [ERROR, 32, 7, {}, "wamp.error.invalid_uri"]
    assert h.sessions["a"].state is State.OPEN
    assert h.subscribe("a", "com.ok", request=8)


def test_an_unknown_match_policy_is_invalid_argument_and_the_session_stays_open(h: Harness) -> None:
    h.join("a")
    (error,) = wire(h.send("a", [32, 7, {"match": "regex"}, "com.x"]))["a"]
    assert error[:5] == [ERROR, 32, 7, {}, "wamp.error.invalid_argument"]
    assert h.subscribe("a", "com.ok", request=8)


# -- subscriber black- and whitelisting, publisher exclusion -----------------------------------

Ids = dict[str, int]
AUDIENCE_CASES: list[tuple[str, Callable[[Ids, Callable[[str], str]], dict[str, Any]], set[str]]] = [
    ("nothing", lambda ids, authid: {}, {"a", "b", "c"}),
    ("exclude", lambda ids, authid: {"exclude": [ids["a"]]}, {"b", "c"}),
    ("eligible", lambda ids, authid: {"eligible": [ids["a"], ids["b"]]}, {"a", "b"}),
    ("eligible narrows, exclude removes", lambda ids, authid: {"eligible": [ids["a"], ids["b"]], "exclude": [ids["b"]]}, {"a"}),
    ("eligible_authid", lambda ids, authid: {"eligible_authid": [authid("c")]}, {"c"}),
    ("exclude_authid", lambda ids, authid: {"exclude_authid": [authid("c")]}, {"a", "b"}),
    ("eligible with exclude_authid", lambda ids, authid: {"eligible": [ids["b"], ids["c"]], "exclude_authid": [authid("c")]}, {"b"}),
    ("eligible_authrole", lambda ids, authid: {"eligible_authrole": ["anonymous"]}, {"a", "b", "c"}),
    ("eligible_authrole nobody has", lambda ids, authid: {"eligible_authrole": ["admin"]}, set()),
    ("exclude_authrole", lambda ids, authid: {"exclude_authrole": ["anonymous"]}, set()),
    ("empty eligible", lambda ids, authid: {"eligible": []}, set()),
    ("eligible publisher, excluded as publisher", lambda ids, authid: {"eligible": [ids["p"]]}, set()),
    ("eligible publisher, exclude_me false", lambda ids, authid: {"eligible": [ids["p"]], "exclude_me": False}, {"p"}),
    ("exclude_me false", lambda ids, authid: {"exclude_me": False}, {"a", "b", "c", "p"}),
]


@pytest.mark.parametrize("match", ["exact", "prefix"])
@pytest.mark.parametrize("case", AUDIENCE_CASES, ids=[case[0] for case in AUDIENCE_CASES])
def test_who_receives_a_publication(h: Harness, case: Any, match: str) -> None:
    _, options, expected = case
    for name in "abcp":
        h.join(name)
        h.subscribe(name, "com.t" if match == "exact" else "com.", match=match)
    ids = {name: s.id for name, s in h.sessions.items()}
    authid: Callable[[str], str] = lambda name: str(h.sessions[name].authid)
    received = outbox(h.send("p", [16, 1, options(ids, authid), "com.t", ["x"]]))
    assert set(received) == expected


def test_the_recipients_follow_subscribers_joining_and_leaving_between_publications(h: Harness) -> None:
    # Publications share one tuple of recipients per subscription: each change must rebuild it.
    for name in "abp":
        h.join(name)
    sub = h.subscribe("a", "com.t")
    assert set(outbox(h.send("p", [16, 1, {}, "com.t"]))) == {"a"}
    h.subscribe("b", "com.t")
    assert set(outbox(h.send("p", [16, 2, {}, "com.t"]))) == {"a", "b"}
    h.subscribe("p", "com.t")
    assert set(outbox(h.send("p", [16, 3, {}, "com.t"]))) == {"a", "b"}, "the publisher, now a subscriber, is excluded"
    assert set(outbox(h.send("p", [16, 4, {"exclude_me": False}, "com.t"]))) == {"a", "b", "p"}
    h.send("a", [34, 5, sub])
    assert set(outbox(h.send("p", [16, 6, {}, "com.t"]))) == {"b"}
    h.router.detach(h.sessions["b"])  # gone: dropped from every subscription
    assert set(outbox(h.send("p", [16, 8, {"exclude_me": False}, "com.t"]))) == {"p"}


def test_subscribers_publishing_in_turn_are_each_left_out_of_their_own_events(h: Harness) -> None:
    # The recipients but the last publisher are kept: another publisher, or a change, must rebuild them.
    for name in "abc":
        h.join(name)
        h.subscribe(name, "com.t")
    for request, publisher in enumerate("aabab", start=1):
        assert set(outbox(h.send(publisher, [16, request, {}, "com.t"]))) == set("abc") - {publisher}
    h.join("d")
    h.subscribe("d", "com.t")
    assert set(outbox(h.send("b", [16, 9, {}, "com.t"]))) == {"a", "c", "d"}, "a new subscriber, after the same publisher"
    h.router.detach(h.sessions["c"])
    assert set(outbox(h.send("b", [16, 10, {}, "com.t"]))) == {"a", "d"}


def test_exclude_me_with_disclose_me(h: Harness) -> None:
    a, p = h.join("a"), h.join("p")
    h.subscribe("a", "com.t"), h.subscribe("p", "com.t")
    received = wire(h.send("p", [16, 1, {"disclose_me": True}, "com.t"]))
    assert list(received) == ["a"]
    assert received["a"][0][3] == {"publisher": p.id, "publisher_authid": p.authid, "publisher_authrole": "anonymous"}
    received = wire(h.send("p", [16, 2, {"disclose_me": True, "exclude_me": False}, "com.t"]))
    assert received["p"][0][3]["publisher"] == p.id and received["a"][0][3]["publisher"] == p.id
    received = wire(h.send("p", [16, 3, {"exclude_me": False}, "com.t"]))
    assert received["p"][0][3] == {} and received["a"][0][3] == {}, "no disclosure unless asked"
    assert a.state is State.OPEN


def test_disclose_me_that_is_not_a_bool_is_a_protocol_violation(h: Harness) -> None:
    h.join("p")
    abort, _ = wire(h.send("p", [16, 1, {"disclose_me": "yes"}, "com.t"]))["p"]
    assert abort[0] == 3 and "disclose_me" in abort[1]["message"]


def test_clients_may_not_publish_to_the_routers_meta_topics(h: Harness) -> None:
    h.join("a"), h.join("p")
    h.subscribe("a", "wamp.session.on_join")
    (error,) = wire(h.send("p", [16, 1, {"acknowledge": True}, "wamp.session.on_join", [{"session": 1}]]))["p"]
    assert error[:5] == [ERROR, 16, 1, {}, "wamp.error.invalid_uri"]
    assert h.send("p", [16, 2, {}, "wamp.session.on_join", [{}]]) == []


# -- retained events ------------------------------------------------------------------------


def test_a_retained_event_is_delivered_to_a_late_subscriber_that_asks(h: Harness) -> None:
    h.join("p"), h.join("late"), h.join("other")
    h.send("p", [16, 1, {"retain": True}, "com.status", ["old"]])
    h.send("p", [16, 2, {"retain": True}, "com.status", ["current"], {"k": 1}])
    h.send("p", [16, 3, {}, "com.status", ["not retained"]])
    subscribed, retained = wire(h.send("late", [32, 4, {"get_retained": True}, "com.status"]))["late"]
    assert subscribed[0] == SUBSCRIBED
    assert retained[:4] == [EVENT, subscribed[2], retained[2], {"retained": True}]
    assert retained[4:] == [["current"], {"k": 1}]
    (only_subscribed,) = wire(h.send("other", [32, 5, {}, "com.status"]))["other"]
    assert only_subscribed[0] == SUBSCRIBED


def test_retained_events_of_every_topic_a_pattern_matches(h: Harness) -> None:
    h.join("p"), h.join("a"), h.join("b")
    for n, topic in enumerate(["com.room.1.temp", "com.room.2.temp", "com.room.2.humidity", "org.room.1.temp"]):
        h.send("p", [16, n + 1, {"retain": True}, topic, [n]])
    _, *retained = wire(h.send("a", [32, 9, {"match": "prefix", "get_retained": True}, "com.room."]))["a"]
    assert [(e[3], e[4]) for e in retained] == [
        ({"topic": "com.room.1.temp", "retained": True}, [0]),
        ({"topic": "com.room.2.temp", "retained": True}, [1]),
        ({"topic": "com.room.2.humidity", "retained": True}, [2]),
    ]
    _, *retained = wire(h.send("b", [32, 9, {"match": "wildcard", "get_retained": True}, ".room..temp"]))["b"]
    assert [e[3]["topic"] for e in retained] == ["com.room.1.temp", "com.room.2.temp", "org.room.1.temp"]


def test_a_retained_event_goes_only_to_whom_it_would_have_gone(h: Harness) -> None:
    h.join("p"), h.join("late")
    h.send("p", [16, 1, {"retain": True, "eligible": [h.sessions["p"].id]}, "com.private", ["secret"]])
    assert len(outbox(h.send("late", [32, 2, {"get_retained": True}, "com.private"]))["late"]) == 1
    h.send("p", [16, 3, {"retain": True}, "com.mine", ["excluded as publisher"]])
    assert len(outbox(h.send("p", [32, 4, {"get_retained": True}, "com.mine"]))["p"]) == 1
    h.send("p", [16, 5, {"retain": True, "exclude_me": False}, "com.mine", ["included"]])
    assert len(outbox(h.send("p", [32, 6, {"get_retained": True}, "com.mine"]))["p"]) == 2


def test_retained_events_expire_after_the_ttl() -> None:
    h = Harness(retain_ttl=60.0)
    h.join("p"), h.join("a"), h.join("b")
    h.send("p", [16, 1, {"retain": True}, "com.status", ["x"]])
    h.clock.now += 59
    assert len(outbox(h.send("a", [32, 2, {"get_retained": True}, "com.status"]))["a"]) == 2
    h.clock.now += 1
    assert len(outbox(h.send("b", [32, 3, {"get_retained": True}, "com.status"]))["b"]) == 1
    assert len(h.router.realms["realm1"].broker.retained) == 0


def test_python_code_in_the_server_can_retain(h: Harness) -> None:
    h.join("a")
    h.router.publish("realm1", "com.status", ["ok"], retain=True)
    _, retained = wire(h.send("a", [32, 1, {"get_retained": True}, "com.status"]))["a"]
    assert retained[3] == {"retained": True} and retained[4] == ["ok"]


# -- event history --------------------------------------------------------------------------


def test_without_history_get_events_does_not_exist_and_is_not_announced(h: Harness) -> None:
    h.join("a")
    sub = h.subscribe("a", "com.t")
    assert h.call("a", "wamp.subscription.get_events", sub)[4] == "wamp.error.no_such_procedure"
    assert "event_history" not in BROKER_FEATURES


@pytest.fixture
def hh() -> Harness:
    """A router that keeps the last 3 events of every topic."""
    return Harness(history_size=3)


def test_history_of_an_exact_subscription_is_the_topics_last_events(hh: Harness) -> None:
    hh.join("a"), hh.join("p")
    for n in range(5):
        hh.clock.now += 1
        hh.send("p", [16, n + 1, {}, "com.t", [n], {"n": n}])
    sub = hh.subscribe("a", "com.t")
    history = hh.result("a", "wamp.subscription.get_events", sub)
    assert [e["args"] for e in history] == [[2], [3], [4]]
    first = history[0]
    assert first["subscription"] == sub and first["topic"] == "com.t" and first["kwargs"] == {"n": 2}
    assert set(first["details"]) == {"_epoch", "_seq"} and first["details"]["_seq"] == 3 and first["timestamp"] == "2023-11-14T22:13:23.000Z"
    assert [e["args"] for e in hh.result("a", "wamp.subscription.get_events", sub, 2)] == [[3], [4]]
    assert [e["args"] for e in hh.result("a", "wamp.subscription.get_events", sub, limit=1)] == [[4]]


def test_history_of_pattern_subscriptions_spans_the_topics_they_match(hh: Harness) -> None:
    hh.join("a"), hh.join("p")
    for topic in ["com.a.x", "com.b.x", "org.a.x", "com.a.x", "com.b.y"]:
        hh.send("p", [16, 1, {"disclose_me": True}, topic, [topic]])
    prefix = hh.subscribe("a", "com.", match="prefix")
    wildcard = hh.subscribe("a", "..x", match="wildcard")
    history = hh.result("a", "wamp.subscription.get_events", prefix, 10)
    assert [e["topic"] for e in history] == ["com.a.x", "com.b.x", "com.a.x", "com.b.y"]
    assert history[0]["details"]["topic"] == "com.a.x"
    assert history[0]["details"]["publisher"] == hh.sessions["p"].id
    history = hh.result("a", "wamp.subscription.get_events", wildcard, 10)
    assert [e["topic"] for e in history] == ["com.a.x", "com.b.x", "org.a.x", "com.a.x"]


def test_history_keeps_no_publication_aimed_at_session_ids_and_filters_by_identity(hh: Harness) -> None:
    hh.join("a"), hh.join("p")
    a_id = hh.sessions["a"].id
    hh.send("p", [16, 1, {"eligible": [a_id]}, "com.t", ["for a's session only"]])
    hh.send("p", [16, 2, {"exclude": [a_id]}, "com.t", ["not for a's session"]])
    hh.send("p", [16, 3, {"eligible_authrole": ["admin"]}, "com.t", ["admins only"]])
    hh.send("p", [16, 4, {"exclude_authid": ["nobody"]}, "com.t", ["everyone"]])
    sub = hh.subscribe("a", "com.t")
    assert [e["args"] for e in hh.result("a", "wamp.subscription.get_events", sub)] == [["everyone"]]


@pytest.mark.parametrize(
    "arguments, error",
    [
        ("foreign", "wamp.error.no_such_subscription"),
        ("unknown", "wamp.error.no_such_subscription"),
        ("not an id", "wamp.error.invalid_argument"),
        ("zero limit", "wamp.error.invalid_argument"),
        ("nothing", "wamp.error.invalid_argument"),
    ],
)
def test_get_events_refuses_clearly_and_the_session_stays_open(hh: Harness, arguments: str, error: str) -> None:
    hh.join("a"), hh.join("b")
    own, foreign = hh.subscribe("a", "com.a"), hh.subscribe("b", "com.b")
    args = {"foreign": [foreign], "unknown": [424242], "not an id": ["x"], "zero limit": [own, 0], "nothing": []}
    reply = hh.call("a", "wamp.subscription.get_events", *args[arguments])
    assert reply[0] == ERROR and reply[1] == 48 and reply[4] == error
    assert hh.sessions["a"].state is State.OPEN
    assert hh.result("a", "wamp.subscription.get_events", own) == []


# -- subscription meta events -------------------------------------------------------------------


def meta_events(received: dict[str, list[Any]], name: str) -> list[tuple[str, list[Any]]]:
    """(meta topic, args) of the EVENTs ``name`` received on its prefix subscription to the meta API."""
    return [(e[3]["topic"], e[4]) for e in events(received, name)]


def test_meta_events_follow_a_subscriptions_life_in_order(h: Harness) -> None:
    h.join("watch"), h.join("a"), h.join("b")
    h.subscribe("watch", "wamp.subscription.", match="prefix")
    a, b = h.sessions["a"].id, h.sessions["b"].id

    received = wire(h.send("a", [32, 1, {"match": "prefix"}, "com.x"]))
    sub = received["a"][0][2]
    (create, on_create_args), (subscribe, on_subscribe_args) = meta_events(received, "watch")
    assert (create, subscribe) == ("wamp.subscription.on_create", "wamp.subscription.on_subscribe")
    assert on_create_args[0] == a
    assert on_create_args[1] == {"id": sub, "created": "2023-11-14T22:13:20.000Z", "uri": "com.x", "match": "prefix"}
    assert on_subscribe_args == [a, sub]

    received = wire(h.send("b", [32, 2, {"match": "prefix"}, "com.x"]))
    assert meta_events(received, "watch") == [("wamp.subscription.on_subscribe", [b, sub])]
    assert meta_events(wire(h.send("b", [32, 3, {"match": "prefix"}, "com.x"])), "watch") == [], "already subscribed"

    received = wire(h.send("a", [34, 4, sub]))
    assert meta_events(received, "watch") == [("wamp.subscription.on_unsubscribe", [a, sub])]
    received = wire(h.send("b", [34, 5, sub]))
    assert meta_events(received, "watch") == [
        ("wamp.subscription.on_unsubscribe", [b, sub]),
        ("wamp.subscription.on_delete", [b, sub]),
    ]


@pytest.mark.parametrize(("pattern", "match"), [
    ("wamp.session.on_join", "exact"), ("wamp.session", "prefix"), ("w", "prefix"), ("", "prefix"),
    (".session.on_join", "wildcard"), ("wamp..on_join", "wildcard"), ("..", "wildcard"),
])
def test_every_pattern_that_matches_a_meta_event_receives_it(h: Harness, pattern: str, match: str) -> None:
    h.join("a"), h.join("watch")
    h.subscribe("a", "com.app.", match="prefix")  # nobody may hear meta events yet
    h.subscribe("watch", pattern, match=match)
    h.attach("b")
    received = wire(h.send("b", [1, "realm1", {"roles": {"subscriber": {}}}]))
    assert [e[3].get("topic", "wamp.session.on_join") for e in events(received, "watch")] == ["wamp.session.on_join"]


def test_no_meta_event_is_published_while_no_subscription_may_match_one(h: Harness) -> None:
    """Nobody may hear them: opening and closing sessions draws no publication id and routes nothing."""
    h.join("a"), h.join("watch")
    h.subscribe("a", "com.app.", match="prefix"), h.subscribe("a", "com..x", match="wildcard")
    b, c = h.join("b"), h.join("c")
    assert c.id == b.id + 1, "no on_join publication id drawn between two sessions"
    assert h.router.detach(c) == [] and h.send("b", [32, 1, {}, "com.app.x"])[1:] == []

    watched = h.subscribe("watch", "wamp.session.", match="prefix")
    d, e = h.join("d"), h.join("e")
    assert e.id == d.id + 2, "d's on_join publication drew an id"
    h.send("watch", [34, 9, watched])
    f, g = h.join("f"), h.join("g")
    assert g.id == f.id + 1, "the watcher unsubscribed: nobody may hear them again"


def test_no_meta_events_about_subscriptions_to_meta_topics(h: Harness) -> None:
    h.join("watch"), h.join("a")
    h.subscribe("watch", "wamp.subscription.", match="prefix")
    assert outbox(h.send("a", [32, 1, {}, "wamp.session.on_join"])).get("watch") is None


def test_publications_are_counted_once_each_but_not_the_routers_meta_events() -> None:
    h = Harness()
    h.join("subscriber")
    h.subscribe("subscriber", "com.example.counted")
    h.join("publisher")
    broker = h.router.realms["realm1"].broker
    before = broker.published
    h.send("publisher", [16, 1, {}, "com.example.counted", [1]])
    h.send("publisher", [16, 2, {}, "com.example.nobody", [2]])  # no subscriber: counted too
    h.router.publish("realm1", "com.example.counted", [3])
    h.send("publisher", [16, 3, {"acknowledge": True}, "wamp.session.on_join", []])  # refused: not counted
    assert broker.published - before == 3


# -- an EVENT marshals as autobahn's own ------------------------------------------------------------

_EVENT_FIELDS = [
    {}, {"args": [1, "x"]}, {"kwargs": {"k": 1}}, {"args": [], "kwargs": {}}, {"args": ["\u00e9", b"\x01"], "kwargs": {"b": 2}},
    {"args": (1, 2)}, {"topic": "com.t"}, {"retained": True},
    {"publisher": 7, "publisher_authid": "joe", "publisher_authrole": "user", "topic": "a.b", "retained": True, "args": [1]},
    {"publisher": 7, "publisher_authid": None, "publisher_authrole": "anonymous", "kwargs": {"x": None}},
    # Fields the broker never sets: autobahn's own marshal decides.
    {"transaction_hash": "h"}, {"x_acknowledged_delivery": True}, {"payload": b"opaque"},
    {"forward_for": [{"session": 1, "authid": "a", "authrole": "r"}]},
]


@pytest.mark.parametrize("fields", _EVENT_FIELDS)
def test_an_event_marshals_to_autobahns_bytes_in_every_wire_format(fields: dict[str, Any]) -> None:
    from autobahn.wamp.serializer import CBORObjectSerializer, JsonObjectSerializer, MsgPackObjectSerializer

    from wsserver.core.broker import PositionedEvent, RoutedEvent

    ours, autobahns = RoutedEvent(5, 6, **fields), wamp.Event(5, 6, **fields)
    assert ours.marshal() == autobahns.marshal()
    for serializer in (JsonObjectSerializer(), MsgPackObjectSerializer(), CBORObjectSerializer()):
        assert serializer.serialize(ours.marshal()) == serializer.serialize(autobahns.marshal()), serializer
    positioned = PositionedEvent(5, 6, **fields)
    positioned.position = ("epoch", 3)
    assert positioned.marshal()[3] == {**autobahns.marshal()[3], "_epoch": "epoch", "_seq": 3}
