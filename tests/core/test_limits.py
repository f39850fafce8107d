"""Per-session limits: the publish rate (a token bucket on the router's clock), the numbers of subscriptions, registrations and calls in flight, and URI length."""

from __future__ import annotations

from autobahn.wamp import message as wamp

from tests.core.harness import Harness, outbox, wire
from wsserver.core.limits import (
    PUBLISH_RATE_EXCEEDED,
    TOO_MANY_CALLS_IN_FLIGHT,
    TOO_MANY_REGISTRATIONS,
    TOO_MANY_SUBSCRIPTIONS,
    URI_TOO_LONG,
    SessionLimits,
    TokenBucket,
)
from wsserver.core.session import State


def test_a_token_bucket_allows_a_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(100.5) and not bucket.take(100.5)  # half a second: one token
    assert [bucket.take(200.0) for _ in range(4)] == [True, True, True, False]  # refilled to the burst, no more
    assert not bucket.take(50.0)  # a clock stepping back refills nothing


def test_no_bucket_when_the_rate_is_off() -> None:
    assert SessionLimits(publish_rate=0).bucket(0.0) is None


def acknowledged(h: Harness, name: str, request: int, topic: str = "com.t") -> wamp.Message:
    (reply,) = outbox(h.send(name, [16, request, {"acknowledge": True}, topic, [request]]))[name]
    return reply


def test_publishing_faster_than_the_rate_is_refused_and_the_session_stays_open() -> None:
    h = Harness(limits=SessionLimits(publish_rate=10, publish_burst=5))
    h.join("p"), h.join("s")
    h.subscribe("s", "com.t")
    replies = [acknowledged(h, "p", n) for n in range(1, 7)]
    assert [type(r).__name__ for r in replies] == ["Published"] * 5 + ["Error"]
    refused = replies[-1]
    assert (refused.request_type, refused.request, refused.error) == (16, 6, PUBLISH_RATE_EXCEEDED)
    assert refused.args == ["over 10 publications a second (bursts of 5)"]
    # Unacknowledged publications over the rate are dropped: no ERROR the client does not expect.
    assert outbox(h.send("p", [16, 7, {}, "com.t", []])) == {}
    assert h.sessions["p"].state is State.OPEN
    h.clock.now += 0.15  # one more token
    assert isinstance(acknowledged(h, "p", 8), wamp.Published)
    assert isinstance(acknowledged(h, "p", 9), wamp.Error)


def test_each_session_has_its_own_bucket_and_a_new_session_a_full_one() -> None:
    h = Harness(limits=SessionLimits(publish_rate=1, publish_burst=1))
    h.join("a"), h.join("b")
    assert isinstance(acknowledged(h, "a", 1), wamp.Published)
    assert isinstance(acknowledged(h, "a", 2), wamp.Error)
    assert isinstance(acknowledged(h, "b", 1), wamp.Published)
    h.send("a", [6, {}, "wamp.close.normal"])
    h.send("a", [1, "realm1", {"roles": {"publisher": {}}}])
    assert isinstance(acknowledged(h, "a", 3), wamp.Published)


def test_the_default_limits_are_generous_but_there() -> None:
    limits = SessionLimits()
    assert (limits.publish_rate, limits.publish_burst, limits.max_subscriptions) == (1000.0, 10_000, 1000)


def test_a_session_may_hold_so_many_subscriptions() -> None:
    h = Harness(limits=SessionLimits(max_subscriptions=2))
    h.join("a")
    first = h.subscribe("a", "com.a")
    h.subscribe("a", "com.", match="prefix")
    (error,) = outbox(h.send("a", [32, 9, {}, "com.c"]))["a"]
    assert (error.request_type, error.request, error.error) == (32, 9, TOO_MANY_SUBSCRIPTIONS)
    assert error.args == ["a session may hold 2 subscriptions"]
    assert h.subscribe("a", "com.a", request=10) == first  # subscribing again is not one more
    h.send("a", [34, 11, first])
    assert h.subscribe("a", "com.c", request=12)
    assert h.sessions["a"].state is State.OPEN


def test_max_subscriptions_is_per_session() -> None:
    h = Harness(limits=SessionLimits(max_subscriptions=1))
    h.join("a"), h.join("b")
    assert h.subscribe("a", "com.a") and h.subscribe("b", "com.b")


def test_zero_turns_the_subscription_limit_off() -> None:
    h = Harness(limits=SessionLimits(max_subscriptions=0))
    h.join("a")
    for n in range(1, 30):
        h.subscribe("a", f"com.t{n}", request=n)


# -- URI length, registrations, calls in flight ------------------------------------------------

ERROR, CALL, INVOCATION, YIELD = 8, 48, 68, 70


def refused_with(h: Harness, name: str, message: list[object]) -> tuple[str, list[object]]:
    """Send ``message``; return the ERROR's URI and args (the only thing ``name`` receives)."""
    (error,) = wire(h.send(name, message))[name]
    assert error[0] == ERROR and error[1:3] == message[:2], error
    return error[4], error[5]


