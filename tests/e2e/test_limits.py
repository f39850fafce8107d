"""Connection limits against the real server: each limit's option, and its effect on the wire."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import wait_for


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock`` (reads until EOF), failing after ``seconds``."""
    start = time.monotonic()
    sock.settimeout(seconds)
    while sock.recv(4096):
        pass
    return time.monotonic() - start


def test_a_silent_or_dribbling_http_client_is_dropped(start_server: Any) -> None:
    server = start_server("--handshake-timeout", "1")
    silent = socket.create_connection(("127.0.0.1", server.port))
    dribbler = socket.create_connection(("127.0.0.1", server.port))
    dribbler.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    assert closed_within(silent, 5) < 3
    assert closed_within(dribbler, 5) < 3
    # Everyone else is served.
    with ws_connect(server.ws_url, subprotocols=["wamp.2.json"]) as ws:
        ws.send(json.dumps([1, "realm1", {"roles": {"subscriber": {}}}]))
        assert json.loads(ws.recv(timeout=5))[0] == 2


def test_a_websocket_without_hello_is_closed_with_1008(start_server: Any) -> None:
    server = start_server("--hello-timeout", "1")
    with ws_connect(server.ws_url, subprotocols=["wamp.2.json"]) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert "no WAMP HELLO" in closed.value.rcvd.reason


def test_connections_per_address_are_limited_and_freed(start_server: Any) -> None:
    server = start_server("--max-connections-per-ip", "2")
    first = ws_connect(server.ws_url, subprotocols=["wamp.2.json"])
    second = ws_connect(server.ws_url, subprotocols=["wamp.2.json"])
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(server.ws_url, subprotocols=["wamp.2.json"])
    assert refused.value.response.status_code == 429
    first.close()

    def admitted() -> bool:
        try:
            ws_connect(server.ws_url, subprotocols=["wamp.2.json"]).close()
        except InvalidStatus:
            return False
        return True

    wait_for(admitted, timeout=5)
    second.close()


def test_a_foreign_origin_gets_403(start_server: Any) -> None:
    server = start_server("--allowed-origin", "https://app.example")
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(server.ws_url, subprotocols=["wamp.2.json"], origin="https://evil.example")
    assert refused.value.response.status_code == 403
    ws_connect(server.ws_url, subprotocols=["wamp.2.json"], origin="https://app.example").close()


def test_ws_and_echo_share_one_connection_budget(start_server: Any) -> None:
    server = start_server("--max-connections-per-ip", "1")
    with ws_connect(server.ws_url, subprotocols=["wamp.2.json"]):
        with pytest.raises(InvalidStatus) as refused:
            ws_connect(f"ws://127.0.0.1:{server.port}/echo")
        assert refused.value.response.status_code == 429
    wait_for(lambda: _echo_admitted(server.port), timeout=5)


def _echo_admitted(port: int) -> bool:
    try:
        ws_connect(f"ws://127.0.0.1:{port}/echo").close()
    except InvalidStatus:
        return False
    return True
