"""The router core, driven with raw WAMP messages and no reactor."""

from __future__ import annotations

import pytest
from autobahn.wamp import message as wamp

from tests.core.harness import HELLO_DETAILS, Harness, outbox
from wsserver.core.router import BROKER_FEATURES, CloseReason
from wsserver.core.session import State


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- session establishment --------------------------------------------------------------------


def test_hello_gets_welcome_with_broker_role_and_anonymous_identity(h: Harness) -> None:
    h.attach("a")
    (welcome,) = outbox(h.send("a", [1, "realm1", HELLO_DETAILS]))["a"]
    assert isinstance(welcome, wamp.Welcome)
    assert 1 <= welcome.session <= 2**53
    assert welcome.realm == "realm1"
    assert welcome.authrole == "anonymous" and welcome.authmethod == "anonymous"
    assert welcome.authid
    marshalled = welcome.marshal()[2]
    assert marshalled["roles"] == {
        "broker": {"features": BROKER_FEATURES},
        "dealer": {"features": {
            "progressive_call_results": True, "call_canceling": True, "call_timeout": True,
            "caller_identification": True, "shared_registration": True, "pattern_based_registration": True,
            "registration_meta_api": True, "session_meta_api": True,
        }},
    }
    assert h.sessions["a"].state is State.OPEN


def test_welcome_announces_exactly_the_features_implemented() -> None:
    assert sorted(BROKER_FEATURES) == [
        "event_retention", "pattern_based_subscription", "publisher_exclusion", "publisher_identification",
        "session_meta_api", "subscriber_blackwhite_listing", "subscription_meta_api",
    ]
    h = Harness(history_size=10)
    h.attach("a")
    (welcome,) = outbox(h.send("a", [1, "realm1", HELLO_DETAILS]))["a"]
    assert welcome.marshal()[2]["roles"]["broker"]["features"] == dict(BROKER_FEATURES, event_history=True)


def test_session_ids_are_unique_even_when_the_random_source_repeats() -> None:
    values = iter([5, 5, 5, 6])
    h = Harness()
    h.router._random_id = values.__next__
    first, second = h.join("a"), h.join("b")
    assert (first.id, second.id) == (5, 6)


def test_unknown_realm_is_aborted_with_no_such_realm(h: Harness) -> None:
    h.attach("a")
    abort, close = outbox(h.send("a", [1, "nowhere", HELLO_DETAILS]))["a"]
    assert isinstance(abort, wamp.Abort) and abort.reason == "wamp.error.no_such_realm"
    assert close == ("close", CloseReason.NORMAL)
    assert h.router.realms["realm1"].sessions == {}


def test_invalid_realm_name_is_aborted_not_crashed(h: Harness) -> None:
    h.attach("a")
    abort, _ = outbox(h.send("a", [1, "bad realm!", HELLO_DETAILS]))["a"]
    assert isinstance(abort, wamp.Abort) and abort.reason == "wamp.error.no_such_realm"


@pytest.mark.parametrize(
    "raw",
    [
        [32, 1, {}, "com.example.topic"],  # SUBSCRIBE before HELLO
        [16, 1, {}, "com.example.topic"],  # PUBLISH before HELLO
        [6, {}, "wamp.close.normal"],  # GOODBYE before HELLO
        [32, 1, {}, "bad uri"],  # an invalid request before HELLO
    ],
)
def test_anything_but_hello_first_is_a_protocol_violation(h: Harness, raw: list[object]) -> None:
    h.attach("a")
    abort, close = outbox(h.send("a", raw))["a"]
    assert isinstance(abort, wamp.Abort) and abort.reason == "wamp.error.protocol_violation"
    assert "not allowed in state establishing" in abort.message
    assert close == ("close", CloseReason.PROTOCOL_VIOLATION)


def test_second_hello_is_a_protocol_violation_and_drops_the_session(h: Harness) -> None:
    h.join("a")
    h.subscribe("a", "com.t")
    abort, _ = outbox(h.send("a", [1, "realm1", HELLO_DETAILS]))["a"]
    assert abort.reason == "wamp.error.protocol_violation"
    assert h.router.realms["realm1"].sessions == {}
    assert len(h.router.realms["realm1"].subscriptions) == 0


