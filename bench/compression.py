"""
The "compression" scenario: permessage-deflate's three bars, measured in process on wsserver's own
WebSocket factory over Twisted's StringTransport (no sockets, no second process: so the load
generator is not in the way, and compressed frames need not be counted through a socket).

- bytes on the wire per realistic ~1 KB JSON EVENT (a list of quotes: names, numbers, timestamps),
  compressed frame against plain frame;
- fan-out: deliveries a second with SUBSCRIBERS subscribers, all compressed against all plain (best
  of several interleaved runs; the router, encoding, framing and the writes, not the kernel);
- idle memory per session (tracemalloc, after HELLO and SUBSCRIBE), compressed against plain;
- and the fan-out once more over sockets, against ``twistd -n wsserver`` pinned to a CPU of its own
  (:func:`socket_fanout`): the load generator's clients, counting frames instead of EVENT markers
  (a compressed frame hides them), plain and compressed alike so that both cost it the same.

    python bench/compression.py            # prints the figures
    python bench/run.py --scenarios compression

The in-process fan-out omits the socket writes a real server makes (the same for both sides); its
absolute rate is not comparable with the "fanout" scenario's, the socket one is.
"""

from __future__ import annotations

import base64
import gc
import itertools
import os
import struct
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

sys.path.insert(0, str(Path(__file__).resolve().parent))

import selectors  # noqa: E402
import socket  # noqa: E402
import zlib  # noqa: E402

from loadgen import Client, Loop  # noqa: E402
from peers import Wsserver  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from fanout import Transport, json_frame  # noqa: E402
from twisted.internet.testing import MemoryReactorClock  # noqa: E402

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


def feed(sequence: int) -> list[Any]:
    """The arguments of another realistic ~1 KB JSON event: activity feed items (users, URLs, a sentence each)."""
    users = [("ana", "Ana Lima"), ("bo", "Bo Berg"), ("chen", "Chen Wei"), ("dara", "Dara Okafor")]
    texts = ["shipped the new release to staging, please have a look before the demo",
             "the build on main is green again after the flaky test fix",
             "can someone review the pull request for the billing page?",
             "deploy finished: 3 services updated, no errors in the last 10 minutes"]
    items = []
    for i in range(4):
        login, name = users[(sequence + i) % 4]
        items.append({"id": f"evt_{sequence * 4 + i:08d}", "type": "comment",
                      "created_at": f"2026-11-29T19:{(sequence + i) % 60:02d}:{(sequence * 7 + i) % 60:02d}Z",
                      "actor": {"id": 1000 + (sequence + i) % 4, "login": login, "display_name": name,
                                "avatar_url": f"https://example.com/avatars/{login}.png"},
                      "text": texts[(sequence * 3 + i) % 4],
                      "reactions": {"+1": (sequence + i) % 5, "heart": (sequence * i) % 3}})
    return [items]


#: The realistic 1 KB events the bytes on the wire are measured with.
EVENTS = {"quotes": quotes, "activity feed": feed}


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
    protocol.dataReceived(json_frame(HELLO))
    if subscribe:
        protocol.dataReceived(json_frame([32, 1, {}, TOPIC]))
    transport.clear()
    return protocol


def new_factory() -> WampServerFactory:
    ids = itertools.count(1)
    return WampServerFactory(Router(["realm1"], ids.__next__), reactor=MemoryReactorClock(),
                             limits=ConnectionLimits(max_connections=100_000, max_connections_per_ip=100_000))


def wire_bytes(event: Callable[[int], list[Any]] = quotes) -> tuple[float, float]:
    """Mean bytes of one EVENT frame (header included) over 100 different ``event``s: compressed, plain."""
    factory = new_factory()
    compressed, plain, publisher = connect(factory, True), connect(factory, False), connect(factory, False, False)
    for sequence in range(100):
        publisher.dataReceived(json_frame([16, sequence, {}, TOPIC, event(sequence)]))
    return len(compressed.transport.value()) / 100, len(plain.transport.value()) / 100


