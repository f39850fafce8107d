"""
The Redis backplane (``--redis``) against a real redis-server: two ``twistd -n wsserver`` nodes on
one Redis, subscribers on one receiving what is published on the other, exactly once and in
order, with the audience honoured; and what a node does while Redis is down, at start and in the
middle of a stream.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.e2e.conftest import ServerProcess, wait_for
from tests.e2e.rawws import join
from tests.e2e.test_http_api import post
from tests.e2e.redisserver import RedisServer, redis_server  # noqa: F401 (a fixture)

EVENT, PUBLISHED = 36, 17
TOPIC = "com.example.across"
SUBSCRIBED_LINE = "subscribed to 1 realm channel(s)"


@contextlib.contextmanager
def session(node: ServerProcess, topic: str | None = None) -> Iterator[tuple[ClientConnection, int]]:
    """A raw wamp.2.json session on ``node`` (subscribed to ``topic``, if given) and its session id."""
    with ws_connect(node.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as ws:
        welcome = join(ws, topic)
        yield ws, welcome[1]


def publish(
    ws: ClientConnection, request: int, args: list[Any], topic: str = TOPIC, events: list[Any] | None = None,
    **options: Any,
) -> int:
    """PUBLISH with acknowledge; the publication id. EVENTs ``ws`` receives meanwhile go to ``events``."""
    ws.send(json.dumps([16, request, dict(options, acknowledge=True), topic, args]))
    while True:
        reply = json.loads(ws.recv(timeout=5))
        if reply[0] == EVENT and events is not None:
            events.append(reply)
            continue
        assert reply[0] == PUBLISHED, reply
        return int(reply[2])


def events_until(ws: ClientConnection, last: Any, timeout: float = 10.0) -> list[list[Any]]:
    """The EVENTs ``ws`` receives up to and including the one whose first argument is ``last``."""
    received: list[list[Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message[0] == EVENT:
            received.append(message)
            if message[4][0] == last:
                return received


def nothing_more(ws: ClientConnection, wait: float = 0.3) -> bool:
    try:
        ws.recv(timeout=wait)
    except TimeoutError:
        return True
    return False


def start_node(start_server: Any, redis: RedisServer, *args: str) -> ServerProcess:
    node: ServerProcess = start_server("--redis", redis.url, *args)
    return node


def connected(node: ServerProcess) -> None:
    wait_for(lambda: SUBSCRIBED_LINE in node.log and "Redis backplane: connected to" in node.log)


@pytest.fixture
def nodes(start_server: Any, redis_server: RedisServer) -> tuple[ServerProcess, ServerProcess]:  # noqa: F811
    redis_server.start()
    a, b = start_node(start_server, redis_server), start_node(start_server, redis_server)
    connected(a), connected(b)
    return a, b


def test_every_event_published_on_one_node_reaches_the_other_once_in_order(
    nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = nodes
    count = 300
    with session(b, TOPIC) as (sub_b, _), session(a, TOPIC) as (sub_a, _), session(a) as (pub, pub_id):
        ids = [publish(pub, n + 1, [n, {"bytes?": "no, json"}], disclose_me=True) for n in range(count)]
        for subscriber in (sub_b, sub_a):
            received = events_until(subscriber, count - 1)
            assert [e[4][0] for e in received] == list(range(count))  # every one, once, in order
            assert [e[2] for e in received] == ids  # the origin's publication ids
            assert received[0][3]["publisher"] == pub_id
            assert nothing_more(subscriber)  # no second copy through Redis
        # The other direction, and a publication from the HTTP-less inside: a node's own echo is skipped.
        with session(b) as (pub_b, _):
            publish(pub_b, 1, ["from b"])
        assert [e[4] for e in events_until(sub_a, "from b")] == [["from b"]]
        assert [e[4] for e in events_until(sub_b, "from b")] == [["from b"]]
        assert nothing_more(sub_a) and nothing_more(sub_b)


def test_exclude_me_and_session_lists_hold_across_nodes(nodes: tuple[ServerProcess, ServerProcess]) -> None:
    a, b = nodes
    with session(b, TOPIC) as (x, x_id), session(b, TOPIC) as (y, y_id), session(a, TOPIC) as (pub, _):
        own: list[Any] = []
        publish(pub, 2, ["not x"], exclude=[x_id])
        publish(pub, 3, ["x only"], eligible=[x_id, y_id], exclude=[y_id])
        publish(pub, 4, ["me too"], events=own, exclude_me=False)
        publish(pub, 5, ["end"], events=own)
        assert [e[4][0] for e in events_until(x, "end")] == ["x only", "me too", "end"]
        assert [e[4][0] for e in events_until(y, "end")] == ["not x", "me too", "end"]
        # The publisher, subscribed itself, receives only what it did not exclude itself from.
        assert [e[4][0] for e in own] == ["me too"]
        assert nothing_more(pub)


def test_redis_down_at_start_the_node_serves_locally_then_connects(
    start_server: Any, redis_server: RedisServer,  # noqa: F811
) -> None:
    a = start_node(start_server, redis_server)  # no Redis on that port yet: it starts anyway
    b = start_node(start_server, redis_server)
    wait_for(lambda: "unreachable" in a.log)
    with session(a, TOPIC) as (sub_a, _), session(a) as (pub, _):
        for n in range(3):
            publish(pub, n + 1, [n])
        assert [e[4][0] for e in events_until(sub_a, 2)] == [0, 1, 2]  # local pub/sub works meanwhile
    time.sleep(1.0)  # a few attempts fail
    assert a.log.count("unreachable") == 1 and "Scheduling retry" not in a.log, a.log  # said once, not per attempt
    redis_server.start()
    connected(a), connected(b)
    assert re.search(r"connected to redis://127.0.0.1:\d+/0 again; 3 publication\(s\) made while it was unreachable", a.log), a.log
    with session(b, TOPIC) as (sub_b, _), session(a) as (pub, _):
        publish(pub, 1, ["now across"])
        assert [e[4] for e in events_until(sub_b, "now across")] == [["now across"]]


def test_redis_restarted_mid_stream_the_nodes_reconnect_and_count_what_was_not_forwarded(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = nodes
    published: list[int] = []
    stop = threading.Event()
    with session(b, TOPIC) as (sub_b, _), session(a) as (pub, _):

        def stream() -> None:  # a steady stream, one publication every 10 ms
            n = 0
            while not stop.is_set():
                publish(pub, n + 1, [n])
                published.append(n)
                n += 1
                time.sleep(0.01)

        publisher = threading.Thread(target=stream)
        publisher.start()
        try:
            time.sleep(0.5)
            redis_server.stop()
            wait_for(lambda: "unreachable" in a.log and "unreachable" in b.log)
            time.sleep(1.0)
            redis_server.start()
            wait_for(lambda: "again;" in a.log and b.log.count(SUBSCRIBED_LINE) == 2)
            time.sleep(0.5)
        finally:
            stop.set()
            publisher.join(10)
        publish(pub, 10**6, ["end"])
        received = [e[4][0] for e in events_until(sub_b, "end")][:-1]
    unforwarded = int(re.search(r"again; (\d+) publication\(s\)", a.log)[1])  # type: ignore[index]
    lost_unseen = len(published) - len(received) - unforwarded
    print(f"published {len(published)}, received on B {len(received)}, counted as not forwarded {unforwarded}, "
          f"lost uncounted {lost_unseen}")
    assert received == sorted(set(received))  # in order, no duplicates
    assert unforwarded > 0 and received[-1] == published[-1]  # the stream flows again after the restart
    # Uncounted losses: those in flight when Redis stopped, and those A forwarded before B had
    # subscribed again (the two reconnect independently); bounded by the backoff's first steps.
    assert 0 <= lost_unseen <= 150


def test_the_http_api_and_python_in_the_server_publish_across_nodes_too(
    start_server: Any, redis_server: RedisServer,  # noqa: F811
) -> None:
    redis_server.start()
    a = start_node(start_server, redis_server, "--http-api", "--demo")  # the demo publishes from Python
    b = start_node(start_server, redis_server)
    connected(a), connected(b)
    with session(b, TOPIC) as (sub_b, _), session(b, "com.example.clock") as (clock_b, _):
        status, _ = post(a, "/publish", {"topic": TOPIC, "args": ["over http"]})
        assert status == 200
        assert [e[4] for e in events_until(sub_b, "over http")] == [["over http"]]
        clock = json.loads(clock_b.recv(timeout=5))  # the demo's clock ticks every second on A
        assert clock[0] == EVENT
