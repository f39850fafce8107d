"""
Logging in to ``twistd -n wsserver --config FILE`` with every method, from autobahn-python and from
AutobahnJS on Node; failures that look the same whatever failed; and the startup line that says a
server without --config is open to anyone.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.auth import create_authenticator, derive_key
from nacl.signing import SigningKey
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import wait_for
from tests.e2e.prerequisites import node_command
from tests.e2e.wampclient import WampClient

AUTH_PEER = Path(__file__).with_name("node") / "auth_peer.js"
REPO = Path(__file__).resolve().parents[2]
DAVE_SEED = "17" * 32
DAVE_PUBKEY = SigningKey(bytes.fromhex(DAVE_SEED)).verify_key.encode().hex()
BOB_SALT = "9f86d081884c7d65"


def config_text() -> str:
    from wsserver.core.authentication import hash_ticket

    bob_key = derive_key("bob-password", BOB_SALT, 1000, 32).decode()
    return f"""
[realms.realm1]
anonymous = "public"

[realms.realm1.roles.public]
permissions = [{{ uri = "com.example.public.", match = "prefix", allow = ["subscribe"] }}]

[realms.realm1.roles.member]
permissions = [{{ uri = "com.example.", match = "prefix", allow = ["publish", "subscribe"] }}]

[realms.realm1.principals.alice]
role = "member"
ticket = "{hash_ticket("alice-ticket", "0123456789abcdef")}"

[realms.realm1.principals.bob]
role = "member"
wampcra = {{ secret = "{bob_key}", salt = "{BOB_SALT}", iterations = 1000, keylen = 32 }}

[realms.realm1.principals.carol]
role = "member"
wampcra = "carol-secret"

[realms.realm1.principals.dave]
role = "member"
cryptosign = ["{DAVE_PUBKEY}"]

[realms.private.roles.admin]
permissions = [{{ uri = "", match = "prefix", allow = ["publish", "subscribe", "call", "register"] }}]

[realms.private.principals.alice]
role = "admin"
ticket = "{hash_ticket("alice-ticket", "fedcba9876543210")}"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "wsserver.toml"
    path.write_text(config_text())
    return path


@pytest.fixture
def server(start_server: Any, config: Path) -> Any:
    return start_server("--config", str(config))