@pytest.mark.parametrize(
    "raw, detail",
    [
        ({"not": "a list"}, "must be a non-empty list"),
        ([], "must be a non-empty list"),
        (["HELLO"], "message type must be an integer"),
        ([999, 1], "unknown WAMP message type 999"),
        ([32, 1, {}], "invalid message length"),
        ([36, 1, 2, {}], "EVENT is not allowed"),  # a router-to-client message
        ([2, 1, {"roles": {"broker": {}}}], "WELCOME is not allowed"),
    ],
)
def test_malformed_or_misdirected_messages_abort_with_a_clear_reason(h: Harness, raw: object, detail: str) -> None:
    h.join("a")
    abort, close = outbox(h.send("a", raw))["a"]
    assert abort.reason == "wamp.error.protocol_violation"
    assert detail in abort.message
    assert close == ("close", CloseReason.PROTOCOL_VIOLATION)


def test_a_violation_after_close_does_nothing_more(h: Harness) -> None:
    h.join("a")
    h.send("a", [999])
    assert h.send("a", [999]) == []
    assert h.send("a", [32, 1, {}, "com.t"]) == []


# -- GOODBYE, both ways -----------------------------------------------------------------------


def test_goodbye_from_client_is_answered_and_leaves_nothing_behind(h: Harness) -> None:
    h.join("a")
    h.subscribe("a", "com.t")
    (reply,) = outbox(h.send("a", [6, {}, "wamp.close.normal"]))["a"]
    assert isinstance(reply, wamp.Goodbye) and reply.reason == "wamp.close.goodbye_and_out"
    assert h.router.realms["realm1"].sessions == {}
    assert len(h.router.realms["realm1"].subscriptions) == 0
    # The transport may start a new session.
    (welcome,) = outbox(h.send("a", [1, "realm1", HELLO_DETAILS]))["a"]
    assert isinstance(welcome, wamp.Welcome)


def test_goodbye_from_router_waits_for_the_reply_then_closes(h: Harness) -> None:
    a = h.join("a")
    h.subscribe("a", "com.t")
    (goodbye,) = outbox(h.router.goodbye(a))["a"]
    assert goodbye.reason == "wamp.close.system_shutdown"
    assert a.state is State.CLOSING
    # Requests in flight while closing are dropped, not answered.
    assert h.send("a", [16, 9, {"acknowledge": True}, "com.t", [1]]) == []
    (close,) = outbox(h.send("a", [6, {}, "wamp.close.goodbye_and_out"]))["a"]
    assert close == ("close", CloseReason.GOING_AWAY)
    assert h.router.realms["realm1"].sessions == {}
    assert len(h.router.realms["realm1"].subscriptions) == 0


def test_goodbye_to_a_session_not_yet_joined_closes_its_transport(h: Harness) -> None:
    a = h.attach("a")
    assert outbox(h.router.goodbye(a))["a"] == [("close", CloseReason.GOING_AWAY)]


def test_abort_from_client_ends_the_session(h: Harness) -> None:
    h.join("a")
    h.subscribe("a", "com.t")
    assert outbox(h.send("a", [3, {}, "wamp.close.normal"]))["a"] == [("close", CloseReason.NORMAL)]
    assert len(h.router.realms["realm1"].subscriptions) == 0


# -- subscribe / unsubscribe ------------------------------------------------------------------


def test_subscribers_of_one_topic_share_one_subscription_id(h: Harness) -> None:
    h.join("a"), h.join("b")
    assert h.subscribe("a", "com.t") == h.subscribe("b", "com.t")
    assert h.subscribe("a", "com.t", request=2) == h.subscribe("b", "com.t")  # idempotent
    assert h.subscribe("a", "com.other") != h.subscribe("a", "com.t")


@pytest.mark.parametrize("topic", ["com..t", "com.t.", " com.t", "com.#", "", 42])
def test_subscribe_to_an_invalid_uri_is_an_error_and_the_session_stays_open(h: Harness, topic: object) -> None:
    h.join("a")
    (error,) = outbox(h.send("a", [32, 7, {}, topic]))["a"]
    assert isinstance(error, wamp.Error)
    assert (error.request_type, error.request, error.error) == (32, 7, "wamp.error.invalid_uri")
    assert h.sessions["a"].state is State.OPEN
    assert h.subscribe("a", "com.t", request=8)


