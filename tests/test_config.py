"""--config files: what they become, and every way they are refused (with file, line and key)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from wsserver.config import FLAG, LIST, VALUE, ConfigError, load
from wsserver.core.authentication import hash_ticket
from wsserver.core.matching import EXACT, PREFIX, WILDCARD
from wsserver.core.policy import EVERYTHING, Permission, Principal, WampCraSecret, open_realm

OPTIONS = {"listen": LIST, "max-subscriptions": VALUE, "demo": FLAG, "realm": LIST, "config": VALUE, "web": VALUE}
TICKET = hash_ticket("pw", "salt", iterations=5)
KEY = "ab" * 32

EXAMPLE = f"""\
# A realm for a dashboard.
[server]
max-subscriptions = 50
listen = ["tcp:8080", "tcp:8081"]
demo = true

[realms.realm1]
anonymous = "viewer"

[realms.realm1.roles.viewer]
permissions = [
  {{ uri = "com.example.", match = "prefix", allow = ["subscribe"] }},
  {{ uri = "com.example.admin.", match = "prefix", allow = [] }},
]

[realms.realm1.roles.admin]
permissions = [{{ uri = "", match = "prefix", allow = ["publish", "subscribe", "call", "register", "disclose"] }}]

[realms.realm1.principals.alice]
role = "admin"
ticket = "{TICKET}"

[realms.realm1.principals.bob]
role = "viewer"
wampcra = {{ secret = "derived", salt = "s", iterations = 10, keylen = 16 }}

[realms.realm1.principals."device-7"]
role = "viewer"
cryptosign = ["{KEY.upper()}"]
wampcra = "plain secret"

[realms."com.example.other"]
[realms."com.example.other".roles.nobody]
permissions = [{{ uri = "com..x", match = "wildcard", allow = ["call"] }}, {{ uri = "com.a.b", allow = ["call"] }}]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wsserver.toml"
    path.write_text(textwrap.dedent(text))
    return path


