"""
``--workers N`` against a real redis-server: ``twistd -n wsserver --workers 2 --redis URL`` as
users start it. Both workers answer on the one port; a publication on one reaches a subscriber on
the other; a killed worker is started again and serves; SIGTERM stops them all (no process left),
as does the supervisor's own death; long-poll sessions work although their requests reach either
worker; and ``--workers 2`` without ``--redis`` is refused.

Which worker takes a connection is the kernel's choice. Where a test needs a given worker to take
one, it stops the other (SIGSTOP) meanwhile: a stopped process does not accept, so the other does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.e2e.broker_clients import Client, NodePeer
from tests.e2e.conftest import TWISTD, ServerProcess, wait_for
from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import HELLO, join
from tests.e2e.redisserver import RedisServer, redis_server  # noqa: F401 (a fixture)
from tests.e2e.test_flashpolicy import ask
from tests.e2e.test_tls import self_signed

STARTED = re.compile(r"started worker (?P<index>\d+) of \d+, pid (?P<pid>\d+)")
SUBSCRIBED = re.compile(r"\[worker (?P<index>\d+), pid (?P<pid>\d+)\] Redis backplane: subscribed to")
ACCESS = re.compile(r"\[worker (?P<index>\d+), pid (?P<pid>\d+)\] \"127\.0\.0\.1\" .* \"GET (?P<path>\S+) HTTP")
EVENT = 36


class Workers:
    """The workers of a ``--workers`` server, by index, as its log tells them."""

    def __init__(self, server: ServerProcess, count: int = 2) -> None:
        self.server = server
        self.count = count

    def pids(self) -> dict[int, int]:
        """The pid of each worker index, the latest started."""
        return {int(m["index"]): int(m["pid"]) for m in STARTED.finditer(self.server.log)}

    def ready(self, timeout: float = 20.0) -> dict[int, int]:
        """Wait until every current worker is subscribed on Redis; their pids."""
        def all_subscribed() -> dict[int, int] | None:
            pids = self.pids()
            subscribed = {int(m["pid"]) for m in SUBSCRIBED.finditer(self.server.log)}
            return pids if len(pids) == self.count and set(pids.values()) <= subscribed else None
        return wait_for(all_subscribed, timeout)  # type: ignore[no-any-return]

    def session(self, index: int, topic: str | None = None) -> ClientConnection:
        """A raw wamp.2.json session on worker ``index`` (subscribed to ``topic``, if given); close it."""
        with self.only(index):
            ws = ws_connect(self.server.ws_url, subprotocols=["wamp.2.json"], open_timeout=10)
            join(ws, topic)
        return ws

    @contextlib.contextmanager
    def only(self, index: int) -> Iterator[None]:
        """Within the block, only worker ``index`` accepts connections (the others are stopped)."""
        others = [pid for i, pid in self.pids().items() if i != index]
        for pid in others:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in others:
                os.kill(pid, signal.SIGCONT)


def get(port: int, path: str = "/") -> int:
    """GET on a connection of its own; the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def workers(start_server: Any, redis_server: RedisServer) -> Workers:  # noqa: F811
    redis_server.start()
    server = start_server("--workers", "2", "--redis", redis_server.url, "--shutdown-timeout", "2")
    group = Workers(server)
    group.ready()
    return group


