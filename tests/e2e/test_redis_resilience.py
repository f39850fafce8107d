"""
When Redis misbehaves, against a real redis-server and two ``twistd -n wsserver`` nodes: Redis
restarted, paused (SIGSTOP) and subscription connections killed under a steady stream of 100
publications a second from each node, with every publication accounted for exactly on the
receiving side (received + counted lost == published); /readyz while Redis is down at start; and
Sentinel: a node finds the master through a sentinel, and follows it through a failover.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection

from tests.e2e.conftest import ServerProcess, terminate, wait_for
from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.redisserver import RedisServer, free_port, redis_server  # noqa: F401 (a fixture)
from tests.e2e.tcpproxy import CuttableProxy
from tests.e2e.test_backplane import EVENT, TOPIC, connected, publish, session, start_node

#: Publications a second each node's stream makes.
RATE = 100
#: Short probe settings, so that a stall is found in seconds (the defaults: 5 s and 5 s).
FAST_PROBE = ("--redis-probe-interval", "1", "--redis-probe-timeout", "1")


def redis_command(port: int, *args: str) -> bytes:
    """Send one command to the Redis on ``port``; its raw reply."""
    request = f"*{len(args)}\r\n".encode() + b"".join(f"${len(a.encode())}\r\n{a}\r\n".encode() for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        return conn.recv(65536)


def readyz(node: ServerProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"{node.http_url}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def node_id(node: ServerProcess) -> str:
    return wait_for(lambda: re.search(r"Redis backplane: node (\w+) connecting", node.log))[1]  # type: ignore[no-any-return]


def counted_lost(receiver: ServerProcess, origin: ServerProcess) -> int:
    """What ``receiver`` logged as lost from ``origin``."""
    pattern = rf"lost (\d+) publication\(s\) from node {node_id(origin)} "
    return sum(int(count) for count in re.findall(pattern, receiver.log))


class Stream:
    """``RATE`` publications a second from a session on ``node``, tagged ``[tag, n]``, until stopped."""

    def __init__(self, node: ServerProcess, tag: str) -> None:
        self.node, self.tag = node, tag
        self.published = 0
        #: Set it to make the next publication carry a payload this large (in characters).
        self.padding = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with session(self.node) as (ws, _):
            self.ws = ws
            while not self._stop.is_set():
                padding, self.padding = self.padding, 0
                publish(ws, self.published + 1, [self.tag, self.published] + (["x" * padding] if padding else []))
                self.published += 1
                time.sleep(1 / RATE)
            publish(ws, 10**6, [self.tag, "end"])

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Collector:
    """
    A subscriber that keeps the numbers of the events tagged ``tag`` (the other node's stream) in
    ``received`` and of those tagged ``local`` (its own node's) in ``local``, until both ended.
    """

    def __init__(self, ws: ClientConnection, tag: str, local: str) -> None:
        self.ws, self.tag = ws, tag
        self.received: list[int] = []
        self.local: list[int] = []
        self._lists = {tag: self.received, local: self.local}
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        ended: set[str] = set()
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message[0] != EVENT or message[4][0] not in self._lists:
                continue
            if message[4][1] != "end":
                self._lists[message[4][0]].append(message[4][1])
                continue
            ended.add(message[4][0])
            if len(ended) == 2:
                self.ended.set()
                return

    def wait(self) -> list[int]:
        assert self.ended.wait(20), f"no end markers; got {len(self.received)} from {self.tag}"
        return self.received


@contextlib.contextmanager
def two_streams(a: ServerProcess, b: ServerProcess) -> Iterator[tuple[Stream, Stream, Collector, Collector]]:
    """Each node publishes a stream; a subscriber on each collects the other's. Yields while they run."""
    with session(a, TOPIC) as (sub_a, _), session(b, TOPIC) as (sub_b, _):
        from_b, from_a = Collector(sub_a, "b", local="a"), Collector(sub_b, "a", local="b")
        with Stream(a, "a") as stream_a, Stream(b, "b") as stream_b:
            time.sleep(0.5)
            yield stream_a, stream_b, from_a, from_b
        from_a.wait(), from_b.wait()


def account(stream: Stream, collector: Collector, origin: ServerProcess, receiver: ServerProcess) -> tuple[int, int, int]:
    """(published, received, counted lost) for the stream of ``origin`` as seen on ``receiver``; asserts they add up."""
    received = collector.received
    lost = counted_lost(receiver, origin)
    summary = f"{stream.tag}: published {stream.published}, received {len(received)}, counted lost {lost}"
    print(summary)
    assert received == sorted(set(received)), summary  # in order, no duplicates
    assert stream.published == len(received) + lost, summary  # exactly: nothing lost uncounted
    return stream.published, len(received), lost


def both_ready(a: ServerProcess, b: ServerProcess, timeout: float = 30.0) -> None:
    wait_for(lambda: readyz(a)[0] == 200 and readyz(b)[0] == 200, timeout=timeout, interval=0.05)


@pytest.fixture
def nodes(start_server: Any, redis_server: RedisServer) -> tuple[ServerProcess, ServerProcess]:  # noqa: F811
    redis_server.start()
    a, b = start_node(start_server, redis_server, *FAST_PROBE), start_node(start_server, redis_server, *FAST_PROBE)
    connected(a), connected(b)
    both_ready(a, b)
    return a, b


def test_redis_restarted_under_a_steady_stream_every_publication_is_received_or_counted_lost(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = nodes
    with two_streams(a, b) as (stream_a, stream_b, from_a, from_b):
        redis_server.stop()
        wait_for(lambda: "unreachable" in a.log and "unreachable" in b.log)
        assert readyz(a)[0] == 503 and "unreachable" in readyz(a)[1]["checks"]["backplane"]
        time.sleep(1.0)
        started = time.monotonic()
        redis_server.start()
        both_ready(a, b)
        print(f"both nodes ready {time.monotonic() - started:.2f}s after Redis was started again")
        time.sleep(0.5)
    account(stream_a, from_a, a, b)
    account(stream_b, from_b, b, a)
    assert counted_lost(b, a) > 0 and counted_lost(a, b) > 0  # the restart did cost something
    # Meanwhile each node's own subscribers received every one of its publications.
    assert from_b.local == list(range(stream_a.published)) and from_a.local == list(range(stream_b.published))
    # The publishing side counts what it could not send; the receiving side counts that and what
    # was sent while it was not subscribed again yet, or in flight when Redis stopped.
    for origin, receiver in ((a, b), (b, a)):
        unsent = int(re.search(r"again; (\d+) publication\(s\)", origin.log)[1])  # type: ignore[index]
        print(f"not forwarded by the publishing node: {unsent}; counted lost by the other: {counted_lost(receiver, origin)}")
        assert unsent <= counted_lost(receiver, origin)


def test_redis_paused_longer_than_the_probe_allows_is_found_and_the_connections_are_made_again(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: RedisServer,  # noqa: F811
) -> None:
    a, b = nodes
    assert redis_server.proc is not None
    with MemoryWatch(a.proc.pid) as memory, two_streams(a, b) as (stream_a, stream_b, from_a, from_b):  # type: ignore[union-attr]
        paused = time.monotonic()
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            # Found within interval + timeout (1 + 1 s), plus a reactor turn and this poll's slack.
            wait_for(lambda: "did not come back" in a.log and "did not come back" in b.log, timeout=5)
            print(f"both nodes found the stall {time.monotonic() - paused:.2f}s after SIGSTOP")
            assert a.log.count("did not come back") == 1  # one line, however long it lasts
            status, body = readyz(a)
            assert status == 503 and "stopped delivering" in body["checks"]["backplane"], body
            time.sleep(max(0.0, 6.0 - (time.monotonic() - paused)))
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        wait_for(lambda: "delivering again" in a.log and "delivering again" in b.log, timeout=15)
        both_ready(a, b)
        print(f"both nodes delivering again {time.monotonic() - resumed:.2f}s after SIGCONT")
        time.sleep(0.5)
    account(stream_a, from_a, a, b)
    account(stream_b, from_b, b, a)
    assert a.log.count("did not come back") == 1
    # What a node wrote to a Redis that did not read is dropped with the connection, not kept.
    print(f"node A grew by {memory.growth / 2**20:.1f} MiB")
    memory.check(32 * 2**20)


def test_a_connection_that_silently_stops_carrying_anything_is_found_and_made_again(
    start_server: Any, redis_server: RedisServer,  # noqa: F811
) -> None:
    redis_server.start()
    with CuttableProxy(redis_server.port) as relay:
        a = start_server("--redis", f"redis://127.0.0.1:{relay.port}/0", *FAST_PROBE)
        b = start_node(start_server, redis_server, *FAST_PROBE)
        both_ready(a, b)
        with two_streams(a, b) as (stream_a, stream_b, from_a, from_b):
            frozen = time.monotonic()
            relay.freeze()
            wait_for(lambda: "did not come back" in a.log, timeout=5)
            print(f"node A found its dead connections {time.monotonic() - frozen:.2f}s after they went silent")
            wait_for(lambda: "delivering again" in a.log, timeout=10)
            print(f"node A delivering again {time.monotonic() - frozen:.2f}s after they went silent")
            both_ready(a, b)
            time.sleep(0.5)
        account(stream_a, from_a, a, b)
        account(stream_b, from_b, b, a)
        assert counted_lost(a, b) > 0  # A was deaf for a while, and says how long in publications


def test_while_redis_is_paused_a_nodes_own_clients_are_served_as_before(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: RedisServer,  # noqa: F811
) -> None:
    a, _ = nodes
    assert redis_server.proc is not None and a.proc is not None
    # A client of A's own, publishing and subscribing there: its events never wait for Redis.
    with Bystander(a.ws_url) as bystander, MemoryWatch(a.proc.pid) as memory:
        paused = time.monotonic()
        redis_server.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: "did not come back" in a.log, timeout=5)
            time.sleep(max(0.0, 4.0 - (time.monotonic() - paused)))
        finally:
            redis_server.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: readyz(a)[0] == 200, timeout=15)
    print(f"node A's own client while Redis was paused: {bystander.check().summary()}")
    memory.check(32 * 2**20)


#: Beyond Redis's 16 KiB reply buffer: what a subscriber has not been sent of it counts against client-output-buffer-limit.
BIG = 64 * 1024


@pytest.mark.parametrize("how", ["client kill", "output buffer limit"])
def test_a_subscription_connection_killed_by_redis_under_a_stream_is_made_again_and_its_losses_counted(
    nodes: tuple[ServerProcess, ServerProcess], redis_server: RedisServer, how: str,  # noqa: F811
) -> None:
    a, b = nodes
    with two_streams(a, b) as (stream_a, stream_b, from_a, from_b):
        if how == "client kill":
            assert redis_command(redis_server.port, "CLIENT", "KILL", "TYPE", "pubsub").startswith(b":")
        else:
            assert redis_command(redis_server.port, "CONFIG", "SET", "client-output-buffer-limit",
                                 "pubsub 1 1 0") == b"+OK\r\n"
            stream_a.padding = BIG  # one of A's stream, a large one
            wait_for(lambda: "was closed" in b.log)
            redis_command(redis_server.port, "CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60")
        wait_for(lambda: "was closed" in a.log and "was closed" in b.log)
        both_ready(a, b)
        time.sleep(0.5)
    account(stream_a, from_a, a, b)
    account(stream_b, from_b, b, a)


def test_readyz_says_503_and_why_while_redis_is_down_at_start_then_200(
    start_server: Any, redis_server: RedisServer,  # noqa: F811
) -> None:
    a = start_node(start_server, redis_server)
    wait_for(lambda: "unreachable" in a.log)
    status, body = readyz(a)
    assert status == 503 and body["status"] == "not ready" and body["checks"]["listening"] == "ok", body
    assert re.fullmatch(r"redis://127.0.0.1:\d+/0: unreachable \(.*refused.*\)", body["checks"]["backplane"]), body
    with urllib.request.urlopen(f"{a.http_url}/healthz", timeout=5) as response:
        assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}  # alive all the same
    redis_server.start()
    wait_for(lambda: readyz(a)[0] == 200, timeout=15)
    assert readyz(a)[1] == {"status": "ready", "checks": {"listening": "ok", "stopping": "ok", "backplane": "ok"}}
    urllib.request.urlopen(f"{a.http_url}/index.html", timeout=5).close()
    wait_for(lambda: "GET /index.html" in a.log)  # the access log is on...
    assert "/readyz" not in a.log and "/healthz" not in a.log  # ...and the polls stay out of it


