"""
RedisBackplane's own logic with stand-ins for its two Redis connections (the real thing is in
tests/e2e/test_backplane.py): what it forwards, what it counts and logs while Redis is gone, and
which messages it delivers.
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
from wsserver.backplane.redis import RedisAddress, RedisBackplane
from wsserver.core.broker import EVERYONE, Publication


class Connection:
    """What the backplane uses of a txredisapi connection."""

    def __init__(self) -> None:
        self.published: list[tuple[bytes, bytes]] = []
        self.subscribed: list[list[bytes]] = []
        self.fail = False

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


@pytest.fixture
def node() -> Iterator[Node]:
    """A started backplane (without connections: the tests hand it theirs) and what it delivers and logs."""
    delivered: list[Any] = []
    logged: list[dict[str, Any]] = []
    plane = RedisBackplane(RedisAddress("127.0.0.1", db=4), realms=["r1", "r2"], reactor=MemoryReactorClock(),
                           node_id="me")
    plane.deliver = lambda *d: delivered.append(d)
    plane.running = True  # as started, without connecting
    globalLogPublisher.addObserver(logged.append)
    yield Node(plane, delivered, logged)
    globalLogPublisher.removeObserver(logged.append)


def warnings(logged: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in logged if e.get("log_level") == LogLevel.warn and "Redis" in e.get("log_format", "")]


def test_publications_go_to_the_realms_channel_once_connected(node: Node) -> None:
    plane = node.plane
    publisher, subscriber = Connection(), Connection()
    plane.connected(publisher, subscriber=False)
    plane.connected(subscriber, subscriber=True)
    assert subscriber.subscribed == [[b"wsserver:4:r1", b"wsserver:4:r2"]]
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
