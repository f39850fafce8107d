"""
What web-socket-js's Flash movie sends, byte for byte, against ``twistd -n wsserver``: the socket
policy from the site's port, then its exact handshake and masked text frames, for the echo service
and for a whole WAMP session (``wamp.2.json``) that receives an event published from Python.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from .legacy.websocketjs import (
    WebSocketJsClient,
    WebSocketJsError,
    fetch_policy,
    policy_allows,
    random_text,
)
from .rawws import HELLO
from .wampclient import WampClient, publish_once

if TYPE_CHECKING:
    from .conftest import ServerProcess

HOST = "127.0.0.1"


def page_origin(server: ServerProcess) -> str:
    return f"http://{HOST}:{server.port}"


def test_the_policy_from_the_site_port_allows_that_port(server: ServerProcess) -> None:
    """With port 843 off (as in these tests), Flash asks the destination port itself."""
    document = fetch_policy(HOST, server.port)
    assert policy_allows(document, server.port)
    assert not policy_allows(document, server.port + 1)


def test_echo_text_round_trips_then_quit_closes_with_1000(server: ServerProcess) -> None:
    client = WebSocketJsClient(HOST, server.port, "/echo", page_origin(server), cookie="theme=dark; seen=1")
    assert client.protocol is None
    # 7-bit, 16-bit and 64-bit frame lengths, ASCII and multi-byte UTF-8
    for text in ["hello", "h\u00e9llo w\u00f6rld \u2603", random_text(300), random_text(70_000)]:
        client.send(text)
        assert client.receive() == text
    client.send("quit")
    assert client.wait_closed_by_server() == (1000, "quit")


def test_echo_closed_by_the_page(server: ServerProcess) -> None:
    """WebSocket.close() in the page: an empty close frame; the server answers and closes the socket."""
    client = WebSocketJsClient(HOST, server.port, "/echo", page_origin(server))
    client.send("one")
    assert client.receive() == "one"
    client.close()
    assert client.closed


def test_a_whole_wamp_session_with_an_event_published_from_python(server: ServerProcess) -> None:
    client = WebSocketJsClient(HOST, server.port, "/ws", page_origin(server), protocols=("wamp.2.json",))
    assert client.protocol == "wamp.2.json"
    client.send_json(HELLO)
    welcome = client.receive_json()
    assert welcome[0] == 2 and welcome[2]["roles"]["broker"]
    topic = "com.example.legacy.websocketjs"
    client.send_json([32, 1, {}, topic])
    subscribed = client.receive_json()
    assert subscribed[:2] == [33, 1]

    publish_once(server.ws_url, topic, "from python", 1, unicode="\u00e9\u2603")
    event = client.receive_json()
    assert event[0] == 36 and event[1] == subscribed[2]
    assert event[4:] == [["from python", 1], {"unicode": "\u00e9\u2603"}]

    # and the other way: the legacy client publishes, a modern one receives
    with WampClient(server.ws_url) as watcher:
        inbox = watcher.subscribe(topic)
        client.send_json([16, 2, {"acknowledge": True}, topic, ["from web-socket-js"], {}])
        published = client.receive_json()
        assert published[:2] == [17, 2]
        assert inbox.get() == (("from web-socket-js",), {})

    client.send_json([6, {}, "wamp.close.close_realm"])
    assert client.receive_json() == [6, {}, "wamp.close.goodbye_and_out"]
    client.close()  # as AutobahnJS does after GOODBYE
    assert client.closed


def test_a_foreign_origin_is_refused_on_both_endpoints(start_server: Any) -> None:
    server = start_server("--allowed-origin", "http://good.example")
    for path, protocols in [("/echo", ()), ("/ws", ("wamp.2.json",))]:
        with pytest.raises(WebSocketJsError, match="bad response: HTTP/1.1 403"):
            WebSocketJsClient(HOST, server.port, path, "http://evil.example", protocols=protocols)
        WebSocketJsClient(HOST, server.port, path, "http://good.example", protocols=protocols).close()
