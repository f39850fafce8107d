"""The router's own procedures (session and subscription meta API), called over WAMP like any other."""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.harness import Harness, moderated_realm, wire
from wsserver.core.meta import iso8601
from wsserver.core.procedures import ON_OTHER_SESSIONS
from wsserver.core.session import State

ERROR, GOODBYE = 8, 6


@pytest.fixture
def h() -> Harness:
    h = Harness(realms=(moderated_realm(),))
    for name in "abc":
        h.join(name)
    return h


def ids(h: Harness, *names: str) -> list[int]:
    return [h.sessions[name].id for name in names]


# -- sessions -----------------------------------------------------------------------------------


def test_count_list_and_get_sessions(h: Harness) -> None:
    assert h.result("a", "wamp.session.count") == 3
    assert sorted(h.result("a", "wamp.session.list")) == sorted(ids(h, "a", "b", "c"))
    assert h.result("a", "wamp.session.count", ["admin"]) == 0
    assert h.result("a", "wamp.session.list", filter_authroles=["anonymous"]) != []
    (b,) = ids(h, "b")
    assert h.result("a", "wamp.session.get", b) == {
        "session": b,
        "authid": f"anonymous-{b}",
        "authrole": "anonymous",
        "authmethod": "anonymous",
        "authprovider": "static",
        "transport": None,
        "subscriptions": 0,
        "buffered_bytes": 0,
    }


def test_kill_says_goodbye_to_the_victim_with_the_reason(h: Harness) -> None:
    (b,) = ids(h, "b")
    received = wire(h.send("a", [48, 1, {}, "wamp.session.kill", [b], {"reason": "com.app.kicked", "message": "bye"}]))
    assert received["a"] == [[50, 1, {}]]
    assert received["b"] == [[GOODBYE, {"message": "bye"}, "com.app.kicked"]]
    assert h.sessions["b"].state is State.CLOSING
    wire(h.send("b", [GOODBYE, {}, "wamp.close.goodbye_and_out"]))
    assert h.result("a", "wamp.session.count") == 2


def test_in_a_realm_open_to_anyone_an_anonymous_session_may_not_kill_others() -> None:
    h = Harness()
    h.join("a"), h.join("b")
    (b,) = ids(h, "b")
    for procedure in sorted(ON_OTHER_SESSIONS):
        received = wire(h.send("a", [48, 1, {}, procedure, [b]]))
        assert list(received) == ["a"], "nobody else is told anything"
        ((kind, _, _, _, error, (reason,)),) = received["a"]
        assert (kind, error) == (ERROR, "wamp.error.not_authorized")
        assert reason == (
            f"{procedure} acts on other sessions: the anonymous sessions of realm 'realm1', open to anyone, "
            "may not call it; give a role permission to call it with --config"
        )
    assert h.sessions["b"].state is State.OPEN
    assert h.result("a", "wamp.session.count") == 2  # the rest of the meta API stays open


def test_kill_without_a_reason_is_close_normal(h: Harness) -> None:
    (c,) = ids(h, "c")
    assert wire(h.send("a", [48, 1, {}, "wamp.session.kill", [c]]))["c"] == [[GOODBYE, {}, "wamp.close.normal"]]


def test_kill_by_authid_authrole_and_all_end_the_others_never_the_caller_and_answer_how_many() -> None:
    h = Harness(realms=(moderated_realm(),))
    for name in "abcd":
        h.join(name)
    h.sessions["c"].authid = h.sessions["b"].authid = "shared-id"
    h.sessions["a"].authid = "shared-id"  # the caller shares it, and is still not killed
    h.sessions["d"].authrole = "other"
    received = wire(h.send("a", [48, 1, {}, "wamp.session.kill_by_authid", ["shared-id"], {"reason": "com.app.out"}]))
    assert received["a"] == [[50, 1, {}, [2]]]
    assert received["b"] == received["c"] == [[GOODBYE, {}, "com.app.out"]]
    assert "d" not in received and h.sessions["a"].state is State.OPEN
    assert h.result("a", "wamp.session.kill_by_authid", "shared-id") == 0, "the closing ones are not killed twice"
    assert h.result("a", "wamp.session.kill_by_authrole", "anonymous") == 0
    received = wire(h.send("a", [48, 2, {}, "wamp.session.kill_by_authrole", ["other", "com.app.role", "bye"]]))
    assert received["d"] == [[GOODBYE, {"message": "bye"}, "com.app.role"]] and received["a"] == [[50, 2, {}, [1]]]
    for name in "bcd":
        wire(h.send(name, [GOODBYE, {}, "wamp.close.goodbye_and_out"]))
    h.join("e"), h.join("f")
    received = wire(h.send("a", [48, 3, {}, "wamp.session.kill_all", [], {"message": "maintenance"}]))
    assert received["a"] == [[50, 3, {}, [2]]]
    assert received["e"] == received["f"] == [[GOODBYE, {"message": "maintenance"}, "wamp.close.normal"]]
    assert h.sessions["a"].state is State.OPEN


