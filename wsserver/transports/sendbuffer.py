"""
One bounded send buffer per connection, whatever the transport: what a client that does not read
may cost the server.

Theory of operation
-------------------
A connection writes every frame through its :class:`SendBuffer`, which is registered as the
streaming producer of the connection's TCP (or TLS) transport. Twisted pauses it when the
transport's own buffer passes its high-water mark (64 KiB) and resumes it once that buffer is empty
again. While flowing, a frame goes straight to the transport. While paused, the client is not
reading as fast as we write: frames wait here, in order, and on resume they go to the transport
until it pauses us again. What waits here is bounded by kind of frame:

========  ==================================================  ==========================================
kind      what                                                over ``max_send_buffer`` bytes waiting
========  ==================================================  ==========================================
PUSH      what others cause: an INVOCATION, an echo, a pong   ``overflow``: the connection closes it
EVENT     a published event (fan-out)                         dropped and counted (``--slow-consumer
                                                              drop``), else as PUSH
REPLY     the answer to the client's own request: RESULT,     never counted: paced (below)
          SUBSCRIBED and its retained events, ERROR, ...
CONTROL   the connection's own close frame or ping            never counted: one at a time
========  ==================================================  ==========================================

Pacing. "The client is not reading" and "the router just answered with a lot at once" look alike
to Twisted: a SUBSCRIBE with ``get_retained`` on a prefix, or a read full of CALLs to
``wamp.subscription.get_events``, writes megabytes to a client in one reactor turn, and one that
reads gets paused all the same. So a REPLY is never held against the limit: it waits, and while
any reply waits the buffer stops reading from the client (``transport.pauseProducing``), resuming
once the last one has left. A client that asks faster than it reads is thereby slowed to its own
reading pace, and the replies waiting are bounded by the answers to one read of its requests
(Twisted reads 64 KiB at a time): at most one CALL's RESULT or one SUBSCRIBE's retained events per
request in that read. A reply written through :meth:`SendBuffer.write_reply` waits as its message,
framed only when it leaves: retained events and kept events share their arguments with the
router's stores, so what waits costs a message object each, not a second copy of the bytes. A
client that never reads again is cut off by the ping timeout (our ping waits behind its replies,
so no pong comes), and holds only that much until then.

Holding a read's writes. Twisted's ``transport.write`` appends to the transport's buffer and asks
the reactor to watch the socket for writing; the reactor then sends once the turn is over and
stops watching again: per recipient, per event, a handful of Python calls, and per connection and
turn two epoll changes around one ``send()``. While a WebSocket read is handled (see
:data:`HOLD`: many PUBLISHes arrive in one read under load), a buffer that flows *holds* its
frames in a list instead, in order with everything else it writes; when the read is done, each
buffer that held anything writes them as one string: straight to the socket when the transport
has nothing queued (one ``send()``, no epoll change; only what the socket does not take goes
through ``transport.write``), else through ``transport.write``. A buffer holding more than
``HOLD_LIMIT`` bytes writes them out at once, so the transport's own mark still pauses it as
before; the memory held is bounded by one read's fan-out.

After an overflow the buffer forgets what waits (the memory is freed at once) and takes only
CONTROL frames, straight to the transport: the close frame goes out behind what the transport
already holds. So a connection holds at most the transport's mark plus ``max_send_buffer``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import tcp
from twisted.logger import Logger

from wsserver.tally import SLOW_CONSUMER, TALLY
from wsserver.transports.admission import DROP, ConnectionLimits

log = Logger()

#: Kinds of frames (see the module docstring).
PUSH, EVENT, REPLY, CONTROL = "push", "event", "reply", "control"
#: Shared by every buffer with nothing waiting; never appended to (see _wait).
NOTHING_WAITING: deque[tuple[Any, int]] = deque(maxlen=0)
#: What a buffer holds during a read before it writes out (see the module docstring): Twisted's mark.
HOLD_LIMIT = 64 * 1024


class Hold:
    """
    Whether writes are held (see the module docstring), and the buffers holding some. The code
    that handles a read calls :meth:`begin` before and :meth:`release` after (in ``finally``);
    a read handled inside another one (none today) is held with it.
    """

    __slots__ = ("depth", "holding")

    def __init__(self) -> None:
        self.depth = 0
        self.holding: list[SendBuffer] = []

    def begin(self) -> None:
        self.depth += 1

    def during(self, handle: Callable[..., None], *args: Any) -> None:
        """``handle(*args)`` (a read, or what remains of one) with writes held, released after."""
        self.begin()
        try:
            handle(*args)
        finally:
            self.release()

    def release(self) -> None:
        """The read is handled: every buffer that held frames writes them out."""
        self.depth -= 1
        if self.depth:
            return
        holding, self.holding = self.holding, []
        for buffer in holding:
            try:
                buffer.write_held()
            except Exception:  # one connection's fault must not keep the others' events back
                log.failure("writing the frames held for {peer}", peer=buffer.peer)


#: The process's hold: the reactor handles one read at a time.
HOLD = Hold()


class SendBuffer:
    """
    The send side of one connection. Register it with ``transport.registerProducer(buffer, True)``
    and :meth:`write` every frame through it; ``overflow(limit)`` is called once, when the client
    leaves more than ``limit`` bytes unread: close the connection then (write its close frame as
    CONTROL). ``dropped`` counts the events dropped for this client under the drop policy (the
    process's ``TALLY`` counts them too, and the overflows).
    """

    # An idle connection should cost little (thousands sit open): slots, and no deque until needed.
    __slots__ = ("transport", "limit", "drop_events", "overflow", "peer", "paused", "waiting", "counted",
                 "replies_waiting", "dropped", "_dropping", "_overflowed", "holds", "held", "held_bytes")

    def __init__(self, transport: Any, *, limits: ConnectionLimits, overflow: Callable[[int], None], peer: str,
                 holds: bool = False) -> None:
        """
        ``holds``: the transport carries a byte stream of whole frames, so what a read makes it
        write may be held and written as one string (see :class:`Hold`); a transport whose every
        ``write`` is a message of its own (a long-poll session: one message per response) must
        not be given joined frames.
        """
        self.transport = transport
        self.holds = holds
        self.limit = limits.max_send_buffer
        self.drop_events = limits.slow_consumer_policy == DROP
        self.overflow = overflow
        self.peer = peer
        self.paused = False
        #: Frames waiting for the client, with the bytes each counts against the limit (-1: a reply).
        #: A reply may wait as (frame it, message): see write_reply.
        self.waiting: deque[tuple[Any, int]] = NOTHING_WAITING
        self.counted = 0
        self.replies_waiting = 0
        self.dropped = 0
        self._dropping = False
        self._overflowed = False
        #: Frames held during a read (see Hold), or None.
        self.held: list[bytes] | None = None
        self.held_bytes = 0

    def write(self, frame: bytes, kind: str = PUSH) -> None:
        """Send ``frame`` (a whole frame) now, or as soon as the client reads; see the module docstring."""
        if not self.paused and not self.waiting and not self._overflowed:
            held = self.held
            if held is not None:
                held.append(frame)
                self.held_bytes += len(frame)
                if self.held_bytes > HOLD_LIMIT:
                    self.write_held()
            elif HOLD.depth and self.holds:
                self.held = [frame]
                self.held_bytes = len(frame)
                HOLD.holding.append(self)
            else:
                self.transport.write(frame)
        elif self._overflowed:
            if kind is CONTROL:
                self.transport.write(frame)
        elif kind is CONTROL:
            self._wait((frame, 0))
        elif kind is REPLY:
            self._wait_for_reply(frame)
        elif self.counted + len(frame) <= self.limit:
            self.counted += len(frame)
            self._wait((frame, len(frame)))
        elif kind is EVENT and self.drop_events:
            self.dropped += 1
            TALLY.dropped_events[SLOW_CONSUMER] += 1
            if not self._dropping:
                self._dropping = True
                log.info("{peer} is not reading: dropping its events (over {limit} bytes buffered)",
                         peer=self.peer, limit=self.limit)
        else:
            log.info("{peer} is not reading: disconnecting it (over {limit} bytes buffered)",
                     peer=self.peer, limit=self.limit)
            self.discard()
            TALLY.disconnects[SLOW_CONSUMER] += 1
            self.overflow(self.limit)

    def write_reply(self, message: Any, frame: Callable[[Any], bytes]) -> None:
        """
        Send a REPLY: ``frame(message)`` now, or, while the client does not keep up, the message
        waits unframed (it mostly holds what the router keeps anyway) and is framed when it leaves.
        """
        if not self.paused and not self.waiting and not self._overflowed:
            self.write(frame(message), REPLY)
        elif not self._overflowed:
            self._wait_for_reply((frame, message))

    def write_encoded(self, encoded: tuple[Any, str], frame: Callable[[Any], bytes]) -> None:
        """Write what ``wampsession.encoded`` gave: a frame by its kind, or a REPLY's message (framed by ``frame``)."""
        data, kind = encoded
        if kind is REPLY:
            self.write_reply(data, frame)
        else:
            self.write(data, kind)

    def write_held(self) -> None:
        """Write what is held as one string (see the module docstring); the buffer holds no more this read."""
        held, self.held = self.held, None
        if not held:
            return
        data = held[0] if len(held) == 1 else b"".join(held)
        transport = self.transport
        # Straight to the socket only when nothing is queued before it: TCP or Unix, not TLS, open.
        if (isinstance(transport, tcp.Server) and transport.connected and not transport.disconnecting
                and not transport._writeDisconnected and not transport._tempDataLen
                and transport.offset == len(transport.dataBuffer) and not transport.TLS):
            sent = transport.writeSomeData(data)
            if type(sent) is not int:  # an error: transport.write queues it, and the reactor sees the error
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        transport.write(data)  # may pause us

    def _wait_for_reply(self, entry: Any) -> None:
        self._wait((entry, -1))
        self.replies_waiting += 1
        if self.replies_waiting == 1:
            self.transport.pauseProducing()  # no more requests until the replies are out

    def _wait(self, entry: tuple[Any, int]) -> None:
        if self.waiting is NOTHING_WAITING:
            self.waiting = deque()
        self.waiting.append(entry)

    def discard(self) -> None:
        """Forget what waits: the connection is being closed. From now on only CONTROL frames go out, at once."""
        self._overflowed = True
        self.held = None
        self.waiting = NOTHING_WAITING
        self.counted = 0
        self.replies_waiting = 0

    # -- IPushProducer: Twisted's signals from the transport ------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        waiting = self.waiting
        while waiting and not self.paused:
            frame, counted = waiting.popleft()
            if counted < 0:
                self.replies_waiting -= 1
                if not self.replies_waiting:
                    self.transport.resumeProducing()
                if type(frame) is tuple:
                    frame = frame[0](frame[1])
            else:
                self.counted -= counted
            self.transport.write(frame)  # may pause us again
        if not waiting:
            self.waiting = NOTHING_WAITING
        if not waiting and self._dropping:
            self._dropping = False
            log.info("{peer} reads again; {count} events were dropped for it so far",
                     peer=self.peer, count=self.dropped)

    def stopProducing(self) -> None:
        self.paused = True
        self.discard()


class ConnectionInfo:
    """
    What a connection tells the core about itself (``wsserver.core.session.TransportInfo``): its
    ``kind`` (e.g. ``websocket/json``) and its send buffer's figures, read when asked.
    """

    __slots__ = ("kind", "send_buffer")

    def __init__(self, kind: str, send_buffer: SendBuffer) -> None:
        self.kind = kind
        self.send_buffer = send_buffer

    def buffered_bytes(self) -> int:
        return self.send_buffer.counted
