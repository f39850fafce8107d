"""
The reconnect storm: N subscribed clients lose the server at once and come back with AutobahnJS's
jittered backoff, while a publisher that came back first publishes at a modest fixed rate.

Theory of operation
-------------------
*Losing the server.* The harness SIGKILLs the server's whole process tree and starts it again on
the same port (:meth:`peers.Server.crash_and_restart`). SIGKILL, not SIGTERM: every client loses
its connection at the same instant on both servers, whatever each one's shutdown path does (a
graceful stop would spread the losses over its GOODBYE timeout), as in a crash or a hard deploy.
Both servers bind with SO_REUSEADDR, so the restarted one listens on the port at once.

*The clients* follow AutobahnJS's ``Connection`` (node_modules/autobahn/lib/connection.js,
26.3.1): on a lost or refused connection the next delay is a Gaussian around the current delay
(``rand_normal(delay, delay * retry_delay_jitter)``), capped at ``max_retry_delay``; then the
delay grows by ``retry_delay_growth``; a session that joins resets it to ``initial_retry_delay``.
Defaults: 1.5 s, growth 1.5, jitter 0.1, cap 300 s. While the server is down a connect is refused
at once (counted as a refusal); once it listens, a full accept queue drops SYNs and the kernel
retries them after 1 s, 3 s, ... (counted as slow connects: TCP up after more than 0.9 s).

*Listening.* The time that matters is from the server listening again, not from the kill
(Crossbar's node controller takes 4-6 s to start its router): the generator probes the port every
20 ms with a connect of its own until one succeeds.

*The events meanwhile.* The publisher dials as soon as the server listens and publishes events
at ``rate`` a second from the moment it has joined. A client's SUBSCRIBED processed by the
generator before a publication is sent means the server had the subscription before the
publication, so every such event must reach it: each client records how many publications were
sent when its SUBSCRIBED arrived and must receive at least all the later ones (and never more
than were sent). The publisher stops a little after the last client resubscribed; the scenario
then waits for the deliveries to drain and checks every client.
"""

from __future__ import annotations

import errno
import heapq
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loadgen import LINGER_ZERO, Client, Loop, event_args, percentile

#: AutobahnJS's Connection defaults (connection.js).
INITIAL_RETRY_DELAY = 1.5
RETRY_DELAY_GROWTH = 1.5
RETRY_DELAY_JITTER = 0.1
MAX_RETRY_DELAY = 300.0

TOPIC = "bench.storm"
PROBES = 5  # clients that parse their events and time them (the others count markers)
SLOW_CONNECT = 0.9  # seconds: TCP took a SYN retry (the first one is after 1 s)


@dataclass
class Backoff:
    """One client's retry delay, as AutobahnJS's ``_autoreconnect_advance`` computes it."""

    rng: random.Random
    delay: float = INITIAL_RETRY_DELAY

    def advance(self) -> float:
        self.delay = min(self.rng.gauss(self.delay, self.delay * RETRY_DELAY_JITTER), MAX_RETRY_DELAY)
        chosen = self.delay
        self.delay *= RETRY_DELAY_GROWTH
        return max(chosen, 0.0)

    def reset(self) -> None:
        self.delay = INITIAL_RETRY_DELAY


@dataclass
class _State:
    """What the storm's callbacks share."""

    sent: int = 0  # publications sent
    back: int = 0  # clients resubscribed since the kill
    killed: float = 0.0
    listening: float | None = None
    publisher: Client | None = None
    publisher_redial: float | None = None
    publish_from: float | None = None
    publish_until: float | None = None
    all_back: float | None = None


class StormClient:
    """A subscriber that reconnects like AutobahnJS and remembers when it got its subscription back."""

    __slots__ = ("index", "client", "backoff", "attempts", "refused", "slow_connects", "resubscribed_at",
                 "sent_at_subscribe", "events", "dial_started", "refused_handshakes")

    def __init__(self, index: int, rng: random.Random) -> None:
        self.index = index
        self.client: Client | None = None
        self.backoff = Backoff(rng)
        self.attempts = self.refused = self.slow_connects = self.refused_handshakes = 0
        self.resubscribed_at: float | None = None
        self.sent_at_subscribe = 0
        self.events = 0
        self.dial_started = 0.0


