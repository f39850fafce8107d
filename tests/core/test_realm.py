"""Joining and leaving a realm: the session meta events, and a session leaving with everything it had."""

from __future__ import annotations

import pytest

from tests.core.harness import Harness, moderated_realm, wire


@pytest.fixture
def h() -> Harness:
    h = Harness(realms=(moderated_realm(),))
    h.join("watch")
    h.subscribe("watch", "wamp.", match="prefix")
    return h


def meta(received: dict[str, list[list[object]]]) -> list[tuple[object, object]]:
    """(meta topic, args) of what the watcher received."""
    return [(e[3]["topic"], e[4]) for e in received.get("watch", [])]  # type: ignore[index]


def test_on_join_after_welcome_with_the_session_details(h: Harness) -> None:
    h.attach("a")
    received = wire(h.send("a", [1, "realm1", {"roles": {"caller": {}}}]))
    (welcome,) = received["a"]
    session_id = welcome[1]
    assert meta(received) == [
        (
            "wamp.session.on_join",
            [{"session": session_id, "authid": f"anonymous-{session_id}", "authrole": "anonymous",
              "authmethod": "anonymous", "authprovider": "static"}],
        )
    ]


@pytest.mark.parametrize("how", ["detach", "goodbye", "abort", "violation"])
def test_a_session_leaving_with_subscriptions_and_registrations(h: Harness, how: str) -> None:
    a = h.join("a")
    a_id, authid = a.id, a.authid
    shared = h.subscribe("watch", "com.shared")
    h.subscribe("a", "com.shared")
    own = h.subscribe("a", "com.own.", match="prefix")
    registration = h.register("a", "com.a.proc")
    actions = {
        "detach": lambda: h.router.detach(a),
        "goodbye": lambda: h.send("a", [6, {}, "wamp.close.normal"]),
        "abort": lambda: h.send("a", [3, {}, "wamp.close.normal"]),
        "violation": lambda: h.send("a", [999]),
    }[how]()
    received = wire(actions)
    assert meta(received) == [
        ("wamp.subscription.on_unsubscribe", [a_id, shared]),
        ("wamp.subscription.on_unsubscribe", [a_id, own]),
        ("wamp.subscription.on_delete", [a_id, own]),
        ("wamp.registration.on_unregister", [a_id, registration]),
        ("wamp.registration.on_delete", [a_id, registration]),
        ("wamp.session.on_leave", [a_id, authid, "anonymous"]),
    ]
    assert all(m[0] != 36 for m in received.get("a", [])), "a leaving session is not told about itself"
    realm = h.router.realms["realm1"]
    assert a_id not in realm.sessions
    assert [s.topic for s in realm.subscriptions] == ["wamp.", "com.shared"]
    assert a.subscriptions == set() and a.registrations == set() and a.invocations == set()
    assert h.call("watch", "com.a.proc")[4] == "wamp.error.no_such_procedure"
    assert h.result("watch", "wamp.session.count") == 1


def test_a_killed_session_leaves_when_it_answers_goodbye(h: Harness) -> None:
    a = h.join("a")
    a_id, authid = a.id, a.authid
    assert h.call("watch", "wamp.session.kill", a_id)[0] == 50
    assert h.result("watch", "wamp.session.count") == 2, "still there until it answers"
    received = wire(h.send("a", [6, {}, "wamp.close.goodbye_and_out"]))
    assert meta(received) == [("wamp.session.on_leave", [a_id, authid, "anonymous"])]