def test_workers_without_redis_are_refused_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run([TWISTD, "-n", "--pidfile=", "wsserver", "--workers", "2", "--flash-policy-port", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip().splitlines()[-1]
    assert "--workers 2 needs --redis URL" in last
    refused = subprocess.run([TWISTD, "-n", "--pidfile=", "wsserver", "--workers", "0"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "--workers must be at least 1" in refused.stdout + refused.stderr


def test_both_workers_answer_on_the_one_port(workers: Workers) -> None:
    server = workers.server
    for _ in range(40):
        assert get(server.port, "/") == 200
    pids = workers.pids()
    served = wait_for(lambda: {(int(m["index"]), int(m["pid"])) for m in ACCESS.finditer(server.log)}
                      if len(set(ACCESS.findall(server.log))) >= 2 else None)
    assert served == {(0, pids[0]), (1, pids[1])}, "both workers served, and nobody else"
    assert server.proc is not None and server.proc.pid not in pids.values()


def test_a_publication_on_one_worker_reaches_subscribers_on_the_other(workers: Workers) -> None:
    subscriber, publisher = workers.session(1, "com.example.across"), workers.session(0)
    with subscriber, publisher:
        for n in range(20):
            publisher.send(json.dumps([16, n + 1, {}, "com.example.across", [n]]))
        received = [json.loads(subscriber.recv(timeout=10)) for _ in range(20)]
        assert [(m[0], m[4]) for m in received] == [(EVENT, [n]) for n in range(20)]


def test_a_killed_worker_is_started_again_and_serves(workers: Workers) -> None:
    server = workers.server
    before = workers.pids()
    os.kill(before[1], signal.SIGKILL)
    after = wait_for(lambda: (pids := workers.pids())[1] != before[1] and pids, timeout=20)
    assert after[0] == before[0]
    assert re.search(rf"worker 1 \(pid {before[1]}\) was killed by SIGKILL after [\d.]+ s; starting it again in 1 s",
                     server.log)
    workers.ready()
    with workers.only(1):
        assert get(server.port, "/index.html") == 200
        wait_for(lambda: re.search(rf"\[worker 1, pid {after[1]}\] .*GET /index.html", server.log))
    # and it takes part in the cluster: a subscriber on it gets what is published on worker 0
    subscriber, publisher = workers.session(1, "com.example.again"), workers.session(0)
    with subscriber, publisher:
        publisher.send(json.dumps([16, 1, {}, "com.example.again", ["back"]]))
        assert json.loads(subscriber.recv(timeout=10))[4] == ["back"]


def test_sigterm_stops_every_worker_gracefully_and_leaves_no_process(workers: Workers) -> None:
    server = workers.server
    pids = workers.pids()
    clients = [workers.session(index) for index in (0, 1)]
    assert server.proc is not None
    supervisor = server.proc
    started = time.monotonic()
    os.kill(supervisor.pid, signal.SIGTERM)
    for ws in clients:  # each worker says GOODBYE and closes 1001, as a single server does
        goodbye = json.loads(ws.recv(timeout=10))
        assert goodbye[0] == 6 and goodbye[2] == "wamp.close.system_shutdown"
        ws.send(json.dumps([6, {}, "wamp.close.goodbye_and_out"]))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    supervisor.wait(timeout=20)
    assert time.monotonic() - started < 10
    assert not [pid for pid in pids.values() if alive(pid)], "a worker outlived its supervisor"
    assert "started worker" not in server.log.split("Received SIGTERM")[-1]


def test_a_client_that_never_says_goodbye_holds_the_stop_no_longer_than_the_shutdown_timeout(
        workers: Workers) -> None:
    rude = workers.session(1)  # the fixture's --shutdown-timeout is 2 s
    assert workers.server.proc is not None
    started = time.monotonic()
    os.kill(workers.server.proc.pid, signal.SIGTERM)
    assert json.loads(rude.recv(timeout=10))[2] == "wamp.close.system_shutdown"  # and never answers
    workers.server.proc.wait(timeout=20)
    assert 2 <= time.monotonic() - started < 2 + 3
    with pytest.raises(ConnectionClosed) as closed:
        rude.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001


def test_workers_stop_when_their_supervisor_is_killed(workers: Workers) -> None:
    pids = workers.pids()
    assert workers.server.proc is not None
    os.kill(workers.server.proc.pid, signal.SIGKILL)
    workers.server.proc.wait(timeout=10)
    wait_for(lambda: not any(alive(pid) for pid in pids.values()), timeout=15)


# -- long-poll across workers -------------------------------------------------------------------------


class LongPollAnywhere:
    """A raw long-poll session whose every request comes on a new connection (so either worker takes it)."""

    def __init__(self, workers: Workers, protocol: str = "wamp.2.json") -> None:
        self.workers = workers
        self.port = workers.server.port
        #: Answers that came through the other worker (their Via header).
        self.relayed = 0
        status, body, _ = self.post("/lp/open", json.dumps({"protocols": [protocol]}).encode())
        assert status == 200, body
        self.transport: str = json.loads(body)["transport"]
        self.owner = int(self.transport.split(".")[0])

    def post(self, path: str, body: bytes = b"", elsewhere: bool = False) -> tuple[int, bytes, str | None]:
        """POST on a new connection; ``elsewhere``: taken by a worker other than the session's."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            if elsewhere:
                with self.workers.only(1 - self.owner):
                    connection.request("POST", path, body, {"Content-Type": "application/json"})
                    time.sleep(0.3)  # the other worker accepts and relays; the owner answers once running
            else:
                connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            via = response.getheader("Via")
            self.relayed += via is not None
            return response.status, response.read(), via
        finally:
            connection.close()

    def send(self, message: list[Any], elsewhere: bool = False) -> int:
        return self.post(f"/lp/{self.transport}/send", json.dumps(message).encode(), elsewhere)[0]

    def receive(self, elsewhere: bool = False) -> tuple[int, bytes]:
        return self.post(f"/lp/{self.transport}/receive", elsewhere=elsewhere)[:2]


def test_a_long_poll_session_works_whichever_worker_takes_its_requests(workers: Workers) -> None:
    with workers.only(0):
        subscriber = LongPollAnywhere(workers)
    with workers.only(1):
        publisher = LongPollAnywhere(workers)
    assert (subscriber.owner, publisher.owner) == (0, 1)
    sessions = [subscriber, publisher]
    for number, session in enumerate((subscriber, publisher)):
        assert session.send(HELLO, elsewhere=True) == 204
        status, body = session.receive(elsewhere=number == 0)
        assert status == 200 and json.loads(body)[0] == 2
    assert subscriber.send([32, 1, {}, "com.example.lp.across"], elsewhere=False) == 204
    assert json.loads(subscriber.receive(elsewhere=True)[1])[0] == 33
    for n in range(10):
        assert publisher.send([16, n + 1, {}, "com.example.lp.across", [n]], elsewhere=n % 2 == 0) == 204
    got = []
    for n in range(10):
        status, body = subscriber.receive(elsewhere=n % 2 == 1)
        assert status == 200, (status, body)
        got.append(json.loads(body)[4])
    assert got == [[n] for n in range(10)]
    assert subscriber.relayed >= 6 and publisher.relayed >= 6
    for session in sessions:
        assert session.post(f"/lp/{session.transport}/close", elsewhere=True)[0] == 204
    assert subscriber.receive()[0] == 404


def test_an_event_is_not_lost_to_a_relayed_receive_whose_client_went_away(workers: Workers) -> None:
    with workers.only(0):
        subscriber = LongPollAnywhere(workers)
    assert subscriber.send(HELLO) == 204 and json.loads(subscriber.receive()[1])[0] == 2
    assert subscriber.send([32, 1, {}, "com.example.lp.gone"]) == 204
    assert json.loads(subscriber.receive()[1])[0] == 33
    with workers.only(1):  # worker 1 takes the /receive and relays it to worker 0, which holds it
        walker = socket.create_connection(("127.0.0.1", workers.server.port), timeout=10)
        walker.sendall(f"POST /lp/{subscriber.transport}/receive HTTP/1.1\r\nHost: x\r\n"
                       "Content-Length: 0\r\n\r\n".encode())
        time.sleep(0.3)
    time.sleep(0.5)
    walker.close()  # and its client goes away before any event
    time.sleep(0.5)
    with Client(workers.server.ws_url) as publisher:
        publisher.publish("com.example.lp.gone", "kept")
        status, body = subscriber.receive()
    assert status == 200 and json.loads(body)[4] == ["kept"]


def test_autobahnjs_over_long_poll_works_with_two_workers(workers: Workers) -> None:
    peers = [NodePeer(f"{workers.server.http_url}/lp") for _ in range(4)]
    try:
        with Client(workers.server.ws_url) as python:
            subscriptions = [peer.request("subscribe", topic="com.example.lp.js") for peer in peers]
            for n in range(20):
                python.publish("com.example.lp.js", n)
            for peer, subscribed in zip(peers, subscriptions):
                assert [peer.event(subscribed)["args"] for _ in range(20)] == [[n] for n in range(20)]
            inbox = python.subscribe("com.example.lp.up")
            for peer in peers:
                peer.request("publish", topic="com.example.lp.up", args=[peer.session_id])
            assert sorted(inbox.get()[0][0] for _ in peers) == sorted(peer.session_id for peer in peers)
    finally:
        for peer in peers:
            peer.close()


def test_forged_long_poll_ids_naming_other_workers_are_refused_and_harm_nobody(workers: Workers) -> None:
    """Requests for ids that name a worker that does not hold them, or no worker at all: 404, at once."""
    server = workers.server
    forged = ["0.AAAAAAAAAAAAAAAAAAAAAA", "1.AAAAAAAAAAAAAAAAAAAAAA", "7.x", "99999999999999999999.x", "-1.x"]
    pids = workers.pids()
    with Bystander(server.ws_url) as bystander, MemoryWatch(pids[0]) as memory0, MemoryWatch(pids[1]) as memory1:
        statuses = set()
        began = time.monotonic()
        for n in range(400):
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                transport = forged[n % len(forged)]
                sock.sendall(f"POST /lp/{transport}/receive HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
                statuses.add(sock.recv(64)[9:12])
        elapsed = time.monotonic() - began
    assert statuses == {b"404"}
    assert elapsed < 60
    bystander.check()
    memory0.check(64 * 2**20)
    memory1.check(64 * 2**20)


# -- TLS and the per-address limit hold in each worker -----------------------------------------------


def test_every_worker_serves_tls(start_server: Any, redis_server: RedisServer, tmp_path: Path) -> None:  # noqa: F811
    redis_server.start()
    key, cert = self_signed(tmp_path)
    server = start_server("--workers", "2", "--redis", redis_server.url,
                          listen=f"ssl:{{port}}:privateKey={key}:certKey={cert}:interface=127.0.0.1")
    assert server.http_url.startswith("https://")
    workers = Workers(server)
    workers.ready()
    context = ssl.create_default_context(cafile=str(cert))
    for index in (0, 1):
        with workers.only(index):
            with urllib.request.urlopen(f"{server.http_url}/index.html?{index}", context=context, timeout=10) as page:
                assert page.status == 200 and b"wsserver" in page.read()
        wait_for(lambda: re.search(rf"\[worker {index}, pid \d+\] .*GET /index.html\?{index} ", server.log))


def test_each_worker_holds_a_client_address_to_the_per_address_limit(start_server: Any,
                                                                    redis_server: RedisServer) -> None:  # noqa: F811
    """
    --max-connections-per-ip counts what one worker holds: 30 connections from one address to two
    workers with a limit of 4 get at most 8 answered, the rest 429 (each worker refuses past its 4).
    """
    redis_server.start()
    server = start_server("--workers", "2", "--redis", redis_server.url, "--max-connections-per-ip", "4")
    workers = Workers(server)
    pids = workers.ready()
    with MemoryWatch(pids[0]) as memory0, MemoryWatch(pids[1]) as memory1:
        sockets = [socket.create_connection(("127.0.0.1", server.port), timeout=15) for _ in range(30)]
        time.sleep(0.5)  # every connection accepted and counted by one worker or the other
        for sock in sockets:
            sock.sendall(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n")
        statuses = [sock.recv(12)[9:12] for sock in sockets]
        for sock in sockets:
            sock.close()
    assert statuses.count(b"200") <= 8 and statuses.count(b"429") >= 22, statuses
    assert statuses.count(b"200") + statuses.count(b"429") == 30
    assert "refusing connections from 127.0.0.1: 4 open from there" in server.log
    memory0.check(64 * 2**20)
    memory1.check(64 * 2**20)


def privileged_free_port() -> int:
    """A free port below 1024 (only root may bind it), as a stand-in for 843."""
    for port in range(990, 800, -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port below 1024")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_the_supervisor_binds_a_privileged_policy_port_then_workers_serve_it_unprivileged(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    """``twistd --uid/--gid``: the supervisor binds before the drop; the workers run as the user."""
    nobody = pwd.getpwnam("nobody")
    try:
        subprocess.run([sys.executable, "-c", "pass"], user=nobody.pw_uid, group=nobody.pw_gid, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"nobody may not run {sys.executable} (the workers run as the --uid user)")
    redis_server.start()
    policy_port = privileged_free_port()
    os.chmod(tmp_path, 0o777)
    server = ServerProcess(tmp_path, [f"--flash-policy-port={policy_port}", "--flash-policy-interface=127.0.0.1",
                                      "--workers", "2", "--redis", redis_server.url])
    command = [TWISTD, "-n", "--pidfile=", f"--uid={nobody.pw_uid}", f"--gid={nobody.pw_gid}", "wsserver",
               "--listen", "tcp:0:interface=127.0.0.1", *server.args]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True).start()
    server.proc = proc
    server.log_lines = lines
    try:
        workers = Workers(server)
        pids = workers.ready()
        for index, pid in pids.items():
            status = Path(f"/proc/{pid}/status").read_text()
            assert next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1] == str(nobody.pw_uid)
            with workers.only(index):
                assert b"<cross-domain-policy>" in ask(policy_port)
        assert f"Flash socket policy on port {policy_port}" in server.log
    finally:
        server.stop()
