"""Logins through the router: anonymous, ticket, WAMP-CRA and cryptosign, and how they fail."""

from __future__ import annotations

import json
from typing import Any

import pytest
from autobahn.wamp import message as wamp
from autobahn.wamp.auth import compute_wcs, derive_key
from nacl.signing import SigningKey

from tests.core.harness import HELLO_DETAILS, Harness, outbox
from wsserver.core.actions import Compute
from wsserver.core.authentication import FAILED, check_ticket, hash_ticket, parse_ticket_hash
from wsserver.core.decoding import decode
from wsserver.core.logins import LoginLimits
from wsserver.core.policy import EVERYTHING, Principal, RealmPolicy, WampCraSecret
from wsserver.core.router import REFUSAL_DELAY, CloseReason
from wsserver.core.session import State

ALICE_KEY = SigningKey(bytes(range(32)))
MALLORY_KEY = SigningKey(bytes(range(1, 33)))
SALT = "5a17"


def principals() -> dict[str, Principal]:
    return {
        "alice": Principal("alice", "admin", ticket=hash_ticket("alice-ticket", "a1b2", iterations=1000),
                           cryptosign=frozenset([ALICE_KEY.verify_key.encode().hex()])),
        "bob": Principal("bob", "guest", wampcra=WampCraSecret("bob-secret")),
        "carol": Principal("carol", "guest", wampcra=WampCraSecret(derive_key("carol-pw", SALT, 100, 16).decode(), SALT, 100, 16)),
    }


def realm(anonymous: str | None = None) -> RealmPolicy:
    return RealmPolicy("realm1", {"admin": (EVERYTHING,), "guest": ()}, anonymous_role=anonymous, principals=principals())


@pytest.fixture
def h() -> Harness:
    return Harness((realm(),))


def hello(h: Harness, name: str, *methods: str, **details: Any) -> list[Any]:
    h.attach(name)
    return outbox(h.send(name, [1, "realm1", dict(HELLO_DETAILS, authmethods=list(methods), **details)])).get(name, [])


def authenticate(h: Harness, name: str, signature: str) -> list[Any]:
    return outbox(h.send(name, [5, signature, {}]))[name]


def welcomed(received: list[Any]) -> wamp.Welcome:
    (welcome,) = received
    assert isinstance(welcome, wamp.Welcome), received
    return welcome


def assert_refused(received: list[Any], error: str = "wamp.error.not_authorized", message: str = FAILED) -> None:
    delay, abort, close = received
    assert delay == ("delay", REFUSAL_DELAY)
    assert isinstance(abort, wamp.Abort) and (abort.reason, abort.message) == (error, message)
    assert close == ("close", CloseReason.NORMAL)


# -- anonymous --------------------------------------------------------------------------------


def test_anonymous_is_refused_where_the_realm_names_no_role_for_it(h: Harness) -> None:
    h.attach("a")
    received = outbox(h.send("a", [1, "realm1", HELLO_DETAILS]))["a"]
    assert_refused(received, "wamp.error.no_auth_method",
                   "no authentication method of anonymous on this realm (offered: ticket, wampcra, cryptosign)")
    assert h.sessions["a"].state is State.CLOSED
    # Whatever it sends while its ABORT waits is ignored.
    assert h.send("a", [5, "x", {}]) == [] and h.send("a", [1, "realm1", HELLO_DETAILS]) == []


def test_anonymous_gets_the_realms_anonymous_role() -> None:
    h = Harness((realm(anonymous="guest"),))
    welcome = welcomed(hello(h, "a"))
    assert (welcome.authrole, welcome.authmethod, welcome.authprovider) == ("guest", "anonymous", "static")
    assert welcome.authid == f"anonymous-{welcome.session}"


def test_the_first_method_the_client_lists_that_the_realm_offers_is_used() -> None:
    h = Harness((realm(anonymous="guest"),))
    (challenge,) = hello(h, "a", "scram", "ticket", "anonymous", authid="alice")
    assert isinstance(challenge, wamp.Challenge) and challenge.method == "ticket"
    assert welcomed(hello(h, "b", "scram", "anonymous", "ticket")).authmethod == "anonymous"


# -- ticket -----------------------------------------------------------------------------------