def test_unsubscribe(h: Harness) -> None:
    h.join("a")
    sub = h.subscribe("a", "com.t")
    (reply,) = outbox(h.send("a", [34, 2, sub]))["a"]
    assert isinstance(reply, wamp.Unsubscribed) and reply.request == 2
    assert len(h.router.realms["realm1"].subscriptions) == 0
    # a no longer receives events on com.t (it only gets its PUBLISHED back)
    (published,) = outbox(h.send("a", [16, 3, {"acknowledge": True, "exclude_me": False}, "com.t"]))["a"]
    assert isinstance(published, wamp.Published)


def test_unsubscribe_unknown_or_foreign_subscription_is_no_such_subscription(h: Harness) -> None:
    h.join("a"), h.join("b")
    sub = h.subscribe("a", "com.t")
    for subscription in (sub, 424242):
        (error,) = outbox(h.send("b", [34, 5, subscription]))["b"]
        assert (error.request_type, error.error) == (34, "wamp.error.no_such_subscription")
    # a's subscription is untouched
    assert outbox(h.send("b", [16, 6, {}, "com.t", ["x"]]))["a"][0].args == ["x"]


def test_one_subscriber_leaving_keeps_the_subscription_for_the_others(h: Harness) -> None:
    h.join("a"), h.join("b"), h.join("p")
    sub = h.subscribe("a", "com.t")
    h.subscribe("b", "com.t")
    h.send("a", [34, 2, sub])
    received = outbox(h.send("p", [16, 3, {}, "com.t", [1]]))
    assert list(received) == ["b"]


# -- publish / event --------------------------------------------------------------------------


def test_publish_reaches_every_subscriber_with_one_shared_event(h: Harness) -> None:
    h.join("a"), h.join("b"), h.join("p")
    sub = h.subscribe("a", "com.t")
    h.subscribe("b", "com.t")
    actions = h.send("p", [16, 3, {}, "com.t", [1, "two"], {"k": 3}])
    (send,) = actions
    assert sorted(s.peer for s in send.recipients) == ["a", "b"]
    event = send.message
    assert isinstance(event, wamp.Event)
    assert (event.subscription, event.args, event.kwargs, event.topic) == (sub, [1, "two"], {"k": 3}, None)


def test_acknowledge_gets_published_with_the_events_publication_id(h: Harness) -> None:
    h.join("a"), h.join("p")
    h.subscribe("a", "com.t")
    received = outbox(h.send("p", [16, 3, {"acknowledge": True}, "com.t", []]))
    (published,) = received["p"]
    assert isinstance(published, wamp.Published) and published.request == 3
    assert received["a"][0].publication == published.publication


def test_no_acknowledge_no_published(h: Harness) -> None:
    h.join("p")
    assert h.send("p", [16, 3, {}, "com.nobody.listens"]) == []


def test_publisher_is_excluded_unless_exclude_me_false(h: Harness) -> None:
    h.join("a"), h.join("p")
    h.subscribe("a", "com.t")
    h.subscribe("p", "com.t")
    assert list(outbox(h.send("p", [16, 3, {}, "com.t"]))) == ["a"]
    assert sorted(outbox(h.send("p", [16, 4, {"exclude_me": False}, "com.t"]))) == ["a", "p"]


def test_a_publisher_alone_on_its_topic_sends_nothing(h: Harness) -> None:
    h.join("p")
    h.subscribe("p", "com.t")
    assert h.send("p", [16, 3, {}, "com.t"]) == []


@pytest.mark.parametrize("options, answered", [({}, False), ({"acknowledge": True}, True)])
def test_publish_to_an_invalid_uri_is_answered_only_when_acknowledged(
    h: Harness, options: dict[str, object], answered: bool
) -> None:
    h.join("p")
    received = outbox(h.send("p", [16, 3, options, "com..bad", []]))
    if answered:
        (error,) = received["p"]
        assert (error.request_type, error.request, error.error) == (16, 3, "wamp.error.invalid_uri")
    else:
        assert received == {}
    assert h.sessions["p"].state is State.OPEN


def test_realms_are_separate() -> None:
    h = Harness(realms=("one", "two"))
    h.join("a", realm="one"), h.join("p", realm="two")
    h.subscribe("a", "com.t")
    assert h.send("p", [16, 3, {}, "com.t"]) == []


# -- in-process publish -----------------------------------------------------------------------


def test_python_code_publishes_without_a_session(h: Harness) -> None:
    h.join("a")
    h.subscribe("a", "com.status")
    ((event,),) = outbox(h.router.publish("realm1", "com.status", ["ok"], {"load": 1})).values()
    assert (event.args, event.kwargs) == (["ok"], {"load": 1})