def run(server: Any, report: Any, clients: int, rate: float, open_sessions: Callable[..., list[Client]],
        host: str, seed: int = 15, timeout: float = 240.0) -> None:
    """Open ``clients`` subscribed sessions, crash and restart ``server``, and measure their return."""
    loop = Loop()
    rng = random.Random(seed)
    storm = [StormClient(i, rng) for i in range(clients)]
    timers: list[tuple[float, int]] = []  # (due, index): the next dial of a client
    state = _State()
    latencies: list[int] = []

    def lost(sc: StormClient, now: float) -> None:
        sc.client = None
        heapq.heappush(timers, (now + sc.backoff.advance(), sc.index))

    def attach(sc: StormClient, client: Client) -> None:
        sc.client = client

        def on_message(c: Client, message: list[object]) -> None:
            if message[0] == 33:  # SUBSCRIBED
                if sc.resubscribed_at is None:
                    state.back += 1
                sc.resubscribed_at = time.monotonic()
                sc.sent_at_subscribe = state.sent
                sc.backoff.reset()
                sc.events = 0
                c.events = 0
                if not c.probe and not c.buffer:
                    c.counting = True  # from here on count markers; a partial frame keeps it parsing
            elif message[0] == 36 and c.probe:
                latencies.append(c.latencies_ns[-1])

        def on_close(c: Client) -> None:
            loop.close([c])
            if c.refusal:  # an HTTP error (Crossbar answers 404 on its WebSocket path while it starts)
                sc.refused_handshakes += 1
            if sc.client is c:
                sc.events += c.events if sc.resubscribed_at is not None else 0
                lost(sc, time.monotonic())

        client.on_message = on_message
        client.on_close = on_close

    def dial(sc: StormClient) -> None:
        sc.attempts += 1
        sc.dial_started = time.monotonic()

        def on_open(client: Client) -> None:
            if time.monotonic() - sc.dial_started > SLOW_CONNECT:
                sc.slow_connects += 1
            attach(sc, client)

        def on_fail(error: int) -> None:
            if error == errno.ECONNREFUSED:
                sc.refused += 1
            lost(sc, time.monotonic())

        loop.dial(host, server.port, "ws", TOPIC, on_open, on_fail, probe=sc.index < PROBES)

    try:
        # Before: every client subscribed (the publisher comes later).
        opened = open_sessions(loop, server.port, [TOPIC] * clients, probes=PROBES)
        for sc, client in zip(storm, opened):
            attach(sc, client)
        time.sleep(0.5)
        for sc in storm:
            sc.resubscribed_at = None
        state.back = 0
        state.killed = time.monotonic()
        server.crash_and_restart()
        next_probe = [0.0]

        def probe_listening(now: float) -> None:
            if state.listening is not None or now < next_probe[0]:
                return
            next_probe[0] = now + 0.02
            with socket.socket() as sock:
                sock.settimeout(0.05)
                try:
                    sock.connect((host, server.port))
                except OSError:
                    return
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
            state.listening = time.monotonic()
            publisher_dial()

        def publisher_dial() -> None:
            state.publisher_redial = None

            def on_open(client: Client) -> None:
                state.publisher = client
                client.on_close = publisher_lost

            def publisher_lost(client: Client) -> None:
                if state.publish_from is not None:
                    raise RuntimeError("the storm's publisher lost the server")
                # Not yet joined (Crossbar answers 404 while its router starts): try again soon.
                loop.close([client])
                state.publisher = None
                state.publisher_redial = time.monotonic() + 0.1

            def on_fail(error: int) -> None:
                state.publisher_redial = time.monotonic() + 0.1

            loop.dial(host, server.port, "ws", None, on_open, on_fail)

        def publish(now: float) -> float | None:
            publisher = state.publisher
            if publisher is None or publisher.state != Client.READY:
                return None
            if state.publish_from is None:
                state.publish_from = now
            if state.publish_until is not None and now >= state.publish_until:
                return None
            start = state.publish_from
            due = int((now - start) * rate) + 1
            while state.sent < due:
                publisher.publish(TOPIC, event_args(state.sent), acknowledge=False)
                state.sent += 1
            return start + state.sent / rate - now

        def tick() -> float | None:
            now = time.monotonic()
            probe_listening(now)
            if state.publisher_redial is not None and now >= state.publisher_redial:
                publisher_dial()
            while timers and timers[0][0] <= now:
                _, index = heapq.heappop(timers)
                dial(storm[index])
            if state.all_back is None and state.back == clients:
                state.all_back = now
                state.publish_until = now + 1.0  # a last second with everyone subscribed
            waits = [0.02 if state.listening is None else 1.0]
            if timers:
                waits.append(timers[0][0] - now)
            next_publication = publish(now)
            if next_publication is not None:
                waits.append(next_publication)
            return max(0.0, min(waits))

        def finished() -> bool:
            return state.publish_until is not None and time.monotonic() >= state.publish_until

        meter_cpu = time.process_time()
        back = loop.run_until(finished, timeout=timeout, tick=tick)
        storm_wall = time.monotonic() - state.killed
        own_cpu = time.process_time() - meter_cpu
        sent = state.sent

        def expected(sc: StormClient) -> int:
            return sent - sc.sent_at_subscribe

        def received(sc: StormClient) -> int:
            return sc.client.events if sc.client is not None else sc.events

        drained = loop.run_until(lambda: all(received(sc) >= expected(sc) for sc in storm if sc.resubscribed_at),
                                 timeout=30)
        short = [sc for sc in storm if sc.resubscribed_at and received(sc) < expected(sc)]
        extra = [sc for sc in storm if sc.resubscribed_at and received(sc) > sent]
        missing = sum(expected(sc) - received(sc) for sc in short)
        listening = state.listening or state.killed
        report.check(back and drained and not short and not extra and sent > 0,
                     f"{server.name} storm {clients}: {sum(sc.resubscribed_at is not None for sc in storm)}/{clients} "
                     f"resubscribed, {sent} events published, {missing} missing from {len(short)} clients"
                     f"{f', {len(extra)} got more than were sent' if extra else ''}")
        back_times = [sc.resubscribed_at - listening for sc in storm if sc.resubscribed_at is not None]
        delivered = sum(received(sc) for sc in storm if sc.resubscribed_at)
        due = sum(expected(sc) for sc in storm if sc.resubscribed_at)
        label = f"{clients} clients"

        def add(name: str, unit: str, value: float, higher_is_better: bool = False) -> None:
            report.figure("storm", f"{name}, {label}", unit, higher_is_better).add(server.name, value)

        add("restart to listening s", "s", listening - state.killed)
        add("listening to all resubscribed s", "s", max(back_times) if back_times else float("nan"))
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            add(f"{name} listening to resubscribed s", "s", percentile(back_times, q))
        add("connect attempts per client", "1", sum(sc.attempts for sc in storm) / clients)
        add("refused connects (server down)", "1", sum(sc.refused for sc in storm))
        add("refused handshakes (HTTP error)", "1", sum(sc.refused_handshakes for sc in storm))
        add("slow connects (SYN retried, > 0.9 s)", "1", sum(sc.slow_connects for sc in storm))
        add(f"events delivered meanwhile ({rate:g}/s published)", "1", delivered, True)
        add("events due to resubscribed clients", "1", due, True)
        add("p99 ms event latency during the storm", "ms", percentile(latencies, 0.99) / 1e6)
        add("generator CPU use", "%", 100 * own_cpu / storm_wall)
        print(f"    {server.name:9} storm {clients}: listening after {listening - state.killed:.1f} s, all "
              f"resubscribed {max(back_times, default=float('nan')):.1f} s later (p50 {percentile(back_times, .5):.1f}, "
              f"p99 {percentile(back_times, .99):.1f}); {sum(sc.attempts for sc in storm)} connects, "
              f"{sum(sc.refused for sc in storm)} refused, "
              f"{sum(sc.refused_handshakes for sc in storm)} HTTP errors, {sum(sc.slow_connects for sc in storm)} slow; "
              f"{delivered}/{due} events due delivered (generator {own_cpu / storm_wall:.0%} CPU)", flush=True)
    finally:
        loop.close()
