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
