"""
What a delivery costs on each transport: the same stream of small events to N subscribers over
WebSocket (WAMP), long-poll as AutobahnJS speaks it (``wamp.2.json``, one message per
``/receive``), batched long-poll (``wamp.2.json.batched``, all that waits per ``/receive``),
Server-Sent Events (``/sse``) and a plain WebSocket stream (``/stream``), on one server.

    .venv/bin/python bench/transports.py                  # 100 subscribers, 500 events, 3 rounds
    .venv/bin/python bench/transports.py --subscribers 20 --events 200 --rounds 1 --transports websocket,sse

For each round and transport (alternating, so that machine noise hits all alike) it starts
``twistd -n wsserver`` from this venv on a loopback port (pinned to CPU 0 when the machine has
two, this process to CPU 1), lets N subscribers join and subscribe, then one WebSocket publisher
publishes E events at once; the clock runs from the first PUBLISH to the last delivery. It prints,
per transport, the median deliveries a second, the server's CPU time per delivery, and both
relative to WebSocket. The generator is one asyncio loop; its own CPU use is printed so a reader
can see whether it, not the server, was the bottleneck.

Adding a transport is one :class:`Subscriber` subclass: its ``start(topic)`` returns once
subscribed, its ``events()`` yields how many events each read brought; then list it in
SUBSCRIBERS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
from websockets.asyncio.client import ClientConnection, connect

TWISTD = str(Path(sys.executable).with_name("twistd"))
HOST = "127.0.0.1"
TOPIC = "com.example.bench.transports"
HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]
EVENT_MARKER = b"[36,"
LISTENING = re.compile(rb"listening on http://127\.0\.0\.1:(\d+)/")


# -- subscribers: one class per transport -------------------------------------------------------------


class Subscriber:
    """One subscriber; ``port`` is the server's."""

    name = "?"

    def __init__(self, port: int) -> None:
        self.port = port

    async def start(self, topic: str) -> None:
        """Join realm1 and subscribe to ``topic``; return once SUBSCRIBED arrived."""
        raise NotImplementedError

    def events(self) -> AsyncIterator[int]:
        """Read on and on, yielding the number of events each read brought (0 is fine)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Let go of the connection(s)."""


class WebSocketSubscriber(Subscriber):
    name = "websocket"

    async def start(self, topic: str) -> None:
        self.ws: ClientConnection = await connect(f"ws://{HOST}:{self.port}/ws", subprotocols=["wamp.2.json"],
                                                  max_size=None)
        await self.ws.send(json.dumps(HELLO))
        assert json.loads(await self.ws.recv())[0] == 2
        await self.ws.send(json.dumps([32, 1, {}, topic]))
        assert json.loads(await self.ws.recv())[0] == 33

    async def events(self) -> AsyncIterator[int]:
        while True:
            message = await self.ws.recv(decode=False)
            yield 1 if message.startswith(EVENT_MARKER) else 0

    async def close(self) -> None:
        await self.ws.close()