def test_a_challenge_left_unanswered_is_closed_after_the_hello_timeout(start_server: Any, config: Path) -> None:
    server = start_server("--config", str(config), "--hello-timeout", "1")
    with ws_connect(server.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as ws:
        ws.send(json.dumps([1, "realm1", {"roles": {"subscriber": {}}, "authmethods": ["ticket"], "authid": "alice"}]))
        assert json.loads(ws.recv(timeout=5)) == [4, "ticket", {}]
        started = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert 0.9 < time.monotonic() - started < 3


#: method -> (authid, what the client knows, the authenticator autobahn-python logs in with)
LOGINS: dict[str, tuple[str, str, Any]] = {
    "ticket": ("alice", "alice-ticket", lambda: create_authenticator("ticket", ticket="alice-ticket")),
    "wampcra-salted": ("bob", "bob-password", lambda: create_authenticator("wampcra", authid="bob", secret="bob-password")),
    "wampcra": ("carol", "carol-secret", lambda: create_authenticator("wampcra", authid="carol", secret="carol-secret")),
    "cryptosign": ("dave", DAVE_SEED, lambda: create_authenticator("cryptosign", privkey=DAVE_SEED)),
}


@pytest.mark.parametrize("login", list(LOGINS))
def test_autobahn_python_logs_in_with_each_method(server: Any, login: str) -> None:
    authid, _, authenticator = LOGINS[login]
    with WampClient(server.ws_url, authenticator=authenticator(), authid=None if login == "cryptosign" else authid) as client:
        session = client.session
        assert (session.authid, session.authrole, session.authmethod) == (authid, "member", login.split("-")[0])
        inbox = client.subscribe("com.example.news")
        client.publish("com.example.news", login, exclude_me=False)
        assert inbox.get() == ((login,), {})


def test_autobahn_python_anonymous_gets_the_anonymous_role(server: Any) -> None:
    with WampClient(server.ws_url) as client:
        assert (client.session.authrole, client.session.authmethod) == ("public", "anonymous")


def node_login(server: Any, realm: str, method: str, authid: str, secret: str, topic: str = "") -> list[dict[str, Any]]:
    command = node_command(AUTH_PEER, server.ws_url, realm, method, authid, secret, *([topic] if topic else []))
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("login", list(LOGINS))
def test_autobahnjs_logs_in_with_each_method_and_publishes(server: Any, login: str) -> None:
    authid, secret, _ = LOGINS[login]
    method = login.split("-")[0]
    welcome, published = node_login(server, "realm1", method, "" if method == "cryptosign" else authid, secret, "com.example.news")
    assert welcome == {"welcome": {"authid": authid, "authrole": "member", "authmethod": method}}
    assert "published" in published


def test_autobahnjs_anonymous_may_not_publish_and_is_told_so(server: Any) -> None:
    welcome, refused = node_login(server, "realm1", "anonymous", "", "", "com.example.news")
    assert welcome["welcome"]["authrole"] == "public"
    assert refused == {"publish_error": "wamp.error.not_authorized"}


@pytest.mark.parametrize("login", list(LOGINS))
def test_autobahnjs_with_a_wrong_secret_is_refused(server: Any, login: str) -> None:
    authid, _, _ = LOGINS[login]
    method = login.split("-")[0]
    secret = "42" * 32 if method == "cryptosign" else "wrong"
    (refused,) = node_login(server, "realm1", method, "" if method == "cryptosign" else authid, secret)
    assert refused == {"refused": {"reason": "wamp.error.not_authorized", "message": "authentication failed"}}


@pytest.mark.parametrize(
    "authenticator, authid",
    [
        (lambda: create_authenticator("ticket", ticket="wrong"), "alice"),
        (lambda: create_authenticator("ticket", ticket="alice-ticket"), "nobody"),
        (lambda: create_authenticator("wampcra", authid="nobody", secret="x"), "nobody"),
        (lambda: create_authenticator("cryptosign", privkey="42" * 32), None),
    ],
)
def test_autobahn_python_is_refused_the_same_way_whatever_failed(server: Any, authenticator: Any, authid: Any) -> None:
    with pytest.raises(RuntimeError, match=r"^session refused: wamp.error.not_authorized authentication failed$"):
        WampClient(server.ws_url, authenticator=authenticator(), authid=authid)


def test_a_realm_without_anonymous_refuses_it_and_takes_its_principals(server: Any) -> None:
    with pytest.raises(RuntimeError, match="wamp.error.no_auth_method"):
        WampClient(server.ws_url, realm="private")
    ticket = create_authenticator("ticket", ticket="alice-ticket")
    with WampClient(server.ws_url, realm="private", authenticator=ticket, authid="alice") as client:
        assert client.session.authrole == "admin"


def refusal_time(ws_url: str, authid: str, ticket: str) -> tuple[float, list[Any]]:
    """Seconds from AUTHENTICATE to ABORT, and the ABORT, over a raw WebSocket."""
    with ws_connect(ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as ws:
        ws.send(json.dumps([1, "realm1", {"roles": {"subscriber": {}}, "authmethods": ["ticket"], "authid": authid}]))
        assert json.loads(ws.recv(timeout=5)) == [4, "ticket", {}]
        started = time.monotonic()
        ws.send(json.dumps([5, ticket, {}]))
        abort = json.loads(ws.recv(timeout=5))
        return time.monotonic() - started, abort


def test_an_unknown_user_and_a_wrong_ticket_take_the_same_time_and_get_the_same_abort(server: Any) -> None:
    unknown, wrong = [], []
    for _ in range(4):  # alternated, against the noise of a shared machine
        for samples, authid in ((unknown, "nobody"), (wrong, "alice")):
            seconds, abort = refusal_time(server.ws_url, authid, "not-it")
            assert abort == [3, {"message": "authentication failed"}, "wamp.error.not_authorized"]
            samples.append(seconds)
    assert min(unknown + wrong) >= 0.5  # the router's constant delay
    difference = abs(statistics.median(unknown) - statistics.median(wrong))
    assert difference < 0.05, (unknown, wrong)


def test_only_a_server_without_config_says_it_is_open_to_anyone(server: Any, start_server: Any) -> None:
    open_server = start_server("--realm", "realm1", "--realm", "lobby")
    wait_for(lambda: "open to anyone" in open_server.log)  # logged as the service starts, after it listens
    assert "open to anyone" not in server.log
    lines = [line for line in open_server.log.splitlines() if "open to anyone" in line]
    assert len(lines) == 1 and "realm realm1, lobby" in lines[0], lines