def test_every_uri_a_session_sends_is_held_to_the_limit_in_utf8_bytes() -> None:
    h = Harness(limits=SessionLimits(max_uri_length=20))
    h.join("a"), h.join("callee")
    fits, too_long = "com." + "x" * 16, "com." + "x" * 17
    assert len(fits) == 20
    assert refused_with(h, "a", [32, 1, {}, too_long]) == (URI_TOO_LONG, ["a URI of 21 bytes; at most 20 are accepted"])
    assert refused_with(h, "a", [32, 2, {"match": "wildcard"}, "com..x" + "é" * 8])[0] == URI_TOO_LONG  # 22 bytes, 14 characters
    assert refused_with(h, "a", [16, 3, {"acknowledge": True}, too_long, []])[0] == URI_TOO_LONG
    assert wire(h.send("a", [16, 4, {}, too_long, []])) == {}  # unacknowledged: no answer
    assert refused_with(h, "a", [64, 5, {}, too_long])[0] == URI_TOO_LONG
    assert refused_with(h, "a", [CALL, 6, {}, too_long, []])[0] == URI_TOO_LONG
    h.subscribe("a", fits, request=7)
    h.register("callee", fits)
    # A callee's error URI: the caller gets the ERROR instead.
    (invocation,) = wire(h.send("a", [CALL, 8, {}, fits, []]))["callee"]
    (error,) = wire(h.send("callee", [ERROR, INVOCATION, invocation[1], {}, "com.error." + "x" * 11]))["a"]
    assert error[:5] == [ERROR, CALL, 8, {}, "wamp.error.invalid_argument"] and "a URI of 21 bytes" in error[5][0]
    assert h.sessions["a"].state is State.OPEN and h.sessions["callee"].state is State.OPEN
    assert len(h.router.realms["realm1"].subscriptions) == 1  # nothing long was kept


def test_a_uri_with_a_lone_surrogate_is_invalid() -> None:
    h = Harness()
    h.join("a")
    assert refused_with(h, "a", [32, 1, {}, "com.\ud800"]) == ("wamp.error.invalid_uri", ["a URI with a lone surrogate (no UTF-8 for it)"])


def test_zero_turns_the_uri_length_limit_off() -> None:
    h = Harness(limits=SessionLimits(max_uri_length=0))
    h.join("a")
    assert h.subscribe("a", "com." + "x" * 100_000)


def test_a_session_may_register_so_many_procedures() -> None:
    h = Harness(limits=SessionLimits(max_registrations=2))
    h.join("a"), h.join("b")
    first = h.register("a", "com.p1")
    h.register("a", "com.p2")
    assert refused_with(h, "a", [64, 9, {}, "com.p3"]) == (TOO_MANY_REGISTRATIONS, ["a session may register 2 procedures"])
    h.register("b", "com.p3")  # per session
    h.send("a", [66, 10, first])
    h.register("a", "com.p4")
    assert h.sessions["a"].state is State.OPEN


def test_a_caller_may_wait_for_so_many_calls_and_each_answer_makes_room() -> None:
    h = Harness(limits=SessionLimits(max_calls_in_flight=2))
    h.join("caller"), h.join("callee"), h.join("other")
    h.register("callee", "com.slow")
    invocations = [wire(h.send("caller", [CALL, n, {}, "com.slow", []]))["callee"][0][1] for n in (1, 2)]
    refused = refused_with(h, "caller", [CALL, 3, {}, "com.slow", []])
    assert refused == (TOO_MANY_CALLS_IN_FLIGHT, ["a session may wait for 2 calls at once"])
    assert wire(h.send("other", [CALL, 1, {}, "com.slow", []]))["callee"][0][0] == INVOCATION  # per caller
    h.send("callee", [YIELD, invocations[0], {}, []])
    assert wire(h.send("caller", [CALL, 4, {}, "com.slow", []]))["callee"][0][0] == INVOCATION
    # An error answer, an undeliverable answer and a callee that leaves all make room too.
    h.send("callee", [ERROR, INVOCATION, invocations[1], {}, "com.error.x"])
    assert h.router.realms["realm1"].dealer.calls_in_flight(h.sessions["caller"]) == 1
    h.send("callee", [6, {}, "wamp.close.normal"])
    assert h.router.realms["realm1"].dealer.calls_in_flight(h.sessions["caller"]) == 0
    assert h.router.realms["realm1"].dealer._calls_made == {}  # no caller is kept with none in flight


def test_the_router_s_own_procedures_answer_at_once_and_are_not_in_flight() -> None:
    h = Harness(limits=SessionLimits(max_calls_in_flight=1))
    h.join("a")
    for _ in range(3):
        assert h.result("a", "wamp.session.count") == 1
