"""
One WAMP session over a connection, whatever its framing: what every WAMP transport shares.

Theory of operation
-------------------
A transport's connection class mixes in :class:`WampConnection` and provides ``wamp_router``,
``wamp_clock`` (an ``IReactorTime``), ``wamp_limits`` (:class:`ConnectionLimits`), ``peer`` (for
logs) and two ways to close its connection: :meth:`~WampConnection.close_for_silence` and
:meth:`~WampConnection.close_for_internal_error`. It calls:

- :meth:`~WampConnection.start_session` once its own handshake is done: the core attaches a
  session, and the HELLO timer starts (a connection that never says HELLO holds a slot for
  nothing);
- :meth:`~WampConnection.wamp_message_received` for each complete message, with the object
  serializer of the session's wire format;
- :meth:`~WampConnection.end_session` when the connection is gone, however it went.

The first message stops the HELLO timer: it is a HELLO, or a violation that ends the connection.
When the router answers a HELLO with a CHALLENGE, the timer runs again until the AUTHENTICATE.
A message that cannot be decoded goes to the router as a violation (ABORT, then close); an error
of ours while handling one costs that connection only, never the server.
"""

from __future__ import annotations

import json
from typing import Any

from autobahn.wamp.serializer import JsonObjectSerializer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from wsserver.core.decoding import ProtocolViolation, decode
from wsserver.core.router import Router
from wsserver.core.session import Session, State
from wsserver.delivery import Peer, carry_out
from wsserver.transports.admission import ConnectionLimits

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
        if type(serializer) is JsonObjectSerializer and not serializer._batched and b"\\u0000" not in payload:
            # Autobahn's JSON decoder is pure Python (so that it can turn "\0..." strings into
            # bytes); without such a string, the C decoder gives the same result, much faster.
            return [json.loads(payload)]
        return list(serializer.unserialize(payload))
    except Exception as error:
        raise ProtocolViolation(f"cannot unserialize {serializer.NAME}: {error}") from error


class WampConnection:
    """The WAMP session half of a transport connection (a mixin: see the module's docstring)."""

    session: Session[Peer] | None = None
    _hello_deadline: IDelayedCall | None = None
    peer: Any
    #: The client's address as the Admission counted it (failed logins are limited per address).
    _client_ip: str | None = None

    # -- what the transport provides ----------------------------------------------------------------

    @property
    def wamp_router(self) -> Router[Peer]:
        raise NotImplementedError

    @property
    def wamp_clock(self) -> IReactorTime:
        raise NotImplementedError

    @property
    def wamp_limits(self) -> ConnectionLimits:
        raise NotImplementedError

    def close_for_silence(self, reason: str) -> None:
        """Close the connection: its client did not say HELLO (or AUTHENTICATE) in time."""
        raise NotImplementedError

    def close_for_internal_error(self) -> None:
        """Close the connection after an error of ours (its session is already detached)."""
        raise NotImplementedError

    # -- what the transport calls -------------------------------------------------------------------

    def start_session(self) -> None:
        self.session = self.wamp_router.attach(self, self._client_ip)  # type: ignore[arg-type]
        self._start_hello_timer()

    def wamp_message_received(self, payload: bytes, is_binary: bool, serializer: Any) -> None:
        session = self.session
        if session is None:
            return
        self._stop_hello_timer()
        router = self.wamp_router
        try:
            messages = decode(unserialize(serializer, payload, is_binary))
        except ProtocolViolation as violation:
            log.info("protocol violation from {peer}: {detail}", peer=self.peer, detail=str(violation))
            carry_out(router.violation(session, str(violation)))
            return
        try:
            for message in messages:
                carry_out(router.receive(session, message), self.wamp_clock.callLater)
            if session.state is State.AUTHENTICATING and self._hello_deadline is None:
                # A CHALLENGE went out: its AUTHENTICATE has the HELLO timeout to arrive.
                self._start_hello_timer()
        except Exception:
            log.failure("internal error handling a message from {peer}", peer=self.peer)
            self.session = None
            carry_out(router.detach(session))
            self.close_for_internal_error()

    def end_session(self) -> None:
        self._stop_hello_timer()
        session, self.session = self.session, None
        if session is not None:
            carry_out(self.wamp_router.detach(session))

    # -- the HELLO timer --------------------------------------------------------------------------

    def _start_hello_timer(self) -> None:
        self._hello_deadline = self.wamp_clock.callLater(self.wamp_limits.hello_timeout, self._hello_timed_out)

    def _stop_hello_timer(self) -> None:
        deadline, self._hello_deadline = self._hello_deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _hello_timed_out(self) -> None:
        self._hello_deadline = None
        session = self.session
        if session is not None and session.state in (State.ESTABLISHING, State.AUTHENTICATING):
            seconds = self.wamp_limits.hello_timeout
            log.info("{peer} sent no HELLO within {seconds} s", peer=self.peer, seconds=seconds)
            self.close_for_silence(f"no WAMP HELLO within {seconds:g} s")
