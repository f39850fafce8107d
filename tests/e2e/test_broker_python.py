"""
The broker's Advanced Profile features end to end, with autobahn-python clients (and a raw
WebSocket for what autobahn-python will not send) against ``twistd -n wsserver``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError

from tests.e2e.broker_clients import Client
from tests.e2e.rawws import exchange, join, raw_session

BROKER_FEATURES = {
    "pattern_based_subscription", "subscriber_blackwhite_listing", "publisher_exclusion",
    "publisher_identification", "event_retention", "subscription_meta_api", "session_meta_api",
}
DEALER_FEATURES = {
    "progressive_call_results": True, "call_canceling": True, "call_timeout": True, "caller_identification": True,
    "shared_registration": True, "pattern_based_registration": True, "registration_meta_api": True,
    "session_meta_api": True,
}


@pytest.fixture
def clients(server: Any) -> Iterator[Any]:
    """A factory of joined Clients on the default server, all left after the test."""
    made: list[Client] = []

    def make() -> Client:
        made.append(Client(server.ws_url))
        return made[-1]

    yield make
    for client in made:
        client.leave()


@pytest.mark.parametrize("history", [False, True])
def test_welcome_announces_exactly_the_features_implemented(start_server: Any, history: bool) -> None:
    server = start_server(*(["--history-size", "5"] if history else []))
    with raw_session(server.ws_url, hello=False) as ws:
        welcome = join(ws)
        roles = welcome[2]["roles"]
        assert set(roles) == {"broker", "dealer"}
        expected = BROKER_FEATURES | ({"event_history"} if history else set())
        assert roles["broker"]["features"] == {feature: True for feature in expected}
        assert roles["dealer"]["features"] == DEALER_FEATURES


def test_pattern_subscriptions_get_the_concrete_topic_once_per_subscription(clients: Any) -> None:
    subscriber, publisher = clients(), clients()
    exact = subscriber.subscribe_detailed("com.example.room1.temp")
    prefix = subscriber.subscribe_detailed("com.example.", match="prefix")
    wildcard = subscriber.subscribe_detailed("com.example..temp", match="wildcard")
    publisher.publish("com.example.room1.temp", 21.5, unit="C")
    received = {name: inbox.get() for name, inbox in (("exact", exact), ("prefix", prefix), ("wildcard", wildcard))}
    assert {args for args, _, _ in received.values()} == {(21.5,)}
    assert received["prefix"][2].topic == received["wildcard"][2].topic == "com.example.room1.temp"
    assert received["prefix"][1] == {"unit": "C"}
    assert len({details.publication for _, _, details in received.values()}) == 1
    publisher.publish("com.example.room1.humidity", 40)
    assert prefix.get()[2].topic == "com.example.room1.humidity"
    assert exact.nothing_within(0.2) and wildcard.nothing_within(0.2)


def test_black_and_whitelisting_and_publisher_exclusion(clients: Any) -> None:
    a, b, c, publisher = clients(), clients(), clients(), clients()
    inboxes = {
        name: client.subscribe("com.example.listed")
        for name, client in (("a", a), ("b", b), ("c", c), ("publisher", publisher))
    }
    c_authid = publisher.call("wamp.session.get", c.session_id)["authid"]

    def receivers(n: int, **options: Any) -> set[str]:
        publisher.publish("com.example.listed", n, **options)
        # Events arrive in publication order: what comes before this marker is the answer.
        publisher.publish("com.example.listed", "marker", exclude_me=False)
        got = set()
        for name, inbox in inboxes.items():
            if inbox.get() != (("marker",), {}):
                got.add(name)
                assert inbox.get() == (("marker",), {})
        return got

    assert receivers(1, eligible=[a.session_id, b.session_id], exclude=[b.session_id]) == {"a"}
    assert receivers(2, exclude_authid=[c_authid]) == {"a", "b"}
    assert receivers(3, eligible_authrole=["admin"]) == set()
    assert receivers(4, eligible_authid=[c_authid], exclude_me=False) == {"c"}
    assert receivers(5, exclude_me=False) == {"a", "b", "c", "publisher"}


def test_retained_events_for_exact_and_prefix_subscribers(clients: Any) -> None:
    publisher = clients()
    publisher.publish("com.example.status.db", "old", retain=True)
    publisher.publish("com.example.status.db", "up", retain=True)
    publisher.publish("com.example.status.cache", "down", retain=True)
    late = clients()
    exact = late.subscribe_detailed("com.example.status.db", get_retained=True)
    args, _, details = exact.get()
    assert args == ("up",) and details.retained is True
    prefix = late.subscribe_detailed("com.example.status.", match="prefix", get_retained=True)
    retained = [prefix.get() for _ in range(2)]
    assert [(args, details.topic, details.retained) for args, _, details in retained] == [
        (("up",), "com.example.status.db", True),
        (("down",), "com.example.status.cache", True),
    ]
    assert late.subscribe_detailed("com.example.status.db").nothing_within(0.3), "only when asked"


def test_retained_events_expire_with_retain_ttl(start_server: Any) -> None:
    server = start_server("--retain-ttl", "1")
    with Client(server.ws_url) as publisher, Client(server.ws_url) as late:
        publisher.publish("com.example.brief", "now", retain=True)
        assert late.subscribe_detailed("com.example.brief", get_retained=True).get()[0] == ("now",)
        time.sleep(1.2)
        assert late.subscribe_detailed("com.example.brief", match="prefix", get_retained=True).nothing_within(0.3)


def test_event_history_for_exact_and_pattern_subscriptions(start_server: Any) -> None:
    server = start_server("--history-size", "3")
    with Client(server.ws_url) as reader, Client(server.ws_url) as publisher, Client(server.ws_url) as other:
        for n in range(4):
            publisher.publish("com.example.log.a", n)
        publisher.publish("com.example.log.b", "b")
        exact = reader.subscribe_detailed("com.example.log.a")
        history = reader.call("wamp.subscription.get_events", exact.subscription.id)
        assert [event["args"] for event in history] == [[1], [2], [3]]
        assert history[0]["timestamp"].endswith("Z") and history[0]["subscription"] == exact.subscription.id
        prefix = reader.subscribe_detailed("com.example.log.", match="prefix")
        history = reader.call("wamp.subscription.get_events", prefix.subscription.id, limit=10)
        assert [(event["topic"], event["args"]) for event in history] == [
            ("com.example.log.a", [1]), ("com.example.log.a", [2]), ("com.example.log.a", [3]), ("com.example.log.b", ["b"]),
        ]
        assert [e["args"] for e in reader.call("wamp.subscription.get_events", prefix.subscription.id, 2)] == [[3], ["b"]]
        with pytest.raises(ApplicationError) as refused:
            other.call("wamp.subscription.get_events", prefix.subscription.id)
        assert refused.value.error == "wamp.error.no_such_subscription"
        assert other.call("wamp.session.count") == 3, "the refused session is still open"


def test_subscription_meta_events_and_procedures(clients: Any) -> None:
    watcher, subscriber = clients(), clients()
    meta = watcher.subscribe_detailed("wamp.subscription.", match="prefix")
    inbox = subscriber.subscribe("com.example.watched", match="prefix")
    subscription = inbox.subscription.id
    (args_create, _, create), (args_subscribe, _, subscribe) = meta.get(), meta.get()
    assert (create.topic, subscribe.topic) == ("wamp.subscription.on_create", "wamp.subscription.on_subscribe")
    assert args_create[0] == subscriber.session_id and args_create[1]["uri"] == "com.example.watched"
    assert args_subscribe == (subscriber.session_id, subscription)
    assert watcher.call("wamp.subscription.lookup", "com.example.watched", {"match": "prefix"}) == subscription
    assert watcher.call("wamp.subscription.match", "com.example.watched.x") == [subscription]
    assert watcher.call("wamp.subscription.get", subscription)["match"] == "prefix"
    assert watcher.call("wamp.subscription.list_subscribers", subscription) == [subscriber.session_id]
    assert watcher.call("wamp.subscription.count_subscribers", subscription) == 1
    assert subscription in watcher.call("wamp.subscription.list")["prefix"]
    subscriber.unsubscribe(inbox)
    (_, _, unsubscribe), (_, _, delete) = meta.get(), meta.get()
    assert (unsubscribe.topic, delete.topic) == ("wamp.subscription.on_unsubscribe", "wamp.subscription.on_delete")


#: A realm open to anyone, but configured to let anonymous sessions end others (wamp.session.kill).
MODERATED = """
[realms.realm1]
anonymous = "anonymous"