def test_ticket_login_welcomes_with_the_principals_identity(h: Harness) -> None:
    (challenge,) = hello(h, "a", "ticket", authid="alice")
    assert (challenge.method, challenge.extra) == ("ticket", {})
    assert h.sessions["a"].state is State.AUTHENTICATING
    welcome = welcomed(authenticate(h, "a", "alice-ticket"))
    assert (welcome.authid, welcome.authrole, welcome.authmethod, welcome.authprovider) == (
        "alice", "admin", "ticket", "static")
    assert h.sessions["a"].state is State.OPEN
    assert h.router.realms["realm1"].sessions == {welcome.session: h.sessions["a"]}


@pytest.mark.parametrize("authid, ticket", [("alice", "wrong"), ("nobody", "alice-ticket"), ("bob", "bob-secret")])
def test_a_wrong_ticket_and_an_unknown_user_fail_alike(h: Harness, authid: str, ticket: str) -> None:
    (challenge,) = hello(h, "a", "ticket", authid=authid)
    assert (challenge.method, challenge.extra) == ("ticket", {})
    assert_refused(authenticate(h, "a", ticket))
    assert h.router.realms["realm1"].sessions == {}


def test_ticket_without_an_authid_is_refused_after_the_delay(h: Harness) -> None:
    assert_refused(hello(h, "a", "ticket"), message="ticket authentication needs an authid")


def test_ticket_hashes_are_salted_and_checked() -> None:
    stored = hash_ticket("pw", "salt1", iterations=10)
    assert stored.startswith("pbkdf2-sha256$10$salt1$") and stored != hash_ticket("pw", "salt2", iterations=10)
    assert check_ticket(stored, "pw") and not check_ticket(stored, "pw ") and not check_ticket(stored, "\udcff")
    assert parse_ticket_hash(stored)[:2] == (10, "salt1")
    for bad in ("pw", "md5$1$s$k", "pbkdf2-sha256$x$s$k", "pbkdf2-sha256$0$s$k"):
        with pytest.raises(ValueError):
            parse_ticket_hash(bad)
    with pytest.raises(ValueError):
        hash_ticket("pw", "a$b")


# -- WAMP-CRA -----------------------------------------------------------------------------------


def test_wampcra_login_with_a_plain_secret(h: Harness) -> None:
    (challenge,) = hello(h, "a", "wampcra", authid="bob")
    assert challenge.method == "wampcra" and set(challenge.extra) == {"challenge"}
    fields = json.loads(challenge.extra["challenge"])
    assert (fields["authid"], fields["authmethod"], fields["authprovider"]) == ("bob", "wampcra", "static")
    assert fields["timestamp"].endswith("Z") and len(fields["nonce"]) == 32
    signature = compute_wcs(b"bob-secret", challenge.extra["challenge"].encode()).decode()
    welcome = welcomed(authenticate(h, "a", signature))
    assert (welcome.authid, welcome.authrole, welcome.authmethod) == ("bob", "guest", "wampcra")


def test_wampcra_challenges_are_never_the_same(h: Harness) -> None:
    (first,) = hello(h, "a", "wampcra", authid="bob")
    (second,) = hello(h, "b", "wampcra", authid="bob")
    assert first.extra["challenge"] != second.extra["challenge"]


def test_wampcra_with_a_salted_secret_the_client_derives_from_the_password(h: Harness) -> None:
    (challenge,) = hello(h, "a", "wampcra", authid="carol")
    extra = challenge.extra
    assert (extra["salt"], extra["iterations"], extra["keylen"]) == (SALT, 100, 16)
    # What autobahn's AuthWampCra does with the password.
    key = derive_key(b"carol-pw", extra["salt"], extra["iterations"], extra["keylen"])
    welcome = welcomed(authenticate(h, "a", compute_wcs(key, extra["challenge"].encode()).decode()))
    assert welcome.authid == "carol"


def test_wampcra_for_an_unknown_user_looks_like_a_real_salted_challenge_and_fails_alike(h: Harness) -> None:
    (real,) = hello(h, "a", "wampcra", authid="carol")
    (decoy,) = hello(h, "b", "wampcra", authid="nobody")
    (again,) = hello(h, "c", "wampcra", authid="nobody")
    assert set(decoy.extra) == set(real.extra)
    assert (decoy.extra["iterations"], decoy.extra["keylen"]) == (100, 16)
    assert decoy.extra["salt"] == again.extra["salt"] != real.extra["salt"]
    assert len(decoy.extra["salt"]) == 32
    key = derive_key(b"carol-pw", decoy.extra["salt"], 100, 16)
    assert_refused(authenticate(h, "b", compute_wcs(key, decoy.extra["challenge"].encode()).decode()))
    assert_refused(authenticate(h, "a", "not the signature"))


