"""
Failed logins against a running server: wrong tickets in a loop cannot freeze the server (the
hashing runs off the reactor thread) nor guess on (failures are limited per client address and
per authid); everyone else logs in and keeps its events.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.test_auth import config_text

FAILED = [3, {"message": "authentication failed"}, "wamp.error.not_authorized"]
BYSTANDER_TOPIC = "com.example.public.bystander"
#: Guessing clients, and the connections each guesses on at once.
GUESSERS, CONNECTIONS = 20, 5


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """test_auth's logins, erin's ticket, and anonymous publishing on com.example.public. (the bystander's)."""
    from wsserver.core.authentication import hash_ticket

    subscribe_only = '{ uri = "com.example.public.", match = "prefix", allow = ["subscribe"] }'
    text = config_text()
    assert subscribe_only in text
    text = text.replace(subscribe_only, subscribe_only.replace('["subscribe"]', '["publish", "subscribe"]'))
    erin = f'[realms.realm1.principals.erin]\nrole = "member"\nticket = "{hash_ticket("erin-ticket", "0a1b2c3d")}"\n'
    path = tmp_path / "wsserver.toml"
    path.write_text(text + erin)
    return path


def login(ws_url: str, authid: str, ticket: str, source: str = "127.0.0.1") -> list[Any]:
    """A ticket login from address ``source``: the WELCOME or ABORT it gets."""
    with ws_connect(ws_url, subprotocols=["wamp.2.json"], open_timeout=10, source_address=(source, 0)) as ws:
        ws.send(json.dumps([1, "realm1", {"roles": {"subscriber": {}}, "authmethods": ["ticket"], "authid": authid}]))
        challenge = json.loads(ws.recv(timeout=10))
        assert challenge[:2] == [4, "ticket"], challenge
        ws.send(json.dumps([5, ticket, {}]))
        return list(json.loads(ws.recv(timeout=30)))


def test_wrong_tickets_in_a_loop_neither_slow_the_server_nor_lock_out_others(start_server: Any, config: Path) -> None:
    server = start_server("--config", str(config))
    answers: list[list[Any]] = []
    stop = threading.Event()
    together = threading.Barrier(GUESSERS)

    def guess(n: int) -> None:
        """Rounds of wrong tickets on CONNECTIONS connections at once, sent with every other guesser's."""
        while not stop.is_set():
            connections = [ws_connect(server.ws_url, subprotocols=["wamp.2.json"], open_timeout=10)
                           for _ in range(CONNECTIONS)]
            try:
                for ws in connections:
                    ws.send(json.dumps([1, "realm1", {"roles": {"subscriber": {}}, "authmethods": ["ticket"],
                                                      "authid": f"guess-{n}-{len(answers)}"}]))
                    assert json.loads(ws.recv(timeout=10))[0] == 4
                try:
                    together.wait(timeout=30)
                except threading.BrokenBarrierError:
                    return  # the attack is over
                for ws in connections:
                    ws.send(json.dumps([5, "not-it", {}]))
                for ws in connections:
                    try:
                        answers.append(json.loads(ws.recv(timeout=30)))
                    except ConnectionClosed:
                        pass  # our close reply came too late for the server (a loaded machine): reset
            finally:
                for ws in connections:
                    ws.close()

    with Bystander(server.ws_url, topic=BYSTANDER_TOPIC) as bystander, MemoryWatch(server.proc.pid) as memory:
        guessers = [threading.Thread(target=guess, args=(n,), daemon=True) for n in range(GUESSERS)]
        for guesser in guessers:
            guesser.start()
        time.sleep(4)
        started = time.monotonic()
        welcome = login(server.ws_url, "alice", "alice-ticket", source="127.0.0.2")
        login_time = time.monotonic() - started
        time.sleep(2)
        stop.set()
        together.abort()
        for guesser in guessers:
            guesser.join(30)
    # Before: each round blocked the reactor for 100 PBKDF2 checks: bystander median 650 ms, max 3.0 s.
    bystander.check()
    memory.check(64 * 2**20)
    assert welcome[0] == 2 and welcome[2]["authid"] == "alice", welcome
    assert login_time < 2, login_time
    assert len(answers) >= GUESSERS * CONNECTIONS and all(answer == FAILED for answer in answers), answers[:3]


def test_failures_for_one_authid_are_limited_whatever_the_address(start_server: Any, config: Path) -> None:
    server = start_server("--config", str(config), "--max-login-failures-per-authid", "5")
    for n in range(5):  # five addresses, each far within its own limit
        assert login(server.ws_url, "alice", "wrong", source=f"127.0.0.{10 + n}") == FAILED
    # Now even the right ticket is refused, in the same way, from a fresh address ...
    assert login(server.ws_url, "alice", "alice-ticket", source="127.0.0.20") == FAILED
    # ... while another user logs in from there.
    assert login(server.ws_url, "erin", "erin-ticket", source="127.0.0.20")[0] == 2


def test_failures_from_one_address_are_limited_whatever_the_authid(start_server: Any, config: Path) -> None:
    server = start_server("--config", str(config), "--max-login-failures", "3")
    for n in range(3):
        assert login(server.ws_url, f"nobody-{n}", "wrong", source="127.0.0.30") == FAILED
    assert login(server.ws_url, "erin", "erin-ticket", source="127.0.0.30") == FAILED
    assert login(server.ws_url, "erin", "erin-ticket", source="127.0.0.31")[0] == 2