def fanout_rates(subscribers: int, runs: int = 7, publications: int = 20) -> tuple[float, float]:
    """Best deliveries a second over ``runs`` interleaved runs: compressed, plain."""
    best = {True: 0.0, False: 0.0}
    setups = {}
    for compressed in (True, False):
        factory = new_factory()
        receivers = [connect(factory, compressed) for _ in range(subscribers)]
        setups[compressed] = (connect(factory, False, False), receivers)
    messages = [json_frame([16, n, {}, TOPIC, quotes(n)]) for n in range(publications)]
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


class FrameCountingClient(Client):
    """
    A load-generator client that may negotiate permessage-deflate: while setting up it inflates
    compressed frames; once counting, it counts data frames by their headers (a compressed EVENT
    hides the marker the plain generator counts), without inflating them.
    """

    __slots__ = ()

    def count(self, data: bytes) -> None:
        buffer = self.tail + data if self.tail else data
        position, end = 0, len(buffer)
        while position + 2 <= end:
            length = buffer[position + 1] & 0x7F
            header = 2
            if length == 126:
                if position + 4 > end:
                    break
                length = (buffer[position + 2] << 8) | buffer[position + 3]
                header = 4
            elif length == 127:
                if position + 10 > end:
                    break
                (length,) = struct.unpack_from("!Q", buffer, position + 2)
                header = 10
            if position + header + length > end:
                break
            if buffer[position] & 0x0F in (0x1, 0x2):
                self.events += 1
            position += header + length
        self.tail = buffer[position:]

    def _frames(self) -> list[tuple[int, bytes]]:
        # Loadgen's parser drops the RSV1 bit: look at each frame's first byte before it does.
        compressed = []
        buffer, position = self.buffer, 0
        while position + 2 <= len(buffer):
            length, header = buffer[position + 1] & 0x7F, 2
            if length == 126:
                (length,), header = struct.unpack_from("!H", buffer, position + 2), 4
            elif length == 127:
                (length,), header = struct.unpack_from("!Q", buffer, position + 2), 10
            compressed.append(bool(buffer[position] & 0x40))
            position += header + length
        frames = super()._frames()
        return [(opcode, zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") if rsv1 else payload)
                for rsv1, (opcode, payload) in zip(compressed, frames)]


def open_counting(loop: Loop, port: int, topics: list[str | None], compressed: bool) -> list[FrameCountingClient]:
    """Sessions (subscribed to their topic, if any) on ``loop``, offering permessage-deflate if ``compressed``."""
    clients = []
    for topic in topics:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n"
                      + (f"Sec-WebSocket-Extensions: {OFFER}\r\n" if compressed else "") + "\r\n").encode())
        sock.setblocking(False)
        client = FrameCountingClient(sock, topic)
        loop.selector.register(sock, selectors.EVENT_READ, client)
        loop.clients[client] = None
        clients.append(client)
        if len(clients) % 200 == 0 or len(clients) == len(topics):
            if not loop.run_until(lambda: all(c.state == Client.READY for c in clients), timeout=60):
                raise RuntimeError("sessions did not get ready")
    return clients