@pytest.mark.parametrize(
    "procedure, args, kwargs, error",
    [
        ("wamp.session.kill", [424242], {}, "wamp.error.no_such_session"),
        ("wamp.session.kill", ["self"], {}, "wamp.error.no_such_session"),
        ("wamp.session.kill", ["b"], {"reason": "not a uri!"}, "wamp.error.invalid_uri"),
        ("wamp.session.kill", [], {}, "wamp.error.invalid_argument"),
        ("wamp.session.kill_all", ["not a uri!"], {}, "wamp.error.invalid_uri"),
        ("wamp.session.kill_all", [], {"message": 3}, "wamp.error.invalid_argument"),
        ("wamp.session.kill_by_authid", [], {}, "wamp.error.invalid_argument"),
        ("wamp.session.kill_by_authrole", [7], {}, "wamp.error.invalid_argument"),
        ("wamp.session.kill_by_authrole", ["anonymous", "not a uri!"], {}, "wamp.error.invalid_uri"),
        ("wamp.session.get", [424242], {}, "wamp.error.no_such_session"),
        ("wamp.session.get", ["x"], {}, "wamp.error.invalid_argument"),
        ("wamp.session.count", ["anonymous"], {}, "wamp.error.invalid_argument"),
        ("wamp.subscription.get", [424242], {}, "wamp.error.no_such_subscription"),
        ("wamp.subscription.list_subscribers", [424242], {}, "wamp.error.no_such_subscription"),
        ("wamp.subscription.count_subscribers", [None], {}, "wamp.error.invalid_argument"),
        ("wamp.subscription.lookup", ["com.x", {"match": "regex"}], {}, "wamp.error.invalid_argument"),
        ("wamp.subscription.match", ["com..x"], {}, "wamp.error.invalid_uri"),
    ],
)
def test_bad_calls_get_the_specs_error_and_the_caller_stays_open(
    h: Harness, procedure: str, args: list[Any], kwargs: dict[str, Any], error: str
) -> None:
    names = {"self": h.sessions["a"].id, "b": h.sessions["b"].id}
    args = [names.get(arg, arg) if isinstance(arg, str) else arg for arg in args]
    reply = h.call("a", procedure, *args, **kwargs)
    assert reply[0] == ERROR and reply[4] == error, reply
    assert h.sessions["a"].state is State.OPEN and h.sessions["b"].state is State.OPEN


# -- subscriptions ------------------------------------------------------------------------------


def test_subscription_list_lookup_match_and_get(h: Harness) -> None:
    exact = h.subscribe("a", "com.x.y")
    prefix = h.subscribe("b", "com.x", match="prefix")
    wildcard = h.subscribe("c", "com..y", match="wildcard")
    assert h.result("a", "wamp.subscription.list") == {"exact": [exact], "prefix": [prefix], "wildcard": [wildcard]}
    assert h.result("a", "wamp.subscription.lookup", "com.x.y") == exact
    assert h.result("a", "wamp.subscription.lookup", "com.x", {"match": "prefix"}) == prefix
    assert h.result("a", "wamp.subscription.lookup", "com.x") is None
    assert sorted(h.result("a", "wamp.subscription.match", "com.x.y")) == sorted([exact, prefix, wildcard])
    assert h.result("a", "wamp.subscription.match", "org.nothing") is None
    assert h.result("a", "wamp.subscription.get", prefix) == {
        "id": prefix, "created": iso8601(h.clock.now), "uri": "com.x", "match": "prefix",
    }


def test_subscribers_of_a_subscription(h: Harness) -> None:
    sub = h.subscribe("a", "com.t")
    h.subscribe("b", "com.t")
    assert sorted(h.result("c", "wamp.subscription.list_subscribers", sub)) == sorted(ids(h, "a", "b"))
    assert h.result("c", "wamp.subscription.count_subscribers", sub) == 2


def test_meta_procedures_see_only_their_realm() -> None:
    h = Harness(realms=(moderated_realm("one"), moderated_realm("two")))
    h.join("a", realm="one"), h.join("b", realm="two")
    sub = h.subscribe("a", "com.t")
    assert h.result("b", "wamp.session.count") == 1
    assert h.call("b", "wamp.subscription.get", sub)[4] == "wamp.error.no_such_subscription"
    assert h.call("b", "wamp.session.kill", h.sessions["a"].id)[4] == "wamp.error.no_such_session"


