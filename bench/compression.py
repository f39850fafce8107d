"""
The "compression" scenario: permessage-deflate's three bars, measured in process on wsserver's own
WebSocket factory over Twisted's StringTransport (no sockets, no second process: so the load
generator is not in the way, and compressed frames need not be counted through a socket).

- bytes on the wire per realistic ~1 KB JSON EVENT (a list of quotes: names, numbers, timestamps),
  compressed frame against plain frame;
- fan-out: deliveries a second with SUBSCRIBERS subscribers, all compressed against all plain (best
  of several interleaved runs; the router, encoding, framing and the writes, not the kernel);
- idle memory per session (tracemalloc, after HELLO and SUBSCRIBE), compressed against plain.

    python bench/compression.py            # prints the figures
    python bench/run.py --scenarios compression

The fan-out here omits the socket writes a real server makes (the same for both sides), so its
ratio is the upper bound of what a socket run shows; its absolute rate is not comparable with the
"fanout" scenario's.
"""

from __future__ import annotations

import base64
import gc
import itertools
import json
import os
import struct
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.testing import MemoryReactorClock, StringTransport  # noqa: E402

from wsserver.core.router import Router  # noqa: E402
from wsserver.transports.admission import ConnectionLimits  # noqa: E402
from wsserver.transports.websocket import WampServerFactory  # noqa: E402

SUBSCRIBERS = 1000
IDLE_SESSIONS = 500
TOPIC = "com.example.quotes"
HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]
OFFER = "permessage-deflate; client_max_window_bits"  # what Chromium and the ws package send
ports = itertools.count(20000)


def quotes(sequence: int) -> list[Any]:
    """The arguments of a realistic ~1 KB JSON event."""
    names = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka"]
    return [[{"symbol": f"{name[:3].upper()}{i}", "name": f"{name} Corporation", "price": round(100 + (sequence * 7 + i * 13) % 400 + i / 7, 2),
              "change": round(((sequence + i) % 11 - 5) / 3, 3), "volume": 1000 + (sequence * 7919 + i * 104729) % 900_000,
              "ts": f"2026-11-29T19:{(sequence + i) % 60:02d}:{(sequence * 3 + i) % 60:02d}.{(sequence * 37 + i) % 1000:03d}Z"}
             for i, name in enumerate(names)]]


class Transport(StringTransport):
    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


def client_frame(message: list[Any]) -> bytes:
    payload = json.dumps(message).encode()
    header = struct.pack("!BB", 0x81, 0x80 | len(payload)) if len(payload) < 126 else \
        struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return header + b"\0\0\0\0" + payload


def connect(factory: WampServerFactory, compressed: bool, subscribe: bool = True) -> Any:
    """A session over a StringTransport, joined (and subscribed to TOPIC); its output cleared."""
    transport = Transport(peerAddress=IPv4Address("TCP", "127.0.0.1", next(ports)))
    protocol = factory.buildProtocol(transport.getPeer())
    protocol.makeConnection(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.dataReceived(
        ("GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n"
         + (f"Sec-WebSocket-Extensions: {OFFER}\r\n" if compressed else "") + "\r\n").encode())
    protocol.dataReceived(client_frame(HELLO))
    if subscribe:
        protocol.dataReceived(client_frame([32, 1, {}, TOPIC]))
    transport.clear()
    return protocol


def new_factory() -> WampServerFactory:
    ids = itertools.count(1)
    return WampServerFactory(Router(["realm1"], ids.__next__), reactor=MemoryReactorClock(),
                             limits=ConnectionLimits(max_connections=100_000, max_connections_per_ip=100_000))


def wire_bytes() -> tuple[float, float]:
    """Mean bytes of one EVENT frame (header included) over 100 different events: compressed, plain."""
    factory = new_factory()
    compressed, plain, publisher = connect(factory, True), connect(factory, False), connect(factory, False, False)
    for sequence in range(100):
        publisher.dataReceived(client_frame([16, sequence, {}, TOPIC, quotes(sequence)]))
    return len(compressed.transport.value()) / 100, len(plain.transport.value()) / 100


def fanout_rates(subscribers: int, runs: int = 7, publications: int = 20) -> tuple[float, float]:
    """Best deliveries a second over ``runs`` interleaved runs: compressed, plain."""
    best = {True: 0.0, False: 0.0}
    setups = {}
    for compressed in (True, False):
        factory = new_factory()
        receivers = [connect(factory, compressed) for _ in range(subscribers)]
        setups[compressed] = (connect(factory, False, False), receivers)
    messages = [client_frame([16, n, {}, TOPIC, quotes(n)]) for n in range(publications)]
    for _ in range(runs):
        for compressed in (True, False):
            publisher, receivers = setups[compressed]
            for receiver in receivers:
                receiver.transport.clear()
            gc.collect()
            started = time.perf_counter()
            for message in messages:
                publisher.dataReceived(message)
            elapsed = time.perf_counter() - started
            best[compressed] = max(best[compressed], subscribers * publications / elapsed)
    return best[True], best[False]


def idle_bytes(sessions: int = IDLE_SESSIONS) -> tuple[float, float]:
    """Bytes (tracemalloc) one idle joined-and-subscribed session holds: compressed, plain."""
    held = {}
    for compressed in (True, False):
        factory = new_factory()
        connect(factory, compressed)  # warm up: caches, interned strings
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        kept = [connect(factory, compressed) for _ in range(sessions)]
        gc.collect()
        held[compressed] = (tracemalloc.get_traced_memory()[0] - before) / sessions
        tracemalloc.stop()
        del kept
    return held[True], held[False]


def run(report: Any, sizes: Any = None, round_: int = 0) -> None:
    """Add the scenario's figures to ``report`` (bench/run.py's Report) for the peer "wsserver"."""
    compressed, plain = wire_bytes()
    report.figure("compression", "bytes per 1 KB event: plain / compressed", "x").add(
        "wsserver", plain / compressed, f"{plain:.0f} B plain, {compressed:.0f} B compressed")
    subscribers = max(getattr(sizes, "fanout_subscribers", (SUBSCRIBERS,)))
    fast, slow = fanout_rates(subscribers)
    report.figure("compression", f"fan-out at {subscribers}: compressed / plain deliveries/s", "x").add(
        "wsserver", fast / slow, f"{fast:,.0f}/s compressed, {slow:,.0f}/s plain (in process)")
    held_compressed, held_plain = idle_bytes()
    report.figure("compression", "idle session memory: compressed / plain", "x", higher_is_better=False).add(
        "wsserver", held_compressed / held_plain, f"{held_compressed:.0f} B compressed, {held_plain:.0f} B plain")


if __name__ == "__main__":
    compressed, plain = wire_bytes()
    print(f"bytes per event frame: plain {plain:.0f}, compressed {compressed:.0f}: {plain / compressed:.2f}x fewer")
    fast, slow = fanout_rates(SUBSCRIBERS)
    print(f"fan-out at {SUBSCRIBERS} (in process): compressed {fast:,.0f}/s, plain {slow:,.0f}/s: {fast / slow:.2f}x")
    held_compressed, held_plain = idle_bytes()
    print(f"idle session: compressed {held_compressed:.0f} B, plain {held_plain:.0f} B: {held_compressed / held_plain:.2f}x")
