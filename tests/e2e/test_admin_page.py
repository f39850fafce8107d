"""
The admin page (``/admin.html``) in headless Chromium against ``twistd -n wsserver --config``: the
admin logs in with a ticket, sees the charts draw and the figures, another session in the list,
disconnects it, and sees a retained topic; another role is told it is not authorized. Plus the
admin surface refused to a session of another role, on a running server, with a bystander.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .cdp import Chromium, Page
from .hostile import Bystander, MemoryWatch
from .rawws import HELLO, exchange, raw_session
from .test_pages import browser  # noqa: F401 (the fixture: a headless Chromium)

NOT_AUTHORIZED = "wamp.error.not_authorized"
GOODBYE = 6
DEPUTY_SALT = "d3pu7yd3pu7y"


def config_text() -> str:
    """Realm1: anonymous sessions may use com.example.; boss is the admin; guest may do anything, but is not it."""
    from autobahn.wamp.auth import derive_key

    from wsserver.core.authentication import hash_ticket

    return f"""
[realms.realm1]
anonymous = "public"

[realms.realm1.roles.public]
permissions = [{{ uri = "com.example.", match = "prefix", allow = ["publish", "subscribe"] }}]

[realms.realm1.roles.admin]
permissions = [
  {{ uri = "wsserver.", match = "prefix", allow = ["subscribe", "call"] }},
  {{ uri = "wamp.session.", match = "prefix", allow = ["call"] }},
]

[realms.realm1.roles.member]
permissions = [{{ uri = "", match = "prefix", allow = ["publish", "subscribe", "call", "register"] }}]

[realms.realm1.principals.boss]
role = "admin"
ticket = "{hash_ticket("boss-ticket", "5a175a175a175a17", iterations=1000)}"

[realms.realm1.principals.deputy]
role = "admin"
wampcra = {{ secret = "{derive_key("deputy-password", DEPUTY_SALT, 1000, 32).decode()}", salt = "{DEPUTY_SALT}", iterations = 1000, keylen = 32 }}

