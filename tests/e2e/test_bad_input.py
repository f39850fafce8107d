"""
Bad input over a real WebSocket: each offender gets a clear close code or WAMP error, and a
second, well-behaved session keeps receiving events throughout.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.e2e.rawws import HELLO, raw_session
from tests.e2e.wampclient import WampClient, publish_once


class Bystander:
    """A well-behaved subscriber that must keep receiving events while others misbehave."""

    def __init__(self, ws_url: str) -> None:
        self.ws_url = ws_url
        self.client = WampClient(ws_url)
        self.inbox = self.client.subscribe("com.example.bystander")

    def publish_and_check(self, n: int) -> None:
        """Publish ``n`` from a fresh session; the bystander must get exactly that event next."""
        publish_once(self.ws_url, "com.example.bystander", n)
        assert self.inbox.get() == ((n,), {})


@pytest.fixture
def bystander(server: Any) -> Iterator[Bystander]:
    watcher = Bystander(server.ws_url)
    yield watcher
    watcher.client.leave()


def closed_with(ws: ClientConnection) -> tuple[list[Any], int, str]:
    """Read until the server closes; return (messages received, close code, close reason)."""
    messages = []
    try:
        while True:
            frame = ws.recv(timeout=5)
            messages.append(json.loads(frame) if isinstance(frame, str) else frame)
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "server dropped the connection without a close frame"
        return messages, closed.rcvd.code, closed.rcvd.reason


@pytest.mark.parametrize(
    "payload, detail",
    [
        (b"\x00\xff garbage \x80", "binary message on a json session"),
        ("{this is not json", "cannot unserialize json"),
        ('{"a": 1}', "must be a non-empty list"),
        ("[4242, 1]", "unknown WAMP message type 4242"),
        ("[32, 1, {}]", "invalid message length"),
    ],
)
def test_malformed_messages_get_abort_and_close_1002(server: Any, bystander: Bystander, payload: Any, detail: str) -> None:
    with raw_session(server.ws_url) as ws:
        ws.send(payload)
        messages, code, reason = closed_with(ws)
        assert messages[0][0] == 3 and messages[0][2] == "wamp.error.protocol_violation"  # ABORT
        assert detail in messages[0][1]["message"]
        assert code == 1002 and reason.startswith("protocol violation")
    bystander.publish_and_check(1)


def test_subscribe_before_hello_is_a_protocol_violation(server: Any, bystander: Bystander) -> None:
    with raw_session(server.ws_url, hello=False) as ws:
        ws.send(json.dumps([32, 1, {}, "com.example.bystander"]))
        messages, code, _ = closed_with(ws)
        assert messages[0][2] == "wamp.error.protocol_violation"
        assert "SUBSCRIBE is not allowed in state establishing" in messages[0][1]["message"]
        assert code == 1002
    bystander.publish_and_check(2)


def test_invalid_uri_gets_an_error_and_the_session_stays_open(server: Any, bystander: Bystander) -> None:
    with raw_session(server.ws_url) as ws:
        ws.send(json.dumps([32, 7, {}, "com.example..bad"]))
        error = json.loads(ws.recv(timeout=5))
        assert error[:5] == [8, 32, 7, {}, "wamp.error.invalid_uri"]
        ws.send(json.dumps([16, 9, {"acknowledge": True}, "com example", []]))
        assert json.loads(ws.recv(timeout=5))[:5] == [8, 16, 9, {}, "wamp.error.invalid_uri"]
        ws.send(json.dumps([32, 8, {}, "com.example.bystander"]))
        assert json.loads(ws.recv(timeout=5))[:2] == [33, 8]  # SUBSCRIBED: still open
        bystander.publish_and_check(3)
        assert json.loads(ws.recv(timeout=5))[0] == 36  # and it gets the event too


def test_wrong_serializer_in_binary_session(server: Any, bystander: Bystander) -> None:
    with raw_session(server.ws_url, subprotocol="wamp.2.msgpack", hello=False) as ws:
        ws.send(json.dumps(HELLO))  # text frame on a msgpack session
        _, code, reason = closed_with(ws)
        assert code == 1002 and "text message on a msgpack session" in reason
    bystander.publish_and_check(4)


def test_oversized_message_is_refused_with_1009(start_server: Any) -> None:
    server = start_server("--max-message-size", "4096")
    watcher = Bystander(server.ws_url)
    with raw_session(server.ws_url) as ws:
        ws.send(json.dumps([16, 1, {}, "com.example.big", ["x" * 5000]]))
        _, code, _ = closed_with(ws)
        assert code == 1009
    watcher.publish_and_check(5)
    watcher.client.leave()


def test_unknown_subprotocol_is_refused_at_the_handshake(server: Any) -> None:
    with pytest.raises(Exception, match="400|subprotocol"):
        ws_connect(server.ws_url, subprotocols=["wamp.2.xml"], open_timeout=5)


def test_clients_that_drop_without_closing_do_not_disturb_others(server: Any, bystander: Bystander) -> None:
    for _ in range(5):
        with raw_session(server.ws_url) as ws:
            ws.send(json.dumps([32, 1, {}, "com.example.bystander"]))
            ws.recv(timeout=5)
            ws.socket.close()  # no close handshake, no GOODBYE
    bystander.publish_and_check(6)
