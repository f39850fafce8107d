"""
The benchmark harness: the same scenarios against wsserver, Crossbar.io and the CPython ceiling,
in one run, on one machine, with the same load generator; a table of ratios, JSON and a chart.

    python bench/run.py                    # everything, 3 alternating repeats, medians
    python bench/run.py --quick            # under a minute: small sizes, one repeat (make test)
    python bench/run.py --scenarios fanout,latency --repeat 5 --scale 2
    python bench/run.py --scenarios backplane  # the Redis backplane (bench/backplane.py): needs redis-server

Servers run pinned to CPU 0, this process (the load generator) to CPU 1. Every run checks that
every expected event arrived and reports the loss otherwise; the generator's own CPU use is
reported so a reader can see it had headroom. Run-to-run noise on a shared machine is large:
the peers are run alternately (A/B/A/B...) and medians are quoted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backplane  # noqa: E402
import storm  # noqa: E402
import compression  # noqa: E402
from loadgen import Client, Loop, event_args, paced, percentile  # noqa: E402
from peers import PEERS, Server  # noqa: E402

SERVER_CPU, GENERATOR_CPU = 0, 1
HOST = "127.0.0.1"
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass
class Sizes:
    """Scenario sizes; ``--quick`` shrinks them, ``--scale`` multiplies durations and counts."""

    fanout_subscribers: tuple[int, ...] = (10, 100, 1000)
    fanout_deliveries: int = 1_000_000
    latency_subscribers: int = 100
    latency_fractions: tuple[float, ...] = (0.25, 0.5, 0.75)
    latency_seconds: float = 5.0
    idle_sessions: tuple[int, ...] = (1000, 10000, 20000)
    setup_sessions: int = 5000
    chat_clients: int = 50
    chat_rate: float = 2.0
    chat_seconds: float = 5.0
    #: The "workers" scenario: fan-out with this many subscribers, --workers 2 against 1.
    workers_subscribers: int = 1000
    #: The reconnect storm: subscribed clients that lose the server at once, and the publication
    #: rate during their return. Modest: it is multiplied by the clients (1/s to 10,000 is 10,000
    #: deliveries a second, a third of Crossbar's saturation; 100/s swamped wsserver too).
    storm_clients: int = 10_000
    storm_rate: float = 1.0

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            fanout_subscribers=(10, 100), fanout_deliveries=40_000, latency_fractions=(0.5,),
            latency_seconds=1.0, idle_sessions=(200,), setup_sessions=100, chat_clients=10, chat_seconds=1.0,
            workers_subscribers=100, storm_clients=200, storm_rate=5.0,
        )

    def scaled(self, factor: float) -> Sizes:
        if factor == 1:
            return self
        return Sizes(
            self.fanout_subscribers, int(self.fanout_deliveries * factor), self.latency_subscribers,
            self.latency_fractions, self.latency_seconds * factor, self.idle_sessions,
            int(self.setup_sessions * factor), self.chat_clients, self.chat_rate, self.chat_seconds * factor,
            workers_subscribers=self.workers_subscribers, storm_clients=self.storm_clients,
            storm_rate=self.storm_rate,
        )


@dataclass
class Figure:
    """One measured number: scenario, name, unit, and one value per peer per repeat."""

    scenario: str
    name: str
    unit: str
    higher_is_better: bool
    values: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)

    def add(self, peer: str, value: float, note: str = "") -> None:
        self.values.setdefault(peer, []).append(value)
        if note:
            self.notes.setdefault(peer, []).append(note)

    def median(self, peer: str) -> float | None:
        values = self.values.get(peer)
        return statistics.median(values) if values else None


class Report:
    def __init__(self) -> None:
        self.figures: dict[tuple[str, str], Figure] = {}
        self.checks: list[str] = []

    def figure(self, scenario: str, name: str, unit: str, higher_is_better: bool = True) -> Figure:
        key = (scenario, name)
        if key not in self.figures:
            self.figures[key] = Figure(scenario, name, unit, higher_is_better)
        return self.figures[key]

    def check(self, ok: bool, text: str) -> None:
        line = ("ok   " if ok else "LOSS ") + text
        self.checks.append(line)
        print("   ", line, flush=True)


# -- the load generator's helpers ------------------------------------------------------------------


def open_sessions(loop: Loop, port: int, topics: list[str | None], probes: int = 0, batch: int = 200) -> list[Client]:
    """Open one session per entry of ``topics`` (None: no subscription), ``batch`` at a time."""
    clients: list[Client] = []
    for start in range(0, len(topics), batch):
        chunk = [
            loop.connect(HOST, port, "ws", topic, probe=(start + i) < probes)
            for i, topic in enumerate(topics[start : start + batch])
        ]
        if not loop.run_until(lambda: all(c.state == Client.READY for c in chunk), timeout=60):
            raise RuntimeError(f"sessions did not get ready ({sum(c.state == Client.READY for c in chunk)}/{len(chunk)})")
        clients += chunk
    return clients


class Meter:
    """Wall time, server CPU and generator CPU over a measured stretch."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.wall0 = time.monotonic()
        self.cpu0 = server.cpu_seconds()
        self.own0 = time.process_time()

    def stop(self) -> tuple[float, float, float]:
        wall = time.monotonic() - self.wall0
        return wall, self.server.cpu_seconds() - self.cpu0, time.process_time() - self.own0


