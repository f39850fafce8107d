"""
The load generator: many raw WebSocket WAMP clients (wamp.2.json) on one selector loop, stdlib only.

Theory of operation
-------------------
The generator must never be the bottleneck, so it does as little as possible per event:

- *Counting* clients (the bulk of subscribers) never parse an event. After they joined and
  subscribed, every byte they read is searched for the EVENT marker ``[36,`` (a JSON EVENT starts
  with it; WebSocket frame headers and our payloads cannot contain it). The last three bytes of
  each read are kept, so a marker split across two reads still counts once.
- *Parsing* clients (publishers, latency probes, and every client while it sets up) split frames
  and decode JSON.

One :class:`Loop` drives all clients with ``selectors``; each client is a small state machine:
CONNECTING (HTTP upgrade sent) -> JOINING (HELLO sent) -> SUBSCRIBING -> READY. Publishing is
done by the scenario code between loop turns. Latency is measured with ``time.monotonic_ns()``
stamps (CLOCK_MONOTONIC, the same clock in every process on the machine) that the publisher puts
in each event's first argument.
"""

from __future__ import annotations

import base64
import errno
import itertools
import json
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable, Sequence

EVENT_MARKER = b"[36,"
LINGER_ZERO = struct.pack("ii", 1, 0)
HELLO = json.dumps([1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]).encode()


class Client:
    """One WebSocket connection with one WAMP session."""

    __slots__ = (
        "sock", "state", "buffer", "counting", "events", "tail", "probe", "latencies_ns",
        "topic", "acks", "outstanding", "subscription", "closed", "on_message", "on_close", "next_request",
        "refusal", "read_ns",
    )

    CONNECTING, JOINING, SUBSCRIBING, READY = "connecting", "joining", "subscribing", "ready"

    def __init__(self, sock: socket.socket, topic: str | None, probe: bool = False) -> None:
        self.sock = sock
        self.state = self.CONNECTING
        self.buffer = b""
        self.counting = False
        self.events = 0
        self.tail = b""
        self.probe = probe
        self.latencies_ns: list[int] = []
        self.topic = topic
        self.acks = 0
        self.outstanding = 0
        self.subscription = 0
        self.closed = False
        self.on_message: Callable[[Client, list[object]], None] | None = None
        #: Called once when the server closes the connection (EOF, reset or a CLOSE frame).
        self.on_close: Callable[[Client], None] | None = None
        #: The status line of a refused handshake (seen only by a client with ``on_close``).
        self.refusal = b""
        #: When the last read returned: a probe's latency ends there, not after its parsing.
        self.read_ns = 0
        self.next_request = itertools.count(1)

    # -- writing ---------------------------------------------------------------------------------

    def send_json(self, message: list[object] | bytes) -> None:
        payload = message if isinstance(message, bytes) else json.dumps(message, separators=(",", ":")).encode()
        self.sock.sendall(masked_frame(payload))

    def publish(self, topic: str, args: list[object], acknowledge: bool = True) -> None:
        options = {"acknowledge": True} if acknowledge else {}
        self.send_json([16, next(self.next_request), options, topic, args])
        if acknowledge:
            self.outstanding += 1

    # -- reading ---------------------------------------------------------------------------------

    def readable(self) -> None:
        try:
            data = self.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        if self.probe:
            self.read_ns = time.monotonic_ns()
        if self.counting:
            self.count(data)
            return
        self.buffer += data
        if self.state == self.CONNECTING:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if not head.startswith(b"HTTP/1.1 101"):
                if self.on_close is not None:  # a reconnecting client retries, as a browser's would
                    self.refusal = head.partition(b"\r\n")[0]
                    self._lost()
                    return
                raise ConnectionError(f"handshake refused: {head[:80]!r}")
            self.buffer = rest
            self.state = self.JOINING
            self.send_json(HELLO)
        for opcode, payload in self._frames():
            if opcode == 0x8:
                self._lost()
                return
            if opcode in (0x1, 0x2):
                self._message(json.loads(payload))

    def count(self, data: bytes) -> None:
        """Count the EVENTs in ``data``, read while counting, without parsing them."""
        joined = self.tail + data
        self.events += joined.count(EVENT_MARKER)
        self.tail = joined[-3:]

    def _frames(self) -> list[tuple[int, bytes]]:
        frames = []
        buffer = self.buffer
        while len(buffer) >= 2:
            opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buffer) < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, 2)
                offset = 4
            elif length == 127:
                if len(buffer) < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, 2)
                offset = 10
            if len(buffer) < offset + length:
                break
            frames.append((opcode, buffer[offset : offset + length]))
            buffer = buffer[offset + length :]
        self.buffer = buffer
        return frames

    def _message(self, message: list[object]) -> None:
        kind = message[0]
        if kind == 36:  # EVENT
            self.events += 1
            if self.probe:
                args = message[4]
                assert isinstance(args, list)
                self.latencies_ns.append(self.read_ns - int(args[0]))
        elif kind == 17:  # PUBLISHED
            self.acks += 1
            self.outstanding -= 1
        elif kind == 2:  # WELCOME
            if self.topic is None:
                self.state = self.READY
            else:
                self.state = self.SUBSCRIBING
                self.send_json([32, next(self.next_request), {}, self.topic])
        elif kind == 33:  # SUBSCRIBED
            self.subscription = int(message[2])  # type: ignore[call-overload]
            self.state = self.READY
        elif kind in (3, 8):  # ABORT, ERROR
            raise RuntimeError(f"server said {message}")
        if self.on_message is not None:
            self.on_message(self, message)

    def start_counting(self) -> None:
        """From now on, count EVENT markers instead of parsing (call when READY)."""
        assert self.state == self.READY and not self.buffer
        self.counting = True

    def _lost(self) -> None:
        if not self.closed:
            self.closed = True
            if self.on_close is not None:
                self.on_close(self)

    def close(self) -> None:
        try:
            # An abortive close (RST): no TIME_WAIT left on the generator's side, so that rounds of
            # 10,000 or 20,000 connections do not run the loopback out of ephemeral ports.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True


