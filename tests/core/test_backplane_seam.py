"""
The core's seam for a backplane: a broker hands each publication to ``forward`` after routing it
locally, and another node's router routes it with ``route_from_elsewhere`` as the origin would.
Two routers stand for two nodes; the list between them stands for Redis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tests.core.harness import Harness, wire
from wsserver.core.broker import Publication

EVENT = 36


class Nodes:
    """Node A forwards to node B (a list in between); session ids differ, as random ids do across nodes."""

    def __init__(self, **options: Any) -> None:
        self.forwarded: list[tuple[str, Publication, bool]] = []
        self.a = Harness(first_id=1000, forward=lambda *f: self.forwarded.append(f), **options)
        self.b = Harness(first_id=5000, **options)

    def carry(self) -> dict[str, list[Any]]:
        """Route everything A forwarded on B; what B's peers receive."""
        received: dict[str, list[Any]] = {}
        for realm, publication, retain in self.forwarded:
            publication = dataclasses.replace(publication)  # a copy, as a backplane's message is
            for peer, messages in wire(self.b.router.route_from_elsewhere(realm, publication, retain=retain)).items():
                received.setdefault(peer, []).extend(messages)
        self.forwarded.clear()
        return received


def test_a_publication_reaches_the_subscribers_of_another_node_with_the_origins_id_and_publisher() -> None:
    nodes = Nodes()
    nodes.a.join("pub"), nodes.a.join("sub_a"), nodes.b.join("sub_b")
    nodes.a.subscribe("sub_a", "com.t")
    sub_b = nodes.b.subscribe("sub_b", "com.t")
    local = wire(nodes.a.send("pub", [16, 1, {"acknowledge": True, "disclose_me": True}, "com.t", [1, b"\x00"], {"k": "v"}]))
    published_id = local["pub"][0][2]
    assert [m[0] for m in local["sub_a"]] == [EVENT]
    remote = nodes.carry()
    (message,) = remote["sub_b"]
    assert message[:3] == [EVENT, sub_b, published_id]
    assert message[3]["publisher"] == nodes.a.sessions["pub"].id
    assert message[4:] == [[1, b"\x00"], {"k": "v"}]


def test_publications_from_inside_the_server_are_forwarded_and_meta_events_are_not() -> None:
    nodes = Nodes()
    nodes.a.join("meta"), nodes.b.join("sub_b")
    nodes.a.subscribe("meta", "wamp.subscription.on_subscribe")
    nodes.b.subscribe("sub_b", "com.t")
    nodes.a.join("sub_a")
    nodes.a.subscribe("sub_a", "com.t")  # publishes on_create and on_subscribe on A: not forwarded
    assert nodes.forwarded == []
    nodes.a.router.publish("realm1", "com.t", ["from python"], retain=True)
    assert [(realm, p.topic, retain) for realm, p, retain in nodes.forwarded] == [("realm1", "com.t", True)]
    assert nodes.carry()["sub_b"][0][4] == ["from python"]


def test_a_refused_publication_is_not_forwarded() -> None:
    nodes = Nodes()
    nodes.a.join("pub")
    nodes.a.send("pub", [16, 1, {"acknowledge": True}, "wamp.session.on_join", []])
    assert nodes.forwarded == []


def test_exclude_me_and_the_audience_lists_hold_on_the_other_node() -> None:
    nodes = Nodes()
    nodes.a.join("pub")
    for name in ("x", "y", "z"):
        nodes.b.join(name)
        nodes.b.subscribe(name, "com.t")
    x, y = nodes.b.sessions["x"].id, nodes.b.sessions["y"].id
    nodes.a.send("pub", [16, 1, {"exclude": [x]}, "com.t", ["not x"]])
    assert set(nodes.carry()) == {"y", "z"}
    nodes.a.send("pub", [16, 2, {"eligible": [x, y], "exclude": [y]}, "com.t", ["x only"]])
    assert set(nodes.carry()) == {"x"}


def test_a_publication_from_elsewhere_is_not_forwarded_again_and_is_retained_here() -> None:
    nodes = Nodes()
    b_forwarded: list[Any] = []
    b = Harness(first_id=5000, forward=lambda *f: b_forwarded.append(f))
    nodes.b = b
    nodes.a.join("pub")
    nodes.a.send("pub", [16, 1, {"retain": True}, "com.t", ["kept"]])
    nodes.carry()
    assert b_forwarded == []
    b.join("late")
    received = wire(b.send("late", [32, 1, {"get_retained": True}, "com.t"]))["late"]
    assert received[1][0] == EVENT and received[1][3]["retained"] is True and received[1][4] == ["kept"]


def test_a_realm_this_node_does_not_serve_routes_nothing() -> None:
    nodes = Nodes()
    nodes.a.join("pub")
    nodes.a.send("pub", [16, 1, {}, "com.t", []])
    realm, publication, retain = nodes.forwarded[0]
    assert nodes.b.router.route_from_elsewhere("other", publication, retain=retain) == []


def test_history_on_the_other_node_keeps_the_publication_under_its_own_position() -> None:
    nodes = Nodes(history_size=10)
    nodes.a.join("pub"), nodes.b.join("sub_b")
    nodes.b.subscribe("sub_b", "com.t")
    nodes.a.send("pub", [16, 1, {}, "com.t", ["one"]])
    nodes.forwarded[0][1].position = ("origin-epoch", 99)  # whatever the origin set is not B's
    (message,) = nodes.carry()["sub_b"]
    assert message[3]["_seq"] == 1 and message[3]["_epoch"] != "origin-epoch"
