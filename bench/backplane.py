"""
The Redis backplane's scenarios for bench/run.py (``--scenarios backplane``):

- fan-out on one node with ``--redis`` against the same node without it: what forwarding every
  publication to Redis (and reading it back, and skipping it as its own) costs the fan-out; the
  figures are the fan-out scenario's, under the peer ``wsserver+redis``, and the ratio is printed;
- publish-to-deliver latency across two nodes on one redis-server: the publisher on node A, the
  subscribers (5 of them probes) on node B, at a fixed rate; next to it, the same rate on one node.

A redis-server (Debian's, without persistence) is started for the scenario on a free loopback
port and stopped by its PID. Placement on the 2-core machine: the wsserver nodes on the server
CPU (both nodes of the latency case share it), redis-server on the generator's CPU, so that the
node being measured keeps its core to itself.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from loadgen import Loop, paced, percentile
from peers import Server, Wsserver, free_port, wait_for_port

if TYPE_CHECKING:
    from run import Report, Sizes

#: The latency case's rate: publications a second to ``LATENCY_SUBSCRIBERS`` subscribers on node B.
LATENCY_RATE = 200.0
LATENCY_SUBSCRIBERS = 100
#: What a node logs once its Redis pub/sub connection is subscribed; measuring starts after it.
SUBSCRIBED = b"subscribed to 1 realm channel(s)"


class RedisServer:
    """One redis-server on a free loopback port, pinned to ``cpu``; no persistence."""

    def __init__(self, cpu: int) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")
        self.port = free_port()
        self.process = subprocess.Popen(
            ["taskset", "-c", str(cpu), binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process, timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(10)


class WsserverRedis(Wsserver):
    """wsserver with ``--redis``: started only once its pub/sub connection is subscribed."""

    name = "wsserver+redis"
    redis_url = ""

    def command(self) -> list[str]:
        return [*super().command(), "--redis", self.redis_url]

    def start(self) -> Server:
        super().start()
        deadline = time.monotonic() + 20
        while SUBSCRIBED not in self.log.read_bytes():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not subscribe to Redis; see {self.log}")
            time.sleep(0.05)
        return self


#: run.py's ``open_sessions`` and ``fanout``, passed in by it (run.py is the script, imported by no one).
OpenSessions = Callable[..., list[Any]]
Fanout = Callable[[Server, "Report", "Sizes", int], float]


def run(report: Report, sizes: Sizes, round_: int, *, server_cpu: int, generator_cpu: int,
        open_sessions: OpenSessions, fanout: Fanout) -> None:
    """One round of both cases (peers alternate between rounds, as in run.py)."""
    redis = RedisServer(generator_cpu)
    WsserverRedis.redis_url = redis.url
    try:
        order = [Wsserver, WsserverRedis] if round_ % 2 == 0 else [WsserverRedis, Wsserver]
        for subscribers in sizes.fanout_subscribers:
            for peer in order:
                server = peer(server_cpu).start()
                try:
                    time.sleep(0.3)
                    fanout(server, report, sizes, subscribers)
                finally:
                    server.stop()
        for across in ((False, True) if round_ % 2 == 0 else (True, False)):
            nodes = [WsserverRedis(server_cpu).start() for _ in range(2 if across else 1)]
            try:
                time.sleep(0.3)
                latency_between(nodes[0], nodes[-1], report, sizes, open_sessions)
            finally:
                for node in nodes:
                    node.stop()
    finally:
        redis.stop()


def latency_between(publishing: Server, subscribed: Server, report: Report, sizes: Sizes,
                    open_sessions: OpenSessions) -> None:
    """Publications at ``LATENCY_RATE`` on ``publishing``, timed at 5 probe subscribers of ``subscribed``."""
    across = publishing is not subscribed
    loop = Loop()
    try:
        subs = open_sessions(loop, subscribed.port, ["bench.backplane"] * LATENCY_SUBSCRIBERS, probes=5)
        (publisher,) = open_sessions(loop, publishing.port, [None])
        probes = [s for s in subs if s.probe]
        for sub in subs:
            if not sub.probe:
                sub.start_counting()
        publications = max(1, int(LATENCY_RATE * sizes.latency_seconds))
        tick = paced(publisher, "bench.backplane", publications, LATENCY_RATE)
        expected = publications * LATENCY_SUBSCRIBERS
        finished = loop.run_until(lambda: sum(s.events for s in subs) >= expected,
                                  timeout=sizes.latency_seconds + 60, tick=tick)
        delivered = sum(s.events for s in subs)
        where = "across two nodes" if across else "on one node"
        report.check(finished and delivered == expected, f"backplane latency {where}: delivered {delivered}/{expected}")
        samples = [ns for probe in probes for ns in probe.latencies_ns]
        label = f"{LATENCY_RATE:g} pub/s, S={LATENCY_SUBSCRIBERS}"
        for name, q in (("p50", 0.5), ("p99", 0.99)):
            report.figure("backplane", f"{name} ms at {label}", "ms", False).add(
                f"redis {'across' if across else 'one node'}", percentile(samples, q) / 1e6)
        print(f"    backplane latency {where} ({label}): p50 {percentile(samples, .5) / 1e6:.2f} "
              f"p99 {percentile(samples, .99) / 1e6:.2f} ms ({len(samples)} samples)", flush=True)
    finally:
        loop.close()


def print_summary(report: Report) -> None:
    """The backplane's figures as ratios: fan-out with Redis over without, latency across over on one node."""
    print("\nRedis backplane (medians)")
    for figure in report.figures.values():
        if figure.scenario == "fanout" and figure.name.startswith("deliveries/s"):
            without, with_redis = figure.median("wsserver"), figure.median("wsserver+redis")
            if without and with_redis:
                print(f"  fan-out {figure.name}: {with_redis:,.0f} with Redis, {without:,.0f} without: "
                      f"{with_redis / without:.2f}x")
        if figure.scenario == "fanout" and figure.name.startswith("server CPU"):
            # The steadier figure on a shared machine: what the node itself spent per delivery.
            without, with_redis = figure.median("wsserver"), figure.median("wsserver+redis")
            if without and with_redis:
                print(f"  {figure.name}: {with_redis:.3f} with Redis, {without:.3f} without: "
                      f"{with_redis / without:.2f}x")
        if figure.scenario == "backplane":
            one, across = figure.median("redis one node"), figure.median("redis across")
            if one is not None and across is not None:
                print(f"  latency {figure.name}: {across:.2f} across two nodes, {one:.2f} on one node")
