"""The admin API (wsserver/core/admin.py): the stats topic and wsserver.admin.*, for the admin role only."""

from __future__ import annotations

from typing import Any

import pytest
from autobahn.wamp import message as wamp

from tests.core.harness import HELLO_DETAILS, Harness, outbox, wire
from wsserver.core.admin import STATS_TOPIC
from wsserver.core.authentication import hash_ticket
from wsserver.core.history import HistoryRule, HistorySettings
from wsserver.core.policy import EVERYTHING, Principal, RealmPolicy

ERROR, EVENT = 8, 36
NOT_AUTHORIZED = "wamp.error.not_authorized"


def realm() -> RealmPolicy:
    """Open to anyone (role public may do everything), and a principal of role admin."""
    boss = Principal("boss", "admin", ticket=hash_ticket("boss-ticket", "b055", iterations=10))
    return RealmPolicy("realm1", {"admin": (EVERYTHING,), "public": (EVERYTHING,)}, anonymous_role="public",
                       principals={"boss": boss})


def log_in(h: Harness, name: str, ticket: str = "boss-ticket", address: str | None = None) -> list[Any]:
    h.attach(name, address)
    h.send(name, [1, "realm1", dict(HELLO_DETAILS, authmethods=["ticket"], authid="boss")])
    return outbox(h.send(name, [5, ticket, {}]))[name]


@pytest.fixture
def h() -> Harness:
    h = Harness((realm(),), history=HistorySettings(rules=(HistoryRule("com.example.", "prefix", size=5),)))
    (welcome,) = log_in(h, "admin", address="192.0.2.7")
    assert isinstance(welcome, wamp.Welcome) and welcome.authrole == "admin"
    h.join("guest")
    return h


def refusal(reply: list[Any]) -> tuple[int, str]:
    return reply[0], reply[4]


def test_only_the_admin_role_may_subscribe_to_the_stats_topic(h: Harness) -> None:
    (reply,) = wire(h.send("guest", [32, 1, {}, STATS_TOPIC]))["guest"]
    assert refusal(reply) == (ERROR, NOT_AUTHORIZED)
    assert "for the admin role 'admin'" in reply[5][0]
    assert h.subscribe("admin", STATS_TOPIC)
    assert h.result("guest", "wamp.session.count") == 2  # the refused session stays open


def test_only_the_admin_role_may_call_the_admin_procedures(h: Harness) -> None:
    assert refusal(h.call("guest", "wsserver.admin.topics")) == (ERROR, NOT_AUTHORIZED)
    assert refusal(h.call("guest", "wsserver.admin.anything")) == (ERROR, NOT_AUTHORIZED)
    assert h.call("admin", "wsserver.admin.topics")[0] == wamp.Result.MESSAGE_TYPE


def test_stats_reach_admin_sessions_only_also_through_a_pattern(h: Harness) -> None:
    h.subscribe("admin", STATS_TOPIC)
    h.subscribe("guest", "wsserver.", match="prefix")
    h.subscribe("guest", "", match="prefix")
    received = wire(h.router.publish_to_admins(STATS_TOPIC, {"sessions": 2}))
    assert list(received) == ["admin"]
    (event,) = received["admin"]
    assert event[0] == EVENT and event[5] == {"sessions": 2}


def test_stats_are_not_forwarded_to_other_nodes() -> None:
    forwarded: list[Any] = []
    h = Harness((realm(),), forward=lambda *publication: forwarded.append(publication))
    log_in(h, "admin")
    h.subscribe("admin", STATS_TOPIC)
    assert wire(h.router.publish_to_admins(STATS_TOPIC, {"sessions": 1}))["admin"]
    assert forwarded == []


def test_without_an_admin_role_no_one_may_and_nothing_is_published() -> None:
    h = Harness((realm(),), admin_role=None)
    log_in(h, "admin")
    (reply,) = wire(h.send("admin", [32, 1, {}, STATS_TOPIC]))["admin"]
    assert refusal(reply) == (ERROR, NOT_AUTHORIZED)
    assert "none is configured" in reply[5][0]
    h.subscribe("admin", "wsserver.", match="prefix")
    assert h.router.publish_to_admins(STATS_TOPIC, {"sessions": 1}) == []


def test_an_open_realm_has_no_admin() -> None:
    h = Harness()
    h.join("anyone")
    assert refusal(h.call("anyone", "wsserver.admin.topics")) == (ERROR, NOT_AUTHORIZED)


def test_topics_lists_retained_and_history_with_positions(h: Harness) -> None:
    publish = h.router.publish
    publish("realm1", "com.example.a", [1])
    publish("realm1", "com.example.a", [2], retain=True)
    publish("realm1", "org.other.b", [3], retain=True)
    publish("realm1", "org.other.c", [4])  # neither retained nor kept: not listed
    result = h.call("admin", "wsserver.admin.topics")
    topics = result[4]["topics"]
    epoch = topics[0]["epoch"]
    assert epoch and result[4]["total"] == 2
    assert topics == [
        {"topic": "com.example.a", "retained": True, "history": 2, "epoch": epoch, "position": 2},
        {"topic": "org.other.b", "retained": True, "history": 0},
    ]
    assert h.call("admin", "wsserver.admin.topics", 1)[4] == {"topics": topics[:1], "total": 2}
    assert h.call("admin", "wsserver.admin.topics", 0)[4] == "wamp.error.invalid_argument"


class Connection:
    """What a transport tells the core about its connection (wsserver.core.session.TransportInfo)."""

    kind = "websocket/json"

    def buffered_bytes(self) -> int:
        return 4096



def test_session_get_tells_the_connection_and_the_address_to_the_admin_only(h: Harness) -> None:
    h.sessions["watched"] = h.router.attach("watched", "198.51.100.9", Connection())
    h.send("watched", [1, "realm1", HELLO_DETAILS])
    h.subscribe("watched", "com.example.x")
    watched = h.sessions["watched"].id
    seen_by_admin = h.result("admin", "wamp.session.get", watched)
    seen_by_guest = h.result("guest", "wamp.session.get", watched)
    connection = {"transport": "websocket/json", "subscriptions": 1, "buffered_bytes": 4096}
    assert seen_by_admin == {**seen_by_guest, "address": "198.51.100.9"}
    assert seen_by_guest.items() >= connection.items() and "address" not in seen_by_guest
