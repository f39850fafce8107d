"""Failed-login limits per client address and per authid, with a clock the test moves."""

from __future__ import annotations

from wsserver.core.logins import FailedLogins, LoginLimits


def test_an_address_gets_its_failures_then_one_more_per_share_of_the_window() -> None:
    logins = FailedLogins(LoginLimits(per_address=3, per_authid=0, window=60.0))
    assert [logins.attempt("1.2.3.4", "realm1", f"user{n}", 0.0) for n in range(4)] == [True, True, True, False]
    assert logins.attempt("5.6.7.8", "realm1", "user0", 0.0), "another address is not affected"
    assert not logins.attempt("1.2.3.4", "realm1", "x", 19.9)
    assert logins.attempt("1.2.3.4", "realm1", "x", 20.0)  # 3 per 60 s: one back every 20 s
    assert logins.refused == 2


def test_an_authid_gets_its_failures_whatever_the_address_in_its_realm_only() -> None:
    logins = FailedLogins(LoginLimits(per_address=0, per_authid=2, window=60.0))
    assert logins.attempt("1.1.1.1", "realm1", "alice", 0.0) and logins.attempt("2.2.2.2", "realm1", "alice", 0.0)
    assert not logins.attempt("3.3.3.3", "realm1", "alice", 0.0)
    assert logins.attempt("3.3.3.3", "other", "alice", 0.0) and logins.attempt("3.3.3.3", "realm1", "bob", 0.0)


def test_a_success_gives_its_attempt_back() -> None:
    logins = FailedLogins(LoginLimits(per_address=2, per_authid=2, window=60.0))
    for _ in range(10):
        assert logins.attempt("1.2.3.4", "realm1", "alice", 0.0)
        logins.succeeded("1.2.3.4", "realm1", "alice", 0.0)
    assert logins.refused == 0


def test_attempts_in_flight_count_until_they_end() -> None:
    logins = FailedLogins(LoginLimits(per_address=2, per_authid=0))
    assert logins.attempt("1.2.3.4", "realm1", "a", 0.0) and logins.attempt("1.2.3.4", "realm1", "b", 0.0)
    assert not logins.attempt("1.2.3.4", "realm1", "c", 0.0)  # two checks running: no third


def test_unknown_addresses_and_empty_authids_and_zero_limits_are_not_limited() -> None:
    logins = FailedLogins(LoginLimits(per_address=1, per_authid=1))
    assert all(logins.attempt(None, "realm1", "", 0.0) for _ in range(5))
    off = FailedLogins(LoginLimits(per_address=0, per_authid=0))
    assert all(off.attempt("1.2.3.4", "realm1", "alice", 0.0) for _ in range(100))


def test_the_tables_keep_at_most_tracked_keys_forgetting_the_least_recent() -> None:
    logins = FailedLogins(LoginLimits(per_address=1, per_authid=1, tracked=100))
    for n in range(1000):
        logins.attempt(f"10.0.{n // 256}.{n % 256}", "realm1", f"guess{n}", 0.0)
    assert len(logins._by_address) == 100 and len(logins._by_authid) == 100
    assert not logins.attempt("10.0.3.231", "realm1", "new", 0.0), "the most recent are remembered"
