"""
``--config FILE``: realms, roles, principals and server options from a TOML file, read with the
standard library's ``tomllib`` into plain data (:class:`Config`, policies from
:mod:`wsserver.core.policy`). Only :mod:`wsserver.tap` turns that into a running server.

The file (every table optional but ``realms``)::

    [server]                  # any `twistd wsserver` option by its long name but realm and config;
    max-subscriptions = 500   # the command line overrides these
    listen = ["tcp:8080"]

    history = [               # topics that keep event history (positions, resume), beyond --history-size
      { uri = "com.example.", match = "prefix", size = 100, ttl = 300 },   # ttl in seconds, optional
      { uri = "com.example.noisy.", match = "prefix", size = 0 },          # the most specific wins; 0: none
    ]

    [realms.realm1]
    anonymous = "public"      # the role of anonymous sessions; leave it out: no anonymous sessions

    [realms.realm1.roles.public]
    permissions = [
      { uri = "com.example.", match = "prefix", allow = ["subscribe"] },
      { uri = "com.example.secret.", match = "prefix", allow = [] },   # the most specific wins
    ]

    [realms.realm1.principals.alice]          # authid alice
    role = "public"
    ticket = "pbkdf2-sha256$100000$..."       # python -m wsserver.passwd
    wampcra = { secret = "...", salt = "...", iterations = 1000, keylen = 32 }   # or secret only
    cryptosign = ["<64 hex digits: an Ed25519 public key>"]

    [realms.realm1.http-keys.backend]         # a key of the HTTP API (--http-api), named backend
    role = "public"                           # its requests have this role's permissions
    key = "sha256:<64 hex digits>"            # the SHA-256 of a bearer key: wsserver-passwd --http-key
    secret = "<16+ characters>"               # and/or an HMAC-SHA256 secret: wsserver-passwd --http-secret

A file that does not parse, names a key this module does not know, or gives a value it cannot
use is refused with :class:`ConfigError`, whose message starts with ``FILE:LINE:`` and names the
key. tomllib reports the line of a syntax error; for the rest, the line is found here by looking
for the key in the text (tomllib keeps no positions), after the line of its parent.
"""

from __future__ import annotations

import binascii
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from autobahn.wamp.cryptosign import CryptosignKey
from autobahn.wamp.exception import InvalidUriError
from autobahn.wamp.message import check_or_raise_uri

from wsserver.core.authentication import parse_ticket_hash
from wsserver.core.history import HistoryRule
from wsserver.core.matching import EXACT, POLICIES, check_pattern
from wsserver.core.policy import ACTIONS, Permission, Principal, RealmPolicy, WampCraSecret, open_realm
from wsserver.transports.http_api import HttpKey

#: How a `twistd wsserver` option takes its value, for [server]: a flag (true/false), one value,
#: or a list of values (a repeatable option).
FLAG, VALUE, LIST = "flag", "value", "list"
#: Options the file may not set in [server]: realms are [realms.NAME] tables.
NOT_IN_SERVER = ("config", "realm")

Path_ = tuple[str | int, ...]
#: String literals that are values, not keys (a key is followed by = or a dot).
_VALUE_STRINGS = re.compile(r"""("(?:[^"\\]|\\.)*"|'[^']*')(?!\s*[=.])""")
#: An HTTP API key's name (it travels in the X-Wsserver-Key header) and its stored bearer key.
_HTTP_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BEARER_HASH = re.compile(r"sha256:([0-9a-fA-F]{64})")
#: The shortest HMAC secret accepted for the HTTP API.
MIN_SECRET_LENGTH = 16


class ConfigError(Exception):
    """The configuration file cannot be used; ``str()`` is ``FILE:LINE: what is wrong``."""


@dataclass(frozen=True)
class Config:
    """A configuration file, read: its [server] options and its realms, by name."""

    path: Path
    options: Mapping[str, Any]
    realms: Mapping[str, RealmPolicy]
    #: The HTTP API's keys, of every realm.
    http_keys: tuple[HttpKey, ...] = ()
    #: Which topics keep event history (of every realm), by pattern.
    history: tuple[HistoryRule, ...] = ()

    def arguments(self, given: set[str]) -> list[str]:
        """The [server] options as command-line arguments, but those in ``given`` (the command line's)."""
        arguments: list[str] = []
        for name, value in self.options.items():
            if name in given:
                continue
            if value is True:
                arguments.append(f"--{name}")
            elif value is not False:
                for item in value if isinstance(value, list) else [value]:
                    arguments += [f"--{name}", str(item)]
        return arguments

    def policies(self, names: Sequence[str]) -> list[RealmPolicy]:
        """The policies of the realms ``names``: as configured, or open to anyone if not in the file."""
        return [self.realms.get(name) or open_realm(name) for name in names]


