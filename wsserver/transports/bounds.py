"""
What every Autobahn WebSocket endpoint of the site (``/ws``, ``/echo``, ``/stream``) bounds below
its messages; and a refused opening handshake says why in its body.

Theory of operation
-------------------
:class:`BoundedWebSocket` is mixed in before Autobahn's server protocol. It gives the connection
its one :class:`~wsserver.transports.sendbuffer.SendBuffer` and sends every frame Autobahn writes
after the handshake through it, by opcode: a pong or an echoed message counts against
``max_send_buffer`` (a client that floods pings or echoes and never reads is closed 1008 once that
is full), a close frame or our own ping does not. On the way in it counts frames as Autobahn begins
each one: more than ``max_fragments`` frames in one message close the connection with 1009 (the
message is too big to process, as a message over ``--max-message-size`` is), more than
``max_frame_rate`` frames a second (a token bucket of ``frame_burst``) with 1008. Either way the
close frame goes out at once (what waited for the client is dropped) and nothing the client sends
afterwards is processed, only read and thrown away until the client closes or
:data:`REFUSED_CLOSE_TIMEOUT` passes: an empty frame costs Autobahn a copy of its whole input
buffer, so a flood of them would otherwise hold the reactor. The same wait follows the close of a
client that does not read. Autobahn's own close handshake timeout (1 s) is too short there: such a
client's socket buffers are full, so the close frame sits behind megabytes of pongs or echoes in
the server's kernel until the client reads, and dropping the connection discards it (the client
then sees a reset, not why). Bytes already in the client's socket survive the reset; those still in
ours do not.

A connection hands on at most :data:`READ_BUDGET` bytes of messages in one turn of the reactor,
counted as Autobahn hands them on (inflated, when compressed): past that it stops reading and goes
on with what it has buffered in a later turn. Without compression TCP spreads a big message over
many reads anyway; with it, one 64 KiB read can carry 64 messages that inflate to a megabyte each.

Autobahn copies its ~30 protocol options from the factory onto every connection as it is made,
and pretty-prints them for a debug line whether or not debug is logged: that was a third of what
opening a session cost (bench/sessions.py), and 29 entries in every idle connection's ``__dict__``.
Here a connection reads them from its factory (:class:`FactoryOption`; the options are set once,
when the factory is built), and copies onto itself only the few read for every frame. Autobahn
also colours the names of its methods (``hltype``, ``hlval``) for debug lines on every read, even
when nothing logs them: :func:`defer_debug_labels` makes those labels only when a line is written.
"""

from __future__ import annotations

import functools
from http import HTTPStatus
from typing import Any

import autobahn.twisted.websocket
import autobahn.websocket.protocol
from autobahn.websocket.protocol import WebSocketProtocol, WebSocketServerProtocol
from twisted.logger import Logger

from wsserver.core.limits import TokenBucket
from wsserver.tally import FRAME_RATE, PING_TIMEOUT, TALLY, TOO_MANY_FRAGMENTS
from wsserver.transports.admission import ConnectionLimits
from wsserver.transports.sendbuffer import CONTROL, HOLD, PUSH, SendBuffer

log = Logger()

STATE_OPEN, STATE_CLOSING, STATE_CLOSED = (WebSocketProtocol.STATE_OPEN, WebSocketProtocol.STATE_CLOSING,
                                          WebSocketProtocol.STATE_CLOSED)
#: What each opcode is to the send buffer; the rest (data frames, pongs) is PUSH.
KIND_BY_OPCODE = {0x8: CONTROL, 0x9: CONTROL}
#: How long a connection closed for what its client did may take to read its close frame (behind
#: what its socket buffers already hold), reading and discarding meanwhile, before it is dropped.
REFUSED_CLOSE_TIMEOUT = 10.0
#: Message bytes (as handed on: inflated, if compressed) one connection may process in one turn of
#: the reactor. Past them it stops reading and finishes what it has buffered in a later turn, after
#: the other connections' turns: 64 KiB of compressed messages read at once may inflate to 64 MiB
#: (within --max-message-size each), and parsing all of it in one go would hold everyone up.
READ_BUDGET = 1024 * 1024
#: A close reason must fit in a control frame (125 bytes with the code).
MAX_CLOSE_REASON = 120


