"""
Fan-out to event streams without WAMP: deliveries/s to 100 SSE (/sse) and 100 plain WebSocket
(/stream) subscribers against 100 WAMP WebSocket (/ws) subscribers, for the same publications.

    .venv/bin/python bench/streams.py [--subscribers 100] [--publications 2000] [--repeat 3]

One wsserver (pinned to CPU 0, as bench/run.py starts it) and one load generator (this process,
CPU 1, bench/loadgen.py's selector loop). A WAMP publisher on /ws publishes ~100-byte events as fast
as the server acknowledges them (a window of unacknowledged publications, as bench/run.py's fanout
scenario); the subscribers of one transport at a time count events in the raw bytes without
parsing: ``[36,`` (a WAMP EVENT) on /ws, ``{"topic":`` (the JSON object each SSE event and each
/stream frame carries once) on the others. Every run checks that every event arrived. Medians of
``--repeat`` runs, each transport in turn.
"""

from __future__ import annotations

import argparse
import base64
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import Client, Loop, event_args  # noqa: E402
from peers import Wsserver  # noqa: E402
from run import HOST, Meter, open_sessions  # noqa: E402

TOPIC = "bench.streams"
#: What one event looks like to a counting subscriber of each transport.
MARKERS = {"ws": b"[36,", "sse": b'{"topic":', "stream": b'{"topic":'}


class StreamClient(Client):
    """A subscriber of /sse or /stream: ready once its stream starts, then it counts markers."""

    __slots__ = ("marker",)

    def __init__(self, sock: socket.socket, marker: bytes) -> None:
        super().__init__(sock, TOPIC)
        self.marker = marker

    def readable(self) -> None:
        try:
            data = self.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return
        joined = self.tail + data
        if self.state == self.CONNECTING:
            if b"\r\n\r\n" not in joined:
                self.tail = joined
                return
            head, _, joined = joined.partition(b"\r\n\r\n")
            if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.1 101")):
                raise ConnectionError(f"stream refused: {head[:80]!r}")
            self.state = self.READY
        self.events += joined.count(self.marker)
        self.tail = joined[-(len(self.marker) - 1):]


def open_streams(loop: Loop, port: int, transport: str, count: int) -> list[Client]:
    clients: list[Client] = []
    for _ in range(count):
        sock = socket.create_connection((HOST, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if transport == "sse":
            request = f"GET /sse?topic={TOPIC} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n"
        else:
            key = base64.b64encode(os.urandom(16)).decode()
            request = (f"GET /stream?topic={TOPIC} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                       f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        sock.sendall(request.encode())
        sock.setblocking(False)
        client = StreamClient(sock, MARKERS[transport])
        loop.selector.register(sock, 1, client)  # EVENT_READ
        loop.clients.append(client)
        clients.append(client)
    if not loop.run_until(lambda: all(c.state == Client.READY for c in clients), timeout=60):
        raise RuntimeError(f"{transport} streams did not start")
    return clients


def fanout(server: Wsserver, transport: str, subscribers: int, publications: int) -> tuple[float, float]:
    """Deliveries/s and server CPU seconds per 100k deliveries to ``subscribers`` of ``transport``."""
    window = max(8, 20_000 // subscribers)
    loop = Loop()
    try:
        if transport == "ws":
            subs = open_sessions(loop, server.port, [TOPIC] * subscribers)
            for sub in subs:
                sub.start_counting()
        else:
            subs = open_streams(loop, server.port, transport, subscribers)
        (publisher,) = open_sessions(loop, server.port, [None])
        sent = 0

        def tick() -> float | None:
            nonlocal sent
            while sent < publications and publisher.outstanding < window:
                publisher.publish(TOPIC, event_args(sent))
                sent += 1
            return None

        expected = publications * subscribers
        meter = Meter(server)
        finished = loop.run_until(lambda: sum(s.events for s in subs) >= expected, timeout=120, tick=tick)
        wall, server_cpu, _ = meter.stop()
        delivered = sum(s.events for s in subs)
        if not finished or delivered != expected:
            raise RuntimeError(f"{transport}: delivered {delivered} of {expected}")
        return delivered / wall, server_cpu / delivered * 1e5
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--publications", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    os.sched_setaffinity(0, {1})
    server = Wsserver(cpu=0).start()
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in MARKERS}
    try:
        fanout(server, "ws", args.subscribers, 200)  # warm up
        for _ in range(args.repeat):
            for transport in MARKERS:
                results[transport].append(fanout(server, transport, args.subscribers, args.publications))
                time.sleep(0.5)
    finally:
        server.stop()
    base = statistics.median(rate for rate, _ in results["ws"])
    print(f"{args.subscribers} subscribers, {args.publications} publications of ~100 bytes, median of {args.repeat}")
    for transport, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        print(f"  {transport:7} {rate:>10,.0f} deliveries/s  {rate / base:5.2f}x /ws   "
              f"server CPU {cpu:.2f} s per 100k deliveries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
