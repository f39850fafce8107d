"""Per-session limits: the publish rate (a token bucket on the router's clock) and the number of subscriptions."""

from __future__ import annotations

from autobahn.wamp import message as wamp

from tests.core.harness import Harness, outbox
from wsserver.core.limits import PUBLISH_RATE_EXCEEDED, TOO_MANY_SUBSCRIPTIONS, SessionLimits, TokenBucket
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