def socket_fanout(subscribers: int = SUBSCRIBERS, publications: int = 300, *, server_cpu: int = 0,
                  generator_cpu: int = 1, plain_first: bool = False) -> dict[bool, tuple[float, float, float]]:
    """
    Deliveries a second of 1 KB events to ``subscribers`` over sockets, compressed and plain (in
    that order, or the other with ``plain_first``: rounds alternate), on one server each:
    {compressed: (deliveries/s, server CPU share, generator CPU share)}. Raises RuntimeError
    unless every subscriber got every event.
    """
    os.sched_setaffinity(0, {generator_cpu})
    results = {}
    for compressed in (False, True) if plain_first else (True, False):
        server = Wsserver(server_cpu).start()
        loop = Loop()
        try:
            subs = open_counting(loop, server.port, [TOPIC] * subscribers, compressed)
            (publisher,) = open_counting(loop, server.port, [None], False)
            for sub in subs:
                sub.start_counting()
            events = [quotes(n) for n in range(publications)]
            sent = 0
            window = max(8, 20_000 // subscribers)

            def tick() -> float | None:
                nonlocal sent
                while sent < publications and publisher.outstanding < window:
                    publisher.publish(TOPIC, events[sent])
                    sent += 1
                return None

            expected = subscribers * publications
            wall0, cpu0, own0 = time.monotonic(), server.cpu_seconds(), time.process_time()
            finished = loop.run_until(lambda: sum(s.events for s in subs) >= expected, timeout=120, tick=tick)
            wall = time.monotonic() - wall0
            delivered = sum(s.events for s in subs)
            if not finished or delivered != expected:
                raise RuntimeError(f"delivered {delivered} of {expected} events")
            results[compressed] = (delivered / wall, (server.cpu_seconds() - cpu0) / wall,
                                   (time.process_time() - own0) / wall)
        finally:
            loop.close()
            server.stop()
    return results


def run(report: Any, sizes: Any = None, round_: int = 0) -> None:
    """Add the scenario's figures to ``report`` (bench/run.py's Report) for the peer "wsserver"."""
    for name, event in EVENTS.items():
        compressed, plain = wire_bytes(event)
        label = "bytes per 1 KB event: plain / compressed" + ("" if event is quotes else f" ({name})")
        report.figure("compression", label, "x").add(
            "wsserver", plain / compressed, f"{plain:.0f} B plain, {compressed:.0f} B compressed")
    subscribers = max(getattr(sizes, "fanout_subscribers", (SUBSCRIBERS,)))
    fast, slow = fanout_rates(subscribers)
    report.figure("compression", f"fan-out at {subscribers}: compressed / plain deliveries/s", "x").add(
        "wsserver", fast / slow, f"{fast:,.0f}/s compressed, {slow:,.0f}/s plain (in process)")
    held_compressed, held_plain = idle_bytes()
    report.figure("compression", "idle session memory: compressed / plain", "x", higher_is_better=False).add(
        "wsserver", held_compressed / held_plain, f"{held_compressed:.0f} B compressed, {held_plain:.0f} B plain")
    publications = max(300, getattr(sizes, "fanout_deliveries", 0) // subscribers)
    rates = socket_fanout(subscribers, publications, plain_first=round_ % 2 == 1)
    report.check(True, f"wsserver compression fanout S={subscribers}: delivered {subscribers * publications} "
                       f"of {subscribers * publications}, compressed and plain")
    (fast, fast_cpu, fast_own), (slow, slow_cpu, slow_own) = rates[True], rates[False]
    report.figure("compression", f"socket fan-out at {subscribers}: compressed / plain deliveries/s", "x").add(
        "wsserver", fast / slow, f"{fast:,.0f}/s compressed (server {fast_cpu:.0%} CPU, generator {fast_own:.0%}), "
        f"{slow:,.0f}/s plain (server {slow_cpu:.0%}, generator {slow_own:.0%})")
    # Server CPU per delivery: steadier than the rate on a shared machine where the server is not saturated.
    report.figure("compression", f"socket fan-out at {subscribers}: server CPU per delivery, compressed / plain",
                  "x", higher_is_better=False).add(
        "wsserver", (fast_cpu / fast) / (slow_cpu / slow),
        f"{fast_cpu / fast * 1e6:.2f} us compressed, {slow_cpu / slow * 1e6:.2f} us plain")


if __name__ == "__main__":
    for name, event in EVENTS.items():
        compressed, plain = wire_bytes(event)
        print(f"bytes per {name} event frame: plain {plain:.0f}, compressed {compressed:.0f}: "
              f"{plain / compressed:.2f}x fewer")
    fast, slow = fanout_rates(SUBSCRIBERS)
    print(f"fan-out at {SUBSCRIBERS} (in process): compressed {fast:,.0f}/s, plain {slow:,.0f}/s: {fast / slow:.2f}x")
    for compressed, (rate, server_cpu, generator_cpu) in socket_fanout().items():
        print(f"socket fan-out at {SUBSCRIBERS}, {'compressed' if compressed else 'plain'}: {rate:,.0f}/s "
              f"(server {server_cpu:.0%} CPU, generator {generator_cpu:.0%} CPU)")
    held_compressed, held_plain = idle_bytes()
    print(f"idle session: compressed {held_compressed:.0f} B, plain {held_plain:.0f} B: {held_compressed / held_plain:.2f}x")
