"""
What opening a WAMP session costs the server, and what an idle one keeps, in process: a
benchmark, not a test.

    python bench/sessions.py                 # µs per session by stage, best of 15 rounds of 400
    python bench/sessions.py --profile       # and cProfile's top entries for one round
    python bench/sessions.py --memory 20000  # bytes per idle subscribed session (tracemalloc)

    git archive main | tar -x -C /tmp/main && python /tmp/main/bench/sessions.py   # main's figures

What is measured is the path ``bench/run.py``'s setup scenario drives, with the site as
``twistd -n wsserver`` builds it (the Flash policy sniffer, twisted.web's request parsing,
Autobahn's ``WebSocketResource`` and handshake, the admission's origin and connection checks):
a connection is accepted (``buildProtocol``, ``makeConnection``), sends its HTTP upgrade
(``Sec-WebSocket-Protocol: wamp.2.json``), HELLO (anonymous) and SUBSCRIBE, and is then closed
by its client (``connectionLost``), one stage at a time. The transports are Twisted's
``StringTransport``; the reactor is Twisted's own, never run (its timers are a heap, where
``MemoryReactorClock`` sorts a list on every ``callLater``): no sockets, so the kernel's share (accept,
reads, writes: about 20 µs a session on loopback) is not in these figures. Each stage keeps the
best of its rounds (a shared machine's noise only ever adds): compare the best, not one run.

``--memory N`` opens N sessions, each subscribed to its own topic, and reports what
``tracemalloc`` sees them hold per session (the handshake's leftovers after the collector ran),
largest allocation sites first.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import itertools
import os
import pstats
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from twisted.internet import error, reactor
from twisted.internet.address import IPv4Address
from twisted.python import failure

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import Transport, json_frame  # noqa: E402

from wsserver.service import WampServer  # noqa: E402 (chooses Twisted for txaio)
from wsserver.transports.admission import ConnectionLimits  # noqa: E402
from wsserver.transports.flashpolicy import FlashPolicy  # noqa: E402

HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]
STAGES = ("accept", "handshake", "hello", "subscribe", "close")


def upgrade() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
            ).encode()


def build_server(reactor: Any) -> tuple[WampServer, Any]:
    """The server as twistd builds it (not started: no port), and the factory its ports accept with."""
    limits = ConnectionLimits(max_connections=10**6, max_connections_per_ip=10**6)
    server = WampServer(reactor, listen=["tcp:0"], web_dir=Path.cwd(), flash_policy=FlashPolicy(port=0),
                        limits=limits)
    return server, server.listeners[0].factory


class Sessions:
    """Drives sessions through the stages, one stage for all of a round's sessions at a time."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory
        self.ports = itertools.count(1)

    def accept(self, count: int) -> list[tuple[Any, Transport]]:
        opened = []
        for _ in range(count):
            port = next(self.ports)
            address = IPv4Address("TCP", f"10.{port >> 16 & 255}.{port >> 8 & 255}.{port & 255}", 40000)
            transport = Transport(peerAddress=address)
            protocol = self.factory.buildProtocol(address)
            transport.protocol = protocol  # as a TCP transport has it: the sniffer hands it over
            protocol.makeConnection(transport)
            opened.append((protocol, transport))
        return opened

    @staticmethod
    def send(opened: list[tuple[Any, Transport]], data: list[bytes], expect: bytes) -> None:
        for (_, transport), chunk in zip(opened, data):
            transport.protocol.dataReceived(chunk)
            assert expect in transport.value(), transport.value()[-300:]
            transport.clear()

    @staticmethod
    def close(opened: list[tuple[Any, Transport]]) -> None:
        done = failure.Failure(error.ConnectionDone())
        for _, transport in opened:
            transport.protocol.connectionLost(done)