# -- Sentinel --------------------------------------------------------------------------------------


class Sentinel:
    """``redis-server --sentinel`` on a free port, watching ``master`` as ``mymaster`` (quorum 1)."""

    def __init__(self, workdir: Path, master: RedisServer) -> None:
        self.port = free_port()
        config = workdir / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n"
        )
        self.proc = subprocess.Popen([master.binary, str(config), "--sentinel"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self._answers(), timeout=10)

    def _answers(self) -> bool:
        try:
            return redis_command(self.port, "PING").startswith(b"+PONG")
        except OSError:
            return False

    def master_port(self) -> int:
        reply = redis_command(self.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        return int(reply.split(b"\r\n")[-2])

    def stop(self) -> None:
        terminate(self.proc)


def test_through_sentinel_a_node_finds_the_master_and_follows_it_through_a_failover(
    start_server: Any, redis_server: RedisServer, tmp_path: Path,  # noqa: F811
) -> None:
    redis_server.start()
    (tmp_path / "replica").mkdir()
    replica = RedisServer(tmp_path / "replica")
    sentinel = Sentinel(tmp_path, redis_server)
    try:
        url = f"redis+sentinel://127.0.0.1:{sentinel.port}/mymaster/0"
        a = start_server("--redis", url, *FAST_PROBE)
        b = start_server("--redis", url, *FAST_PROBE)
        both_ready(a, b)
        assert f"connecting to {url}" in a.log

        def across(text: str) -> None:
            with session(b, TOPIC) as (sub_b, _), session(a) as (pub, _):
                publish(pub, 1, [text])
                while True:
                    message = json.loads(sub_b.recv(timeout=10))
                    if message[0] == EVENT and message[4] == [text]:
                        return

        across("through the sentinel")
        # A failover: a replica of the master, promoted by the sentinel; the nodes follow.
        start_replica(replica, redis_server)
        wait_for(lambda: b"master_link_status:up" in redis_command(replica.port, "INFO", "replication"), timeout=15)
        wait_for(lambda: f"slave0:ip=127.0.0.1,port={replica.port}".encode()
                 in redis_command(redis_server.port, "INFO", "replication"), timeout=15)
        wait_for(lambda: b"+OK" in redis_command(sentinel.port, "SENTINEL", "FAILOVER", "mymaster"), timeout=20,
                 interval=0.5)
        wait_for(lambda: sentinel.master_port() == replica.port, timeout=20)
        time.sleep(0.5)
        both_ready(a, b)
        wait_for(lambda: b"connected_clients" in redis_command(replica.port, "INFO", "clients"))
        across("after the failover")
        clients = redis_command(replica.port, "CLIENT", "LIST")
        assert clients.count(b"cmd=subscribe") + clients.count(b"cmd=publish") >= 2, clients  # the nodes moved
    finally:
        sentinel.stop()
        replica.stop()


def test_with_no_sentinel_answering_the_node_serves_locally_and_says_it_once(start_server: Any) -> None:
    a = start_server("--redis", f"redis+sentinel://127.0.0.1:{free_port()}/mymaster/0")
    status, body = readyz(a)
    assert status == 503 and body["checks"]["backplane"].endswith(": connecting"), body
    # txredisapi asks the sentinels for up to 10 s, then the outage is said once, with the reason.
    wait_for(lambda: "unreachable (No master found for mymaster)" in a.log, timeout=20)
    time.sleep(1.0)
    assert a.log.count("unreachable") == 1 and "Scheduling retry" not in a.log, a.log
    with session(a, TOPIC) as (sub, _), session(a) as (pub, _):
        publish(pub, 1, ["local"])
        assert json.loads(sub.recv(timeout=5))[4] == ["local"]


def start_replica(replica: RedisServer, master: RedisServer) -> None:
    """Start ``replica`` as a replica of ``master`` (RedisServer starts masters only)."""
    replica.proc = subprocess.Popen(
        [replica.binary, "--port", str(replica.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(replica.workdir), "--replicaof", "127.0.0.1", str(master.port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: _pong(replica.port), timeout=10)


def _pong(port: int) -> bool:
    try:
        return redis_command(port, "PING").startswith(b"+PONG")
    except OSError:
        return False
