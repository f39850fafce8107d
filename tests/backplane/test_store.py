"""
RedisStore's own logic with a stand-in for its Redis connection (the Lua scripts run against a
real redis-server in tests/e2e/test_store.py): what it sends Redis, how it reads Redis's answers,
what it counts while Redis is gone and what it forgets when Redis is back.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock

from wsserver.backplane import codec
from wsserver.backplane.redis import RedisAddress, RedisBackplane
from wsserver.backplane.store import FORGET, POSITIONED, STORE, RedisStore
from wsserver.core.broker import EVERYONE, Publication
from wsserver.core.eventstore import Position
from wsserver.core.shared import Keeping


class Connection:
    """What the store uses of a txredisapi connection: ``eval`` answers from ``answers`` (or fails)."""

    def __init__(self, *answers: Any) -> None:
        self.evals: list[tuple[bytes, list[bytes], list[Any]]] = []
        self.answers = list(answers)

    def eval(self, script: bytes, keys: list[bytes], args: list[Any]) -> defer.Deferred[Any]:
        self.evals.append((script, keys, args))
        answer = self.answers.pop(0) if self.answers else 0
        return defer.fail(answer) if isinstance(answer, Exception) else defer.succeed(answer)


def publication(n: int, topic: str = "com.t") -> Publication:
    return Publication(n, topic, [n], None, EVERYONE)


def entry(seq: int, n: int, time: float) -> bytes:
    return bytes(msgpack.packb(seq)) + codec.encode("x", "r1", publication(n), False) + bytes(msgpack.packb(time))


@pytest.fixture
def plane() -> RedisBackplane:
    return RedisBackplane(RedisAddress("127.0.0.1", db=4), realms=["r1"], reactor=MemoryReactorClock(), node_id="me")


def store_on(plane: RedisBackplane, connection: Connection | None) -> RedisStore:
    plane._publisher = connection
    return RedisStore(plane, reactor=plane.reactor, new_epoch=lambda: "fresh")


def answer(deferred: defer.Deferred[Any]) -> Any:
    results: list[Any] = []
    deferred.addCallback(results.append)
    return results[0]


def test_a_history_publication_is_one_script_with_its_keys_under_the_realms_prefix(plane: RedisBackplane) -> None:
    connection = Connection(1)
    store = store_on(plane, connection)
    assert answer(store.store("r1", publication(1), retain=True, history=Keeping(100, 2.5))) is True
    ((script, keys, args),) = connection.evals
    assert script == STORE
    assert keys == [b"wsserver:4:r1:topic:com.t", b"wsserver:4:r1:events:com.t", b"wsserver:4:r1:retained",
                    b"wsserver:4:r1:topics"]
    assert args[0] == b"wsserver:4:r1" and args[1] == b"com.t" and args[4:] == [b"fresh", 100, 2500, 1]
    assert codec.decode(args[2])[2].args == [1]  # type: ignore[index]
    assert store.stored == 1


def test_the_positioned_messages_are_delivered_here_with_their_position_and_others_left_to_the_backplane(
    plane: RedisBackplane,
) -> None:
    delivered: list[Any] = []
    plane.deliver = lambda *d: delivered.append(("plain", *d))
    store = store_on(plane, None)
    store.deliver = lambda *d: delivered.append(("stored", *d))
    body = codec.encode("me", "r1", publication(7), False)  # this node's own: delivered all the same
    plane.message_received(POSITIONED + bytes(msgpack.packb("E")) + bytes(msgpack.packb(3)) + body)
    plane.message_received(codec.encode("other", "r1", publication(8), False))
    plane.message_received(POSITIONED + b"\x00broken")
    assert [(kind, realm, p.id) for kind, realm, p, *_ in delivered] == [("stored", "r1", 7), ("plain", "r1", 8)]
    assert delivered[0][3] == Position("E", 3)


def test_unreachable_counts_the_publications_delivered_here_and_forgets_their_topics_history_when_back(
    plane: RedisBackplane,
) -> None:
    store = store_on(plane, None)
    for n in range(3):
        assert answer(store.store("r1", publication(n, "com.a"), retain=False, history=Keeping(10, None))) is False
    assert answer(store.store("r1", publication(9, "com.b"), retain=True, history=None)) is False  # no history: nothing to break
    failing = Connection(ConnectionError("lost"))
    plane._publisher = failing
    assert answer(store.store("r1", publication(4, "com.c"), retain=False, history=Keeping(10, None))) is False
    assert store.unpositioned == 4
    assert [args for script, _, args in failing.evals if script == FORGET] == [[b"com.c"]]  # at once, as it stays
    back = Connection()
    store.connected(back)
    forgotten = sorted(args[0] for script, _, args in back.evals if script == FORGET)
    assert forgotten == [b"com.a"]
    store.connected(Connection())  # once
    assert store._broken == set()


def test_since_reads_a_whole_answer_and_refuses_one_with_a_gap_or_an_expired_event(plane: RedisBackplane) -> None:
    now = plane.reactor.seconds()
    whole = [b"E", 5, entry(4, 40, now), entry(5, 50, now)]
    gap = [b"E", 5, entry(5, 50, now)]  # 4 was trimmed away
    expired = [b"E", 5, entry(4, 40, now - 100), entry(5, 50, now)]
    store = store_on(plane, Connection(whole, gap, expired, [b"E", 5], [b"", 0]))
    recovered = answer(store.since("r1", "com.t", "E", 3, limit=300, ttl=60))
    assert recovered.recovered and [k.seq for k in recovered.items] == [4, 5] and recovered.items[0].item.args == [40]
    assert recovered.items[0].item.position == Position("E", 4)
    assert not answer(store.since("r1", "com.t", "E", 3, limit=300, ttl=None)).recovered
    assert not answer(store.since("r1", "com.t", "E", 3, limit=300, ttl=60)).recovered
    up_to_date = answer(store.since("r1", "com.t", "E", 5, limit=300, ttl=None))
    assert up_to_date.recovered and up_to_date.items == [] and up_to_date.top == 5
    assert answer(store.since("r1", "com.t", "E", 5, limit=300, ttl=None)).epoch == ""  # nothing kept


def test_reads_say_they_cannot_answer_while_redis_is_unreachable_or_failing(plane: RedisBackplane) -> None:
    store = store_on(plane, None)
    assert answer(store.since("r1", "com.t", "E", 0, limit=1, ttl=None)) is None
    assert answer(store.latest("r1", "com.t", "exact", limit=1)) is None
    assert answer(store.retained("r1", "com.t", "exact", ttl=None)) is None
    plane._publisher = Connection(ConnectionError("lost"))
    assert answer(store.since("r1", "com.t", "E", 0, limit=1, ttl=None)) is None


def test_a_script_refused_by_a_live_redis_forgets_the_topics_history_at_once(plane: RedisBackplane) -> None:
    connection = Connection(RuntimeError("OOM command not allowed when used memory > 'maxmemory'"))
    store = store_on(plane, connection)
    assert answer(store.store("r1", publication(1), retain=False, history=Keeping(10, None))) is False
    assert [(script, args) for script, _, args in connection.evals[1:]] == [(FORGET, [b"com.t"])]
    assert store._broken == set() and store.unpositioned == 1  # forgotten already: nothing left for a reconnection


def test_topics_stay_broken_until_redis_has_forgotten_them(plane: RedisBackplane) -> None:
    store = store_on(plane, None)
    store.store("r1", publication(1), retain=False, history=Keeping(10, None))
    store.connected(Connection(ConnectionError("lost again")))
    assert store._broken == {("r1", "com.t")}  # not forgotten: asked again on the next connection
    again = Connection()
    store.connected(again)
    assert [args for script, _, args in again.evals if script == FORGET] == [[b"com.t"]] and store._broken == set()
