"""The WAMP session every transport composes: HELLO timer, decoding, goodbye, teardown (Clock, no reactor)."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import pytest
from autobahn.wamp import message as wamp
from autobahn.wamp.serializer import JsonObjectSerializer
from twisted.internet.task import Clock

from wsserver.core.router import CloseReason, Router
from wsserver.transports.admission import ConnectionLimits
from wsserver.transports.sendbuffer import EVENT, PUSH, REPLY
from wsserver.core.broker import PositionedEvent
from wsserver.core.eventstore import Position
from wsserver.tally import TALLY
from wsserver.transports.wampsession import WampSession, send_kind

HELLO = json.dumps([1, "realm1", {"roles": {"subscriber": {}}}]).encode()


class Wire:
    """A Peer that keeps what it is sent, and how the session asked to close it."""

    wire_format = "test"

    def __init__(self) -> None:
        self.sent: list[wamp.Message] = []
        self.closed: list[object] = []

    def encode(self, message: wamp.Message) -> wamp.Message:
        return message

    def write_encoded(self, message: wamp.Message) -> None:
        self.sent.append(message)

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        self.closed.append(reason)


def session_for(wire: Wire, clock: Clock) -> WampSession:
    router: Router[Any] = Router(["realm1"], itertools.count(1).__next__)
    return WampSession(wire, router=router, clock=clock, limits=ConnectionLimits(hello_timeout=10), name="test",
                       close_for_silence=wire.closed.append, close_for_internal_error=lambda: wire.closed.append("error"))


def test_a_connection_without_hello_is_closed_for_silence_after_the_timeout() -> None:
    wire, clock = Wire(), Clock()
    session_for(wire, clock).start()
    clock.advance(10)
    assert wire.closed == ["no WAMP HELLO within 10 s"]


def test_hello_stops_the_timer_and_goodbye_is_said_once_there_is_a_session() -> None:
    wire, clock = Wire(), Clock()
    session = session_for(wire, clock)
    session.start()
    session.message_received(HELLO, False, JsonObjectSerializer())
    assert isinstance(wire.sent[0], wamp.Welcome)
    clock.advance(10)
    assert wire.closed == []
    assert session.say_goodbye() is True
    assert type(wire.sent[-1]) is wamp.Goodbye
    session.end()
    assert session.say_goodbye() is False and clock.getDelayedCalls() == []


def test_bytes_that_do_not_unserialize_are_a_violation_answered_with_abort() -> None:
    wire, clock = Wire(), Clock()
    session = session_for(wire, clock)
    session.start()
    session.message_received(b"[1, not json", False, JsonObjectSerializer())
    assert type(wire.sent[0]) is wamp.Abort and wire.closed == [CloseReason.PROTOCOL_VIOLATION]


def test_a_violation_is_returned_to_a_transport_that_can_answer_the_request_itself() -> None:
    wire, clock = Wire(), Clock()
    session = session_for(wire, clock)
    session.start()
    assert session.message_received(HELLO, False, JsonObjectSerializer()) is None
    assert session.message_received(b'"no list"', False, JsonObjectSerializer()) == (
        "a WAMP message must be a non-empty list, not str 'no list'")
    assert type(wire.sent[-1]) is wamp.Abort and wire.closed == [CloseReason.PROTOCOL_VIOLATION]


def test_a_violation_the_transport_finds_aborts_like_one_the_session_finds() -> None:
    wire, clock = Wire(), Clock()
    session = session_for(wire, clock)
    session.start()
    assert session.violation("an empty batch") == "an empty batch"
    assert type(wire.sent[0]) is wamp.Abort and wire.sent[0].message == "an empty batch"
    assert wire.closed == [CloseReason.PROTOCOL_VIOLATION]
    clock.advance(10)  # the HELLO timer stopped with it
    assert wire.closed == [CloseReason.PROTOCOL_VIOLATION]


def test_send_kinds_answers_are_paced_events_droppable_the_unasked_pushed() -> None:
    assert send_kind(wamp.Event(1, 2, args=[1])) == EVENT
    assert send_kind(wamp.Event(1, 2, args=[1], retained=True)) == REPLY
    positioned = PositionedEvent(1, 2, args=[1])  # an EVENT of a topic with history
    positioned.position = Position("epoch", 1)
    assert send_kind(positioned) == EVENT
    assert send_kind(wamp.Result(1, args=[1])) == REPLY
    assert send_kind(wamp.Subscribed(1, 2)) == REPLY
    assert send_kind(wamp.Invocation(1, 2)) == PUSH
    assert send_kind(wamp.Goodbye()) == PUSH


def test_silence_and_errors_of_ours_are_counted_and_publications_timed_to_their_last_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before, observed = Counter(TALLY.disconnects), []
    monkeypatch.setattr(TALLY, "observe_publication", observed.append)
    monkeypatch.setattr(TALLY, "clock", iter([1.0, 1.5, 2.0, 2.25]).__next__)
    silent, clock = Wire(), Clock()
    session_for(silent, clock).start()
    clock.advance(10)
    subscriber, publisher = Wire(), Wire()
    router: Router[Any] = Router(["realm1"], itertools.count(1).__next__)
    sessions = [WampSession(wire, router=router, clock=clock, limits=ConnectionLimits(), name="test",
                            close_for_silence=wire.closed.append,
                            close_for_internal_error=lambda: subscriber.closed.append("error"))
                for wire in (subscriber, publisher)]
    for session, subscribe in zip(sessions, (True, False)):
        session.start()
        session.message_received(HELLO, False, JsonObjectSerializer())
        if subscribe:
            session.message_received(b'[32, 1, {}, "com.example.t"]', False, JsonObjectSerializer())
    sessions[1].message_received(b'[16, 1, {}, "com.example.t", [1]]', False, JsonObjectSerializer())  # 1.0 -> 1.5
    sessions[1].message_received(b'[16, 2, {}, "com.example.nobody", [2]]', False, JsonObjectSerializer())  # none
    assert isinstance(subscriber.sent[-1], wamp.Event) and observed == [0.5]
    monkeypatch.setattr(router, "receive", lambda *_: 1 / 0)
    sessions[0].message_received(b'[34, 2, 1]', False, JsonObjectSerializer())
    assert subscriber.closed == ["error"]
    assert Counter(TALLY.disconnects) - before == Counter(hello_timeout=1, internal_error=1)


@pytest.mark.parametrize("payload", [
    b'[16,1,{},"com.example.a",[1,"\xc3\xa9"]]',  # UTF-8
    b'[16,1,{},"a",["\\ud800"]]',  # an escaped lone surrogate: JSON allows it
    b'[16,1,{},"a",["\xed\xa0\x80"]]',  # an encoded lone surrogate: json.loads passes it (surrogatepass)
    b'[\x00' + '1]'.encode("utf-16-be"),  # not "[" then a non-zero byte: json.loads' own encoding detection
    '[1]'.encode("utf-16-le"),
    b' [1]',
    b'[1',
    b'[\xff]',
    b'[]',
])
def test_json_unserializes_as_json_loads_does(payload: bytes) -> None:
    from wsserver.core.decoding import ProtocolViolation
    from wsserver.transports.wampsession import unserialize

    try:
        expected: object = [json.loads(payload)]
    except ValueError as error:
        expected = type(error)
    try:
        got: object = unserialize(JsonObjectSerializer(), payload, False)
    except ProtocolViolation as violation:
        got = type(violation.__cause__)
    assert got == expected
