"""
Who may do what, and how much, against ``twistd -n wsserver``: permissions per role and URI pattern
(a role x action x pattern matrix; no event to a role that may not subscribe to its topic, also
through prefix and wildcard subscriptions; publisher disclosure), and the per-session publish
rate and subscription limits. autobahn-python and AutobahnJS peers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.auth import create_authenticator
from autobahn.wamp.exception import ApplicationError

from tests.e2e.broker_clients import Client, NodePeer

ROLES = {
    "reader": '[{ uri = "com.example.", match = "prefix", allow = ["subscribe"] },'
              ' { uri = "com.example.secret.", match = "prefix", allow = [] }]',
    # The prefix is more specific than the wildcard wherever both match (com.example.x.log).
    "writer": '[{ uri = "com.example.", match = "prefix", allow = ["publish"] },'
              ' { uri = "com.example.news.log", allow = ["publish", "subscribe"] },'
              ' { uri = "org..log", match = "wildcard", allow = ["publish", "subscribe"] }]',
    "service": '[{ uri = "com.example.api.", match = "prefix", allow = ["register", "call"] },'
               ' { uri = "com.example.api.admin", allow = [] }]',
    "guest": '[{ uri = "com.example.", match = "prefix", allow = ["subscribe"] },'
             ' { uri = "com.example.secret.", match = "prefix", allow = [] },'
             ' { uri = "com.example.guest.", match = "prefix", allow = ["publish"] },'
             ' { uri = "com.example.guest.signed.", match = "prefix", allow = ["publish", "disclose"] }]',
    "admin": '[{ uri = "", match = "prefix", allow = ["publish", "subscribe", "call", "register", "disclose"] }]',
}


def config_text() -> str:
    from wsserver.core.authentication import hash_ticket

    lines = ['[realms.realm1]', 'anonymous = "guest"']
    for role, permissions in ROLES.items():
        lines += [f"[realms.realm1.roles.{role}]", f"permissions = {permissions}"]
        if role != "guest":
            lines += [f"[realms.realm1.principals.{role}]", f'role = "{role}"',
                      f'ticket = "{hash_ticket(role + "-ticket", "00ff", iterations=1000)}"']
    return "\n".join(lines) + "\n"


@pytest.fixture
def server(start_server: Any, tmp_path: Path) -> Any:
    path = tmp_path / "wsserver.toml"
    path.write_text(config_text())
    return start_server("--config", str(path))


def login(server: Any, role: str) -> Client:
    return Client(server.ws_url, authenticator=create_authenticator("ticket", ticket=f"{role}-ticket"), authid=role)


@pytest.fixture
def clients(server: Any) -> Iterator[dict[str, Client]]:
    logged_in = {role: login(server, role) for role in ROLES if role != "guest"}
    yield logged_in
    for client in logged_in.values():
        client.leave()


# role -> action -> URIs it may, URIs it may not
MATRIX: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "reader": {
        "subscribe": (["com.example.news", "com.example.a.b"], ["com.example.secret.plan", "org.example.x"]),
        "publish": ([], ["com.example.news"]),
        "register": ([], ["com.example.api.f"]),
        "call": ([], ["com.example.api.f"]),
    },
    "writer": {
        "publish": (["com.example.news", "com.example.a.log", "org.x.log"], ["org.example.x"]),
        "subscribe": (["com.example.news.log", "org.x.log"], ["com.example.news", "com.example.a.log", "org.x.y.log"]),
        "register": ([], ["com.example.api.f"]),
    },
    "service": {
        "register": (["com.example.api.f"], ["com.example.api.admin", "com.example.other"]),
        "call": (["com.example.api.f"], ["com.example.api.admin"]),
        "publish": ([], ["com.example.api.f"]),
    },
}


@pytest.mark.parametrize("role", list(MATRIX))
def test_matrix_each_role_may_do_exactly_what_its_permissions_say(clients: dict[str, Client], role: str) -> None:
    client = clients[role]
    attempts = {
        "subscribe": lambda uri: client.subscribe(uri),
        "publish": lambda uri: client.publish(uri, 1),
        "register": lambda uri: client.register(uri, lambda: "ok"),
        "call": lambda uri: client.call(uri),
    }
    for action, (allowed, denied) in MATRIX[role].items():
        for uri in allowed:
            attempts[action](uri)
        for uri in denied:
            with pytest.raises(ApplicationError) as refused:
                attempts[action](uri)
            assert refused.value.error == "wamp.error.not_authorized", (role, action, uri)
            assert refused.value.args == (f"role {role!r} may not {action} {uri!r}",)
    assert client.session.is_attached()  # refusals never end the session


def test_no_event_reaches_a_role_that_may_not_subscribe_to_its_topic(clients: dict[str, Client], server: Any) -> None:
    reader, admin = clients["reader"], clients["admin"]
    node = NodePeer(server.ws_url)  # AutobahnJS, anonymous: role guest
    try:
        inboxes = {
            ("reader", "prefix"): reader.subscribe_detailed("com.example.", match="prefix"),
            ("reader", "wildcard"): reader.subscribe_detailed("com.example..x", match="wildcard"),
            ("admin", "prefix"): admin.subscribe_detailed("com.example.", match="prefix"),
            ("admin", "wildcard"): admin.subscribe_detailed("com.example..x", match="wildcard"),
        }
        node_prefix = node.request("subscribe", topic="com.example.", options={"match": "prefix"})
        topics = ["com.example.secret.x", "com.example.news.x", "com.example.secret.log", "com.example.news.log"]
        for topic in topics:
            admin.publish(topic, topic, exclude_me=False)
        received = {key: topics_until_quiet(inbox) for key, inbox in inboxes.items()}
        assert received == {
            ("reader", "prefix"): ["com.example.news.x", "com.example.news.log"],
            ("reader", "wildcard"): ["com.example.news.x"],
            ("admin", "prefix"): topics,
            ("admin", "wildcard"): ["com.example.secret.x", "com.example.news.x"],
        }
        node_topics = [node.event(node_prefix)["topic"] for _ in range(2)]
        assert node_topics == ["com.example.news.x", "com.example.news.log"] and node.no_event(node_prefix)
    finally:
        node.close()


def topics_until_quiet(inbox: Any, quiet: float = 0.5) -> list[str]:
    """The topics of the events that arrive until none has for ``quiet`` seconds."""
    topics = []
    while True:
        try:
            _, _, details = inbox.get(timeout=quiet)
        except AssertionError:
            return topics
        topics.append(details.topic)


def test_publisher_disclosure_needs_the_disclose_permission(clients: dict[str, Client], server: Any) -> None:
    inbox = clients["admin"].subscribe_detailed("com.example.guest.", match="prefix")
    node = NodePeer(server.ws_url)
    try:
        error = node.failing("publish", topic="com.example.guest.chat", args=["hi"], options={"disclose_me": True})
        assert error["error"] == "wamp.error.option_disallowed.disclose_me"
        node.request("publish", topic="com.example.guest.chat", args=["anonymous"])
        node.request("publish", topic="com.example.guest.signed.chat", args=["signed"], options={"disclose_me": True})
        first, second = inbox.get(), inbox.get()
        assert first[0] == ("anonymous",) and first[2].publisher is None
        assert second[0] == ("signed",) and second[2].publisher == node.session_id
        assert second[2].publisher_authrole == "guest"
    finally:
        node.close()


def test_publish_rate_and_subscription_limits_refuse_with_their_own_errors(start_server: Any) -> None:
    server = start_server("--max-publish-rate", "0.5", "--publish-burst", "3", "--max-subscriptions", "2")
    with Client(server.ws_url) as client:
        for n in range(3):
            client.publish("com.example.flood", n)
        with pytest.raises(ApplicationError) as over:
            client.publish("com.example.flood", 3)
        assert over.value.error == "wsserver.error.publish_rate_exceeded"
        assert over.value.args == ("over 0.5 publications a second (bursts of 3)",)
        client.subscribe("com.example.a")
        client.subscribe("com.example.", match="prefix")
        with pytest.raises(ApplicationError) as full:
            client.subscribe("com.example.c")
        assert full.value.error == "wsserver.error.too_many_subscriptions"
        assert client.call("wamp.session.count") == 1  # the session stays open