def test_times_are_iso8601_utc_with_milliseconds() -> None:
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert iso8601(1_700_000_000.1234) == "2023-11-14T22:13:20.123Z"


# -- registrations ------------------------------------------------------------------------------


def test_registration_list_lookup_match_get_and_callees(h: Harness) -> None:
    exact = h.register("a", "com.x.y")
    prefix = h.register("b", "com.x", match="prefix", invoke="roundrobin")
    assert h.register("c", "com.x", match="prefix", invoke="roundrobin") == prefix
    wildcard = h.register("c", "com..y", match="wildcard")
    listed = h.result("a", "wamp.registration.list")
    assert listed == {"exact": [exact], "prefix": [prefix], "wildcard": [wildcard]}, "the router's own are not listed"
    assert h.result("a", "wamp.registration.lookup", "com.x.y") == exact
    assert h.result("a", "wamp.registration.lookup", "com.x", {"match": "prefix"}) == prefix
    assert h.result("a", "wamp.registration.lookup", "com.x") is None
    assert h.result("a", "wamp.registration.lookup", "wamp.session.count") is None
    # match: the one registration a call reaches (the spec's), not every one that matches.
    assert h.result("a", "wamp.registration.match", "com.x.y") == exact
    assert h.result("a", "wamp.registration.match", "com.x.z") == prefix
    assert h.result("a", "wamp.registration.match", "org.a.y") is None
    assert h.result("a", "wamp.registration.match", "wamp.session.count") is None
    assert h.result("a", "wamp.registration.get", prefix) == {
        "id": prefix, "created": iso8601(h.clock.now), "uri": "com.x", "match": "prefix", "invoke": "roundrobin",
    }
    assert sorted(h.result("a", "wamp.registration.list_callees", prefix)) == sorted(ids(h, "b", "c"))
    assert h.result("a", "wamp.registration.count_callees", prefix) == 2
    assert h.result("a", "wamp.registration.count_callees", exact) == 1


@pytest.mark.parametrize(
    "procedure, args, error",
    [
        ("wamp.registration.get", [424242], "wamp.error.no_such_registration"),
        ("wamp.registration.list_callees", ["x"], "wamp.error.invalid_argument"),
        ("wamp.registration.count_callees", [424242], "wamp.error.no_such_registration"),
        ("wamp.registration.lookup", ["com.x", {"match": "regex"}], "wamp.error.invalid_argument"),
        ("wamp.registration.match", ["com..x"], "wamp.error.invalid_uri"),
    ],
)
def test_bad_registration_meta_calls_get_the_specs_error(h: Harness, procedure: str, args: list[Any], error: str) -> None:
    reply = h.call("a", procedure, *args)
    assert reply[0] == ERROR and reply[4] == error, reply


def test_the_routers_own_registrations_are_not_described(h: Harness) -> None:
    dealer = h.router.realms["realm1"].dealer
    own = next(r.id for r in dealer._by_id.values() if r.procedure == "wamp.session.count")
    assert h.call("a", "wamp.registration.get", own)[4] == "wamp.error.no_such_registration"


def test_registration_meta_events_as_callees_come_and_go(h: Harness) -> None:
    h.join("watch")
    h.subscribe("watch", "wamp.registration.on_", match="prefix")

    def events(actions: Any) -> list[tuple[str, list[Any]]]:
        return [(e[3]["topic"], e[4]) for e in wire(actions).get("watch", [])]

    a, b = ids(h, "a", "b")
    received = events(h.send("a", [64, 1, {"invoke": "first"}, "com.p"]))
    ((created, (session, details)), registered) = received
    registration = details["id"]
    assert (created, session) == ("wamp.registration.on_create", a)
    assert details == {"id": registration, "created": iso8601(h.clock.now), "uri": "com.p", "match": "exact", "invoke": "first"}
    assert registered == ("wamp.registration.on_register", [a, registration])
    assert events(h.send("b", [64, 2, {"invoke": "first"}, "com.p"])) == [("wamp.registration.on_register", [b, registration])]
    assert events(h.send("a", [66, 3, registration])) == [("wamp.registration.on_unregister", [a, registration])]
    assert events(h.send("b", [6, {}, "wamp.close.normal"])) == [
        ("wamp.registration.on_unregister", [b, registration]),
        ("wamp.registration.on_delete", [b, registration]),
    ]
