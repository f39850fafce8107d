"""Carrying out the router's actions: a Compute runs in a thread, and what follows from it after."""

from __future__ import annotations

from typing import Any

from autobahn.wamp import message as wamp
from twisted.internet import defer, task

from wsserver.core.actions import Close, CloseReason, Compute, Delay, Send
from wsserver.core.session import Session
from wsserver.delivery import carry_out


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
