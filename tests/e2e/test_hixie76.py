"""
``twistd -n wsserver --hixie76`` from raw draft-76 clients (keys made as the draft says, random each
run): echo, a whole WAMP session with an event published from Python, the same port still serving
pages, RFC 6455 and Flash policy requests, shutdown; and without ``--hixie76``, no draft 76.
"""

from __future__ import annotations

import os
import signal
import urllib.request
from typing import TYPE_CHECKING, Any

import pytest

from .legacy.hixie76_client import Hixie76Client, Hixie76Error
from .legacy.websocketjs import fetch_policy, policy_allows, random_text
from .rawws import HELLO
from .wampclient import WampClient, publish_once

if TYPE_CHECKING:
    from .conftest import ServerProcess

HOST = "127.0.0.1"


@pytest.fixture
def hixie_server(start_server: Any) -> ServerProcess:
    server: ServerProcess = start_server("--hixie76")
    return server


def test_without_the_option_draft_76_is_refused(server: ServerProcess) -> None:
    with pytest.raises(Hixie76Error, match="refused: 'HTTP/1.1 400"):
        Hixie76Client(HOST, server.port, "/echo")


def test_echo_round_trips_and_quit_closes(hixie_server: ServerProcess) -> None:
    client = Hixie76Client(HOST, hixie_server.port, "/echo?from=e2e", origin="http://legacy.example")
    assert client.header("Sec-WebSocket-Location") == f"ws://{HOST}:{hixie_server.port}/echo?from=e2e"
    assert client.header("Sec-WebSocket-Origin") == "http://legacy.example"
    for text in ["hello", "h\u00e9llo \u2603", random_text(100_000)]:
        client.send(text)
        assert client.receive() == text
    client.send("quit")
    assert client.receive() is None  # the server's closing frame, answered
    client.wait_closed()


def test_the_client_closes(hixie_server: ServerProcess) -> None:
    client = Hixie76Client(HOST, hixie_server.port, "/echo")
    client.send("one")
    assert client.receive() == "one"
    client.close()


def test_a_whole_wamp_session_with_an_event_published_from_python(hixie_server: ServerProcess) -> None:
    client = Hixie76Client(HOST, hixie_server.port, "/ws", protocol="wamp.2.json")
    assert client.header("Sec-WebSocket-Protocol") == "wamp.2.json"
    client.send_json(HELLO)
    assert client.receive_json()[0] == 2
    topic = "com.example.legacy.hixie76"
    client.send_json([32, 1, {}, topic])
    subscribed = client.receive_json()
    assert subscribed[:2] == [33, 1]

    publish_once(hixie_server.ws_url, topic, "from python", 1)
    event = client.receive_json()
    assert event[0] == 36 and event[1] == subscribed[2] and event[4] == ["from python", 1]

    with WampClient(hixie_server.ws_url) as watcher:  # draft 76 to RFC 6455
        inbox = watcher.subscribe(topic)
        client.send_json([16, 2, {"acknowledge": True}, topic, ["from draft 76"]])
        assert client.receive_json()[:2] == [17, 2]
        assert inbox.get() == (("from draft 76",), {})

    client.send_json([6, {}, "wamp.close.close_realm"])
    assert client.receive_json() == [6, {}, "wamp.close.goodbye_and_out"]
    client.close()


def test_the_port_still_serves_pages_rfc6455_and_flash_policies(hixie_server: ServerProcess) -> None:
    legacy = Hixie76Client(HOST, hixie_server.port, "/echo")
    with urllib.request.urlopen(f"{hixie_server.http_url}/echo.html", timeout=5) as page:
        assert page.status == 200 and b"/echo" in page.read()
    assert policy_allows(fetch_policy(HOST, hixie_server.port), hixie_server.port)
    with WampClient(hixie_server.ws_url) as modern:
        inbox = modern.subscribe("com.example.mixed")
        publish_once(hixie_server.ws_url, "com.example.mixed", 1)
        assert inbox.get() == ((1,), {})
    legacy.send("still here")
    assert legacy.receive() == "still here"
    legacy.close()


def test_shutdown_says_goodbye_to_draft_76_sessions(hixie_server: ServerProcess) -> None:
    client = Hixie76Client(HOST, hixie_server.port, "/ws", protocol="wamp.2.json")
    client.send_json(HELLO)
    client.receive_json()
    assert hixie_server.proc is not None
    os.kill(hixie_server.proc.pid, signal.SIGTERM)
    assert client.receive_json() == [6, {}, "wamp.close.system_shutdown"]
    client.send_json([6, {}, "wamp.close.goodbye_and_out"])
    assert client.receive() is None  # then the closing handshake
    client.wait_closed()
    hixie_server.proc.wait(timeout=10)