class DebugLabel(functools.partial):  # type: ignore[type-arg]
    """
    Autobahn's label ``label(value)`` for a debug line, made when the line is formatted, if ever
    (a ``partial``: made in C, as cheap as a tuple).
    """

    __slots__ = ()

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __str__(self) -> str:
        return str(self())

    __repr__ = __str__


def defer_debug_labels(*modules: Any) -> None:
    """
    In Autobahn's ``modules``, where ``hltype`` and ``hlval`` only label arguments of debug lines,
    label lazily: txaio drops debug lines unless asked for them, after the arguments were made.
    """
    for module in modules:
        for name in ("hltype", "hlval"):
            label = getattr(module, name, None)
            if label is not None and not isinstance(label, functools.partial):  # not twice
                setattr(module, name, functools.partial(DebugLabel, label))


defer_debug_labels(autobahn.websocket.protocol, autobahn.twisted.websocket)


class FactoryOption:
    """
    An Autobahn protocol option, read from the connection's factory. Not a data descriptor: when
    Autobahn sets the option on one connection, that connection's own value wins.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, connection: Any, owner: type | None = None) -> Any:
        if connection is None:
            return self
        return getattr(connection.factory, self.name)


#: The options Autobahn reads for every frame or every read: copied onto each connection, as
#: Autobahn does for all of them, so that the data path pays no descriptor call. (Not the frame
#: size limit: read once per frame only when the message limit, the same number, did not refuse.)
PER_FRAME_OPTIONS = (
    "logOctets", "logFrames", "utf8validateIncoming", "applyMask", "maxMessagePayloadSize",
    "autoPingRestartOnAnyTraffic",
)


class _Turn:
    """What the connection being read has handed on in this turn (the reactor reads one at a time)."""

    __slots__ = ("spent",)

    def __init__(self) -> None:
        self.spent = 0


TURN = _Turn()


class BoundedWebSocket:
    """
    Mix in before an Autobahn ``WebSocketServerProtocol`` whose factory has ``limits``
    (:class:`ConnectionLimits`) and ``clock`` (an ``IReactorTime``). Write frames through
    ``send_buffer``; its overflow closes the connection with 1008.
    """

    factory: Any
    transport: Any
    peer: str
    state: int
    current_frame: Any
    data: bytes
    send_buffer: SendBuffer
    _fragments = 0
    _frames: TokenBucket | None = None
    #: Refused: what the client sends is thrown away.
    _deaf = False
    closeHandshakeTimeout: float
    #: What Autobahn copies from the factory per connection: nothing (see FactoryOption).
    CONFIG_ATTRS = ()

    def connectionMade(self) -> None:
        factory = self.factory
        for name in PER_FRAME_OPTIONS:
            setattr(self, name, getattr(factory, name))
        super().connectionMade()  # type: ignore[misc]
        limits: ConnectionLimits = self.factory.limits
        # Over twisted.web, the HTTP channel is still registered as the transport's producer.
        self.transport.unregisterProducer()
        self.send_buffer = SendBuffer(self.transport, limits=limits, overflow=self._send_buffer_overflowed,
                                      peer=self.peer, holds=True)
        self.transport.registerProducer(self.send_buffer, True)
        if limits.max_frame_rate:
            self._frames = TokenBucket(limits.max_frame_rate, max(1, limits.frame_burst), self.factory.clock.seconds())

    def _dataReceived(self, data: bytes) -> None:
        if not self._deaf:
            super()._dataReceived(data)  # type: ignore[misc]

    def consumeData(self) -> None:
        # Autobahn's loop over the buffered frames, but one that stops past READ_BUDGET.
        if self.state != STATE_OPEN and self.state != STATE_CLOSING:
            super().consumeData()  # type: ignore[misc]
            return
        TURN.spent = 0
        while self.processData() and self.state != STATE_CLOSED:  # type: ignore[attr-defined]
            if TURN.spent > READ_BUDGET:
                self.transport.pauseProducing()
                self.factory.clock.callLater(0, self._consume_later)
                return

    def _consume_later(self) -> None:
        """Go on with what was buffered when the budget ran out, and read again (unless replies wait: sendbuffer.py)."""
        if self.state != STATE_OPEN and self.state != STATE_CLOSING or self._deaf:
            return
        if not self.send_buffer.replies_waiting:
            self.transport.resumeProducing()
        HOLD.during(self.consumeData)

    def onMessageFrameData(self, payload: bytes) -> None:
        TURN.spent += len(payload)
        super().onMessageFrameData(payload)  # type: ignore[misc]

    def sendData(self, data: bytes, sync: bool = False, chopsize: int | None = None) -> None:
        if (self.state == STATE_OPEN or self.state == STATE_CLOSING) and not sync and not chopsize:
            self.send_buffer.write(data, KIND_BY_OPCODE.get(data[0] & 0x0F, PUSH))
        else:
            super().sendData(data, sync, chopsize)  # type: ignore[misc]

    def sendHttpErrorResponse(self, code: int, reason: str, responseHeaders: Any = None) -> None:
        # Autobahn sends a refused handshake's reason only as the status line's phrase, which a
        # browser's console does not show: the reason goes in a text body too.
        # The status line keeps the standard phrase (a reason may be long, or not ASCII).
        body = reason.encode("utf-8") + b"\n"
        headers = [*(responseHeaders or ()), ("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(body))), ("Cache-Control", "no-store")]
        super().sendHttpErrorResponse(code, HTTPStatus(code).phrase, headers)  # type: ignore[misc]
        self.sendData(body)

    def _send_buffer_overflowed(self, limit: int) -> None:
        # The close frame goes out behind what the transport holds; Autobahn drops the connection
        # when the close handshake times out.
        self.closeHandshakeTimeout = REFUSED_CLOSE_TIMEOUT
        self.sendCloseFrame(  # type: ignore[attr-defined]
            WebSocketProtocol.CLOSE_STATUS_CODE_POLICY_VIOLATION,
            truncate(f"not reading: more than {limit} bytes unread"),
        )

    def onAutoPingTimeout(self) -> None:
        TALLY.disconnects[PING_TIMEOUT] += 1
        super().onAutoPingTimeout()  # type: ignore[misc]

    def onFrameBegin(self) -> None:
        limits: ConnectionLimits = self.factory.limits
        opcode = self.current_frame.opcode
        refusal = None
        if self._frames is not None and not self._frames.take(self.factory.clock.seconds()):
            refusal = (WebSocketProtocol.CLOSE_STATUS_CODE_POLICY_VIOLATION,
                       f"more than {limits.max_frame_rate:g} frames a second", FRAME_RATE)
        elif opcode <= 0x2 and limits.max_fragments:
            self._fragments = self._fragments + 1 if opcode == 0x0 else 1
            if self._fragments > limits.max_fragments:
                refusal = (WebSocketProtocol.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG,
                           f"a message in more than {limits.max_fragments} fragments", TOO_MANY_FRAGMENTS)
        super().onFrameBegin()  # type: ignore[misc]
        if refusal is not None:
            code, reason, counted_as = refusal
            TALLY.disconnects[counted_as] += 1
            log.info("closing WebSocket from {peer} ({code}): {reason}", peer=self.peer, code=code, reason=reason)
            self._deaf = True
            self.closeHandshakeTimeout = REFUSED_CLOSE_TIMEOUT
            self.data = b""
            self.send_buffer.discard()
            self._fail_connection(code, reason)  # type: ignore[attr-defined]


def truncate(text: str) -> bytes:
    """A close reason as UTF-8 that fits a control frame, cut at a character boundary."""
    encoded = text.encode("utf-8")
    if len(encoded) <= MAX_CLOSE_REASON:
        return encoded
    return encoded[: MAX_CLOSE_REASON - 3].decode("utf-8", "ignore").encode("utf-8") + b"..."


for _option in WebSocketServerProtocol.CONFIG_ATTRS:
    setattr(BoundedWebSocket, _option, FactoryOption(_option))
