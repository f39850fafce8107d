"""The one send buffer of every connection, with Twisted's StringTransport as the socket."""

from __future__ import annotations

import socket
from collections import Counter

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport

from wsserver.transports.admission import DISCONNECT, DROP, ConnectionLimits
from wsserver.tally import TALLY
from wsserver.transports.sendbuffer import CONTROL, EVENT, HOLD, HOLD_LIMIT, PUSH, REPLY, SendBuffer


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


# -- holding a read's writes ------------------------------------------------------------------------


class CountingTransport(StringTransport):
    """StringTransport that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


def test_during_a_read_frames_are_held_in_order_and_leave_in_one_write_when_it_is_done() -> None:
    transport = CountingTransport()
    buffer = SendBuffer(transport, limits=ConnectionLimits(), overflow=print, peer="p", holds=True)
    HOLD.begin()
    try:
        buffer.write(b"e1", EVENT)
        buffer.write_reply("r", lambda message: b"<" + message.encode() + b">")
        buffer.write(b"c", CONTROL)
        buffer.write(b"e2", EVENT)
        assert transport.value() == b"" and transport.writes == 0
    finally:
        HOLD.release()
    assert transport.value() == b"e1<r>ce2" and transport.writes == 1
    buffer.write(b"after")  # outside a read: straight out
    assert transport.value().endswith(b"after") and transport.writes == 2


def test_a_buffer_whose_writes_are_messages_of_their_own_is_never_held() -> None:
    """A long-poll session gets one message per write even when a WebSocket read publishes them all."""
    transport = CountingTransport()
    buffer = SendBuffer(transport, limits=ConnectionLimits(), overflow=print, peer="p")
    HOLD.begin()
    try:
        buffer.write(b"[36,1]", EVENT)
        buffer.write(b"[36,2]", EVENT)
        assert transport.value() == b"[36,1][36,2]" and transport.writes == 2
    finally:
        HOLD.release()
    assert transport.writes == 2


def test_a_buffer_holding_more_than_the_hold_limit_writes_out_and_twisteds_mark_still_pauses_it() -> None:
    buffer, transport, overflows = buffer_for(limit=1024)
    buffer.holds = True
    transport.producer = None  # StringTransport never pauses by itself: do as Twisted does past its mark
    original_write = transport.write
    transport.write = lambda data: (original_write(data), buffer.pauseProducing())  # type: ignore[method-assign]
    HOLD.begin()
    try:
        frame = b"x" * 1000
        for _ in range(HOLD_LIMIT // len(frame) + 1):
            buffer.write(frame, EVENT)
        assert len(transport.value()) > HOLD_LIMIT and buffer.held is None and buffer.paused
        buffer.write(b"y" * 600, EVENT)
        buffer.write(b"z" * 600, EVENT)  # over max_send_buffer: as without holding
        assert overflows == [1024]
    finally:
        HOLD.release()


def test_what_is_held_is_dropped_when_the_connection_is_refused_during_the_read() -> None:
    buffer, transport, _ = buffer_for()
    buffer.holds = True
    HOLD.begin()
    try:
        buffer.write(b"event", EVENT)
        buffer.discard()
        buffer.write(b"close", CONTROL)
    finally:
        HOLD.release()
    assert transport.value() == b"close"


def tcp_connection(reactor: MemoryReactor) -> tuple[tcp.Server, socket.socket]:
    """A Twisted TCP server connection over one end of a socket pair (the other end returned)."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    connection = tcp.Server(ours, Protocol(), ("127.0.0.1", 1), None, 1, reactor)  # type: ignore[arg-type]
    connection.connected = True
    return connection, theirs


def test_held_frames_go_straight_to_an_idle_socket_without_asking_the_reactor_to_watch_it() -> None:
    reactor = MemoryReactor()
    connection, client = tcp_connection(reactor)
    buffer = SendBuffer(connection, limits=ConnectionLimits(), overflow=print, peer="p", holds=True)
    HOLD.begin()
    try:
        buffer.write(b"one", EVENT)
        buffer.write(b"two", EVENT)
    finally:
        HOLD.release()
    assert client.recv(100) == b"onetwo"
    assert connection not in reactor.getWriters(), "no epoll change for a send that went whole"
    connection.socket.close(), client.close()


def test_what_the_socket_does_not_take_is_queued_behind_and_the_reactor_writes_it_later() -> None:
    reactor = MemoryReactor()
    connection, client = tcp_connection(reactor)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    connection.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    buffer = SendBuffer(connection, limits=ConnectionLimits(), overflow=print, peer="p", holds=True)
    frames = [bytes([n]) * 1000 for n in range(60)]
    HOLD.begin()
    try:
        for frame in frames:
            buffer.write(frame, EVENT)
    finally:
        HOLD.release()
    assert connection in reactor.getWriters(), "the rest waits in Twisted's buffer"
    received = b""
    while len(received) < 60_000:
        received += client.recv(65536)
        connection.doWrite()
    assert received == b"".join(frames)
    connection.socket.close(), client.close()
