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

After an overflow the buffer forgets what waits (the memory is freed at once) and takes only
CONTROL frames, straight to the transport: the close frame goes out behind what the transport
already holds. So a connection holds at most the transport's mark plus ``max_send_buffer``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

from wsserver.tally import SLOW_CONSUMER, TALLY
from wsserver.transports.admission import DROP, ConnectionLimits

log = Logger()

#: Kinds of frames (see the module docstring).
PUSH, EVENT, REPLY, CONTROL = "push", "event", "reply", "control"
#: Shared by every buffer with nothing waiting; never appended to (see _wait).
NOTHING_WAITING: deque[tuple[Any, int]] = deque(maxlen=0)


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
                 "replies_waiting", "dropped", "_dropping", "_overflowed")

    def __init__(self, transport: Any, *, limits: ConnectionLimits, overflow: Callable[[int], None], peer: str) -> None:
        self.transport = transport
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

    def write(self, frame: bytes, kind: str = PUSH) -> None:
        """Send ``frame`` (a whole frame) now, or as soon as the client reads; see the module docstring."""
        if not self.paused and not self.waiting and not self._overflowed:
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
            self.transport.write(frame(message))
        elif not self._overflowed:
            self._wait_for_reply((frame, message))

    def write_encoded(self, encoded: tuple[Any, str], frame: Callable[[Any], bytes]) -> None:
        """Write what ``wampsession.encoded`` gave: a frame by its kind, or a REPLY's message (framed by ``frame``)."""
        data, kind = encoded
        if kind is REPLY:
            self.write_reply(data, frame)
        else:
            self.write(data, kind)

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
