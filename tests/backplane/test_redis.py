"""
RedisBackplane's own logic with stand-ins for its two Redis connections (the real thing is in
tests/e2e/test_backplane.py): what it forwards, what it counts and logs while Redis is gone, and
which messages it delivers; the numbers that count what another node's subscribers here missed;
the probe, on an injected clock; what it tells /readyz.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, globalLogPublisher

from wsserver.backplane import codec
from wsserver.backplane.redis import ProbeSettings, RedisAddress, RedisBackplane
from wsserver.core.broker import EVERYONE, Publication


class Transport:
    aborted = False

    def abortConnection(self) -> None:
        self.aborted = True


class Connection:
    """What the backplane uses of a txredisapi connection."""

    def __init__(self) -> None:
        self.published: list[tuple[bytes, bytes]] = []
        self.subscribed: list[list[bytes]] = []
        self.fail = False
        self.transport = Transport()

    def publish(self, channel: bytes, data: bytes) -> defer.Deferred[int]:
        if self.fail:
            return defer.fail(ConnectionError("Lost connection"))
        self.published.append((channel, data))
        return defer.succeed(1)

    def subscribe(self, channels: list[bytes]) -> defer.Deferred[None]:
        self.subscribed.append(channels)
        return defer.succeed(None)


def publication(n: int) -> Publication:
    return Publication(n, "com.t", [n], None, EVERYONE)


@dataclass
class Node:
    plane: RedisBackplane
    delivered: list[Any]
    logged: list[dict[str, Any]]
    clock: MemoryReactorClock


@pytest.fixture
def node() -> Iterator[Node]:
    """A started backplane (without connections: the tests hand it theirs) and what it delivers and logs."""
    delivered: list[Any] = []
    logged: list[dict[str, Any]] = []
    clock = MemoryReactorClock()
    plane = RedisBackplane(RedisAddress("127.0.0.1", db=4), realms=["r1", "r2"], reactor=clock,
                           node_id="me", probe=ProbeSettings(interval=5.0, timeout=2.0))
    plane.deliver = lambda *d: delivered.append(d)
    plane.running = True  # as started, without connecting
    plane._probe_next = clock.callLater(plane.probe.interval, plane._send_probe)  # as startService does
    globalLogPublisher.addObserver(logged.append)
    yield Node(plane, delivered, logged, clock)
    globalLogPublisher.removeObserver(logged.append)


def warnings(logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logged if e.get("log_level") == LogLevel.warn and "Redis" in e.get("log_format", "")]


def test_publications_go_to_the_realms_channel_once_connected(node: Node) -> None:
    plane = node.plane
    publisher, subscriber = Connection(), Connection()
    plane.connected(publisher, subscriber=False)
    plane.connected(subscriber, subscriber=True)
    assert subscriber.subscribed == [[b"wsserver:4:r1", b"wsserver:4:r2", b"wsserver:4:#probe:me"]]
    plane.forward("r2", publication(1), False)
    ((channel, data),) = publisher.published
    assert channel == b"wsserver:4:r2" and codec.decode(data)[:2] == ("me", "r2")  # type: ignore[index]
    assert (plane.forwarded, plane.unforwarded) == (1, 0)


def test_an_outage_is_logged_once_and_what_it_did_not_forward_is_counted_when_it_ends(node: Node) -> None:
    plane, logged = node.plane, node.logged
    publisher = Connection()
    plane.connected(publisher, subscriber=False)
    plane.disconnected(publisher, subscriber=False)
    for _ in range(3):
        plane.unreachable("Connection refused")  # the attempts that fail
    for n in range(4):
        plane.forward("r1", publication(n), False)
    assert len(warnings(logged)) == 1 and plane.unforwarded == 4
    failing = Connection()
    failing.fail = True
    plane.connected(failing, subscriber=False)  # back: the count is said...
    assert any(e.get("count") == 4 for e in logged)
    plane.forward("r1", publication(5), False)  # ...and a PUBLISH lost with its connection counts too
    assert (plane.forwarded, plane.unforwarded) == (0, 5)


def test_other_nodes_messages_are_delivered_and_its_own_skipped(node: Node) -> None:
    plane, delivered = node.plane, node.delivered
    plane.message_received(codec.encode("other", "r1", publication(1), True))
    plane.message_received(codec.encode("me", "r1", publication(2), False))
    plane.message_received(b"\xc1 not msgpack")
    ((realm, got, retain),) = delivered
    assert (realm, got.id, got.args, retain) == ("r1", 1, [1], True)
    assert plane.received == 1


def test_publications_of_another_node_that_never_arrived_are_counted_and_logged_once_per_gap(node: Node) -> None:
    plane, delivered, logged = node.plane, node.delivered, node.logged
    for seq in (7, 8, 12, 13, 20):  # the first sets the baseline: what came before is not this node's loss
        plane.message_received(codec.encode("other", "r1", publication(seq), False, seq=seq))
    plane.message_received(codec.encode("third", "r1", publication(1), False, seq=3))
    plane.message_received(codec.encode("third", "r1", publication(1), False, seq=5))
    plane.message_received(codec.encode("old", "r1", publication(1), False))  # a node that numbers nothing
    assert len(delivered) == 8 and plane.lost == 3 + 6 + 1
    lines = [e for e in warnings(logged) if "lost" in e["log_format"]]
    assert [(e["node"], e["count"], e["first"], e["last"]) for e in lines] == [
        ("other", 3, 9, 11), ("other", 6, 14, 19), ("third", 1, 4, 4)]


def test_every_publication_is_numbered_forwarded_or_not(node: Node) -> None:
    plane = node.plane
    plane.forward("r1", publication(1), False)  # not connected: not forwarded, numbered 1
    publisher = Connection()
    plane.connected(publisher, subscriber=False)
    plane.forward("r1", publication(2), False)
    ((_, data),) = publisher.published
    assert codec.decode_numbered(data)[4] == 2  # type: ignore[index]  # a receiver counts the first as lost


def connected_node(node: Node) -> tuple[Connection, Connection]:
    publisher, subscriber = Connection(), Connection()
    node.plane.connected(publisher, subscriber=False)
    node.plane.connected(subscriber, subscriber=True)
    return publisher, subscriber


def probes(publisher: Connection) -> list[bytes]:
    return [data for channel, data in publisher.published if channel == b"wsserver:4:#probe:me"]


def test_a_probe_that_comes_back_in_time_changes_nothing(node: Node) -> None:
    plane, clock = node.plane, node.clock
    publisher, subscriber = connected_node(node)
    for _ in range(3):
        clock.advance(5.0)
        (*_, probe) = probes(publisher)
        clock.advance(1.9)
        plane.probe_received(probe)
        clock.advance(0.2)
        clock.advance(0)
    assert len(probes(publisher)) == 3 and plane.rebuilt == 0
    assert not publisher.transport.aborted and not subscriber.transport.aborted
    assert plane.not_ready() is None


def test_a_probe_that_does_not_come_back_rebuilds_both_connections_and_says_so_once(node: Node) -> None:
    plane, clock, logged = node.plane, node.clock, node.logged
    publisher, subscriber = connected_node(node)
    clock.advance(5.0)  # probe 1 goes out...
    clock.advance(2.0)  # ...its time is up (and after one more reactor turn, which this clock runs at once), lost
    assert publisher.transport.aborted and subscriber.transport.aborted and plane.rebuilt == 1
    plane.disconnected(publisher, subscriber=False)
    plane.disconnected(subscriber, subscriber=True)
    plane.forward("r1", publication(1), False)
    assert "probe did not come back" in (plane.not_ready() or "")
    publisher, subscriber = connected_node(node)  # made again, but still stalled (Redis paused)
    for _ in range(2):
        clock.advance(5.0), clock.advance(2.0), clock.advance(0)
    assert plane.rebuilt == 3 and publisher.transport.aborted
    assert len(warnings(logged)) == 1 and "probe" in warnings(logged)[0]["log_format"]  # one line for it all
    publisher, subscriber = connected_node(node)  # Redis resumed: subscribed, it probes at once
    plane.probe_received(probes(publisher)[-1])
    (back,) = [e for e in logged if "came back" in e.get("log_format", "")]
    assert back["count"] == 1 and back["seconds"] == clock.seconds() - 7.0  # since the first probe was lost
    assert plane.not_ready() is None and not any("again;" in e.get("log_format", "") for e in logged)


def test_a_probe_is_not_taken_for_lost_when_the_connection_was_lost_anyway(node: Node) -> None:
    plane, clock, logged = node.plane, node.clock, node.logged
    publisher, subscriber = connected_node(node)
    clock.advance(5.0)
    plane.disconnected(publisher, subscriber=False)  # Redis went away: that is said once, as an outage
    clock.advance(2.0), clock.advance(0)
    assert plane.rebuilt == 0 and [e["reason"] for e in warnings(logged)] == ["connection lost"]


def test_a_subscribe_that_is_never_answered_counts_as_a_lost_probe_and_a_probe_waits_for_it(node: Node) -> None:
    plane, clock = node.plane, node.clock
    publisher, subscriber = Connection(), Connection()
    answer: defer.Deferred[None] = defer.Deferred()
    subscriber.subscribe = lambda channels: answer  # type: ignore[method-assign]
    plane.connected(publisher, subscriber=False)
    plane.connected(subscriber, subscriber=True)
    clock.advance(5.0)
    assert probes(publisher) == []  # published before the SUBSCRIBE is taken, it could not come back
    answer.callback(None)  # answered in time: the probe goes out at once
    assert len(probes(publisher)) == 1
    plane.probe_received(probes(publisher)[-1])
    publisher, subscriber = Connection(), Connection()
    subscriber.subscribe = lambda channels: defer.Deferred()  # type: ignore[method-assign]  # never answered
    plane.connected(publisher, subscriber=False)
    plane.connected(subscriber, subscriber=True)
    clock.advance(5.0), clock.advance(2.0)
    assert probes(publisher) == [] and plane.rebuilt == 1 and subscriber.transport.aborted


def test_not_ready_says_why_until_connected_and_subscribed(node: Node) -> None:
    plane = node.plane
    assert plane.not_ready() == "redis://127.0.0.1:6379/4: connecting"
    plane.unreachable("Connection refused")
    assert plane.not_ready() == "redis://127.0.0.1:6379/4: unreachable (Connection refused)"
    publisher, subscriber = Connection(), Connection()
    plane.connected(publisher, subscriber=False)
    subscriber.subscribe = lambda channels: defer.Deferred()  # type: ignore[method-assign]  # no answer yet
    plane.connected(subscriber, subscriber=True)
    assert plane.not_ready() == "redis://127.0.0.1:6379/4: not subscribed yet"
