"""Carrying out the router's actions: a Compute runs in a thread, and what follows from it after."""

from __future__ import annotations

from collections import Counter
from typing import Any

from autobahn.wamp import message as wamp
from twisted.internet import defer, task

from wsserver.core.actions import Close, CloseReason, Compute, Delay, Send
from wsserver.core.session import Session
from wsserver.delivery import carry_out
from wsserver.tally import TALLY


class Written:
    """A Peer that keeps what it is given."""

    wire_format = "list"

    def __init__(self) -> None:
        self.received: list[Any] = []

    def encode(self, message: wamp.Message) -> Any:
        return message.marshal()

    def write_encoded(self, data: Any) -> None:
        self.received.append(data)

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        self.received.append(("close", reason))


def test_a_compute_runs_in_a_thread_then_its_actions_with_their_delay() -> None:
    peer, clock = Written(), task.Clock()
    session: Session[Any] = Session(peer)
    running: list[defer.Deferred[Any]] = []

    def in_thread(work: Any) -> defer.Deferred[Any]:
        running.append(defer.Deferred())
        running[-1].work = work  # type: ignore[attr-defined]
        return running[-1]

    abort = wamp.Abort("wamp.error.not_authorized")
    then = lambda proven: [Delay(0.5, [Send(abort, (session,)), Close(session, CloseReason.NORMAL, "no")])]  # noqa: E731
    carry_out([Compute(lambda: False, then)], clock.callLater, in_thread)
    assert peer.received == [] and len(running) == 1, "nothing happens until the thread is done"
    running[0].callback(running[0].work())  # type: ignore[attr-defined]
    assert peer.received == []
    clock.advance(0.5)
    assert peer.received == [abort.marshal(), ("close", CloseReason.NORMAL)]


class Kind(Written):
    """A Peer of a named transport, with a wire format of its own choosing."""

    def __init__(self, transport_kind: str, wire_format: str = "list") -> None:
        super().__init__()
        self.transport_kind = transport_kind
        self.wire_format = wire_format


def sessions_of(*peers: Any) -> tuple[Session[Any], ...]:
    return tuple(Session(peer) for peer in peers)


def test_deliveries_are_counted_by_transport_once_per_event_and_its_recipients() -> None:
    before = Counter(TALLY.deliveries)
    websockets = sessions_of(Kind("websocket", "json"), Kind("websocket", "msgpack"), Kind("websocket", "json"))
    mixed = sessions_of(Kind("websocket"), Kind("sse", "sse"), Kind("longpoll", "lp"), Kind("sse", "sse"))
    event = wamp.Event(1, 2, args=[3])
    carry_out([
        Send(event, websockets),                      # one transport, two wire formats: one addition
        Send(event, mixed),                           # transports mixed: counted one by one
        Send(event, sessions_of(Kind("stream"))),     # one recipient
        Send(event, sessions_of(Written())),          # a peer that names no transport
        Send(wamp.Published(1, 2), sessions_of(Kind("websocket"))),  # not an EVENT
    ])
    assert all(len(peer.received) == 1 for peer in [s.peer for s in websockets + mixed])
    assert Counter(TALLY.deliveries) - before == Counter(websocket=4, sse=2, longpoll=1, stream=1, other=1)


def test_the_routers_closes_are_counted_by_reason() -> None:
    before = Counter(TALLY.disconnects)
    closed = sessions_of(Written(), Written(), Written())
    carry_out([Close(closed[0], CloseReason.PROTOCOL_VIOLATION, "bad"), Close(closed[1], CloseReason.NORMAL, "bye"),
               Close(closed[2], CloseReason.GOING_AWAY, "shutdown")])
    assert Counter(TALLY.disconnects) - before == Counter(protocol_violation=1, normal=1, going_away=1)


class Encodes(Kind):
    """A Peer that tells what it encoded, and counts how often its wire format was encoded."""

    encodings: Counter[object] = Counter()

    def encode(self, message: wamp.Message) -> Any:
        Encodes.encodings[self.wire_format] += 1
        return (self.wire_format, message.marshal())


def test_an_event_is_encoded_once_per_wire_format_whichever_object_holds_it() -> None:
    # Equal formats in distinct objects (the dict decides) and one object shared (the identity test), interleaved.
    json, msgpack = ("websocket", "json"), ("websocket", "msgpack")
    formats = [json, msgpack, ("websocket", "json"), json, json, ("websocket", "msgpack"), msgpack, json]
    recipients = sessions_of(*(Encodes("websocket", wire_format) for wire_format in formats))  # type: ignore[arg-type]
    Encodes.encodings.clear()
    event = wamp.Event(1, 2, args=[3])
    carry_out([Send(event, recipients)])
    assert Encodes.encodings == Counter({json: 1, msgpack: 1})
    assert [session.peer.received for session in recipients] == [[(f, event.marshal())] for f in formats]
