"""
What one publication to N WebSocket subscribers costs the server, in process, with and without
the metrics' counting: a benchmark, not a test.

    python bench/fanout.py --quick                         # 1000 subscribers, best of 40 runs of 50
    git show main:wsserver/delivery.py > /tmp/delivery_main.py
    python bench/fanout.py --baseline /tmp/delivery_main.py  # also main's fan-out, without counting
    python bench/fanout.py --subscribers 10 --json --profile  # where the time of one publication goes

What is measured: a PUBLISH frame handed to the publisher's connection (``dataReceived``) until
its EVENT is written to every subscriber's transport: Autobahn's frame parsing, the core router,
``delivery.carry_out`` (one serialization per wire format), each connection's send buffer and
``transport.write``. The transports are Twisted's ``StringTransport`` (emptied between runs), so
there are no sockets and no reactor; half the subscribers speak JSON, half msgpack (``--json``: all
JSON, as ``bench/run.py``'s fan-out). ``--profile`` runs the publications under cProfile instead
and prints the top entries in µs per publication (profiling inflates each call: compare
entries, not totals with the timed runs). ``--sockets`` puts every connection on a real TCP
socket pair on the epoll reactor (not run: after each read the bench does the reactor's turn,
``doWrite`` of each connection that waits to write, and times it), so Twisted's write path, the
``send()`` calls and the epoll changes count too, as in ``bench/run.py``. The variants
(with ``--baseline``: another ``carry_out`` wired into the sessions, e.g. main's, which counts
nothing, twice, to show the noise floor; this one with metrics off; this one with the
publish-to-write histogram on) run interleaved in one process, taking turns at going first, so
that a shared machine's noise hits all alike, and each keeps the best of its runs: compare the
best, not one run. With ``--baseline`` it then times the delivery loop alone, ``carry_out`` of
one EVENT to recipients whose writes cost nothing: the counting's share at its largest.
"""


from __future__ import annotations

import argparse
import base64
import importlib.util
import itertools
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsserver.core.actions import Send  # noqa: E402
from wsserver.core.limits import SessionLimits  # noqa: E402
from wsserver.core.router import Router  # noqa: E402
from wsserver.core.session import Session  # noqa: E402
from wsserver.metrics import MetricsService  # noqa: E402
from wsserver.service import WampServer  # noqa: E402
from wsserver.tally import TALLY  # noqa: E402
from wsserver.transports import wampsession  # noqa: E402
from wsserver.transports.admission import ConnectionLimits  # noqa: E402
from wsserver.transports.flashpolicy import FlashPolicy  # noqa: E402
from wsserver.transports.websocket import WampServerFactory  # noqa: E402 (chooses Twisted for txaio)
from twisted.internet import reactor as REACTOR  # noqa: E402 (never run: see turn)

from autobahn.wamp import message as wamp  # noqa: E402
from autobahn.wamp.serializer import MsgPackObjectSerializer  # noqa: E402

TOPIC = "com.example.bench.fanout"
HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}}}]


class Transport(StringTransport):
    """StringTransport that, like a TCP transport, does not mind unregistering no producer."""

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


class SocketTransport(tcp.Server):
    """
    ``--sockets``: a Twisted TCP connection over one end of a socket pair, on the reactor, which
    is never run: :func:`turn` does what its turn would (``doWrite`` of each connection waiting
    to write: the send() and the epoll changes), and :meth:`value` reads what the client got.
    """

    def __init__(self, reactor: Any, number: int, peer: IPv4Address) -> None:
        ours, self.client_end = socket.socketpair()
        ours.setblocking(False)
        self.client_end.setblocking(False)
        super().__init__(ours, None, (peer.host, peer.port), None, number, reactor)  # type: ignore[arg-type]
        self.connected = True
        self.peer = peer
        self.received = b""

    def getPeer(self) -> IPv4Address:  # type: ignore[override]
        return self.peer

    def value(self) -> bytes:
        turn(self.reactor)
        while True:
            try:
                data = self.client_end.recv(1 << 20)
            except BlockingIOError:
                return self.received
            self.received += data

    def clear(self) -> None:
        self.value()
        self.received = b""

    def unregisterProducer(self) -> None:
        self.producer = None
        self.streaming = None


def turn(reactor: Any) -> None:
    """What the reactor's turn does for the connections waiting to write."""
    for writer in list(reactor.getWriters()):
        writer.doWrite()


def frame(payload: bytes, binary: bool) -> bytes:
    """A masked client frame (zero key) carrying ``payload``."""
    head = bytes([0x82 if binary else 0x81])
    length = len(payload)
    head += bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + length.to_bytes(2, "big")
    return head + b"\0\0\0\0" + payload