def load(path: str | Path, options: Mapping[str, str]) -> Config:
    """
    Read the configuration file at ``path``. ``options``: the server's option names, each with
    how it takes its value (FLAG, VALUE, LIST). Raises :class:`ConfigError`.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read: {error}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        found = re.search(r"at line (\d+)", str(error))
        line = found.group(1) if found else str(text.count("\n") + 1)
        raise ConfigError(f"{path}:{line}: not valid TOML: {error}") from None
    return _Reader(path, text).read(document, options)


class _Reader:
    """Checks a parsed document key by key; every complaint names the file, line and key."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def read(self, document: dict[str, Any], options: Mapping[str, str]) -> Config:
        self.keys(document, (), ("server", "realms", "history"))
        server = self.table(document, ("server",), required=False)
        allowed = [name for name in options if name not in NOT_IN_SERVER]
        self.keys(server, ("server",), allowed)
        for name, value in server.items():
            self.option(value, ("server", name), options[name])
        realms = self.table(document, ("realms",), required=True)
        if not realms:
            self.fail(("realms",), "names no realm: add a [realms.NAME] table")
        policies = {name: self.realm(name, self.table(realms, ("realms", name))) for name in realms}
        http_keys: dict[str, HttpKey] = {}
        for realm in realms:
            for key in self.http_keys(realm, self.table(realms[realm], ("realms", realm, "http-keys"), required=False), policies[realm]):
                if key.name in http_keys:
                    self.fail(("realms", realm, "http-keys", key.name), f"key name {key.name!r} is taken in realm {http_keys[key.name].realm!r} (a name names one key)")
                http_keys[key.name] = key
        history = self.history(document.get("history", []))
        return Config(self.path, dict(server), policies, tuple(http_keys.values()), history)

    # -- history -----------------------------------------------------------------------------

    def history(self, rules: Any) -> tuple[HistoryRule, ...]:
        if not isinstance(rules, list):
            self.fail(("history",), "must be a list of { uri, match, size, ttl } tables")
        found: dict[tuple[str, str], HistoryRule] = {}
        for index, rule in enumerate(rules):
            at: Path_ = ("history", index)
            if not isinstance(rule, dict):
                self.fail(at, "a history rule is a table: { uri = ..., match = ..., size = N, ttl = S }")
            self.keys(rule, at, ("uri", "match", "size", "ttl"))
            uri, match = self.pattern(at, rule)
            size = rule.get("size")
            if type(size) is not int or size < 0:
                self.fail((*at, "size"), f"must be the number of events to keep (0: none), not {size!r}")
            ttl = rule.get("ttl")
            if ttl is not None and (type(ttl) not in (int, float) or not 0 < ttl < float("inf")):
                self.fail((*at, "ttl"), f"must be seconds, more than 0, not {ttl!r}")
            if (uri, match) in found:
                self.fail(at, f"{match} {uri!r} is given twice")
            found[(uri, match)] = HistoryRule(uri, match, size, None if ttl is None else float(ttl))
        return tuple(found.values())

    # -- realms ------------------------------------------------------------------------------

    def realm(self, name: str, table: dict[str, Any]) -> RealmPolicy:
        at: Path_ = ("realms", name)
        try:
            check_or_raise_uri(name, "realm")
        except InvalidUriError:
            self.fail(at, f"{name!r} is not a valid realm name (a URI such as realm1 or com.example)")
        self.keys(table, at, ("anonymous", "roles", "principals", "http-keys"))
        roles_table = self.table(table, (*at, "roles"), required=False)
        roles = {role: self.role((*at, "roles", role), self.table(roles_table, (*at, "roles", role))) for role in roles_table}
        anonymous = table.get("anonymous")
        if anonymous is not None:
            self.role_name(anonymous, (*at, "anonymous"), roles)
        principals_table = self.table(table, (*at, "principals"), required=False)
        principals = {
            authid: self.principal((*at, "principals", authid), authid, self.table(principals_table, (*at, "principals", authid)), roles)
            for authid in principals_table
        }
        owners: dict[str, str] = {}
        for principal in principals.values():
            for key in principal.cryptosign:
                if key in owners:
                    self.fail((*at, "principals", principal.authid, "cryptosign"), f"key {key} is also {owners[key]}'s")
                owners[key] = principal.authid
        return RealmPolicy(name, roles, anonymous_role=anonymous, principals=principals)

    def role(self, at: Path_, table: dict[str, Any]) -> tuple[Permission, ...]:
        self.keys(table, at, ("permissions",))
        rules = table.get("permissions", [])
        if not isinstance(rules, list):
            self.fail((*at, "permissions"), "must be a list of {uri, match, allow} tables")
        permissions: dict[tuple[str, str], Permission] = {}
        for index, rule in enumerate(rules):
            permission = self.permission((*at, "permissions", index), rule)
            if (permission.uri, permission.match) in permissions:
                self.fail((*at, "permissions", index), f"{permission.match} {permission.uri!r} is given twice")
            permissions[(permission.uri, permission.match)] = permission
        return tuple(permissions.values())

    def permission(self, at: Path_, rule: Any) -> Permission:
        if not isinstance(rule, dict):
            self.fail(at, "a permission is a table: { uri = ..., match = ..., allow = [...] }")
        self.keys(rule, at, ("uri", "match", "allow"))
        uri, match = self.pattern(at, rule)
        allow = rule.get("allow")
        if not isinstance(allow, list) or any(action not in ACTIONS for action in allow):
            self.fail((*at, "allow"), f"must be a list of {', '.join(ACTIONS)}, not {allow!r}")
        return Permission(uri, match, frozenset(allow))

    def pattern(self, at: Path_, rule: dict[str, Any]) -> tuple[str, str]:
        """A rule's ``uri`` and ``match`` (exact without one), checked as a subscription's pattern."""
        uri = self.string(rule.get("uri"), (*at, "uri"))
        match = rule.get("match", EXACT)
        if match not in POLICIES:
            self.fail((*at, "match"), f"must be one of {', '.join(POLICIES)}, not {match!r}")
        try:
            check_pattern(uri, match)
        except InvalidUriError:
            self.fail((*at, "uri"), f"{uri!r} is not a valid {match} pattern")
        return uri, match

    def role_name(self, value: Any, at: Path_, roles: Mapping[str, Any]) -> str:
        role = self.string(value, at)
        if role not in roles:
            known = ", ".join(roles) or "none"
            self.fail(at, f"no role {role!r} in this realm (roles: {known})")
        return role

    def principal(self, at: Path_, authid: str, table: dict[str, Any], roles: Mapping[str, Any]) -> Principal:
        self.keys(table, at, ("role", "ticket", "wampcra", "cryptosign"))
        if "role" not in table:
            self.fail(at, f"principal {authid!r} needs a role")
        role = self.role_name(table["role"], (*at, "role"), roles)
        ticket = table.get("ticket")
        if ticket is not None:
            try:
                parse_ticket_hash(self.string(ticket, (*at, "ticket")))
            except ValueError as error:
                self.fail((*at, "ticket"), str(error))
        wampcra = self.wampcra((*at, "wampcra"), table["wampcra"]) if "wampcra" in table else None
        keys = table.get("cryptosign", [])
        if isinstance(keys, str):
            keys = [keys]
        if not isinstance(keys, list):
            self.fail((*at, "cryptosign"), "must be a list of Ed25519 public keys (64 hex digits each)")
        cryptosign = frozenset(self.public_key(key, (*at, "cryptosign")) for key in keys)
        if ticket is None and wampcra is None and not cryptosign:
            self.fail(at, f"principal {authid!r} has no credential: give ticket, wampcra or cryptosign")
        return Principal(authid, role, ticket, wampcra, cryptosign)

    def http_keys(self, realm: str, table: dict[str, Any], policy: RealmPolicy) -> list[HttpKey]:
        keys = []
        for name in table:
            at: Path_ = ("realms", realm, "http-keys", name)
            entry = self.table(table, at)
            if not _HTTP_KEY_NAME.fullmatch(name):
                self.fail(at, f"{name!r} is not a key name (1 to 64 of A-Z a-z 0-9 _ . -)")
            self.keys(entry, at, ("role", "key", "secret"))
            if "role" not in entry:
                self.fail(at, f"key {name!r} needs a role")
            role = self.role_name(entry["role"], (*at, "role"), policy.roles)
            key_sha256 = secret = None
            if "key" in entry:
                found = _BEARER_HASH.fullmatch(self.string(entry["key"], (*at, "key")))
                if found is None:
                    self.fail((*at, "key"), "must be sha256: and 64 hex digits (wsserver-passwd --http-key prints it)")
                key_sha256 = bytes.fromhex(found.group(1))
            if "secret" in entry:
                secret = self.string(entry["secret"], (*at, "secret")).encode("utf-8")
                if len(secret) < MIN_SECRET_LENGTH:
                    self.fail((*at, "secret"), f"is too short: at least {MIN_SECRET_LENGTH} characters (wsserver-passwd --http-secret)")
            if key_sha256 is None and secret is None:
                self.fail(at, f"key {name!r} has neither key nor secret")
            keys.append(HttpKey(name, realm, role, key_sha256, secret))
        return keys

    def wampcra(self, at: Path_, value: Any) -> WampCraSecret:
        if isinstance(value, str):
            return WampCraSecret(value)
        if not isinstance(value, dict):
            self.fail(at, "must be a secret, or a table { secret, salt, iterations, keylen }")
        self.keys(value, at, ("secret", "salt", "iterations", "keylen"))
        secret = self.string(value.get("secret"), (*at, "secret"))
        salt = value.get("salt")
        if salt is not None:
            self.string(salt, (*at, "salt"))
        numbers = {}
        for name, default in (("iterations", 1000), ("keylen", 32)):
            number = value.get(name, default)
            if type(number) is not int or number < 1:
                self.fail((*at, name), f"must be a positive integer, not {number!r}")
            numbers[name] = number
        return WampCraSecret(secret, salt, numbers["iterations"], numbers["keylen"])

    def public_key(self, value: Any, at: Path_) -> str:
        key = self.string(value, at).lower()
        try:
            CryptosignKey.from_pubkey(binascii.a2b_hex(key))
        except (ValueError, binascii.Error):
            self.fail(at, f"{value!r} is not an Ed25519 public key (64 hex digits)")
        return key

    # -- [server] -----------------------------------------------------------------------------

    def option(self, value: Any, at: Path_, kind: str) -> None:
        if kind == FLAG:
            if not isinstance(value, bool):
                self.fail(at, f"is a flag: true or false, not {value!r}")
            return
        values = value if kind == LIST and isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, bool) or not isinstance(item, (str, int, float)):
                expected = "a value or a list of values" if kind == LIST else "one value"
                self.fail(at, f"takes {expected}, not {value!r}")

    # -- generic -------------------------------------------------------------------------------

    def table(self, parent: dict[str, Any], at: Path_, required: bool = True) -> dict[str, Any]:
        value: Any = parent.get(str(at[-1]), None if required else {})
        if not isinstance(value, dict):
            self.fail(at, "must be a table" if value is not None else "is missing")
        return value

    def string(self, value: Any, at: Path_) -> str:
        if not isinstance(value, str):
            self.fail(at, f"must be a string, not {value!r}" if value is not None else "is missing")
        return value

    def keys(self, table: Mapping[str, Any], at: Path_, known: Sequence[str]) -> None:
        for key in table:
            if key not in known:
                where = f"in [{_dotted(at)}]" if at else "at the top level"
                self.fail((*at, key), f"unknown key {key!r} {where} (known: {', '.join(known)})")

    def fail(self, at: Path_, complaint: str) -> NoReturn:
        subject = _dotted(at)
        raise ConfigError(f"{self.path}:{self.line_of(at)}: {subject}: {complaint}")

    def line_of(self, at: Path_) -> int:
        """The line (1-based) where the key ``at`` is written: each key searched after its parent's line."""
        line = 0
        for depth, key in enumerate(at):
            if isinstance(key, int):
                line = self._nth_entry(line, at[:depth], key)
                continue
            found = self._find_key(key, line)
            if found is None:
                break
            line = found
        return line + 1

    def _find_key(self, key: str, start: int) -> int | None:
        name = re.escape(key)
        spelled = rf"""(?:{name}|"{name}"|'{name}')"""
        header = re.compile(rf"[.\[]\s*{spelled}\s*[.\]]")  # [a.KEY] or [KEY.b]
        assignment = re.compile(rf"(?:^|[\s{{,.]){spelled}\s*[=.]")  # KEY = ..., KEY.b = ..., { KEY = ...
        for number in range(start, len(self.lines)):
            line = self.lines[number]
            if line.lstrip().startswith("["):
                if header.search(line):
                    return number
            elif assignment.search(_VALUE_STRINGS.sub('""', line).split("#", 1)[0]):
                return number
        return None

    def _nth_entry(self, start: int, array: Path_, index: int) -> int:
        """The line of entry ``index`` of the array at line ``start``: an inline table or a [[table]]."""
        if start < len(self.lines) and self.lines[start].lstrip().startswith("[["):
            header = self.lines[start].strip()
            entries = [n for n in range(start, len(self.lines)) if self.lines[n].strip() == header]
        else:
            entries = [n for n in range(start, len(self.lines)) for _ in range(self.lines[n].count("{"))]
        return entries[index] if index < len(entries) else start


def _dotted(at: Path_) -> str:
    return ".".join(f"[{key}]" if isinstance(key, int) else key for key in at).replace(".[", "[")
