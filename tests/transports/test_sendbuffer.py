"""The one send buffer of every connection, with Twisted's StringTransport as the socket."""

from __future__ import annotations

from collections import Counter

from twisted.internet.testing import StringTransport

from wsserver.transports.admission import DISCONNECT, DROP, ConnectionLimits
from wsserver.tally import TALLY
from wsserver.transports.sendbuffer import CONTROL, EVENT, PUSH, REPLY, SendBuffer


def buffer_for(policy: str = DISCONNECT, limit: int = 1024) -> tuple[SendBuffer, StringTransport, list[int]]:
    transport = StringTransport()
    overflows: list[int] = []
    limits = ConnectionLimits(max_send_buffer=limit, slow_consumer_policy=policy)
    buffer = SendBuffer(transport, limits=limits, overflow=overflows.append, peer="tcp4:127.0.0.1:1")
    transport.registerProducer(buffer, True)
    return buffer, transport, overflows


def test_while_the_client_reads_frames_go_straight_out() -> None:
    buffer, transport, overflows = buffer_for()
    for n in range(10):
        buffer.write(b"x" * 1000, PUSH)
    assert len(transport.value()) == 10_000 and overflows == []


def test_while_paused_frames_wait_in_order_and_leave_on_resume() -> None:
    buffer, transport, _ = buffer_for()
    buffer.write(b"a")
    buffer.pauseProducing()  # what Twisted does when its buffer passes the mark
    buffer.write(b"b", EVENT)
    buffer.write(b"c", CONTROL)
    assert transport.value() == b"a"
    buffer.resumeProducing()
    assert transport.value() == b"abc" and buffer.counted == 0


def test_past_the_limit_a_client_that_does_not_read_overflows_once_and_waiting_frames_are_freed() -> None:
    buffer, transport, overflows = buffer_for(limit=1024)
    buffer.pauseProducing()
    for _ in range(5):
        buffer.write(b"x" * 300, PUSH)
    assert overflows == [1024]
    assert not buffer.waiting and buffer.counted == 0
    buffer.write(b"close", CONTROL)  # the close frame goes straight out, nothing else does
    buffer.write(b"more", PUSH)
    assert transport.value() == b"close"


def test_with_drop_policy_events_are_dropped_and_counted_other_frames_overflow() -> None:
    buffer, transport, overflows = buffer_for(DROP, limit=1024)
    buffer.pauseProducing()
    for _ in range(10):
        buffer.write(b"e" * 300, EVENT)
    assert buffer.dropped == 7 and overflows == []
    buffer.resumeProducing()
    assert transport.value() == b"e" * 900
    buffer.pauseProducing()
    buffer.write(b"p" * 2000, PUSH)
    assert overflows == [1024]


def test_resume_sends_only_until_twisted_pauses_again() -> None:
    buffer, transport, _ = buffer_for()
    buffer.pauseProducing()
    buffer.write(b"1")
    buffer.write(b"2")
    original_write = transport.write

    def write_then_pause(data: bytes) -> None:
        original_write(data)
        buffer.pauseProducing()  # the transport's buffer is full again

    transport.write = write_then_pause  # type: ignore[method-assign]
    buffer.resumeProducing()
    assert transport.value() == b"1" and len(buffer.waiting) == 1


def test_replies_are_paced_not_held_against_the_limit_and_reading_stops_until_they_are_out() -> None:
    buffer, transport, overflows = buffer_for(limit=1024)
    buffer.pauseProducing()
    for _ in range(10):
        buffer.write(b"r" * 1000, REPLY)  # 10x the limit: a big answer at once
    assert overflows == [] and transport.producerState == "paused"  # the client's requests wait
    buffer.write(b"e" * 1000, EVENT)  # behind the replies, in order
    buffer.resumeProducing()
    assert transport.value() == b"r" * 10_000 + b"e" * 1000
    assert transport.producerState == "producing"


def test_reading_resumes_only_when_the_last_reply_is_out() -> None:
    buffer, transport, _ = buffer_for()
    buffer.pauseProducing()
    buffer.write(b"1", REPLY)
    buffer.write(b"2", REPLY)
    original_write = transport.write

    def write_then_pause(data: bytes) -> None:
        original_write(data)
        buffer.pauseProducing()

    transport.write = write_then_pause  # type: ignore[method-assign]
    buffer.resumeProducing()
    assert transport.value() == b"1" and transport.producerState == "paused"
    buffer.resumeProducing()
    assert transport.value() == b"12" and transport.producerState == "producing"


def test_a_reply_waits_as_its_message_and_is_framed_as_it_leaves() -> None:
    buffer, transport, _ = buffer_for()
    framed: list[str] = []

    def frame(message: str) -> bytes:
        framed.append(message)
        return message.encode()

    buffer.write_reply("now", frame)
    buffer.pauseProducing()
    buffer.write_reply("later", frame)
    assert framed == ["now"] and transport.producerState == "paused"
    buffer.resumeProducing()
    assert framed == ["now", "later"] and transport.value() == b"nowlater"


def test_drops_and_overflows_are_counted_for_the_process_beyond_the_connection() -> None:
    before = (Counter(TALLY.dropped_events), Counter(TALLY.disconnects))
    dropping, _, _ = buffer_for(DROP, limit=1024)
    dropping.pauseProducing()
    for _ in range(5):
        dropping.write(b"e" * 600, EVENT)  # the first fits, four are dropped
    overflowing, _, overflows = buffer_for(DISCONNECT, limit=1024)
    overflowing.pauseProducing()
    overflowing.write(b"p" * 2000, PUSH)
    assert dropping.dropped == 4 and overflows == [1024]
    assert Counter(TALLY.dropped_events) - before[0] == Counter(slow_consumer=4)
    assert Counter(TALLY.disconnects) - before[1] == Counter(slow_consumer=1)