def time_stages(sessions: Sessions, count: int) -> dict[str, float]:
    """Seconds per session in each stage, for one round of ``count`` sessions."""
    handshakes = [upgrade() for _ in range(count)]
    hellos = [json_frame(HELLO)] * count
    subscribes = [json_frame([32, 1, {}, "bench.setup"])] * count
    seconds = {}
    started = time.perf_counter()
    opened = sessions.accept(count)
    seconds["accept"] = time.perf_counter() - started
    for stage, data, expect in (("handshake", handshakes, b"101 Switching"), ("hello", hellos, b"[2,"),
                                ("subscribe", subscribes, b"[33,1,")):
        started = time.perf_counter()
        sessions.send(opened, data, expect)
        seconds[stage] = time.perf_counter() - started
    started = time.perf_counter()
    sessions.close(opened)
    seconds["close"] = time.perf_counter() - started
    return {stage: value / count for stage, value in seconds.items()}


def speed(options: argparse.Namespace) -> None:
    server, factory = build_server(reactor)
    sessions = Sessions(factory)
    time_stages(sessions, 100)  # warm up: imports, caches
    best = dict.fromkeys(STAGES, float("inf"))
    for _ in range(options.rounds):
        for stage, value in time_stages(sessions, options.sessions).items():
            best[stage] = min(best[stage], value)
        reactor.runUntilCurrent()  # the reactor's turn, which drops the cancelled timers
    total = sum(best.values())
    print(f"one session's life, best of {options.rounds} rounds x {options.sessions} sessions (µs per session):")
    for stage in STAGES:
        print(f"  {stage:<10} {best[stage] * 1e6:8.1f}")
    print(f"  {'total':<10} {total * 1e6:8.1f}   ({1 / total:,.0f} sessions/s on one core, without the kernel)")
    assert server.admission.admitted == 0 and not server.ws_factory.connections, "every session closed"
    if options.profile:
        profiler = cProfile.Profile()
        profiler.enable()
        time_stages(sessions, options.sessions)
        profiler.disable()
        stats = pstats.Stats(profiler)
        print(f"\ncProfile of one round of {options.sessions} sessions (times are per round):")
        stats.sort_stats("tottime").print_stats(options.top)
        stats.sort_stats("cumulative").print_stats(options.top)


def memory(options: argparse.Namespace) -> None:
    server, factory = build_server(reactor)
    sessions = Sessions(factory)
    time_stages(sessions, 100)  # warm up: what the first sessions create once (caches, interned names)
    count = options.memory
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    opened = sessions.accept(count)
    sessions.send(opened, [upgrade() for _ in range(count)], b"101 Switching")
    sessions.send(opened, [json_frame(HELLO)] * count, b"[2,")
    sessions.send(opened, [json_frame([32, 1, {}, f"bench.idle.{n}"]) for n in range(count)], b"[33,1,")
    for _, transport in opened:  # what a TCP transport keeps is not ours: StringTransport's buffer
        transport.clear()
    reactor.runUntilCurrent()  # a reactor's turn: cancelled timers leave its heap
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    differences = after.filter_traces(ignore).compare_to(before.filter_traces(ignore), "lineno")
    total = sum(d.size_diff for d in differences)
    print(f"{count} idle sessions, each subscribed to a topic of its own: {total / count:,.0f} bytes per session "
          f"(tracemalloc; StringTransport's own buffer excluded, a TCP transport's is not counted)")
    for difference in sorted(differences, key=lambda d: -d.size_diff)[:options.top]:
        frame_ = difference.traceback[0]
        print(f"  {difference.size_diff / count:8.0f} B  {difference.count_diff / count:6.2f} blocks  "
              f"{frame_.filename.split('site-packages/')[-1]}:{frame_.lineno}")
    assert server.admission.admitted == count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=400, help="sessions per round")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", action="store_true", help="also print cProfile's top entries for one round")
    parser.add_argument("--top", type=int, default=30, help="profile or allocation entries shown")
    parser.add_argument("--memory", type=int, metavar="N", help="instead: bytes per idle session, with N open")
    options = parser.parse_args()
    if options.memory:
        memory(options)
    else:
        speed(options)


if __name__ == "__main__":
    main()
