"""
``wamp.session.kill`` against a running server: in a realm open to anyone (no --config) an
anonymous visitor may publish, subscribe, call and register, but not end other sessions; with
--config, a role allowed to call it may.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import exchange, join, raw_session


def test_an_anonymous_visitor_cannot_kill_other_sessions_in_an_open_realm(server: Any) -> None:
    with contextlib.ExitStack() as stack, Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        victims = [stack.enter_context(raw_session(server.ws_url)) for _ in range(5)]
        for victim in victims:
            assert exchange(victim, [32, 1, {}, "com.example.still"])[0] == 33
        attacker = stack.enter_context(raw_session(server.ws_url))
        ids = exchange(attacker, [48, 1, {}, "wamp.session.list", []])[3][0]
        refusals = [exchange(attacker, [48, 2 + n, {}, "wamp.session.kill", [session]]) for n, session in enumerate(ids)]
        # Everyone is still there and still receives events.
        assert exchange(attacker, [48, 99, {}, "wamp.session.count", []])[3] == [len(ids)]
        assert exchange(attacker, [16, 100, {"acknowledge": True}, "com.example.still", ["here"]])[0] == 17
        for victim in victims:
            assert json.loads(victim.recv(timeout=5))[4] == ["here"]
    bystander.check()
    memory.check(64 * 2**20)
    for refusal in refusals:  # before: 5 of 5 victims got GOODBYE
        assert refusal[:5] == [8, 48, refusal[2], {}, "wamp.error.not_authorized"], refusal
        assert "--config" in refusal[5][0], refusal


def test_with_config_a_role_allowed_to_call_it_may_kill(start_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "wsserver.toml"
    config.write_text("""
[realms.realm1]
anonymous = "moderator"

[realms.realm1.roles.moderator]
permissions = [
  { uri = "com.example.", match = "prefix", allow = ["subscribe"] },
  { uri = "wamp.session.", match = "prefix", allow = ["call"] },
]
""")
    server = start_server("--config", str(config))
    with raw_session(server.ws_url, hello=False) as victim, raw_session(server.ws_url, hello=False) as moderator:
        victim_id = join(victim)[1]
        join(moderator)
        assert exchange(moderator, [48, 1, {}, "wamp.session.kill", [victim_id]])[0] == 50
        assert json.loads(victim.recv(timeout=5)) == [6, {}, "wamp.close.normal"]


MODERATED = """
[realms.realm1]
anonymous = "{role}"

[realms.realm1.roles.moderator]
permissions = [
  {{ uri = "com.example.", match = "prefix", allow = ["subscribe", "publish", "call", "register"] }},
  {{ uri = "wamp.session.", match = "prefix", allow = ["call"] }},
]

[realms.realm1.roles.visitor]
permissions = [
  {{ uri = "com.example.", match = "prefix", allow = ["subscribe", "publish", "call", "register"] }},
  {{ uri = "wamp.session.count", allow = ["call"] }},
]
"""


@pytest.mark.parametrize("configured", [False, True], ids=["open realm", "role without permission"])
def test_kill_all_and_kill_by_from_a_session_not_allowed_are_refused_and_nobody_leaves(
    start_server: Any, tmp_path: Path, configured: bool
) -> None:
    config = tmp_path / "wsserver.toml"
    config.write_text(MODERATED.format(role="visitor"))
    server = start_server(*(["--config", str(config)] if configured else []))
    with contextlib.ExitStack() as stack, Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        victims = [stack.enter_context(raw_session(server.ws_url)) for _ in range(5)]
        attacker = stack.enter_context(raw_session(server.ws_url))
        everyone = exchange(attacker, [48, 999, {}, "wamp.session.count", []])[3]
        attempts = [
            ["wamp.session.kill_all", []],
            ["wamp.session.kill_by_authrole", ["anonymous" if not configured else "visitor"]],
            ["wamp.session.kill_by_authid", ["anonymous"]],
        ]
        refusals = [exchange(attacker, [48, n, {}, uri, args]) for n, (uri, args) in enumerate(attempts * 100, 1)]
        assert exchange(attacker, [48, 999, {}, "wamp.session.count", []])[3] == everyone
        for victim in victims:
            assert exchange(victim, [48, 1, {}, "wamp.session.count", []])[0] == 50
    bystander.check()
    memory.check(64 * 2**20)
    for refusal in refusals:  # before: ERROR wamp.error.no_such_procedure (the procedures did not exist)
        assert refusal[:5] == [8, 48, refusal[2], {}, "wamp.error.not_authorized"], refusal


def test_with_config_a_moderator_kills_by_authid_and_all_but_itself(start_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "wsserver.toml"
    config.write_text(MODERATED.format(role="moderator"))
    server = start_server("--config", str(config))
    with contextlib.ExitStack() as stack:
        victims = [stack.enter_context(raw_session(server.ws_url)) for _ in range(3)]
        moderator = stack.enter_context(raw_session(server.ws_url))
        first_id = exchange(moderator, [48, 1, {}, "wamp.session.list", []])[3][0][0]
        authid = exchange(moderator, [48, 2, {}, "wamp.session.get", [first_id]])[3][0]["authid"]
        killed = exchange(moderator, [48, 3, {}, "wamp.session.kill_by_authid", [authid], {"reason": "com.example.out"}])
        assert killed == [50, 3, {}, [1]]
        killed = exchange(moderator, [48, 4, {}, "wamp.session.kill_all", [], {"message": "maintenance"}])
        assert killed == [50, 4, {}, [2]]
        goodbyes = [json.loads(victim.recv(timeout=5)) for victim in victims]
        assert goodbyes.count([6, {}, "com.example.out"]) == 1
        assert goodbyes.count([6, {"message": "maintenance"}, "wamp.close.normal"]) == 2
        assert exchange(moderator, [48, 5, {}, "wamp.session.kill_all", []]) == [50, 5, {}, [0]], "each once"
