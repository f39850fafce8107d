"""
AutobahnJS on Node (npm ``autobahn``) against ``twistd -n wsserver``, next to autobahn-python peers:
pattern subscriptions with ``details.topic``, publisher identification (AutobahnJS still sends
``disclose_me``), black- and whitelisting, retained events, meta procedures, RPC both ways and
the errors AutobahnJS gets for bad requests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.broker_clients import Client, NodePeer


@pytest.fixture
def node(server: Any) -> Iterator[NodePeer]:
    peer = NodePeer(server.ws_url)
    yield peer
    peer.close()


@pytest.fixture
def python(server: Any) -> Iterator[Client]:
    with Client(server.ws_url) as client:
        yield client


def test_autobahnjs_prefix_and_wildcard_subscriptions_see_the_concrete_topic(node: NodePeer, python: Client) -> None:
    prefix = node.request("subscribe", topic="com.example.node.", options={"match": "prefix"})
    wildcard = node.request("subscribe", topic="com.example..reading", options={"match": "wildcard"})
    exact = node.request("subscribe", topic="com.example.node.reading")
    assert len({prefix["subscribed"], wildcard["subscribed"], exact["subscribed"]}) == 3
    python.publish("com.example.node.reading", 7, unit="K")
    for subscription in (prefix, wildcard, exact):
        event = node.event(subscription)
        assert (event["args"], event["kwargs"]) == ([7], {"unit": "K"})
        assert event["topic"] == "com.example.node.reading"
    python.publish("com.example.node.other", 8)
    assert node.event(prefix)["topic"] == "com.example.node.other"
    assert node.no_event(wildcard) and node.no_event(exact)


def test_autobahnjs_publisher_identification_and_exclusion(node: NodePeer, python: Client) -> None:
    inbox = python.subscribe_detailed("com.example.node.news")
    own = node.request("subscribe", topic="com.example.node.news")
    node.request("publish", topic="com.example.node.news", args=["hello"], options={"disclose_me": True})
    args, _, details = inbox.get()
    assert args == ("hello",) and details.publisher == node.session_id
    assert details.publisher_authrole == "anonymous"
    assert node.no_event(own), "exclude_me is the default"
    node.request("publish", topic="com.example.node.news", args=["anonymous"], options={"exclude_me": False})
    assert inbox.get()[2].publisher is None
    assert node.event(own)["args"] == ["anonymous"]


def test_autobahnjs_black_and_whitelisting(node: NodePeer, python: Client, server: Any) -> None:
    with Client(server.ws_url) as other:
        eligible, excluded = python.subscribe("com.example.node.list"), other.subscribe("com.example.node.list")
        node.request("publish", topic="com.example.node.list", args=[1], options={"eligible": [python.session_id]})
        node.request("publish", topic="com.example.node.list", args=[2], options={"exclude": [python.session_id]})
        assert eligible.get() == ((1,), {}) and excluded.get() == ((2,), {})
        assert eligible.nothing_within(0.2) and excluded.nothing_within(0.2)


def test_autobahnjs_gets_retained_events_of_a_prefix(node: NodePeer, python: Client) -> None:
    python.publish("com.example.node.state.a", "A", retain=True)
    python.publish("com.example.node.state.b", "B", retain=True)
    subscribed = node.request(
        "subscribe", topic="com.example.node.state.", options={"match": "prefix", "get_retained": True}
    )
    events = [node.event(subscribed), node.event(subscribed)]
    assert [(e["topic"], e["args"], e["retained"]) for e in events] == [
        ("com.example.node.state.a", ["A"], True),
        ("com.example.node.state.b", ["B"], True),
    ]


def test_autobahnjs_calls_the_meta_api_and_rpc_works_both_ways(node: NodePeer, python: Client) -> None:
    assert node.request("call", procedure="wamp.session.count")["result"]["args"] == [2]
    subscribed = node.request("subscribe", topic="com.example.node.", options={"match": "prefix"})
    match = node.request("call", procedure="wamp.subscription.match", args=["com.example.node.x"])
    assert match["result"]["args"] == [[subscribed["subscribed"]]]
    node.request("register", procedure="com.example.node.echo")
    result = python.call("com.example.node.echo", 1, "two", three=3)
    assert (list(result.results), result.kwresults) == ([1, "two"], {"three": 3})
    python.register("com.example.python.double", lambda x: 2 * x)
    assert node.request("call", procedure="com.example.python.double", args=[21])["result"]["args"] == [42]


def test_autobahnjs_gets_clear_errors_and_stays_joined(node: NodePeer) -> None:
    error = node.failing("subscribe", topic="com.example.x", options={"match": "regex"})
    assert error["error"] == "wamp.error.invalid_argument"
    error = node.failing("subscribe", topic="com..x", options={"match": "prefix"})
    assert error["error"] == "wamp.error.invalid_uri"
    error = node.failing("call", procedure="wamp.session.kill", args=[424242])
    assert error["error"] == "wamp.error.not_authorized"  # an open realm: ending sessions needs --config
    error = node.failing("call", procedure="com.example.nobody")
    assert error["error"] == "wamp.error.no_such_procedure"
    assert node.request("call", procedure="wamp.session.count")["result"]["args"] == [1]