def test_python_publish_rejects_unknown_realm_and_bad_uri(h: Harness) -> None:
    with pytest.raises(KeyError):
        h.router.publish("nowhere", "com.t")
    with pytest.raises(Exception, match="invalid value"):
        h.router.publish("realm1", "com..t")


# -- teardown ---------------------------------------------------------------------------------


def test_a_dropped_transport_leaves_no_session_or_subscription(h: Harness) -> None:
    for name in "abc":
        h.join(name)
        h.subscribe(name, "com.shared")
        h.subscribe(name, f"com.own.{name}")
    for name in "abc":
        h.router.detach(h.sessions[name])
        assert h.sessions[name].subscriptions == set()
    realm = h.router.realms["realm1"]
    assert realm.sessions == {} and len(realm.subscriptions) == 0
    assert len(realm.subscriptions._index) == 0 and realm.subscriptions._by_id == {}


def test_detach_before_hello_and_twice_is_harmless(h: Harness) -> None:
    a = h.attach("a")
    h.router.detach(a)
    h.router.detach(a)
    assert a.state is State.CLOSED


# -- sessions joined without HELLO (the HTTP API) ----------------------------------------------


def test_join_internal_opens_a_session_with_the_identity_given_and_no_welcome() -> None:
    from wsserver.core.authentication import Identity
    from wsserver.core.policy import Permission, RealmPolicy

    policy = RealmPolicy("realm1", {"backend": (Permission("com.example.", "prefix", frozenset({"publish"})),)})
    h = Harness(realms=(policy,))
    session = h.attach("bridge")
    actions = h.router.join_internal(session, "realm1", Identity("backend-key", "backend", "http-api"))
    assert "bridge" not in outbox(actions)  # no WELCOME: the session's client never spoke WAMP
    assert session.state is State.OPEN and session.id and session.authrole == "backend"
    assert h.router.realms["realm1"].sessions[session.id] is session
    # The role's permissions apply to what it sends.
    published = outbox(h.send("bridge", [16, 1, {"acknowledge": True}, "com.example.news"]))["bridge"]
    assert isinstance(published[0], wamp.Published)
    refused = outbox(h.send("bridge", [16, 2, {"acknowledge": True}, "org.example.news"]))["bridge"]
    assert refused[0].error == "wamp.error.not_authorized"
    h.router.detach(session)
    assert h.router.realms["realm1"].sessions == {}
    with pytest.raises(KeyError):
        h.router.join_internal(h.attach("elsewhere"), "realm2", Identity("k", "backend", "http-api"))


@pytest.mark.parametrize("history", [False, True])
def test_welcome_marshals_as_autobahns_own_with_the_roles_marshalled_once(history: bool) -> None:
    from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer

    from wsserver.core.router import Welcome, marshal_roles, roles

    features = roles(history=history)
    shared = marshal_roles(features)
    details = dict(realm="realm1", authid="anonymous-7", authrole="anonymous", authmethod="anonymous",
                   authprovider="static")
    ours, autobahns = Welcome(7, features, marshalled_roles=shared, **details), wamp.Welcome(7, features, **details)
    assert ours.marshal() == autobahns.marshal() and ours.marshal()[2]["roles"] is shared
    assert ours.roles == features
    for serializer in (JsonSerializer(), MsgPackSerializer()):
        assert serializer.serialize(ours) == serializer.serialize(autobahns)
    assert ("event_history" in shared["broker"]["features"]) is history


def test_the_markers_of_invalid_requests_are_handled_by_their_kind_not_their_class(h: Harness) -> None:
    # One class, two kinds: a request's bad URI is answered, a HELLO's (once joined) is a violation,
    # however often either came before (the router remembers handlers by message class).
    for request in (1, 2):
        h.join(f"s{request}")
        for _ in range(2):
            (error,) = outbox(h.send(f"s{request}", [32, 7, {}, "bad uri"]))[f"s{request}"]
            assert isinstance(error, wamp.Error) and error.error == "wamp.error.invalid_uri"
        abort, *_ = outbox(h.send(f"s{request}", [1, "bad realm!", {}]))[f"s{request}"]
        assert isinstance(abort, wamp.Abort) and h.sessions[f"s{request}"].state is State.CLOSED
