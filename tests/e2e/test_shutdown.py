"""
Stopping the server (SIGTERM): GOODBYE wamp.close.system_shutdown to every session, close 1001,
no new connections, and an exit bounded by --shutdown-timeout even when a client never answers.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import wait_for
from tests.e2e.rawws import join


def joined(server: Any) -> Any:
    ws = ws_connect(server.ws_url, subprotocols=["wamp.2.json"])
    join(ws)
    return ws


def test_goodbye_then_close_1001_and_exit_bounded_by_the_timeout(start_server: Any) -> None:
    server = start_server("--shutdown-timeout", "2")
    polite, rude = joined(server), joined(server)
    started = time.monotonic()
    os.kill(server.proc.pid, signal.SIGTERM)

    goodbye = json.loads(polite.recv(timeout=5))
    assert goodbye == [6, {}, "wamp.close.system_shutdown"]
    # Listening stops at once, while the rude client still holds the shutdown open.
    wait_for(lambda: _refused(server.port), timeout=2)
    polite.send(json.dumps([6, {}, "wamp.close.goodbye_and_out"]))
    with pytest.raises(ConnectionClosed) as closed:
        polite.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001

    assert json.loads(rude.recv(timeout=5))[2] == "wamp.close.system_shutdown"  # and never answers
    server.proc.wait(timeout=10)
    assert time.monotonic() - started < 2 + 2.5  # the timeout, plus the process's own exit
    # When the timeout ends, the rude client too gets a close frame: 1001, not a dropped TCP (1006).
    with pytest.raises(ConnectionClosed) as closed:
        rude.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False