[realms.realm1.principals.guest]
role = "member"
ticket = "{hash_ticket("guest-ticket", "6b286b286b286b28", iterations=1000)}"
"""


@pytest.fixture
def server(start_server: Any, tmp_path: Path) -> Any:
    config = tmp_path / "wsserver.toml"
    config.write_text(config_text())
    return start_server("--config", str(config))


def log_in(page: Page, authid: str, password: str, method: str = "ticket") -> None:
    page.evaluate(
        f"document.getElementById('authid').value = {json.dumps(authid)};"
        f"document.getElementById('password').value = {json.dumps(password)};"
        f"document.getElementById('authmethod').value = {json.dumps(method)};"
        "document.getElementById('log-in').click()"
    )


def test_the_admin_sees_charts_sessions_and_topics_and_disconnects_a_session(server: Any, browser: Chromium) -> None:
    with raw_session(server.ws_url) as publisher:
        published = exchange(publisher, [16, 1, {"retain": True, "acknowledge": True}, "com.example.status", ["ok"]])
        assert published[0] == 17, published
    with raw_session(server.ws_url, hello=False) as other:
        welcome = exchange(other, HELLO)
        other_id = welcome[1]
        page = browser.new_page(server.http_url + "/admin.html")
        log_in(page, "boss", "boss-ticket")
        page.wait_for("document.getElementById('state').textContent === 'open'")
        assert "role admin" in (page.text("#state-reason") or "")
        # The charts draw: uPlot's canvas for each figure, and the figures of the stats events.
        page.wait_for("document.querySelectorAll('#admin .chart .uplot canvas').length === 5")
        sessions = page.wait_for("Number(document.getElementById('stat-sessions').textContent) >= 2 "
                                 "&& document.getElementById('stat-sessions').textContent")
        assert int(sessions) >= 2
        page.wait_for("document.getElementById('stat-send_buffer_bytes').textContent !== '–'")
        # Two stats events make a line: uPlot has two points on the sessions chart.
        page.wait_for("document.querySelectorAll('#admin .uplot').length === 5"
                      " && document.getElementById('stat-dropped_per_s').textContent === '0.0'", timeout=15)
        # The retained topic.
        row = page.wait_for(
            "[...document.querySelectorAll('#topics tbody tr')].find((r) => r.dataset.topic === 'com.example.status')"
            "?.textContent"
        )
        assert "yes" in row
        # The other session, with what carries it and its address; then disconnect it.
        selector = f"#sessions tr[data-session='{other_id}']"
        cells = page.wait_for(f"[...(document.querySelector({json.dumps(selector)})?.cells ?? [])].map((c) => c.textContent)")
        assert cells[1] == f"anonymous-{other_id}" and cells[2] == "public"
        assert cells[3] == "websocket/json" and cells[4] == "127.0.0.1"
        page.evaluate(f"document.querySelector({json.dumps(selector + ' button.disconnect')}).click()")
        goodbye = json.loads(other.recv(timeout=10))
        assert goodbye[0] == GOODBYE and goodbye[2] == "wsserver.admin.disconnected", goodbye
        other.send(json.dumps([GOODBYE, {}, "wamp.close.goodbye_and_out"]))  # as a WAMP client answers
        page.wait_for(f"!document.querySelector({json.dumps(selector)})")
    assert page.text("#refusal") == ""


def test_the_admin_may_log_in_with_wampcra(server: Any, browser: Chromium) -> None:
    page = browser.new_page(server.http_url + "/admin.html")
    log_in(page, "deputy", "deputy-password", method="wampcra")
    page.wait_for("document.getElementById('stat-sessions').textContent === '1'")
    assert "as deputy, role admin" in (page.text("#state-reason") or "")


def test_another_role_is_told_it_is_not_authorized(server: Any, browser: Chromium) -> None:
    page = browser.new_page(server.http_url + "/admin.html")
    log_in(page, "guest", "guest-ticket")
    refusal = page.wait_for("!document.getElementById('refusal').hidden && document.getElementById('refusal').textContent")
    assert refusal.startswith("Not authorized: role member is not the admin role") and NOT_AUTHORIZED in refusal
    assert page.text("#state") == "closed"
    assert page.evaluate("document.getElementById('admin').hidden")


def test_a_wrong_password_is_told_the_login_was_refused(server: Any, browser: Chromium) -> None:
    page = browser.new_page(server.http_url + "/admin.html")
    log_in(page, "boss", "not-the-ticket")
    refusal = page.wait_for("!document.getElementById('refusal').hidden && document.getElementById('refusal').textContent")
    assert refusal.startswith("Login refused")


def test_the_admin_surface_is_refused_to_other_roles_and_costs_the_others_nothing(server: Any) -> None:
    """A session that may call and subscribe to anything, but is not the admin, asks 600 times."""
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        with raw_session(server.ws_url, hello=False) as attacker:
            hello = [1, "realm1", {**HELLO[2], "authmethods": ["ticket"], "authid": "guest"}]
            assert exchange(attacker, hello)[0] == 4  # CHALLENGE
            assert exchange(attacker, [5, "guest-ticket", {}])[0] == 2  # WELCOME
            requests = [[32, n, {}, "wsserver.stats"] if n % 3 == 0 else [48, n, {}, "wsserver.admin.topics"]
                        for n in range(1, 601)]
            answers = [exchange(attacker, request) for request in requests]
            assert {(answer[0], answer[4]) for answer in answers} == {(8, NOT_AUTHORIZED)}
            assert exchange(attacker, [48, 9999, {}, "wamp.session.count", []])[0] == 50  # still open
    bystander.check()
    memory.check(64 * 2**20)


def test_without_an_admin_the_page_says_so(start_server: Any, browser: Chromium, tmp_path: Path) -> None:
    open_server = start_server()  # no --config: no logins at all
    page = browser.new_page(open_server.http_url + "/admin.html")
    log_in(page, "boss", "boss-ticket")
    refusal = page.wait_for("!document.getElementById('refusal').hidden && document.getElementById('refusal').textContent")
    assert refusal.startswith("This server has no logins for that method: configure an admin principal in --config")
    config = tmp_path / "admin-off.toml"
    config.write_text(config_text())
    admin_off = start_server("--config", str(config), "--admin-role", "")
    page.goto(admin_off.http_url + "/admin.html")
    log_in(page, "boss", "boss-ticket")
    refusal = page.wait_for("!document.getElementById('refusal').hidden && document.getElementById('refusal').textContent")
    assert refusal.startswith("Not authorized: this server has no admin role")