def json_frame(message: list[Any]) -> bytes:
    """A masked client text frame (zero key) carrying ``message`` as JSON."""
    return frame(json.dumps(message).encode(), False)


def connect(factory: WampServerFactory, port: int, subprotocol: str, sockets: bool = False) -> tuple[Any, Any]:
    # One address each: the per-address connection limit stays out of the way.
    peer = IPv4Address("TCP", f"10.{port >> 16 & 255}.{port >> 8 & 255}.{port & 255}", 4000)
    transport: Any = SocketTransport(REACTOR, port, peer) if sockets else Transport(peerAddress=peer)
    protocol = factory.buildProtocol(peer)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.dataReceived(
        f"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {subprotocol}\r\n\r\n".encode()
    )
    assert transport.value().startswith(b"HTTP/1.1 101"), transport.value()[:200]
    binary = subprotocol.endswith("msgpack")
    encode = (lambda m: MsgPackObjectSerializer().serialize(m)) if binary else (lambda m: json.dumps(m).encode())
    protocol.dataReceived(frame(encode(HELLO), binary))
    protocol.dataReceived(frame(encode([32, 1, {}, TOPIC]), binary))
    transport.clear()
    return protocol, transport


def baseline_wiring(path: str) -> Any:
    """
    The ``carry_out`` of another ``delivery.py`` (e.g. ``git show main:wsserver/delivery.py``),
    to wire into the WAMP sessions in place of this one: the fan-out without counting.
    """
    spec = importlib.util.spec_from_file_location("baseline_delivery", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.carry_out


class NullPeer:
    """A connection that costs nothing to write to: the delivery loop alone (the counting's worst case)."""

    transport_kind = "websocket"

    def __init__(self, wire_format: object) -> None:
        self.wire_format = wire_format

    def encode(self, message: Any) -> bytes:
        return b""

    def write_encoded(self, data: Any) -> None:
        pass


def loop_alone(subscribers: int, variants: dict[str, Any], runs: int) -> None:
    """Time each ``carry_out`` on one EVENT to ``subscribers`` NullPeers (two wire formats), interleaved."""
    sessions = tuple(Session(NullPeer(("websocket", n % 2))) for n in range(subscribers))
    actions = [Send(wamp.Event(1, 2, args=[1]), sessions)]
    best = dict.fromkeys(variants, float("inf"))
    order = list(variants.items())
    for run in range(runs):
        for name, carry_out in order[run % len(order):] + order[:run % len(order)]:
            started = time.perf_counter()
            for _ in range(20):
                carry_out(actions)
            best[name] = min(best[name], (time.perf_counter() - started) / 20)
    print(f"the delivery loop alone ({subscribers} recipients that cost nothing), best of {runs} x 20:")
    report(best, subscribers)


def report(best: dict[str, float], subscribers: int) -> None:
    reference = next(iter(best.values()))
    for name, seconds in best.items():
        print(f"  {name:<24} {seconds * 1e6:8.1f} µs per publication  {seconds / subscribers * 1e9:6.1f} ns "
              f"per delivery  {(seconds / reference - 1) * 100:+6.1f} %")


def profile(publisher: Any, reads: list[bytes], publications: int, subscribers: list[Transport], publisher_transport: Transport,
            runs: int, top: int, file: str | None) -> None:
    """Hand over the ``reads`` (``publications`` in all) ``runs`` times under cProfile; print the top entries in µs
    per publication."""
    import cProfile
    import pstats

    profiler = cProfile.Profile()
    for _ in range(runs):
        profiler.enable()
        for data in reads:
            publisher.dataReceived(data)
            turn(REACTOR)
        profiler.disable()
        for transport in subscribers:
            assert transport.value(), "every subscriber got the events"
            transport.clear()
        publisher_transport.clear()
    count = runs * publications
    if file:
        profiler.dump_stats(file)
    stats = pstats.Stats(profiler)
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)  # type: ignore[attr-defined]
    total = sum(entry[2] for _, entry in entries)
    print(f"cProfile, {count} publications to {len(subscribers)} subscribers: {total / count * 1e6:.1f} µs per "
          f"publication in all (profiled); top {top} by own time, µs per publication:")
    print(f"  {'own':>7} {'cumul.':>7} {'calls':>6}  function")
    for (filename, line, name), (_, calls, own, cumulative, _) in entries[:top]:
        where = f"{Path(filename).name}:{line}" if line else filename
        print(f"  {own / count * 1e6:7.2f} {cumulative / count * 1e6:7.2f} {calls / count:6.1f}  {name} ({where})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="fewer publications and runs")
    parser.add_argument("--json", action="store_true", help="every subscriber speaks JSON (as bench/run.py's)")
    parser.add_argument("--per-read", type=int, default=1, metavar="N",
                        help="PUBLISH frames handed over per dataReceived (bench/run.py's publisher keeps many in "
                             "flight: a read holds hundreds)")
    parser.add_argument("--sockets", action="store_true",
                        help="real TCP connections (socket pairs) on the epoll reactor instead of StringTransports: "
                             "Twisted's write path, the send() calls and the epoll changes are timed too")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top entries per publication")
    parser.add_argument("--top", type=int, default=30, help="how many entries --profile prints")
    parser.add_argument("--profile-file", help="with --profile: also save the profile there (for pstats)")
    parser.add_argument("--baseline", metavar="DELIVERY_PY",
                        help="also time the fan-out with this delivery.py's carry_out (e.g. main's), interleaved")
    options = parser.parse_args()
    publications, runs = (50, 40) if options.quick else (200, 100)
    reactor = MemoryReactorClock()
    # No publish rate and no frame rate: the clock stands still, so their bursts would run out.
    router: Router[Any] = Router(["realm1"], itertools.count(1).__next__, clock=reactor.seconds,
                                 limits=SessionLimits(publish_rate=0))
    factory = WampServerFactory(router, reactor=reactor, limits=ConnectionLimits(max_frame_rate=0))
    subscribers = [connect(factory, 10_000 + n, "wamp.2.msgpack" if n % 2 and not options.json else "wamp.2.json",
                           options.sockets)[1]
                   for n in range(options.subscribers)]
    publisher, publisher_transport = connect(factory, 9999, "wamp.2.json", options.sockets)
    # The histogram as the metrics service observes it (the service is not started: no port).
    server = WampServer(reactor, listen=[], web_dir=Path.cwd(), flash_policy=FlashPolicy(port=0))
    histogram = MetricsService(reactor, "tcp:0", server).publish_to_write.observe
    counted = (wampsession.carry_out, wampsession.carry_out_publication)

    def wire(carry_out: Any, carry_out_publication: Any, observe: Any) -> None:
        wampsession.carry_out, wampsession.carry_out_publication = carry_out, carry_out_publication
        TALLY.observe_publication = observe

    variants = {"counted, metrics off": lambda: wire(*counted, None),
                "counted, metrics on": lambda: wire(*counted, histogram)}
    if options.baseline:
        uncounted = baseline_wiring(options.baseline)

        def baseline() -> None:
            wire(uncounted, lambda route, call_later=None: uncounted(route(), call_later), None)

        # Twice: how far two runs of the same code differ is the noise floor of the comparison.
        variants = {"baseline (no counting)": baseline, "baseline again": baseline, **variants}
    # As bench/loadgen.py publishes: acknowledged, ~100-byte events.
    frames = [frame(json.dumps([16, n, {"acknowledge": True}, TOPIC, [n, "x" * 40]]).encode(), False)
              for n in range(publications)]
    reads = [b"".join(frames[n:n + options.per_read]) for n in range(0, publications, options.per_read)]
    if options.profile:
        profile(publisher, reads, publications, subscribers, publisher_transport, runs, options.top, options.profile_file)
        return
    best = dict.fromkeys(variants, float("inf"))
    order = list(variants.items())
    for run in range(runs):  # interleaved, in turns: machine noise hits every variant alike
        for name, apply in order[run % len(order):] + order[:run % len(order)]:
            apply()
            took = 0.0
            for data in reads:
                started = time.perf_counter()
                publisher.dataReceived(data)
                turn(REACTOR)
                took += time.perf_counter() - started
                if options.sockets:  # the clients read (not timed), so that the sockets never fill
                    for transport in subscribers:
                        transport.value()
            best[name] = min(best[name], took / publications)
            for transport in subscribers:
                assert transport.value(), "every subscriber got the events"
                transport.clear()
            publisher_transport.clear()
    formats = "all JSON" if options.json else "half JSON, half msgpack"
    print(f"{options.subscribers} subscribers ({formats}), best of {runs} runs x {publications} "
          f"publications each, {options.per_read} a read:")
    report(best, options.subscribers)
    if options.baseline:
        loop_alone(options.subscribers, {"baseline (no counting)": uncounted, "baseline again": uncounted,
                                         "counted": counted[0]}, runs * 3)


if __name__ == "__main__":
    main()
