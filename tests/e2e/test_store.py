"""
Retained events, history and positions in Redis (``--redis``), end to end: two ``twistd -n
wsserver`` nodes on one real redis-server. A subscriber cut off on one node resumes on the other
with exactly what it missed (autobahn-python's helper, wsserver/client.py, and wsclient.js under
Node); restarting both nodes loses nothing Redis kept; a Redis that lost its data, or was
unreachable while events were published, makes resumes say ``recovered: false``; a retained
event published on one node is got on the other, also after both restart.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import ServerProcess, wait_for
from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import exchange, join
from tests.e2e.redisserver import RedisServer, redis_server  # noqa: F401 (a fixture)
from tests.e2e.tcpproxy import CuttableProxy
from tests.e2e.test_backplane import SUBSCRIBED_LINE, connected, start_node
from tests.e2e.test_resume import Collected, resumed, sse_blocks
from tests.e2e.test_resume_node import SCRIPT, events, lines_until
from tests.e2e.test_reconnect import Subscriber
from tests.e2e.wampclient import WampClient
from wsserver.client import Position

TOPIC = "com.example.feed"
HISTORY = ("--history-size", "100")
SINCE = "wsserver.history.since"
CONNECTED = "Redis backplane: connected to"


@pytest.fixture
def nodes(start_server: Any, redis_server: RedisServer) -> tuple[ServerProcess, ServerProcess]:  # noqa: F811
    redis_server.start()
    a, b = start_node(start_server, redis_server, *HISTORY), start_node(start_server, redis_server, *HISTORY)
    connected(a), connected(b)
    return a, b


@contextlib.contextmanager
def attacker_among_others(node: ServerProcess) -> Iterator[tuple[ClientConnection, Bystander, MemoryWatch]]:
    """A raw wamp.2.json session on ``node`` to attack with, while a bystander and the node's memory are watched."""
    with ws_connect(node.ws_url, subprotocols=["wamp.2.json"], open_timeout=5, max_size=None) as attacker:
        join(attacker)
        with Bystander(node.ws_url) as bystander, MemoryWatch(node.proc.pid) as memory:  # type: ignore[union-attr]
            yield attacker, bystander, memory


def kept_events(node: ServerProcess, topics: list[str], **options: Any) -> str:
    """Publish one 200-byte event on each of ``topics``, in order, on ``node``; the first topic's epoch."""
    with WampClient(node.ws_url) as publisher:
        for n, topic in enumerate(topics):
            publisher.publish(topic, "x" * 200, n, **options)
        return str(publisher._call(publisher.session.call, SINCE, topics[0], "", 0).kwresults["epoch"])


def publish_each(publisher: WampClient, topic: str, numbers: range) -> None:
    """Publish each of ``numbers`` on ``topic``, one event each, acknowledged."""
    for n in numbers:
        publisher.publish(topic, n)


def restart(*nodes: ServerProcess) -> None:
    """Stop every node, then start each and wait until it is connected to Redis again (its log goes on)."""
    for node in nodes:
        node.stop()
    lines = (CONNECTED, SUBSCRIBED_LINE)
    for node in nodes:
        before = [node.log.count(line) for line in lines]
        node.start()
        wait_for(lambda: all(node.log.count(line) > n for line, n in zip(lines, before)))  # noqa: B023


