"""
End to end with autobahn-python clients against ``twistd -n wsserver``: sessions, pub/sub,
acknowledgement, exclude_me, all three serializers, and the demo producer.
"""

from __future__ import annotations

from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError

from tests.e2e.conftest import wait_for
from tests.e2e.wampclient import WampClient


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
def test_two_sessions_publish_and_subscribe(server: Any, serializer: str) -> None:
    with WampClient(server.ws_url, serializer=serializer) as sub, WampClient(server.ws_url, serializer=serializer) as pub:
        assert sub.session_id != pub.session_id
        inbox = sub.subscribe("com.example.topic")
        publication = pub.publish("com.example.topic", 1, "two", {"three": [3]}, k="v")
        assert publication.id > 0
        assert inbox.get() == ((1, "two", {"three": [3]}), {"k": "v"})
        pub.publish("com.example.topic", "héllo ✓")
        assert inbox.get() == (("héllo ✓",), {})


def test_publisher_gets_its_own_event_only_with_exclude_me_false(server: Any) -> None:
    with WampClient(server.ws_url) as client:
        inbox = client.subscribe("com.example.echo")
        client.publish("com.example.echo", "excluded")
        client.publish("com.example.echo", "included", exclude_me=False)
        assert inbox.get() == (("included",), {})
        assert inbox.nothing_within(0.3)


def test_unsubscribe_stops_events_and_errors_are_wamp_errors(server: Any) -> None:
    with WampClient(server.ws_url) as sub, WampClient(server.ws_url) as pub:
        inbox = sub.subscribe("com.example.topic")
        sub.unsubscribe(inbox)
        pub.publish("com.example.topic", 1)
        assert inbox.nothing_within(0.3)
        with pytest.raises(ApplicationError) as error:
            sub.subscribe("com..bad")
        assert error.value.error == "wamp.error.invalid_uri"
        # Both sessions still work after their errors.
        after = sub.subscribe("com.example.after")
        pub.publish("com.example.after", 2)
        assert after.get() == ((2,), {})


def test_mixed_serializers_receive_the_same_event(server: Any) -> None:
    clients = [WampClient(server.ws_url, serializer=name) for name in ("json", "msgpack", "cbor")]
    try:
        inboxes = [client.subscribe("com.example.mixed") for client in clients]
        clients[0].publish("com.example.mixed", [1, 2], exclude_me=False)
        for inbox in inboxes:
            assert inbox.get() == (([1, 2],), {})
    finally:
        for client in clients:
            client.leave()


def test_unknown_realm_is_refused(server: Any) -> None:
    with pytest.raises(RuntimeError, match="no_such_realm"):
        WampClient(server.ws_url, realm="nowhere")


def test_the_same_transport_can_leave_and_the_server_forgets_the_session(server: Any) -> None:
    watcher = WampClient(server.ws_url)
    inbox = watcher.subscribe("com.example.gone")
    watcher.leave()
    with WampClient(server.ws_url) as pub:
        pub.publish("com.example.gone", 1)
    assert inbox.nothing_within(0.3)


def test_demo_producer_feeds_ticker_and_clock(start_server: Any) -> None:
    server = start_server("--demo")
    with WampClient(server.ws_url) as client:
        ticker = client.subscribe("com.example.ticker")
        clock = client.subscribe("com.example.clock")
        (first,), _ = ticker.get(3)
        (second,), _ = ticker.get(3)
        assert 1 <= second - first <= 10
        (now,), _ = clock.get(3)
        assert now.endswith("Z") and "T" in now


def test_server_stop_says_goodbye_system_shutdown(start_server: Any) -> None:
    server = start_server()
    client = WampClient(server.ws_url)
    reasons: list[str] = []
    client.session.onLeave = lambda details: (reasons.append(details.reason), client.session.disconnect())
    assert server.stop() in (0, -15)  # twistd re-raises the signal it stopped on
    wait_for(lambda: reasons, timeout=5)
    assert reasons == ["wamp.close.system_shutdown"]