# -- scenarios -------------------------------------------------------------------------------------


def fanout(server: Server, report: Report, sizes: Sizes, subscribers: int) -> float:
    """1 publisher, S counting subscribers, publications as fast as the server acknowledges them."""
    publications = max(200, sizes.fanout_deliveries // subscribers)
    # Unacknowledged publications in flight: enough to keep the server busy, about 20k events.
    window = max(8, 20_000 // subscribers)
    loop = Loop()
    try:
        subs = open_sessions(loop, server.port, ["bench.fanout"] * subscribers)
        (publisher,) = open_sessions(loop, server.port, [None])
        for sub in subs:
            sub.start_counting()
        sent = 0

        def tick() -> float | None:
            nonlocal sent
            while sent < publications and publisher.outstanding < window:
                publisher.publish("bench.fanout", event_args(sent))
                sent += 1
            return None

        expected = publications * subscribers
        meter = Meter(server)
        finished = loop.run_until(lambda: sum(s.events for s in subs) >= expected, timeout=120, tick=tick)
        wall, server_cpu, own_cpu = meter.stop()
        delivered = sum(s.events for s in subs)
        report.check(finished and delivered == expected,
                     f"{server.name} fanout S={subscribers}: delivered {delivered}/{expected}")
        rate = delivered / wall
        label = f"S={subscribers}"
        report.figure("fanout", f"deliveries/s {label}", "1/s").add(server.name, rate)
        report.figure("fanout", f"server CPU s per 100k deliveries {label}", "s", False).add(
            server.name, server_cpu / delivered * 1e5)
        report.figure("fanout", f"generator CPU use {label}", "%", False).add(server.name, 100 * own_cpu / wall)
        print(f"    {server.name:9} fanout S={subscribers:<5} {rate:>10,.0f} deliveries/s  "
              f"server {server_cpu / wall:4.0%} CPU, generator {own_cpu / wall:4.0%} CPU", flush=True)
        return rate
    finally:
        loop.close()


def latency(server: Server, report: Report, sizes: Sizes, rates: dict[float, float]) -> None:
    """Fixed publication rates with S subscribers, 5 of them probes that parse and time each event."""
    subscribers = sizes.latency_subscribers
    loop = Loop()
    try:
        subs = open_sessions(loop, server.port, ["bench.latency"] * subscribers, probes=5)
        (publisher,) = open_sessions(loop, server.port, [None])
        probes = [s for s in subs if s.probe]
        for sub in subs:
            if not sub.probe:
                sub.start_counting()
        for fraction, rate in rates.items():
            for sub in subs:
                sub.events = 0
                sub.latencies_ns.clear()
            publications = max(1, int(rate * sizes.latency_seconds))
            tick = paced(publisher, "bench.latency", publications, rate)
            expected = publications * subscribers
            meter = Meter(server)
            finished = loop.run_until(lambda: sum(s.events for s in subs) >= expected,
                                      timeout=sizes.latency_seconds + 60, tick=tick)
            wall, server_cpu, own_cpu = meter.stop()
            delivered = sum(s.events for s in subs)
            report.check(finished and delivered == expected,
                         f"{server.name} latency {fraction:.0%} ({rate:,.0f} ev/s): delivered {delivered}/{expected}")
            samples = [ns for probe in probes for ns in probe.latencies_ns]
            label = f"{fraction:.0%} of Crossbar saturation, S={subscribers}"
            for name, q in (("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)):
                report.figure("latency", f"{name} ms at {label}", "ms", False).add(
                    server.name, percentile(samples, q) / 1e6)
            print(f"    {server.name:9} latency {fraction:.0%} ({rate:,.0f} pub/s): p50 {percentile(samples, .5) / 1e6:.2f} "
                  f"p99 {percentile(samples, .99) / 1e6:.2f} p99.9 {percentile(samples, .999) / 1e6:.2f} ms "
                  f"({len(samples)} samples, generator {own_cpu / wall:.0%} CPU)", flush=True)
    finally:
        loop.close()


def idle(server: Server, report: Report, sizes: Sizes) -> None:
    """Resident memory per established session with one subscription."""
    loop = Loop()
    try:
        time.sleep(0.5)
        baseline = server.rss_bytes()
        opened = 0
        for target in sizes.idle_sessions:
            open_sessions(loop, server.port, [f"bench.idle.{i % 10}" for i in range(opened, target)])
            opened = target
            time.sleep(0.5)
            per_session = (server.rss_bytes() - baseline) / target
            report.figure("idle", f"KiB per idle session at {target}", "KiB", False).add(server.name, per_session / 1024)
            print(f"    {server.name:9} idle {target:>6} sessions: {per_session / 1024:7.1f} KiB each", flush=True)
    finally:
        loop.close()


def setup_rate(server: Server, report: Report, sizes: Sizes, concurrency: int = 50) -> None:
    """WebSocket + HELLO/WELCOME + SUBSCRIBE/SUBSCRIBED per second, ``concurrency`` in flight."""
    loop = Loop()
    started = completed = 0
    in_flight: list[Client] = []

    def tick() -> float | None:
        nonlocal started, completed
        ready = [c for c in in_flight if c.state == Client.READY]
        for client in ready:
            in_flight.remove(client)
        completed += len(ready)
        loop.close(ready)
        while len(in_flight) < concurrency and started < sizes.setup_sessions:
            in_flight.append(loop.connect(HOST, server.port, "ws", "bench.setup"))
            started += 1
        return None

    try:
        meter = Meter(server)
        finished = loop.run_until(lambda: completed >= sizes.setup_sessions, timeout=120, tick=tick)
        wall, _, own_cpu = meter.stop()
        report.check(finished, f"{server.name} setup: {completed}/{sizes.setup_sessions} sessions")
        report.figure("setup", "sessions set up per second", "1/s").add(server.name, completed / wall)
        report.figure("setup", "generator CPU use", "%", False).add(server.name, 100 * own_cpu / wall)
        print(f"    {server.name:9} setup: {completed / wall:8.0f} sessions/s (generator {own_cpu / wall:.0%} CPU)", flush=True)
    finally:
        loop.close()


def chat(server: Server, report: Report, sizes: Sizes) -> None:
    """N clients each publish r events/s into one topic all of them subscribe to (exclude_me)."""
    n, rate = sizes.chat_clients, sizes.chat_rate
    loop = Loop()
    try:
        clients = open_sessions(loop, server.port, ["bench.chat"] * n, probes=n)
        per_client = max(1, int(rate * sizes.chat_seconds))
        interval = 1.0 / rate
        start = time.monotonic()
        sent = 0
        stagger = interval / n

        def tick() -> float | None:
            nonlocal sent
            now = time.monotonic() - start
            for i, client in enumerate(clients):
                due = min(per_client, int((now - i * stagger) / interval) + 1) if now >= i * stagger else 0
                while client.acks + client.outstanding < due:
                    client.publish("bench.chat", event_args(sent))
                    sent += 1
            return None if sent >= per_client * n else stagger / 2

        expected = per_client * n * (n - 1)
        meter = Meter(server)
        finished = loop.run_until(lambda: sum(c.events for c in clients) >= expected,
                                  timeout=sizes.chat_seconds + 60, tick=tick)
        wall, server_cpu, own_cpu = meter.stop()
        delivered = sum(c.events for c in clients)
        report.check(finished and delivered == expected, f"{server.name} chat: delivered {delivered}/{expected}")
        samples = [ns for c in clients for ns in c.latencies_ns]
        label = f"{n} clients x {rate:g} ev/s"
        report.figure("chat", f"p50 ms, {label}", "ms", False).add(server.name, percentile(samples, 0.5) / 1e6)
        report.figure("chat", f"p99 ms, {label}", "ms", False).add(server.name, percentile(samples, 0.99) / 1e6)
        report.figure("chat", f"server CPU %, {label}", "%", False).add(server.name, 100 * server_cpu / wall)
        print(f"    {server.name:9} chat: p50 {percentile(samples, .5) / 1e6:.2f} ms p99 {percentile(samples, .99) / 1e6:.2f} ms, "
              f"server {server_cpu / wall:.0%} CPU (generator {own_cpu / wall:.0%})", flush=True)
    finally:
        loop.close()


def reconnect_storm(server: Server, report: Report, sizes: Sizes) -> None:
    """bench/storm.py: subscribed clients lose the server (SIGKILL, restart) and come back."""
    storm.run(server, report, sizes.storm_clients, sizes.storm_rate, open_sessions, HOST)


WORKER_PEERS = ("wsserver-1w", "wsserver-2w")


def workers(report: Report, sizes: Sizes, round_: int) -> None:
    """wsserver --redis with --workers 2 against --workers 1: fan-out and session setup rate."""
    subscribers = sizes.workers_subscribers

    def measure(server: Server) -> None:
        rate = fanout(server, report, sizes, subscribers)
        report.figure("workers", f"fanout deliveries/s S={subscribers}", "1/s").add(server.name, rate)
        setup_rate(server, report, sizes)
        setups = report.figure("setup", "sessions set up per second", "1/s").values[server.name][-1]
        report.figure("workers", "sessions set up per second", "1/s").add(server.name, setups)

    for peer in WORKER_PEERS if round_ % 2 == 0 else WORKER_PEERS[::-1]:
        run_with(peer, measure)


def print_workers(report: Report) -> None:
    for figure in report.figures.values():
        if figure.scenario == "workers":
            r = ratio(figure, *WORKER_PEERS[::-1])
            print(f"workers: {figure.name:40} " + "".join(
                f"{peer} {figure.median(peer) or 0:>10,.0f}   " for peer in WORKER_PEERS)
                + (f"2 workers / 1: {r:.2f}x" if r else ""))


# -- the run ---------------------------------------------------------------------------------------


def run_with(peer: str, action: Callable[[Server], Any]) -> Any:
    server = PEERS[peer](SERVER_CPU).start()
    try:
        time.sleep(0.3)
        return action(server)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat, under a minute")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply durations and counts")
    parser.add_argument("--repeat", type=int, default=None, help="alternating repeats per scenario [3; quick: 1]")
    parser.add_argument("--scenarios", default="fanout,latency,idle,setup,chat,storm,backplane,workers,compression")
    parser.add_argument("--subscribers", default=None, help="fan-out sizes, e.g. 100,1000 [10,100,1000]")
    parser.add_argument("--peers", default="wsserver,crossbar", help="comma-separated; 'ceiling' joins fanout anyway")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the CPython ceiling in the fan-out scenario")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where results.json and benchmark.png go")
    args = parser.parse_args(argv)

    sizes = (Sizes.quick() if args.quick else Sizes()).scaled(args.scale)
    if args.subscribers:
        sizes.fanout_subscribers = tuple(int(s) for s in args.subscribers.split(","))
    repeat = args.repeat or (1 if args.quick else 3)
    peers = [p for p in args.peers.split(",") if p]
    scenarios = [s for s in args.scenarios.split(",") if s]
    raise_descriptor_limit()
    os.sched_setaffinity(0, {GENERATOR_CPU})
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # 20,000 idle sessions need 20,000 descriptors on each side: where the hard limit is that (and
    # may not be raised), measure as close to it as one process can.
    sizes.idle_sessions = tuple(min(n, limit - DESCRIPTOR_MARGIN) for n in sizes.idle_sessions)
    report = Report()
    machine_before = machine()
    begun = time.monotonic()

    for round_ in range(repeat):
        print(f"== round {round_ + 1}/{repeat}", flush=True)
        if "fanout" in scenarios:
            fanout_peers = peers + ([] if args.no_ceiling or "ceiling" in peers else ["ceiling"])
            for s in sizes.fanout_subscribers:
                for peer in fanout_peers if round_ % 2 == 0 else fanout_peers[::-1]:
                    run_with(peer, lambda server: fanout(server, report, sizes, s))
        if "latency" in scenarios:
            saturation = report.figure("fanout", f"deliveries/s S={sizes.latency_subscribers}", "1/s")
            reference = "crossbar" if "crossbar" in peers else peers[0]
            if saturation.median(reference) is None:
                run_with(reference, lambda server: fanout(server, report, sizes, sizes.latency_subscribers))
            per_second = (saturation.median(reference) or 0) / sizes.latency_subscribers
            rates = {f: per_second * f for f in sizes.latency_fractions}
            # The ceiling's latency is the floor on this machine at this moment (its scheduling and
            # loopback writes, no routing): what is left above it is the server's.
            latency_peers = peers + ([] if args.no_ceiling or "ceiling" in peers else ["ceiling"])
            for peer in latency_peers if round_ % 2 == 0 else latency_peers[::-1]:
                run_with(peer, lambda server: latency(server, report, sizes, rates))
        for name, scenario in (("idle", idle), ("setup", setup_rate), ("chat", chat), ("storm", reconnect_storm)):
            if name in scenarios:
                for peer in peers if round_ % 2 == 0 else peers[::-1]:
                    run_with(peer, lambda server: scenario(server, report, sizes))
        if "backplane" in scenarios:
            backplane.run(report, sizes, round_, server_cpu=SERVER_CPU, generator_cpu=GENERATOR_CPU,
                          open_sessions=open_sessions, fanout=fanout)
        if "workers" in scenarios:
            workers(report, sizes, round_)
        if "compression" in scenarios:  # in process: see bench/compression.py
            compression.run(report, sizes, round_)

    elapsed = time.monotonic() - begun
    print_table(report, peers)
    if "backplane" in scenarios:
        backplane.print_summary(report)
    print_workers(report)
    write_results(report, peers, args, sizes, repeat, elapsed, machine_before)
    losses = [c for c in report.checks if c.startswith("LOSS")]
    print(f"\n{len(report.checks) - len(losses)} checks ok, {len(losses)} with loss; {elapsed:.0f} s", flush=True)
    return 1 if losses else 0


#: Descriptors the generator (and the servers, which inherit the limit) may open: 20,000 idle
#: sessions take that many on each side, plus the listening and log files.
DESCRIPTORS = 65536
#: Descriptors a process keeps for other things than sessions (listening sockets, logs, pipes).
DESCRIPTOR_MARGIN = 100


def raise_descriptor_limit() -> None:
    """Raise RLIMIT_NOFILE to DESCRIPTORS (the hard limit too when root may), else to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max(hard, DESCRIPTORS) if hard != resource.RLIM_INFINITY else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if limit < DESCRIPTORS:
        print(f"note: {limit} descriptors only (the hard limit may not be raised here): idle sizes are clipped to it", file=sys.stderr)


def ratio(figure: Figure, a: str, b: str) -> float | None:
    x, y = figure.median(a), figure.median(b)
    if x is None or y is None or y == 0:
        return None
    return x / y


def print_table(report: Report, peers: list[str]) -> None:
    shown = peers + (["ceiling"] if "ceiling" not in peers else [])
    print("\n" + f"{'figure (medians)':58}" + "".join(f"{p:>12}" for p in shown) + f"{'ws/cb':>9}")
    for figure in report.figures.values():
        cells = "".join(
            f"{figure.median(p):>12,.1f}" if figure.median(p) is not None else f"{'':>12}" for p in shown
        )
        r = ratio(figure, "wsserver", "crossbar")
        print(f"{figure.scenario + ': ' + figure.name:58}{cells}{(f'{r:8.2f}x' if r else ''):>9}")


def machine() -> dict[str, Any]:
    """What a reader needs to weigh the figures: the CPU, the kernel, and how busy the machine was."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "cpus": os.cpu_count(), "kernel": " ".join(os.uname()[2:4]),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "descriptor_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}


def commit() -> dict[str, Any]:
    """The checkout measured: HEAD and whether the tree had uncommitted changes."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def write_results(report: Report, peers: list[str], args: argparse.Namespace, sizes: Sizes, repeat: int,
                  elapsed: float, machine_before: dict[str, Any]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    after = machine()
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **commit(),
        "machine": {**{k: v for k, v in machine_before.items() if k != "load_average"},
                    "load_average_before": machine_before["load_average"],
                    "load_average_after": after["load_average"], "server_cpu": SERVER_CPU,
                    "generator_cpu": GENERATOR_CPU, "python": sys.version.split()[0]},
        "versions": peer_versions(peers),
        "options": {"quick": args.quick, "scale": args.scale, "repeat": repeat, "peers": peers},
        "sizes": sizes.__dict__,
        "elapsed_seconds": round(elapsed, 1),
        "checks": report.checks,
        "figures": [
            {"scenario": f.scenario, "name": f.name, "unit": f.unit, "higher_is_better": f.higher_is_better,
             "values": f.values, "medians": {p: f.median(p) for p in f.values},
             "wsserver_over_crossbar": ratio(f, "wsserver", "crossbar")}
            for f in report.figures.values()
        ],
    }
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    try:
        draw_chart(report, args.out / "benchmark.png")
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'benchmark.png'}")


def peer_versions(peers: list[str]) -> dict[str, str]:
    versions = {}
    for peer in peers:
        if peer in PEERS:
            try:
                versions[peer] = PEERS[peer].version()
            except Exception as e:  # a missing version must not lose a whole run's results
                versions[peer] = f"unknown ({e})"
    return versions


def draw_chart(report: Report, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [
        ("Fan-out (deliveries/s, higher is better)", [f for f in report.figures.values()
                                                     if f.scenario == "fanout" and f.name.startswith("deliveries")]),
        ("Latency (ms, lower is better)", [f for f in report.figures.values() if f.scenario == "latency"]),
        ("Idle session memory (KiB, lower is better)", [f for f in report.figures.values() if f.scenario == "idle"]),
        ("Setup rate and chat", [f for f in report.figures.values()
                                 if f.scenario in ("setup", "chat") and "generator" not in f.name]),
        ("Reconnect storm (seconds, lower is better)",
         [f for f in report.figures.values() if f.scenario == "storm" and f.unit == "s"]),
    ]
    # Any other scenario (compression, ...) gets a panel of its own, figure by figure.
    charted = {"fanout", "latency", "idle", "setup", "chat", "storm", "backplane", "workers"}
    for scenario in dict.fromkeys(f.scenario for f in report.figures.values() if f.scenario not in charted):
        groups.append((scenario.capitalize(), [f for f in report.figures.values() if f.scenario == scenario]))
    groups = [(title, figures) for title, figures in groups if figures]
    colors = {"wsserver": "#2b7bba", "crossbar": "#e0803a", "ceiling": "#999999"}
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 3.2 * len(groups)), squeeze=False)
    for ax, (title, figures) in zip(axes[:, 0], groups):
        measured = dict.fromkeys(p for f in figures for p in f.values)
        peers: list[str] = [p for p in ("wsserver", "crossbar", "ceiling") if p in measured]
        if not set(peers) & {"wsserver", "crossbar"}:  # a scenario of its own peers (compression, ...)
            peers = [p for p in measured if p not in WORKER_PEERS]
        if not peers:  # only the workers scenario measured these (its own figures are in results.json)
            ax.set_visible(False)
            continue
        width = 0.8 / len(peers)
        for i, peer in enumerate(peers):
            xs = [j + i * width for j in range(len(figures))]
            ys = [f.median(peer) or 0 for f in figures]
            ax.bar(xs, ys, width, label=peer, color=colors.get(peer))
        ax.set_xticks([j + width * (len(peers) - 1) / 2 for j in range(len(figures))])
        ax.set_xticklabels([f.name.replace(" of Crossbar saturation", "") for f in figures], fontsize=7, rotation=12)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
        if "Fan-out" in title:
            ax.set_yscale("log")
    fig.suptitle("wsserver vs Crossbar.io, same machine, same run (medians)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