# -- cryptosign ---------------------------------------------------------------------------------


def signed(key: SigningKey, challenge: wamp.Challenge) -> str:
    """What autobahn's CryptosignKey.sign_challenge answers: signature, then the challenge, in hex."""
    raw = bytes.fromhex(challenge.extra["challenge"])
    return key.sign(raw).signature.hex() + raw.hex()


def pubkey(key: SigningKey) -> dict[str, Any]:
    return {"authextra": {"pubkey": key.verify_key.encode().hex(), "channel_binding": None}}


def test_cryptosign_login_by_public_key(h: Harness) -> None:
    (challenge,) = hello(h, "a", "cryptosign", **pubkey(ALICE_KEY))
    assert challenge.method == "cryptosign" and len(challenge.extra["challenge"]) == 64
    welcome = welcomed(authenticate(h, "a", signed(ALICE_KEY, challenge)))
    assert (welcome.authid, welcome.authrole, welcome.authmethod) == ("alice", "admin", "cryptosign")


@pytest.mark.parametrize("case", ["unknown key", "wrong signer", "other challenge", "authid mismatch", "garbage"])
def test_cryptosign_failures_are_alike(h: Harness, case: str) -> None:
    key = MALLORY_KEY if case == "unknown key" else ALICE_KEY
    details = pubkey(key) | ({"authid": "bob"} if case == "authid mismatch" else {})
    (challenge,) = hello(h, "a", "cryptosign", **details)
    assert len(challenge.extra["challenge"]) == 64
    signature = signed(MALLORY_KEY if case == "wrong signer" else key, challenge)
    if case == "other challenge":
        (other,) = hello(h, "b", "cryptosign", **pubkey(ALICE_KEY))
        signature = signed(ALICE_KEY, other)
    elif case == "garbage":
        signature = "zz" * 96
    assert_refused(authenticate(h, "a", signature))


@pytest.mark.parametrize("authextra", [None, {}, {"pubkey": "abc"}, {"pubkey": "zz" * 32}])
def test_cryptosign_needs_a_public_key(h: Harness, authextra: Any) -> None:
    details = {} if authextra is None else {"authextra": authextra}
    assert_refused(hello(h, "a", "cryptosign", **details), message="cryptosign needs authextra.pubkey: 64 hex digits")


def test_cryptosign_channel_binding_is_refused_clearly(h: Harness) -> None:
    details = {"authextra": {"pubkey": ALICE_KEY.verify_key.encode().hex(), "channel_binding": "tls-unique"}}
    assert_refused(hello(h, "a", "cryptosign", **details), message="cryptosign channel binding is not supported")


# -- the state table ----------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [[32, 1, {}, "com.t"], [6, {}, "wamp.close.normal"], [1, "realm1", HELLO_DETAILS]])
def test_only_authenticate_or_abort_may_answer_a_challenge(h: Harness, raw: Any) -> None:
    hello(h, "a", "ticket", authid="alice")
    abort, close = outbox(h.send("a", raw))["a"]
    assert abort.reason == "wamp.error.protocol_violation" and "in state authenticating" in abort.message
    assert close == ("close", CloseReason.PROTOCOL_VIOLATION)


def test_authenticate_without_a_challenge_is_a_protocol_violation(h: Harness) -> None:
    h.attach("a")
    abort, _ = outbox(h.send("a", [5, "x", {}]))["a"]
    assert abort.reason == "wamp.error.protocol_violation"


def test_abort_instead_of_authenticate_ends_it_quietly(h: Harness) -> None:
    hello(h, "a", "ticket", authid="alice")
    assert outbox(h.send("a", [3, {}, "wamp.close.normal"]))["a"] == [("close", CloseReason.NORMAL)]
    assert h.sessions["a"].pending is None


def test_a_router_without_random_bytes_refuses_realms_with_principals() -> None:
    with pytest.raises(ValueError, match="needs random_bytes"):
        Harness((realm(),), random_bytes=None)


def test_a_shutdown_closes_a_session_that_is_still_logging_in(h: Harness) -> None:
    hello(h, "a", "ticket", authid="alice")
    assert outbox(h.router.goodbye(h.sessions["a"]))["a"] == [("close", CloseReason.GOING_AWAY)]


