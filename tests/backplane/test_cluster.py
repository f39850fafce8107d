"""
RedisCluster's own logic on a small in-memory Redis (keys with expiry on a ``task.Clock``, and
pub/sub delivered when the test pumps it), with two nodes' routers driven like the core's tests;
the real thing is tests/e2e/test_cluster.py.
"""

from __future__ import annotations

import itertools
from typing import Any

import msgpack
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.core.harness import Harness, wire
from wsserver.backplane.cluster import RANDOM_BITS, RedisCluster
from wsserver.backplane.redis import RedisAddress, RedisBackplane
from wsserver.core.router import Action

ERROR, EVENT, RESULT, INVOCATION = 8, 36, 50, 68


class Redis:
    """The commands RedisCluster sends, on one dict; PUBLISH queues messages until ``pump()``."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.data: dict[bytes, Any] = {}
        self.expiry: dict[bytes, float] = {}
        self.subscribers: list[RedisBackplane] = []
        self.queued: list[tuple[bytes, bytes]] = []

    def _live(self, key: bytes) -> Any:
        if key in self.expiry and self.expiry[key] <= self.clock.seconds():
            del self.data[key], self.expiry[key]
        return self.data.get(key)

    def command(self, name: str, *args: Any) -> Any:
        args = tuple(a if isinstance(a, bytes) else str(a).encode() for a in args)
        key = args[0] if args else b""
        value = self._live(key)
        if name == "INCR":
            self.data[key] = int(value or 0) + 1
            return self.data[key]
        if name == "SET":
            if b"NX" in args and value is not None:
                return None
            self.data[key] = args[1]
            if b"PX" in args:
                self.expiry[key] = self.clock.seconds() + int(args[args.index(b"PX") + 1]) / 1000
            return "OK"
        if name == "GET":
            return value
        if name == "PEXPIRE":
            if value is None:
                return 0
            self.expiry[key] = self.clock.seconds() + int(args[1]) / 1000
            return 1
        if name == "HSET":
            self.data.setdefault(key, {}).update(zip(args[1::2], args[2::2]))
            return 1
        if name == "HDEL":
            for field in args[1:]:
                (value or {}).pop(field, None)
            return 1
        if name == "HKEYS":
            return list(value or {})
        if name == "SADD":
            self.data.setdefault(key, set()).update(args[1:])
            return 1
        if name == "SREM":
            (value or set()).difference_update(args[1:])
            return 1
        if name == "SMEMBERS":
            return set(value or ())
        if name == "EXISTS":
            return int(value is not None)
        if name == "DEL":
            return int(self.data.pop(key, None) is not None)
        if name == "PUBLISH":
            listening = [s for s in self.subscribers if key in s.listeners]
            self.queued.append((key, args[1]))
            return len(listening)
        raise AssertionError(f"unexpected command {name}")

    def pump(self) -> None:
        while self.queued:
            channel, data = self.queued.pop(0)
            for subscriber in list(self.subscribers):
                if channel in subscriber.listeners:
                    subscriber.channel_message(channel, data)


class Connection:
    """What RedisCluster uses of a txredisapi connection, to ``Redis``."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def execute_command(self, *args: Any) -> defer.Deferred[Any]:
        return defer.succeed(self.redis.command(*args))

    def hgetall(self, key: bytes) -> defer.Deferred[Any]:
        return defer.succeed(dict(self.redis._live(key) or {}))


class Node:
    def __init__(self, redis: Redis, name: str, ttl: float = 3.0) -> None:
        self.actions: list[Action[str]] = []
        self.plane = RedisBackplane(RedisAddress("127.0.0.1"), realms=["realm1"], reactor=redis.clock, node_id=name)
        draws = itertools.count(12345)
        self.cluster = RedisCluster(self.plane, reactor=redis.clock, carry_out=self.actions.extend, ttl=ttl,
                                    randbits=lambda bits: next(draws))
        self.h = Harness(elsewhere=self.cluster, session_id=self.cluster.session_id)
        self.cluster.router = self.h.router
        self.redis = redis
        self.cluster.startService()

    def connect(self) -> None:
        self.redis.subscribers.append(self.plane)
        for watcher in self.plane.watchers:
            watcher(Connection(self.redis))
        for subscribed in self.plane.on_subscribed:
            subscribed()
        self.redis.pump()

    def received(self) -> dict[str, list[Any]]:
        """What this node's peers received from the cluster since last asked."""
        actions, self.actions[:] = list(self.actions), []
        return wire(actions)

    def count(self, asking: str = "count") -> int:
        return int(self.h.result(asking, "wamp.session.count"))


@pytest.fixture
def redis() -> Redis:
    return Redis(Clock())


@pytest.fixture
def nodes(redis: Redis) -> tuple[Node, Node]:
    a, b = Node(redis, "A"), Node(redis, "B")
    a.connect(), b.connect()
    return a, b


def test_each_node_holds_its_own_session_id_range(redis: Redis) -> None:
    a = Node(redis, "A")
    assert a.h.join("early").id >> RANDOM_BITS == 0  # before Redis: range 0, which no node claims
    b = Node(redis, "B")
    a.connect(), b.connect()
    assert (a.cluster.slot, b.cluster.slot) == (1, 2)
    assert a.h.join("x").id == (1 << RANDOM_BITS) | 12346
    assert b.h.join("x").id == (2 << RANDOM_BITS) | 12345  # the same random bits, another id


