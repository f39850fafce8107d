"""
One WAMP session over a connection, whatever its framing: what every WAMP transport shares.

Theory of operation
-------------------
A transport composes, for each connection, a :class:`~wsserver.transports.sendbuffer.SendBuffer`
(the bytes that wait for the client) and a :class:`WampSession` (router, clock, limits, the HELLO
timer); it is itself the router's :class:`~wsserver.delivery.Peer`, which says how bytes leave:
``encode`` frames a message for its wire, ``write_encoded`` writes the frame through its send
buffer with the kind :func:`send_kind` gives, ``close_transport`` closes. So transports differ only
in framing and in how they close. The transport calls:

- :meth:`WampSession.start` once its own handshake is done: the core attaches a session, and the
  HELLO timer starts (a connection that never says HELLO holds a slot for nothing);
- :meth:`WampSession.message_received` for each complete message, with the object serializer of
  the session's wire format;
- :meth:`WampSession.end` when the connection is gone, however it went;
- :meth:`WampSession.say_goodbye` on shutdown.

The first message stops the HELLO timer: it is a HELLO, or a violation that ends the connection.
When the router answers a HELLO with a CHALLENGE, the timer runs again until the AUTHENTICATE.
A message that cannot be decoded goes to the router as a violation (ABORT, then close); an error
of ours while handling one costs that connection only, never the server.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from autobahn.wamp import message as wamp
from autobahn.wamp.serializer import JsonObjectSerializer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from wsserver.core.decoding import ProtocolViolation, PublishRequest, decode
from wsserver.core.router import Router
from wsserver.core.session import Session, State, TransportInfo
from wsserver.delivery import Peer, carry_out, carry_out_publication
from wsserver.tally import HELLO_TIMEOUT, INTERNAL_ERROR, TALLY
from wsserver.transports import cbor
from wsserver.transports.admission import ConnectionLimits
from wsserver.transports.sendbuffer import EVENT, PUSH, REPLY

log = Logger()


def unserialize(serializer: Any, payload: bytes, is_binary: bool) -> list[object]:
    """
    The messages in ``payload`` (one, for the serializers we offer), by autobahn's object
    ``serializer``; raises :class:`ProtocolViolation` for a frame of the wrong kind or bytes that
    do not unserialize.
    """
    if is_binary != serializer.BINARY:
        kind = "binary" if is_binary else "text"
        raise ProtocolViolation(f"{kind} message on a {serializer.NAME} session")
    try:
        if isinstance(serializer, JsonObjectSerializer) and not serializer._batched and b"\\u0000" not in payload:
            # Autobahn's JSON decoder is pure Python (so that it can turn "\0..." strings into
            # bytes); without such a string, the C decoder gives the same result, much faster.
            if payload[:1] == b"[" and payload[1:2] != b"\0":
                # What json.loads does for these bytes (its detect_encoding answers UTF-8 for a
                # first byte "[" and a non-zero second), minus its per-call checks.
                return [decode_json(payload.decode("utf-8", "surrogatepass"))]
            return [json.loads(payload)]
        if type(serializer) is cbor.OBJECT_SERIALIZER and not serializer._batched:
            return [cbor.loads(payload)]  # without cbor2's tag conversions: see wsserver.transports.cbor
        return list(serializer.unserialize(payload))
    except Exception as error:
        raise ProtocolViolation(f"cannot unserialize {serializer.NAME}: {error}") from error


#: The standard library's JSON decoder, as ``json.loads`` uses it without arguments.
decode_json = json.JSONDecoder().decode


#: What the router sends a session that the session did not ask for (the rest answers its requests).
UNASKED = frozenset({wamp.Invocation, wamp.Interrupt, wamp.Goodbye, wamp.Abort})


def send_kind(message: wamp.Message) -> str:
    """
    What ``message`` is to a :class:`~wsserver.transports.sendbuffer.SendBuffer`: a published
    EVENT, something else the session did not ask for (PUSH), or a REPLY to its own request,
    retained events on SUBSCRIBE included, which is paced rather than held against the limit.
    """
    if isinstance(message, wamp.Event):  # PositionedEvent too: an EVENT of a topic with history
        return REPLY if message.retained else EVENT
    return PUSH if type(message) in UNASKED else REPLY


def encoded(message: wamp.Message, frame_message: Callable[[wamp.Message], bytes]) -> tuple[Any, str]:
    """
    What a Peer's ``encode`` returns: the message framed once by ``frame_message``, and its kind
    for the send buffer; a REPLY stays a message, framed when it leaves the send buffer (see
    sendbuffer.py and :meth:`SendBuffer.write_encoded`).
    """
    kind = send_kind(message)
    return (message if kind is REPLY else frame_message(message)), kind


class WampSession:
    """
    The WAMP session of one connection (see the module docstring). ``peer`` is the connection as
    the router's Peer; ``name`` names it in logs. ``close_for_silence(reason)`` must close the
    connection when its client said no HELLO (or AUTHENTICATE) in time, ``close_for_internal_error()``
    after an error of ours (the session is already detached then).
    """

    __slots__ = ("peer", "router", "clock", "limits", "name", "close_for_silence", "close_for_internal_error",
                 "session", "_hello_deadline")

    def __init__(
        self, peer: Peer, *, router: Router[Peer], clock: IReactorTime, limits: ConnectionLimits, name: str,
        close_for_silence: Callable[[str], None], close_for_internal_error: Callable[[], None],
    ) -> None:
        self.peer = peer
        self.router = router
        self.clock = clock
        self.limits = limits
        self.name = name
        self.close_for_silence = close_for_silence
        self.close_for_internal_error = close_for_internal_error
        self.session: Session[Peer] | None = None
        self._hello_deadline: IDelayedCall | None = None

    def start(self, address: str | None = None, transport: TransportInfo | None = None) -> None:
        """The transport's handshake is done; ``address``: the client's, as the Admission counted it
        (failed logins are limited per address); ``transport``: what the connection tells about
        itself (``wamp.session.get``, the admin page)."""
        self.session = self.router.attach(self.peer, address, transport)
        self._start_hello_timer()

    def message_received(self, payload: bytes, is_binary: bool, serializer: Any) -> str | None:
        """
        Hand the message in ``payload`` to the router. Returns what is wrong with it when it is a
        protocol violation (the router has then aborted the session), for a transport that can
        answer the request itself (long-poll: 400); else None.
        """
        session = self.session
        if session is None:
            return None
        self._stop_hello_timer()
        router = self.router
        try:
            messages = decode(unserialize(serializer, payload, is_binary))
        except ProtocolViolation as violation:
            return self.violation(str(violation))
        try:
            for message in messages:
                if type(message) is PublishRequest:
                    carry_out_publication(lambda: router.receive(session, message), self.clock.callLater)
                else:
                    carry_out(router.receive(session, message), self.clock.callLater)
            if session.state is State.AUTHENTICATING and self._hello_deadline is None:
                # A CHALLENGE went out: its AUTHENTICATE has the HELLO timeout to arrive.
                self._start_hello_timer()
        except Exception:
            log.failure("internal error handling a message from {peer}", peer=self.name)
            self.session = None
            carry_out(router.detach(session))
            TALLY.disconnects[INTERNAL_ERROR] += 1
            self.close_for_internal_error()
        return None

    def violation(self, detail: str) -> str:
        """The client broke the protocol (``detail`` says how): ABORT, and close; returns ``detail``."""
        log.info("protocol violation from {peer}: {detail}", peer=self.name, detail=detail)
        if self.session is not None:
            self._stop_hello_timer()
            carry_out(self.router.violation(self.session, detail))
        return detail

    def say_goodbye(self) -> bool:
        """GOODBYE ``wamp.close.system_shutdown``; False if there is no session to say it to."""
        if self.session is None:
            return False
        carry_out(self.router.goodbye(self.session))
        return True

    def end(self) -> None:
        self._stop_hello_timer()
        session, self.session = self.session, None
        if session is not None:
            carry_out(self.router.detach(session))

    # -- the HELLO timer --------------------------------------------------------------------------

    def _start_hello_timer(self) -> None:
        self._hello_deadline = self.clock.callLater(self.limits.hello_timeout, self._hello_timed_out)

    def _stop_hello_timer(self) -> None:
        deadline, self._hello_deadline = self._hello_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _hello_timed_out(self) -> None:
        self._hello_deadline = None
        session = self.session
        if session is not None and session.state in (State.ESTABLISHING, State.AUTHENTICATING):
            seconds = self.limits.hello_timeout
            log.info("{peer} sent no HELLO within {seconds} s", peer=self.name, seconds=seconds)
            TALLY.disconnects[HELLO_TIMEOUT] += 1
            self.close_for_silence(f"no WAMP HELLO within {seconds:g} s")
