"""wsserver/adminstats.py: the figures on wsserver.stats, once a second of an injected clock."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message as wamp
from twisted.internet.task import Clock

from wsserver.adminstats import Figures, StatsPublisher, live_figures
from wsserver.tally import Tally
from wsserver.core.admin import STATS_TOPIC
from wsserver.core.decoding import decode
from wsserver.core.policy import EVERYTHING, RealmPolicy
from wsserver.core.router import Router
from wsserver.core.session import State


class Connection:
    """A peer as delivery.py sees it, and what its connection tells the core."""

    wire_format = "test"
    kind = "test"

    def __init__(self, buffered: int = 0) -> None:
        self.buffered = buffered
        self.received: list[Any] = []

    def encode(self, message: Any) -> Any:
        return message

    def write_encoded(self, data: Any) -> None:
        self.received.append(data)

    def close_transport(self, reason: Any, detail: str) -> None:
        raise AssertionError("not closed in these tests")

    def buffered_bytes(self) -> int:
        return self.buffered



def router() -> Router[Any]:
    """Realm1 whose anonymous sessions have the admin role (the login is not what is tested here)."""
    ids = iter(range(1000, 2000))
    return Router([RealmPolicy("realm1", {"admin": (EVERYTHING,)}, anonymous_role="admin")], ids.__next__)


def join(router: Router[Any], connection: Connection, *, subscribe: bool = False) -> None:
    session = router.attach(connection, "127.0.0.1", connection)
    (hello,) = decode([[1, "realm1", {"roles": {"subscriber": {}}}]])
    router.receive(session, hello)  # what it answers is not carried out: the connection receives stats only
    assert session.state is State.OPEN
    if subscribe:
        (subscribe_message,) = decode([[32, 1, {}, STATS_TOPIC]])
        router.receive(session, subscribe_message)


def stats(connection: Connection) -> list[dict[str, Any]]:
    assert all(isinstance(message, wamp.Event) for message in connection.received)
    return [message.kwargs for message in connection.received]


def test_live_figures_sum_the_open_connections_and_read_the_counts_the_metrics_read() -> None:
    r = router()
    join(r, Connection(buffered=100))
    join(r, Connection(buffered=50))
    tally = Tally()
    tally.deliveries["websocket"] += 7
    tally.deliveries["sse"] += 2
    tally.dropped_events["slow_consumer"] += 4  # counted when dropped: closed connections' drops too
    r.realms["realm1"].broker.published = 3
    assert live_figures(r, tally) == Figures(sessions=2, send_buffer_bytes=150, publications=3, deliveries=9,
                                             dropped=4)


def test_a_stats_event_a_second_with_rates_since_the_previous_reading() -> None:
    r, clock = router(), Clock()
    admin = Connection()
    join(r, admin, subscribe=True)
    readings = iter([
        Figures(sessions=1, send_buffer_bytes=10, publications=100, dropped=0),
        Figures(sessions=2, send_buffer_bytes=20, publications=130, dropped=4),
        Figures(sessions=2, send_buffer_bytes=0, publications=90, dropped=4),  # a counter went down
    ])
    publisher = StatsPublisher(r, clock, lambda: next(readings))
    publisher.startService()
    clock.advance(0.5)
    assert stats(admin) == []
    clock.advance(0.5)
    clock.advance(1.0)
    clock.advance(2.0)
    first, second, third = stats(admin)
    assert first == {"time": 1.0, "sessions": 1, "publications_per_s": None, "deliveries_per_s": None,
                     "dropped_per_s": None, "send_buffer_bytes": 10}
    assert second == {"time": 2.0, "sessions": 2, "publications_per_s": 30.0, "deliveries_per_s": None,
                      "dropped_per_s": 4.0, "send_buffer_bytes": 20}
    assert third["publications_per_s"] == 0.0 and third["time"] == 4.0
    publisher.stopService()
    clock.advance(10)
    assert len(stats(admin)) == 3


def test_nothing_is_read_while_no_one_listens() -> None:
    r, clock = router(), Clock()
    join(r, Connection())
    readings: list[float] = []

    def source() -> Figures:
        readings.append(clock.seconds())
        return Figures(sessions=1, send_buffer_bytes=0)

    StatsPublisher(r, clock, source).startService()
    clock.pump([1.0] * 5)
    assert readings == []