def test_a_node_learns_the_sessions_there_were_before_it_came_and_those_that_come(redis: Redis) -> None:
    a = Node(redis, "A")
    a.connect()
    before = a.h.join("before")
    b = Node(redis, "B")
    b.connect()
    b.h.join("count"), b.h.join("watcher")
    b.h.subscribe("watcher", "wamp.session.on_join")
    redis.pump()
    assert b.count() == 3 and a.count("before") == 3
    assert before.id in b.h.result("count", "wamp.session.list")
    a.h.join("after")
    redis.pump()
    (on_join,) = b.received()["watcher"]
    assert on_join[0] == EVENT and on_join[4][0]["session"] == a.h.sessions["after"].id


def test_a_node_that_stops_refreshing_is_lost_within_the_ttl(nodes: tuple[Node, Node], redis: Redis) -> None:
    a, b = nodes
    a.h.join("callee")
    a.h.register("callee", "com.slow")
    b.h.join("count")
    b.h.subscribe("count", "wamp.session.on_leave")
    redis.pump()
    assert b.h.call("count", "com.slow") is None
    redis.pump()
    a.cluster._heartbeat.stop()  # A dies: nothing refreshes its presence any more
    redis.clock.advance(1.0)
    redis.clock.advance(1.0)  # two refreshes of B (every TTL / 3): A's presence (TTL 3 s) is still there
    assert "count" not in b.received()
    redis.clock.advance(1.0)  # the TTL is out, and B looks
    received = b.received()["count"]
    assert sorted(m[0] for m in received) == [ERROR, EVENT]
    assert [m[4] for m in received if m[0] == ERROR] == ["wsserver.error.node_lost"]
    assert b.count() == 1
    assert b.h.call("count", "com.slow")[4] == "wamp.error.no_such_procedure"


def test_a_node_stopping_says_goodbye_and_is_gone_at_once(nodes: tuple[Node, Node], redis: Redis) -> None:
    a, b = nodes
    a.h.join("x")
    b.h.join("count")
    redis.pump()
    assert b.count() == 2
    a.cluster.stopService()
    redis.pump()
    assert b.count() == 1
    assert redis._live(b"wsserver:0:node:A") is None and redis._live(b"wsserver:0:slot:1") is None


def test_a_stale_snapshot_is_read_again_rather_than_undoing_an_announcement(
    nodes: tuple[Node, Node], redis: Redis,
) -> None:
    a, b = nodes
    a.h.join("x")
    redis.pump()
    snapshot = dict(redis._live(b"wsserver:0:node:A"))  # as Redis answered a read, then:
    a.h.router.detach(a.h.sessions["x"])
    redis.pump()  # the leave is announced and applied on B
    b.h.join("count")
    assert b.count() == 1
    b.cluster._apply_snapshot("A", snapshot)  # the old read's reply arrives late
    assert b.count() == 1  # not undone: read again, and what Redis says now is applied


def test_a_call_to_a_node_nobody_listens_for_ends_at_once(nodes: tuple[Node, Node], redis: Redis) -> None:
    a, b = nodes
    b.h.join("caller")
    b.h.router.registered_elsewhere("C", "realm1", "com.ghost", 9)  # a node that is gone, its TTL not out
    assert b.h.call("caller", "com.ghost") is None
    redis.clock.advance(0)
    (error,) = b.received()["caller"]
    assert error[4] == "wsserver.error.node_lost"


def test_a_call_across_nodes_and_its_answer(nodes: tuple[Node, Node], redis: Redis) -> None:
    a, b = nodes
    a.h.join("callee")
    a.h.register("callee", "com.add")
    b.h.join("caller")
    redis.pump()
    b.h.call("caller", "com.add", 1, 2)
    redis.pump()
    (invocation,) = a.received()["callee"]
    assert invocation[0] == INVOCATION and invocation[4] == [1, 2]
    a.h.send("callee", [70, invocation[1], {}, [3]])
    redis.pump()
    (result,) = b.received()["caller"]
    assert result[0] == RESULT and result[3] == [3]


def test_a_message_that_cannot_be_applied_is_dropped_and_the_next_one_applied(
    nodes: tuple[Node, Node], redis: Redis,
) -> None:
    a, b = nodes
    channel = b"wsserver:0:cluster"
    b.plane.channel_message(channel, msgpack.packb({"v": 1, "node": "A", "op": "join", "seq": 99}))  # no details
    b.plane.channel_message(channel, b"\xc1 not msgpack")
    a.h.join("x")
    redis.pump()
    b.h.join("count")
    assert b.count() == 2


def call_in_flight(nodes: tuple[Node, Node], redis: Redis) -> tuple[Node, Node]:
    """A's "callee" registered com.slow; B's "caller" called it, and A invoked the callee: the call is in flight."""
    a, b = nodes
    a.h.join("callee")
    a.h.register("callee", "com.slow")
    b.h.join("caller")
    redis.pump()
    b.h.call("caller", "com.slow")
    redis.pump()
    assert [m[0] for m in a.received()["callee"]] == [INVOCATION]
    return a, b


def test_calls_across_nodes_in_flight_when_redis_is_lost_end_at_once(nodes: tuple[Node, Node], redis: Redis) -> None:
    a, b = call_in_flight(nodes, redis)
    for watcher in b.plane.watchers:
        watcher(None)
    (error,) = b.received()["caller"]
    assert error[4] == "wsserver.error.node_lost"


def test_without_its_subscription_a_node_neither_waits_for_answers_nor_calls(
    nodes: tuple[Node, Node], redis: Redis,
) -> None:
    a, b = call_in_flight(nodes, redis)
    for unsubscribed in b.plane.on_unsubscribed:
        unsubscribed()  # the answer could not reach B any more
    (error,) = b.received()["caller"]
    assert error[4] == "wsserver.error.node_lost"
    b.h.call("caller", "com.slow")  # nor can the answer to a new call
    redis.clock.advance(0)
    redis.pump()
    (error,) = b.received()["caller"]
    assert error[4] == "wsserver.error.node_lost"
    assert "callee" not in a.received()