class HttpConnection:
    """One keep-alive HTTP/1.1 connection for POSTs whose answers carry a Content-Length (or none)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        return cls(*await asyncio.open_connection(HOST, port))

    async def post(self, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        found = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        data = await self.reader.readexactly(int(found.group(1))) if found else b""
        return int(head.split(b" ", 2)[1]), data

    def close(self) -> None:
        self.writer.close()


class LongPollSubscriber(Subscriber):
    """Long-poll as AutobahnJS speaks it: one message per /receive, messages sent one per /send."""

    name = "longpoll"
    protocol = "wamp.2.json"

    def frame(self, message: list[object]) -> bytes:
        return json.dumps(message).encode()

    def count(self, body: bytes) -> int:
        return 1 if body.startswith(EVENT_MARKER) else 0

    async def start(self, topic: str) -> None:
        # Two connections, as a browser uses: the held /receive must not block a /send.
        self.receiving, self.sending = await HttpConnection.open(self.port), await HttpConnection.open(self.port)
        status, body = await self.sending.post("/lp/open", json.dumps({"protocols": [self.protocol]}).encode())
        assert status == 200, body
        self.base = f"/lp/{json.loads(body)['transport']}"
        for message, expected in ((HELLO, b"[2,"), ([32, 1, {}, topic], b"[33,")):
            assert (await self.sending.post(f"{self.base}/send", self.frame(message)))[0] == 204
            status, body = await self.receiving.post(f"{self.base}/receive")
            assert status == 200 and body.startswith(expected), (status, body)

    async def events(self) -> AsyncIterator[int]:
        while True:
            status, body = await self.receiving.post(f"{self.base}/receive")
            assert status in (200, 204), (status, body)
            yield self.count(body)

    async def close(self) -> None:
        await self.sending.post(f"{self.base}/close")
        self.receiving.close()
        self.sending.close()


class BatchedLongPollSubscriber(LongPollSubscriber):
    """Long-poll with ``wamp.2.json.batched``: everything that waits comes in one /receive."""

    name = "longpoll-batched"
    protocol = "wamp.2.json.batched"

    def frame(self, message: list[object]) -> bytes:
        return json.dumps(message).encode() + b"\x1e"

    def count(self, body: bytes) -> int:
        return body.startswith(EVENT_MARKER) + body.count(b"\x1e" + EVENT_MARKER)


class SseSubscriber(Subscriber):
    """Server-Sent Events: one GET of /sse; its events are counted in the raw text/event-stream."""

    name = "sse"
    #: Once in every event: the JSON object its ``data:`` line carries (the first comment has none).
    marker = b'{"topic":'

    async def start(self, topic: str) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.write(f"GET /sse?topic={topic} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        # The response starts once every topic is subscribed, with the comment ": subscribed ...".
        await self.reader.readuntil(b": subscribed")

    async def events(self) -> AsyncIterator[int]:
        tail = b""  # the end of the last read: a marker split across two reads counts once
        while True:
            data = await self.reader.read(262144)
            if not data:
                raise ConnectionError("the server ended the stream")
            joined = tail + data
            yield joined.count(self.marker)
            tail = joined[-(len(self.marker) - 1):]

    async def close(self) -> None:
        self.writer.close()


class StreamSubscriber(Subscriber):
    """A plain WebSocket to /stream: no subprotocol, each event one JSON text frame."""

    name = "stream"

    async def start(self, topic: str) -> None:
        # The handshake completes (101) only once the topic is subscribed.
        self.ws: ClientConnection = await connect(f"ws://{HOST}:{self.port}/stream?topic={topic}", max_size=None)

    async def events(self) -> AsyncIterator[int]:
        while True:
            await self.ws.recv(decode=False)
            yield 1

    async def close(self) -> None:
        await self.ws.close()


SUBSCRIBERS: dict[str, type[Subscriber]] = {
    kind.name: kind for kind in (WebSocketSubscriber, LongPollSubscriber, BatchedLongPollSubscriber,
                                 SseSubscriber, StreamSubscriber)
}


# -- one measurement --------------------------------------------------------------------------------


class ServerProcess:
    """``twistd -n wsserver`` on an ephemeral loopback port, pinned to ``cpu`` (None: not pinned)."""

    def __init__(self, cpu: int | None) -> None:
        command = [TWISTD, "-n", "--pidfile=", "wsserver", "--listen", f"tcp:0:interface={HOST}",
                   "--flash-policy-port", "0", "--max-publish-rate", "0"]
        if cpu is not None:
            command = ["taskset", "-c", str(cpu), *command]
        # Its log goes to a file: a pipe nobody reads would stop the server once full.
        self.log = tempfile.NamedTemporaryFile(prefix="wsserver-bench-", suffix=".log")
        self.process = subprocess.Popen(command, cwd=tempfile.gettempdir(), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not (found := LISTENING.search(Path(self.log.name).read_bytes())):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the server did not start: {Path(self.log.name).read_text()}")
            time.sleep(0.05)
        self.port = int(found.group(1))
        self.stats = psutil.Process(self.process.pid)

    def cpu_seconds(self) -> float:
        times = self.stats.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


async def measure(kind: type[Subscriber], subscribers: int, events: int, port: int,
                  server: ServerProcess) -> dict[str, float]:
    clients = [kind(port) for _ in range(subscribers)]
    await asyncio.gather(*(client.start(TOPIC) for client in clients))
    received = 0
    everything = asyncio.Event()
    expected = subscribers * events

    async def count(client: Subscriber) -> None:
        nonlocal received
        async for n in client.events():
            received += n
            if received >= expected:
                everything.set()

    readers = [asyncio.create_task(count(client)) for client in clients]
    publisher = await connect(f"ws://{HOST}:{port}/ws", subprotocols=["wamp.2.json"])
    await publisher.send(json.dumps(HELLO))
    await publisher.recv()
    await asyncio.sleep(0.2)  # every /receive is held
    server_cpu, own_cpu, started = server.cpu_seconds(), time.process_time(), time.perf_counter()
    for n in range(events):
        await publisher.send(json.dumps([16, n + 1, {}, TOPIC, [n]]))
    await asyncio.wait_for(everything.wait(), timeout=600)
    elapsed = time.perf_counter() - started
    server_cpu, own_cpu = server.cpu_seconds() - server_cpu, time.process_time() - own_cpu
    for reader in readers:
        reader.cancel()
    await publisher.close()
    await asyncio.gather(*(client.close() for client in clients), return_exceptions=True)
    return {
        "deliveries_per_s": expected / elapsed,
        "server_us_per_delivery": server_cpu / expected * 1e6,
        "generator_cpu_share": own_cpu / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--transports", default=",".join(SUBSCRIBERS))
    options = parser.parse_args()
    kinds = [SUBSCRIBERS[name] for name in options.transports.split(",")]
    two_cpus = hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
    if two_cpus:
        os.sched_setaffinity(0, {1})
    results: dict[str, list[dict[str, float]]] = {kind.name: [] for kind in kinds}
    for _ in range(options.rounds):
        for kind in kinds:
            server = ServerProcess(0 if two_cpus else None)
            try:
                results[kind.name].append(asyncio.run(measure(kind, options.subscribers, options.events,
                                                              server.port, server)))
            finally:
                server.stop()
    print(f"{options.subscribers} subscribers, {options.events} small events at once, "
          f"median of {options.rounds} round(s)")
    print(f"{'transport':<18}{'deliveries/s':>14}{'vs WS':>8}{'server µs/delivery':>20}{'vs WS':>8}{'generator CPU':>15}")
    medians = {name: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for name, runs in results.items()}
    base = medians.get("websocket")
    for name, median in medians.items():
        rate, cost = median["deliveries_per_s"], median["server_us_per_delivery"]
        rate_ratio = relative(median, base, "deliveries_per_s")
        cost_ratio = relative(median, base, "server_us_per_delivery")
        print(f"{name:<18}{rate:>14,.0f}{rate_ratio:>8}{cost:>20.1f}{cost_ratio:>8}{median['generator_cpu_share']:>14.0%}")


def relative(median: dict[str, float], base: dict[str, float] | None, key: str) -> str:
    """``median[key]`` relative to WebSocket's: "-" without it, or when it is 0 (a tiny run's server CPU)."""
    return f"{median[key] / base[key]:.2f}" if base and base[key] else "-"


if __name__ == "__main__":
    main()
