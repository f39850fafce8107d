"""Permissions: the most specific pattern decides; refused requests; no event to a role that may not have it."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from autobahn.wamp import message as wamp

from tests.core.harness import Harness, outbox
from wsserver.core import authorization
from wsserver.core.authorization import Authorizer, RolePermissions
from wsserver.core.matching import EXACT, PREFIX, WILDCARD, matches
from wsserver.core.policy import ACTIONS, EVERYTHING, Permission, RealmPolicy
from wsserver.core.session import State

ALL = frozenset(ACTIONS)


def allow(uri: str, match: str, *actions: str) -> Permission:
    return Permission(uri, match, frozenset(actions))


# -- the most specific pattern decides ----------------------------------------------------------


@pytest.mark.parametrize(
    "uri, decided_by",
    [
        ("com.example.admin.x", "longer prefix"),
        ("com.example.admin.exact", "exact"),
        ("com.example.news", "shorter prefix"),
        ("com.other.a.x", "wildcard, concrete first"),
        ("com.other.b.x", "wildcard, concrete later"),
        ("org.x", "nothing"),
    ],
)
def test_the_most_specific_pattern_decides_alone(uri: str, decided_by: str) -> None:
    role = RolePermissions([
        allow("com.example.", PREFIX, "subscribe", "publish"),
        allow("com.example.admin.", PREFIX),
        allow("com.example.admin.exact", EXACT, "call"),
        allow("com..", WILDCARD, "publish"),  # matches com.example.news, but a prefix decides there
        allow("com...x", WILDCARD, "register"),
        allow("com.other..x", WILDCARD, "subscribe"),
        allow("com.other.a.", WILDCARD, "call"),
    ])
    expected = {
        "longer prefix": set(),
        "exact": {"call"},
        "shorter prefix": {"subscribe", "publish"},
        "wildcard, concrete first": {"call"},  # com.other.a. over com.other..x and com...x
        "wildcard, concrete later": {"subscribe"},  # com.other..x over com...x
        "nothing": set(),
    }[decided_by]
    assert role.allowed(uri) == expected


def test_wildcards_compare_component_by_component_from_the_left() -> None:
    role = RolePermissions([allow("a..c", WILDCARD, "call"), allow(".b.c", WILDCARD, "publish")])
    assert role.allowed("a.b.c") == {"call"}


def test_a_prefix_beats_a_wildcard_and_an_exact_pattern_beats_both() -> None:
    role = RolePermissions([allow("a.b.c", EXACT, "call"), allow("a.", PREFIX, "publish"), allow("a.b.", WILDCARD, "register")])
    assert role.allowed("a.b.c") == {"call"} and role.allowed("a.b.d") == {"publish"}


def test_decisions_are_cached_and_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authorization, "CACHE_SIZE", 3)
    role = RolePermissions([allow("", PREFIX, "call")])
    for n in range(10):
        assert role.allowed(f"com.t{n}") == {"call"}
        assert len(role._decisions) <= 3


def test_a_wildcard_pattern_with_many_empty_components_is_decided_quickly() -> None:
    role = RolePermissions([allow("." * 40, WILDCARD, "subscribe"), allow("a" + "." * 40, WILDCARD, "publish")])
    assert role.allowed("a" + "." * 40) == {"publish"}  # the empty components must not double the walk


def test_an_unknown_role_may_do_nothing() -> None:
    authorizer = Authorizer({"r": [EVERYTHING]})
    assert authorizer.allows("r", "publish", "x") and not authorizer.allows("q", "publish", "x")
    assert not authorizer.allows(None, "publish", "x")


# -- refused requests -----------------------------------------------------------------------------

ROLES: dict[str, tuple[Permission, ...]] = {
    "admin": (EVERYTHING,),
    "reader": (allow("com.", PREFIX, "subscribe"), allow("com.secret.", PREFIX), allow("wamp.session.count", EXACT, "call")),
    "writer": (allow("com.", PREFIX, "publish"),),
    "service": (allow("com.api.", PREFIX, "register", "call"),),
}


@pytest.fixture
def h() -> Harness:
    policy = RealmPolicy("realm1", ROLES, anonymous_role="admin")
    harness = Harness((policy,))
    return harness


def join(h: Harness, name: str, role: str) -> None:
    h.join(name)
    h.sessions[name].authrole = role  # as if it had logged in with that role


def error_of(received: list[Any]) -> tuple[int, str, list[Any]]:
    (error,) = received
    assert isinstance(error, wamp.Error), received
    return error.request_type, error.error, error.args


@pytest.mark.parametrize(
    "role, raw, request_type",
    [
        ("reader", [16, 7, {"acknowledge": True}, "com.t", [1]], 16),
        ("writer", [32, 7, {}, "com.t"], 32),
        ("reader", [32, 7, {}, "com.secret.t"], 32),
        ("reader", [32, 7, {"match": "prefix"}, "com.secret."], 32),
        ("writer", [64, 7, {}, "com.api.f"], 64),
        ("writer", [48, 7, {}, "com.api.f", []], 48),
        ("writer", [48, 7, {}, "wamp.session.count", []], 48),  # the router's own procedures too
        ("service", [64, 7, {}, "com.other.f"], 64),
    ],
)
def test_a_refused_request_gets_not_authorized_and_the_session_stays_open(
    h: Harness, role: str, raw: list[Any], request_type: int
) -> None:
    join(h, "a", role)
    request, error, args = error_of(outbox(h.send("a", raw))["a"])
    assert (request, error) == (request_type, "wamp.error.not_authorized")
    assert args == [f"role {role!r} may not {['publish', 'subscribe', 'call', 'register'][[16, 32, 48, 64].index(request_type)]} {raw[3]!r}"]
    assert h.sessions["a"].state is State.OPEN
    assert len(h.router.realms["realm1"].subscriptions) == 0 and len(h.sessions["a"].registrations) == 0


def test_an_unacknowledged_refused_publish_is_dropped_without_an_answer(h: Harness) -> None:
    join(h, "r", "reader"), join(h, "a", "admin")
    h.subscribe("r", "com.t")
    assert outbox(h.send("r", [16, 7, {}, "com.t", [1]])) == {}


def test_allowed_requests_pass(h: Harness) -> None:
    join(h, "s", "service"), join(h, "r", "reader")
    h.register("s", "com.api.f")
    assert h.result("r", "wamp.session.count") == 2
    assert h.subscribe("r", "com.", match="prefix")


def test_disclose_me_needs_the_disclose_permission(h: Harness) -> None:
    join(h, "w", "writer"), join(h, "a", "admin"), join(h, "r", "reader")
    h.subscribe("r", "com.t")
    request_type, error, _ = error_of(outbox(h.send("w", [16, 1, {"acknowledge": True, "disclose_me": True}, "com.t"]))["w"])
    assert (request_type, error) == (16, "wamp.error.option_disallowed.disclose_me")
    received = outbox(h.send("a", [16, 2, {"disclose_me": True}, "com.t", ["hi"]]))
    (event,) = received["r"]
    assert event.publisher == h.sessions["a"].id and event.publisher_authrole == "admin"


# -- who receives what ----------------------------------------------------------------------------


def test_a_prefix_subscription_receives_only_the_topics_its_role_may_subscribe_to(h: Harness) -> None:
    join(h, "r", "reader"), join(h, "a", "admin"), join(h, "p", "admin")
    sub_r = h.subscribe("r", "com.", match="prefix")
    sub_a = h.subscribe("a", "com.", match="prefix")
    assert sub_r == sub_a
    received = outbox(h.send("p", [16, 1, {}, "com.secret.plan", ["x"]]))
    assert list(received) == ["a"]
    received = outbox(h.send("p", [16, 2, {}, "com.news", ["y"]]))
    assert set(received) == {"a", "r"} and received["a"][0] is received["r"][0]  # one shared EVENT


def test_routing_decides_per_role_not_per_subscriber(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    for n in range(50):
        join(h, f"r{n}", "reader")
        h.subscribe(f"r{n}", "com.", match="prefix")
    join(h, "a", "admin"), join(h, "p", "admin")
    h.subscribe("a", "com.", match="prefix")
    asked: list[tuple[Any, ...]] = []
    original = Authorizer.allows
    monkeypatch.setattr(Authorizer, "allows", lambda self, *a: asked.append(a) or original(self, *a))
    (send,) = h.send("p", [16, 1, {}, "com.news", []])
    assert len(send.recipients) == 51
    # The publisher's permission, then one question per role in the subscription: not one per subscriber.
    assert asked == [("admin", "publish", "com.news"), ("reader", "subscribe", "com.news"), ("admin", "subscribe", "com.news")]


def test_retained_events_and_history_respect_permissions() -> None:
    policy = RealmPolicy("realm1", ROLES, anonymous_role="admin")
    h = Harness((policy,), history_size=5)
    join(h, "a", "admin")
    h.send("a", [16, 1, {"retain": True}, "com.secret.plan", ["s"]])
    h.send("a", [16, 2, {"retain": True}, "com.news", ["n"]])
    join(h, "r", "reader")
    received = outbox(h.send("r", [32, 1, {"match": "prefix", "get_retained": True}, "com."]))["r"]
    subscribed, *events = received
    assert [e.topic for e in events] == ["com.news"]
    realm = h.router.realms["realm1"]
    subscription = realm.subscriptions.get(subscribed.subscription)
    assert subscription is not None
    assert [k.item.topic for k in realm.broker.history_of(subscription, h.sessions["r"])] == ["com.news"]
    assert [k.item.topic for k in realm.broker.history_of(subscription, h.sessions["a"])] == ["com.secret.plan", "com.news"]


# -- the matrix: role x action x pattern ------------------------------------------------------------

PATTERNS = {
    EXACT: "com.m.x.y",
    PREFIX: "com.m.x.",
    WILDCARD: "com.m..y",
}
TOPICS = ["com.m.x.y", "com.m.x.z", "com.m.a.y", "com.m.x", "com.m.x.y.z", "com.n.x.y"]


def matrix_harness() -> tuple[Harness, dict[str, Permission]]:
    """One role per (action, pattern kind): allowed exactly that action on exactly that pattern."""
    grants = {
        f"{action}-{match}": allow(uri, match, action) for action in ACTIONS for match, uri in PATTERNS.items()
    }
    roles = {name: (grant,) for name, grant in grants.items()} | {"admin": (EVERYTHING,)}
    return Harness((RealmPolicy("realm1", roles, anonymous_role="admin"),)), grants


@pytest.mark.parametrize("role", [f"{a}-{m}" for a in ACTIONS for m in PATTERNS])
def test_matrix_every_request_is_allowed_exactly_where_the_role_says(role: str) -> None:
    h, grants = matrix_harness()
    grant = grants[role]
    join(h, "s", role)
    requests = itertools.count(1)
    for topic in TOPICS:
        granted = matches(grant.uri, grant.match, topic)
        for action, raw in {
            "publish": [16, 0, {"acknowledge": True}, topic],
            "subscribe": [32, 0, {}, topic],
            "call": [48, 0, {}, topic, []],
            "register": [64, 0, {}, topic],
        }.items():
            raw[1] = next(requests)
            (reply,) = outbox(h.send("s", raw))["s"]
            refused = isinstance(reply, wamp.Error) and reply.error == "wamp.error.not_authorized"
            assert refused != (granted and action in grant.allow), (role, action, topic, reply)


@pytest.mark.parametrize("subscription_match", list(PATTERNS))
def test_matrix_no_event_reaches_a_role_that_may_not_subscribe_to_its_topic(subscription_match: str) -> None:
    h, grants = matrix_harness()
    roles = [name for name in grants if name.startswith("subscribe-")] + ["admin", "publish-prefix"]
    realm = h.router.realms["realm1"]
    for role in roles:
        join(h, role, role)
        # Straight to the broker, past the SUBSCRIBE check: events must be filtered all the same.
        realm.broker.subscribe(h.sessions[role], wamp.Subscribe(1, PATTERNS[subscription_match], match=subscription_match))
    join(h, "publisher", "admin")
    authorizer = realm.authorizer
    assert authorizer is not None
    for n, topic in enumerate(TOPICS):
        received = outbox(h.send("publisher", [16, n + 1, {}, topic, [n]]))
        for role in roles:
            expected = matches(PATTERNS[subscription_match], subscription_match, topic) and authorizer.allows(role, "subscribe", topic)
            assert (role in received) == expected, (role, topic)


def test_caller_disclose_me_needs_the_disclose_permission(h: Harness) -> None:
    join(h, "callee", "service"), join(h, "s", "service"), join(h, "a", "admin")
    h.register("callee", "com.api.who")
    request_type, error, _ = error_of(outbox(h.send("s", [48, 1, {"disclose_me": True}, "com.api.who"]))["s"])
    assert (request_type, error) == (48, "wamp.error.option_disallowed.disclose_me")
    (invocation,) = outbox(h.send("a", [48, 2, {"disclose_me": True}, "com.api.who"]))["callee"]
    assert invocation.caller == h.sessions["a"].id and invocation.caller_authrole == "admin"