def refused(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load(path, OPTIONS)
    message = str(error.value)
    assert message.startswith(f"{path}:"), message
    return message[len(str(path)):]


def test_a_configuration_becomes_plain_policies(tmp_path: Path) -> None:
    config = load(write(tmp_path, EXAMPLE), OPTIONS)
    assert config.options == {"max-subscriptions": 50, "listen": ["tcp:8080", "tcp:8081"], "demo": True}
    realm = config.realms["realm1"]
    assert realm.anonymous_role == "viewer"
    assert realm.roles["viewer"] == (
        Permission("com.example.", PREFIX, frozenset({"subscribe"})), Permission("com.example.admin.", PREFIX, frozenset()),
    )
    assert realm.roles["admin"] == (EVERYTHING,)
    assert realm.principals == {
        "alice": Principal("alice", "admin", ticket=TICKET),
        "bob": Principal("bob", "viewer", wampcra=WampCraSecret("derived", "s", 10, 16)),
        "device-7": Principal("device-7", "viewer", wampcra=WampCraSecret("plain secret"), cryptosign=frozenset([KEY])),
    }
    assert not realm.open_to_anyone
    other = config.realms["com.example.other"]
    assert other.anonymous_role is None and other.principals == {}
    assert [p.match for p in other.roles["nobody"]] == [WILDCARD, EXACT]


def test_server_options_become_arguments_the_command_line_overrides(tmp_path: Path) -> None:
    config = load(write(tmp_path, EXAMPLE), OPTIONS)
    assert config.arguments(set()) == [
        "--max-subscriptions", "50", "--listen", "tcp:8080", "--listen", "tcp:8081", "--demo",
    ]
    assert config.arguments({"listen", "demo"}) == ["--max-subscriptions", "50"]


def test_realms_not_in_the_file_are_open(tmp_path: Path) -> None:
    config = load(write(tmp_path, EXAMPLE), OPTIONS)
    first, second = config.policies(["realm1", "realm9"])
    assert first is config.realms["realm1"] and second == open_realm("realm9") and second.open_to_anyone


def test_a_file_that_does_not_parse_is_refused_at_its_line(tmp_path: Path) -> None:
    assert refused(tmp_path, "[server]\nlisten = [\"tcp:1\"\n\n[realms.x]\n").startswith(":4: not valid TOML: Unclosed array")
    assert refused(tmp_path, "[realms.a]\nanonymous = \n").startswith(":2: not valid TOML: Invalid value")


@pytest.mark.parametrize(
    "text, line, complaint",
    [
        ("colour = 1\n[realms.a]\n", 1, "colour: unknown key 'colour' at the top level (known: server, realms, history)"),
        ("[server]\nlisten = []\nrealm = ['x']\n[realms.a]\n", 3, "server.realm: unknown key 'realm' in [server]"),
        ("[server]\nbogus = 1\n[realms.a]\n", 2, "server.bogus: unknown key 'bogus' in [server]"),
        ("[realms.a]\nanonymus = 'r'\n", 2, "realms.a.anonymus: unknown key 'anonymus' in [realms.a] (known: anonymous, roles, principals, http-keys)"),
        ("[realms.a.roles.r]\npermissions = []\nallow = []\n", 3, "realms.a.roles.r.allow: unknown key 'allow'"),
        (
            "[realms.a.roles.r]\npermissions = [\n  { uri = 'a', allow = [] },\n  { uri = 'b', allwo = [] },\n]\n",
            4, "realms.a.roles.r.permissions[1].allwo: unknown key 'allwo'",
        ),
        (
            "[realms.a.roles.r]\n[realms.a.principals.alice]\nrole = 'r'\nwampcra = 's'\n[realms.a.principals.bob]\nrole = 'r'\ntiket = 'x'\n",
            7, "realms.a.principals.bob.tiket: unknown key 'tiket' in [realms.a.principals.bob] (known: role, ticket, wampcra, cryptosign)",
        ),
        (
            "[realms.a.roles.r]\n[realms.a.principals.bob]\nrole = 'r'\nwampcra = { secret = 's', salty = 'x' }\n",
            4, "realms.a.principals.bob.wampcra.salty: unknown key 'salty'",
        ),
    ],
)
def test_an_unknown_key_is_refused_with_its_line_and_name(tmp_path: Path, text: str, line: int, complaint: str) -> None:
    message = refused(tmp_path, text)
    assert message.startswith(f":{line}: {complaint}"), message


@pytest.mark.parametrize(
    "text, line, complaint",
    [
        ("[server]\n", 1, "realms: is missing"),
        ("realms = 1\n", 1, "realms: must be a table"),
        ("[realms]\n", 1, "realms: names no realm"),
        ("[realms.'bad realm']\n", 1, "realms.bad realm: 'bad realm' is not a valid realm name"),
        ("[server]\ndemo = 'yes'\n[realms.a]\n", 2, "server.demo: is a flag: true or false"),
        ("[server]\nweb = ['a', 'b']\n[realms.a]\n", 2, "server.web: takes one value"),
        ("[server]\nlisten = [true]\n[realms.a]\n", 2, "server.listen: takes a value or a list of values"),
        ("[realms.a]\nanonymous = 'ghost'\n", 2, "realms.a.anonymous: no role 'ghost' in this realm (roles: none)"),
        ("[realms.a.roles.r]\npermissions = 'all'\n", 2, "realms.a.roles.r.permissions: must be a list"),
        ("[realms.a.roles.r]\npermissions = [{ uri = 'a', match = 'regex', allow = [] }]\n", 2, "permissions[0].match: must be one of exact, prefix, wildcard"),
        ("[realms.a.roles.r]\npermissions = [{ uri = 'a..b', allow = [] }]\n", 2, "permissions[0].uri: 'a..b' is not a valid exact pattern"),
        ("[realms.a.roles.r]\npermissions = [{ uri = 'a', allow = ['read'] }]\n", 2, "permissions[0].allow: must be a list of publish, subscribe, call, register, disclose"),
        ("[realms.a.roles.r]\npermissions = [{ uri = 'a', allow = [] }, { uri = 'a', allow = ['call'] }]\n", 2, "permissions[1]: exact 'a' is given twice"),
        ("[realms.a.roles.r]\npermissions = [{ allow = [] }]\n", 2, "permissions[0].uri: is missing"),
        ("[realms.a.roles.r]\n[realms.a.principals.p]\nticket = 'x'\n", 2, "realms.a.principals.p: principal 'p' needs a role"),
        ("[realms.a.roles.r]\n[realms.a.principals.p]\nrole = 'q'\n", 3, "realms.a.principals.p.role: no role 'q' in this realm (roles: r)"),
        ("[realms.a.roles.r]\n[realms.a.principals.p]\nrole = 'r'\n", 2, "realms.a.principals.p: principal 'p' has no credential"),
        ("[realms.a.roles.r]\n[realms.a.principals.p]\nrole = 'r'\nticket = 'secret'\n", 4, "realms.a.principals.p.ticket: not a ticket hash"),
        ("[realms.a.roles.r]\n[realms.a.principals.p]\nrole = 'r'\ncryptosign = ['abcd']\n", 4, "realms.a.principals.p.cryptosign: 'abcd' is not an Ed25519 public key"),
        ("[realms.a.roles.r]\n[realms.a.principals.p]\nrole = 'r'\ncryptosign = 5\n", 4, "realms.a.principals.p.cryptosign: must be a list"),
        ("[realms.a.roles.r]\n[realms.a.principals.p]\nrole = 'r'\nwampcra = { secret = 's', iterations = 0 }\n", 4, "wampcra.iterations: must be a positive integer, not 0"),
        ("[realms.a.roles.r]\n[realms.a.principals.p]\nrole = 'r'\nwampcra = 7\n", 4, "realms.a.principals.p.wampcra: must be a secret, or a table"),
        (
            f"[realms.a.roles.r]\n[realms.a.principals.p]\nrole = 'r'\ncryptosign = ['{KEY}']\n"
            f"[realms.a.principals.q]\nrole = 'r'\ncryptosign = ['{KEY}']\n",
            7, f"realms.a.principals.q.cryptosign: key {KEY} is also p's",
        ),
    ],
)
def test_a_value_it_cannot_use_is_refused_with_its_line(tmp_path: Path, text: str, line: int, complaint: str) -> None:
    message = refused(tmp_path, text)
    assert message.startswith(f":{line}: ") and complaint in message, message


def test_a_key_named_like_a_value_elsewhere_is_found_where_it_is_a_key(tmp_path: Path) -> None:
    text = "[realms.a]\nanonymous = 'public'\n\n[realms.a.roles.public]\npermissions = [{ uri = 'public.x', allow = [], extra = 1 }]\n"
    assert refused(tmp_path, text).startswith(":5: realms.a.roles.public.permissions[0].extra: unknown key")


def test_an_unreadable_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml", OPTIONS)
    (tmp_path / "latin1.toml").write_bytes(b"# caf\xe9\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "latin1.toml", OPTIONS)


# -- the HTTP API's keys -------------------------------------------------------------------------

HASH = "ab" * 32
KEYS = f"""\
[realms.a.roles.r]
[realms.a.http-keys.backend]
role = "r"
key = "sha256:{HASH.upper()}"
[realms.a.http-keys."signer-2"]
role = "r"
secret = "0123456789abcdef"
key = "sha256:{HASH}"

[realms.b.roles.w]
[realms.b.http-keys.other]
role = "w"
secret = "fedcba9876543210"
"""


def test_http_api_keys_belong_to_their_realm_and_role(tmp_path: Path) -> None:
    from wsserver.transports.http_api import HttpKey

    config = load(write(tmp_path, KEYS), OPTIONS)
    assert config.http_keys == (
        HttpKey("backend", "a", "r", key_sha256=bytes.fromhex(HASH)),
        HttpKey("signer-2", "a", "r", key_sha256=bytes.fromhex(HASH), secret=b"0123456789abcdef"),
        HttpKey("other", "b", "w", secret=b"fedcba9876543210"),
    )
    assert load(write(tmp_path, "[realms.a]\n"), OPTIONS).http_keys == ()


@pytest.mark.parametrize(
    "text, line, complaint",
    [
        ("[realms.a.roles.r]\n[realms.a.http-keys.k]\nkey = 'sha256:00'\n", 2, "realms.a.http-keys.k: key 'k' needs a role"),
        ("[realms.a.roles.r]\n[realms.a.http-keys.k]\nrole = 'q'\n", 3, "realms.a.http-keys.k.role: no role 'q' in this realm"),
        ("[realms.a.roles.r]\n[realms.a.http-keys.k]\nrole = 'r'\n", 2, "realms.a.http-keys.k: key 'k' has neither key nor secret"),
        ("[realms.a.roles.r]\n[realms.a.http-keys.k]\nrole = 'r'\nkey = 'plain-key'\n", 4, "realms.a.http-keys.k.key: must be sha256: and 64 hex digits"),
        ("[realms.a.roles.r]\n[realms.a.http-keys.k]\nrole = 'r'\nsecret = 'short'\n", 4, "realms.a.http-keys.k.secret: is too short"),
        ("[realms.a.roles.r]\n[realms.a.http-keys.k]\nrole = 'r'\nsecret = 5\n", 4, "realms.a.http-keys.k.secret: must be a string"),
        ("[realms.a.roles.r]\n[realms.a.http-keys.k]\nrole = 'r'\nsecrets = 'x'\n", 4, "realms.a.http-keys.k.secrets: unknown key 'secrets'"),
        ("[realms.a.roles.r]\n[realms.a.http-keys.'k k']\nrole = 'r'\n", 2, "'k k' is not a key name"),
        ("[realms.a.roles.r]\n[realms.a.http-keys]\nk = 1\n", 3, "realms.a.http-keys.k: must be a table"),
        (
            "[realms.a.roles.r]\n[realms.a.http-keys.k]\nrole = 'r'\nsecret = '0123456789abcdef'\n"
            "[realms.b.roles.r]\n[realms.b.http-keys.k]\nrole = 'r'\nsecret = '0123456789abcdef'\n",
            6, "realms.b.http-keys.k: key name 'k' is taken in realm 'a'",
        ),
    ],
)
def test_a_bad_http_api_key_is_refused_with_its_line(tmp_path: Path, text: str, line: int, complaint: str) -> None:
    message = refused(tmp_path, text)
    assert message.startswith(f":{line}: ") and complaint in message, message


def test_history_rules_are_read_by_pattern(tmp_path: Path) -> None:
    from wsserver.core.history import HistoryRule

    config = load(write(tmp_path, """\
        history = [
          { uri = "com.example.", match = "prefix", size = 100, ttl = 300 },
          { uri = "com.example.chat", size = 0 },
        ]
        [realms.realm1]
        """), OPTIONS)
    assert config.history == (HistoryRule("com.example.", PREFIX, 100, 300.0), HistoryRule("com.example.chat", EXACT, 0, None))


@pytest.mark.parametrize(
    "rule, complaint",
    [
        ('{ uri = "com.a", size = -1 }', "history[0].size: must be the number of events"),
        ('{ uri = "com.a", size = 3, ttl = 0 }', "history[0].ttl: must be seconds"),
        ('{ uri = "com..a", size = 3 }', "history[0].uri: 'com..a' is not a valid exact pattern"),
        ('{ uri = "com.a", size = 3, match = "glob" }', "history[0].match: must be one of"),
        ('{ uri = "com.a", size = 3, keep = 1 }', "unknown key 'keep'"),
        ('"com.a"', "history[0]: a history rule is a table"),
    ],
)
def test_a_bad_history_rule_is_refused_with_its_line(tmp_path: Path, rule: str, complaint: str) -> None:
    message = refused(tmp_path, f"history = [{rule}]\n[realms.realm1]\n")
    assert message.startswith(":1: ") and complaint in message, message