def test_a_python_subscriber_cut_off_on_a_resumes_on_b_with_exactly_the_50_published_on_b(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    with CuttableProxy(a.port) as proxy, WampClient(b.ws_url) as publisher:
        first = Collected()
        subscriber = WampClient(f"ws://127.0.0.1:{proxy.port}/ws")
        state = resumed(subscriber, first, None)
        publish_each(publisher, TOPIC, range(5))
        assert first.wait_for(5) == [0, 1, 2, 3, 4]  # published on B, delivered on A through Redis
        position = state.position
        assert position is not None and position.seq == 5
        proxy.cut()
        publish_each(publisher, TOPIC, range(5, 55))

        on_b = Collected()
        with WampClient(b.ws_url) as again:
            state = resumed(again, on_b, position)
            assert state.recovered is True and state.missed == 50
            assert on_b.events == list(range(5, 55))  # exactly the 50, in order, no duplicates
            with WampClient(a.ws_url) as publisher_a:
                publisher_a.publish(TOPIC, 55)  # published on A: the same sequence, the next seq
            assert on_b.wait_for(51)[-1] == 55 and len(on_b.events) == 51
            assert state.position == Position(position.epoch, 56)


def test_get_events_answers_the_same_on_both_nodes(nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = nodes
    with WampClient(a.ws_url) as publisher:
        publish_each(publisher, TOPIC, range(3))
    answers = []
    for node in (a, b):
        with ws_connect(node.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as ws:
            join(ws)
            subscribed = exchange(ws, [32, 1, {"match": "prefix"}, "com.example."])
            reply = exchange(ws, [48, 2, {}, "wamp.subscription.get_events", [subscribed[2], 10]])
            assert reply[0] == 50, reply
            answers.append([(e["args"], e["details"]["_epoch"], e["details"]["_seq"], e["topic"]) for e in reply[3][0]])
    epoch = answers[0][0][1]
    assert answers[0] == answers[1] == [([n], epoch, n + 1, TOPIC) for n in range(3)]  # one history, one epoch


def test_both_nodes_restarted_with_redis_kept_a_resume_still_recovers(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    with WampClient(a.ws_url) as publisher:
        first = Collected()
        with WampClient(b.ws_url) as subscriber:
            state = resumed(subscriber, first, None)
            publisher.publish(TOPIC, 0)
            assert first.wait_for(1) == [0]
            position = state.position
        publish_each(publisher, TOPIC, range(1, 11))
    restart(a, b)
    again = Collected()
    with WampClient(a.ws_url) as subscriber:
        state = resumed(subscriber, again, position)
        assert state.recovered is True and again.events == list(range(1, 11))
        assert state.position == Position(position.epoch, 11)  # type: ignore[union-attr]


def test_redis_restarted_without_its_data_resumes_say_not_recovered_and_a_new_epoch_begins(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = nodes
    with WampClient(a.ws_url) as publisher:
        publish_each(publisher, TOPIC, range(3))
    old = Collected()
    with WampClient(b.ws_url) as subscriber:
        position = resumed(subscriber, old, None).position
    assert position is not None and position.seq == 3
    redis_server.stop()
    redis_server.start()  # no persistence: everything is gone
    wait_for(lambda: a.log.count(CONNECTED) == 2 and b.log.count(CONNECTED) == 2)
    wait_for(lambda: a.log.count("subscribed to 1 realm") == 2 and b.log.count("subscribed to 1 realm") == 2)
    with WampClient(a.ws_url) as publisher:
        publisher.publish(TOPIC, "after")
    for node in (a, b):
        after = Collected()
        with WampClient(node.ws_url) as subscriber:
            state = resumed(subscriber, after, position)
        assert state.recovered is False and after.events == []  # never a false "recovered"
        assert state.position is not None and state.position.epoch != position.epoch and state.position.seq == 1


def test_publications_while_redis_is_unreachable_are_delivered_locally_and_resumes_across_say_not_recovered(
    start_server: Any, redis_server: RedisServer,  # noqa: F811
) -> None:
    redis_server.start()
    with CuttableProxy(redis_server.port) as path_to_redis:  # Redis keeps its data: only the path is cut
        url = f"redis://127.0.0.1:{path_to_redis.port}/0"
        a, b = (start_server("--redis", url, *HISTORY) for _ in range(2))
        connected(a), connected(b)
        with WampClient(a.ws_url) as publisher:
            publisher.publish(TOPIC, 0)
            seen = Collected()
            with WampClient(b.ws_url) as subscriber:
                position = resumed(subscriber, seen, None).position
            assert position is not None and position.seq == 1
            with ws_connect(a.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as local:
                join(local, TOPIC)
                path_to_redis.cut()
                wait_for(lambda: "unreachable" in a.log)
                publish_each(publisher, TOPIC, range(1, 4))
                got = [json.loads(local.recv(timeout=5)) for _ in range(3)]
                assert [e[4] for e in got] == [[1], [2], [3]]  # delivered on A meanwhile
                assert all("_seq" not in e[3] for e in got), got  # without a position
            assert "Redis store: 1 publication(s) on topics with history delivered on this node only" in a.log
            path_to_redis.restore()
            wait_for(lambda: "again;" in a.log and "again;" in b.log, timeout=40)
            wait_for(lambda: "topic(s) that lost publications while Redis was unreachable begin a new epoch" in a.log)
            publisher.publish(TOPIC, "after")
        for node in (a, b):
            after = Collected()
            with WampClient(node.ws_url) as subscriber:
                state = resumed(subscriber, after, position)
            assert state.recovered is False and after.events == []  # the 3 are not in Redis: never "recovered"
            assert state.position is not None and state.position.epoch != position.epoch


def test_a_retained_event_published_on_a_is_got_on_b_and_survives_a_restart_of_both(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    with WampClient(a.ws_url) as publisher:
        publisher.publish("com.example.state", "kept", retain=True)
        publisher.publish("com.example.state", "not kept")
    for round_ in range(2):
        for node in (b, a):
            with ws_connect(node.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as ws:
                join(ws)
                assert exchange(ws, [32, 1, {"get_retained": True}, "com.example.state"])[0] == 33
                retained = json.loads(ws.recv(timeout=5))
                assert retained[0] == 36 and retained[4] == ["kept"] and retained[3]["retained"] is True, retained
        if round_ == 0:
            restart(a, b)


@pytest.fixture
def node_subscriber(nodes: tuple[ServerProcess, ServerProcess]) -> Iterator[tuple[CuttableProxy, Subscriber]]:
    a, _ = nodes
    proxy = CuttableProxy(a.port)
    subscriber = Subscriber(f"ws://127.0.0.1:{proxy.port}/ws", "com.example.resume", SCRIPT, "exact")
    assert subscriber.next("active") == "com.example.resume"
    yield proxy, subscriber
    subscriber.close()
    proxy.close()


def test_wsclient_cut_off_on_a_resumes_on_b_with_exactly_the_50_published_on_b(
    nodes: tuple[ServerProcess, ServerProcess], node_subscriber: tuple[CuttableProxy, Subscriber],
) -> None:
    a, b = nodes
    proxy, subscriber = node_subscriber
    topic = "com.example.resume"
    with WampClient(b.ws_url) as publisher:
        publish_each(publisher, topic, range(5))
        before = events(subscriber, 5)
        assert [(e["event"], e["seq"]) for e in before] == [([n], n + 1) for n in range(5)]
        proxy.cut()
        assert subscriber.next("state") == "closed"
        publish_each(publisher, topic, range(5, 55))
        proxy.upstream_port = b.port  # the page comes back through another node
        proxy.restore()
        after = lines_until(subscriber, lambda found: any("resume" in line for line in found))
        publisher.publish(topic, 55)
        after += events(subscriber, 1)
    got = [line for line in after if "event" in line]
    assert [e["event"] for e in got] == [[n] for n in range(5, 56)]
    assert [e["seq"] for e in got] == list(range(6, 57))
    assert [e["recovered"] for e in got] == [True] * 50 + [False]
    resumed_line = next(line["resume"] for line in after if "resume" in line)
    assert resumed_line == {"topic": topic, "recovered": True, "missed": 50, "reason": None}


def test_a_flood_of_history_reads_is_refused_past_the_calls_in_flight_and_harms_no_one(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """Each read asks Redis on the connection that also stores publications: one session may not queue many."""
    a, _ = nodes
    epoch = kept_events(a, [TOPIC] * 100)
    with attacker_among_others(a) as (attacker, bystander, memory):
        calls = 2_000  # 100 events per answer, pipelined
        for n in range(calls):
            attacker.send(json.dumps([48, n + 2, {}, SINCE, [TOPIC, epoch, 0]]))
        answers = {"result": 0, "refused": 0}
        while sum(answers.values()) < calls:
            reply = json.loads(attacker.recv(timeout=60))
            if reply[0] == 50:
                answers["result"] += 1
            else:
                assert reply[0] == 8 and reply[4] == "wsserver.error.too_many_calls_in_flight", reply
                answers["refused"] += 1
    print(f"flood of {calls} since calls: {answers}; {bystander.stop().summary()}; "
          f"server grew {memory.growth / 2**20:.1f} MiB")
    bystander.check()
    memory.check(64 * 2**20)
    assert answers["refused"] > 0  # the rest were refused with a reason, not queued on Redis


def test_a_burst_of_subscribes_asking_for_retained_events_asks_redis_once_per_subscription_and_harms_no_one(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, _ = nodes
    kept_events(a, [f"com.example.state.{n}" for n in range(200)], retain=True)
    with attacker_among_others(a) as (attacker, bystander, memory):
        subscribes = 500
        for n in range(subscribes):  # the same wildcard again and again: 200 retained events each time
            attacker.send(json.dumps([32, n + 1, {"match": "wildcard", "get_retained": True}, "com.example.state."]))
        subscribed = retained = 0
        while subscribed < subscribes or retained < 200:
            reply = json.loads(attacker.recv(timeout=60))
            subscribed += reply[0] == 33
            retained += reply[0] == 36
    print(f"{subscribes} subscribes with get_retained: {retained} retained events sent; "
          f"{bystander.stop().summary()}; server grew {memory.growth / 2**20:.1f} MiB")
    bystander.check()
    memory.check(64 * 2**20)


def test_a_burst_of_publications_on_a_history_topic_harms_no_one(nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = nodes
    with attacker_among_others(a) as (attacker, bystander, memory):
        burst = 3_000  # a third of --publish-burst (what one session may publish at once)
        for n in range(burst):
            attacker.send(json.dumps([16, n + 1, {}, TOPIC, [n, "x" * 100]]))
        with ws_connect(b.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as reader:
            join(reader)
            wait_for(lambda: exchange(reader, [48, 1, {}, SINCE, [TOPIC, "", 0]])[4]["top"] == burst, timeout=60)
    print(f"burst of {burst} history publications: {bystander.stop().summary()}; "
          f"server grew {memory.growth / 2**20:.1f} MiB")
    # Not refused: a burst within --publish-burst is work the server accepts, each publication a
    # Redis round trip. The bystander's history events share that connection: they must not
    # wait behind the whole burst (10,000 took them to a median of 6.8 s, max 10 s, before each
    # publisher got turns), only behind a few of the burst's at a time, and the CPU it costs.
    bystander.check(median_bound=0.25)
    memory.check(64 * 2**20)


def redis_command(redis: RedisServer, *words: str) -> bytes:  # noqa: F811
    """One command to Redis, inline, and its reply's first line."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as conn:
        conn.sendall(" ".join(words).encode() + b"\r\n")
        return conn.recv(256).split(b"\r\n")[0]


def test_redis_out_of_memory_delivers_here_without_a_position_and_resumes_across_say_not_recovered(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = nodes
    with WampClient(a.ws_url) as publisher:
        publisher.publish(TOPIC, 0)
        with WampClient(b.ws_url) as subscriber:
            position = resumed(subscriber, Collected(), None).position
        assert position is not None and position.seq == 1
        with ws_connect(a.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as local:
            join(local, TOPIC)
            assert redis_command(redis_server, "CONFIG", "SET", "maxmemory", "1") == b"+OK"
            try:
                publisher.publish(TOPIC, 1)
                (event,) = [json.loads(local.recv(timeout=5))]
                assert event[4] == [1] and "_seq" not in event[3]  # delivered here, without a position
            finally:
                assert redis_command(redis_server, "CONFIG", "SET", "maxmemory", "0") == b"+OK"
        publisher.publish(TOPIC, 2)
    assert "OOM" in a.log, a.log
    with WampClient(b.ws_url) as subscriber:
        state = resumed(subscriber, Collected(), position)
    assert state.recovered is False  # event 1 is not in Redis: never "recovered"
    assert state.position is not None and state.position.epoch != position.epoch and state.position.seq == 1


def test_sse_on_a_redis_node_carries_the_redis_positions_and_announces_a_reset_rather_than_resume(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    """SSE and /stream resume still read the node's memory (see the README): never a false resume."""
    a, b = nodes
    with WampClient(a.ws_url) as publisher:
        publisher.publish(TOPIC, 0)
        epoch = publisher._call(publisher.session.call, SINCE, TOPIC, "", 0).kwresults["epoch"]
        live: list[list[dict[str, str]]] = []
        reading = threading.Thread(target=lambda: live.append(sse_blocks(b.port, f"/sse?topic={TOPIC}", 2)))
        reading.start()
        with WampClient(b.ws_url) as watcher:  # the stream's subscription exists on node B
            wait_for(lambda: watcher._call(watcher.session.call, "wamp.subscription.lookup", TOPIC) is not None)
        publisher.publish(TOPIC, 1)
        reading.join(10)
        (reset, _) = sse_blocks(b.port, f"/sse?topic={TOPIC}", 2, {"Last-Event-ID": f"{epoch}:1"})
    assert live and live[0][1]["id"] == f"{epoch}:2"  # the position Redis gave, on the other node
    assert reset["event"] == "reset" and json.loads(reset["data"])["topics"] == [TOPIC]