[realms.realm1.roles.anonymous]
permissions = [
  { uri = "", match = "prefix", allow = ["publish", "subscribe", "call", "register", "disclose"] },
  { uri = "wamp.session.kill", allow = ["call"] },
]
"""


def test_session_meta_events_and_kill(start_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "wsserver.toml"
    config.write_text(MODERATED)
    server = start_server("--config", str(config))
    with Client(server.ws_url) as watcher:
        joins, leaves = watcher.subscribe("wamp.session.on_join"), watcher.subscribe("wamp.session.on_leave")
        victim = Client(server.ws_url)
        ((joined,), _) = joins.get()
        assert joined["session"] == victim.session_id and joined["authrole"] == "anonymous"
        assert watcher.call("wamp.session.count") == 2
        assert sorted(watcher.call("wamp.session.list")) == sorted([watcher.session_id, victim.session_id])
        assert watcher.call("wamp.session.get", victim.session_id)["authmethod"] == "anonymous"
        reasons: list[str] = []
        victim.session.onLeave = lambda details: (reasons.append(details.reason), victim.session.disconnect())
        watcher.call("wamp.session.kill", victim.session_id, reason="com.example.kicked", message="bye")
        assert leaves.get() == ((joined["session"], joined["authid"], "anonymous"), {})
        assert reasons == ["com.example.kicked"]
        with pytest.raises(ApplicationError) as refused:
            watcher.call("wamp.session.kill", joined["session"])
        assert refused.value.error == "wamp.error.no_such_session"
        assert watcher.call("wamp.session.count") == 1


def test_bad_requests_get_the_specs_errors_and_the_session_stays_open(clients: Any, server: Any) -> None:
    client = clients()
    for topic, match in (("com..x", "prefix"), ("com.x.", "exact")):
        with pytest.raises(ApplicationError) as refused:
            client.subscribe(topic, match=match)
        assert refused.value.error == "wamp.error.invalid_uri"
    with pytest.raises(ApplicationError) as refused:
        client.call("wamp.session.get", 424242)
    assert refused.value.error == "wamp.error.no_such_session"
    with pytest.raises(ApplicationError) as refused:
        client.publish("wamp.session.on_join", {"session": 1})
    assert refused.value.error == "wamp.error.invalid_uri"
    with raw_session(server.ws_url) as ws:  # autobahn-python refuses to send an unknown policy
        assert exchange(ws, [32, 7, {"match": "regex"}, "com.example.x"])[:5] == [8, 32, 7, {}, "wamp.error.invalid_argument"]
        assert exchange(ws, [32, 8, {"match": "prefix"}, "com.example."])[:2] == [33, 8]
    assert client.call("wamp.session.get", client.session_id)["session"] == client.session_id