# -- checking off the router's thread, and the failed-login limits --------------------------------


def test_an_authenticate_is_checked_as_a_compute_while_the_session_waits(h: Harness) -> None:
    hello(h, "a", "ticket", authid="alice")
    session = h.sessions["a"]
    (compute,) = h.router.receive(session, decode([[5, "alice-ticket", {}]])[0])
    assert isinstance(compute, Compute) and session.state is State.VERIFYING
    welcome = welcomed(outbox(list(compute.then(compute.work())))["a"])
    assert welcome.authid == "alice" and session.state is State.OPEN


def test_only_abort_may_come_while_the_check_runs_and_a_session_gone_meanwhile_stays_gone(h: Harness) -> None:
    hello(h, "a", "ticket", authid="alice")
    session = h.sessions["a"]
    (compute,) = h.router.receive(session, decode([[5, "alice-ticket", {}]])[0])
    abort, close = outbox(h.send("a", [32, 1, {}, "com.t"]))["a"]
    assert abort.reason == "wamp.error.protocol_violation" and "in state verifying" in abort.message
    assert compute.then(compute.work()) == [] and session.state is State.CLOSED
    hello(h, "b", "ticket", authid="alice")
    (compute,) = h.router.receive(h.sessions["b"], decode([[5, "alice-ticket", {}]])[0])
    h.router.detach(h.sessions["b"])
    assert compute.then(True) == [] and h.router.realms["realm1"].sessions == {}


def login(h: Harness, name: str, address: str, authid: str, ticket: str) -> list[Any]:
    h.attach(name, address)
    h.send(name, [1, "realm1", dict(HELLO_DETAILS, authmethods=["ticket"], authid=authid)])
    return authenticate(h, name, ticket)


def test_past_its_failures_an_address_is_refused_unchecked_in_the_same_way() -> None:
    h = Harness((realm(),), login_limits=LoginLimits(per_address=2, per_authid=0))
    for n in range(2):
        assert_refused(login(h, f"guess{n}", "1.2.3.4", f"user{n}", "wrong"))
    assert h.computed == 2
    assert_refused(login(h, "alice", "1.2.3.4", "alice", "alice-ticket"))
    assert h.computed == 2 and h.router.failed_logins.refused == 1
    welcomed(login(h, "elsewhere", "5.6.7.8", "alice", "alice-ticket"))
    h.clock.now += 30  # 2 per 60 s: one back
    welcomed(login(h, "later", "1.2.3.4", "alice", "alice-ticket"))


def test_past_its_failures_an_authid_is_refused_unchecked_from_anywhere() -> None:
    h = Harness((realm(),), login_limits=LoginLimits(per_address=0, per_authid=2))
    for n in range(2):
        assert_refused(login(h, f"guess{n}", f"10.0.0.{n}", "alice", "wrong"))
    assert_refused(login(h, "alice", "10.0.0.9", "alice", "alice-ticket"))
    assert h.computed == 2
    assert_refused(login(h, "other", "10.0.0.9", "nobody", "x"))
    assert h.computed == 3, "another authid is checked"


def test_a_shutdown_closes_a_session_whose_login_is_being_checked(h: Harness) -> None:
    hello(h, "a", "ticket", authid="alice")
    h.router.receive(h.sessions["a"], decode([[5, "alice-ticket", {}]])[0])
    assert outbox(h.router.goodbye(h.sessions["a"]))["a"] == [("close", CloseReason.GOING_AWAY)]


# -- counted for the metrics --------------------------------------------------------------------


def test_refused_logins_are_counted_by_the_method_asked_for(h: Harness) -> None:
    hello(h, "anonymous")                                   # no anonymous role here
    hello(h, "no-authid", "ticket")                         # refused at HELLO
    hello(h, "alice", "ticket", authid="alice")
    authenticate(h, "alice", "wrong")                       # refused after the check
    hello(h, "bob", "wampcra", authid="bob")
    authenticate(h, "bob", "not-a-signature")
    hello(h, "scram", "scram", "unknown-method")            # no method the router knows
    welcomed(login(h, "welcomed", "1.2.3.4", "alice", "alice-ticket"))
    assert h.router.refused_logins == {"anonymous": 1, "ticket": 2, "wampcra": 1, "cryptosign": 0, "other": 1}