class Loop:
    """A selector loop over clients."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.clients: dict[Client, None] = {}  # a dict: closing one of 20,000 must not scan them all

    def connect(self, host: str, port: int, path: str, topic: str | None, probe: bool = False) -> Client:
        sock = socket.create_connection((host, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(upgrade_request(host, port, path))
        sock.setblocking(False)
        client = Client(sock, topic, probe)
        self.selector.register(sock, selectors.EVENT_READ, client)
        self.clients[client] = None
        return client

    def dial(self, host: str, port: int, path: str, topic: str | None,
             on_open: Callable[[Client], None], on_fail: Callable[[int], None], probe: bool = False) -> None:
        """
        Connect without blocking the loop (a reconnect storm must not wait for one SYN's retries):
        ``on_open(client)`` once TCP is up and the upgrade request sent (the client then joins and
        subscribes as :meth:`connect`'s do), or ``on_fail(errno)`` (ECONNREFUSED while the server is down).
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex((host, port))
        if error not in (0, errno.EINPROGRESS):
            sock.close()
            on_fail(error)
            return

        def connected() -> None:
            self.selector.unregister(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                sock.close()
                on_fail(error)
                return
            try:
                sock.sendall(upgrade_request(host, port, path))
            except OSError as e:
                sock.close()
                on_fail(e.errno or errno.ECONNRESET)
                return
            client = Client(sock, topic, probe)
            self.selector.register(sock, selectors.EVENT_READ, client)
            self.clients[client] = None
            on_open(client)

        self.selector.register(sock, selectors.EVENT_WRITE, _Pending(connected))

    def run_until(self, done: Callable[[], bool], timeout: float, tick: Callable[[], float | None] | None = None) -> bool:
        """
        Serve reads until ``done()``; ``tick()`` runs every turn and returns how long the loop may
        wait for the next one (None: no limit). Returns False on timeout.
        """
        deadline = time.monotonic() + timeout
        while not done():
            now = time.monotonic()
            if now > deadline:
                return False
            wait = deadline - now
            if tick is not None:
                next_tick = tick()
                if done():  # what tick() counted may finish it: no idle wait (up to 0.5 s) in the measure
                    break
                if next_tick is not None:
                    wait = min(wait, max(next_tick, 0.0))
            ready = self.selector.select(min(wait, 0.5))
            if len(ready) > 1:
                # Probes first: an event reaches all S subscribers at about the same time, and a
                # probe read after the 95 counting sockets beside it would time the generator's
                # loop (about 1 ms at S=100), not the server.
                ready.sort(key=_probes_first)
            for key, _ in ready:
                key.data.readable()
        return True

    def close(self, clients: list[Client] | None = None) -> None:
        for client in clients if clients is not None else list(self.clients):
            try:
                self.selector.unregister(client.sock)
            except (KeyError, ValueError):
                pass
            client.close()
            self.clients.pop(client, None)


def _probes_first(item: tuple[selectors.SelectorKey, int]) -> bool:
    return not getattr(item[0].data, "probe", False)


class _Pending:
    """A socket connecting without blocking: the loop calls ``readable()`` when it is writable."""

    __slots__ = ("readable",)
    probe = False

    def __init__(self, connected: Callable[[], None]) -> None:
        self.readable = connected


def upgrade_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET /{path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
    ).encode()


def masked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame. A zero mask is valid (RFC 6455 allows any key) and costs nothing."""
    n = len(payload)
    mask = b"\x00\x00\x00\x00"
    if n < 126:
        return struct.pack("!BB", 0x80 | opcode, 0x80 | n) + mask + payload
    if n < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n) + mask + payload
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n) + mask + payload


def event_args(sequence: int, size: int = 100) -> list[object]:
    """Arguments for a ~``size``-byte EVENT: a monotonic stamp, a sequence number, padding."""
    return [time.monotonic_ns(), sequence, "x" * max(0, size - 70)]


def paced(publisher: Client, topic: str, publications: int, rate: float) -> Callable[[], float | None]:
    """
    A ``tick`` for :meth:`Loop.run_until` that makes ``publisher`` publish ``publications`` events to
    ``topic`` at ``rate`` a second from now (unacknowledged, so the publisher's round trips do not
    pace it); it returns how long the loop may wait for the next one, None once all are sent.
    """
    interval, start, sent = 1.0 / rate, time.monotonic(), 0

    def tick() -> float | None:
        nonlocal sent
        due = min(publications, int((time.monotonic() - start) / interval) + 1)
        while sent < due:
            publisher.publish(topic, event_args(sent), acknowledge=False)
            sent += 1
        return None if sent >= publications else start + sent * interval - time.monotonic()

    return tick


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return float(ordered[index])
