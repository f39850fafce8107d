"""
Carrying out the core router's actions on real transports.

This is the fan-out fast path: an EVENT is encoded once per wire format (serializer + framing)
and the same bytes are written to every recipient with that format. Per recipient there is one
dict lookup and one buffered write, nothing else: no logging, no statistics. Twisted's
``transport.write`` only appends to a buffer, so everything written to a connection in one reactor
turn leaves in one ``send()``.

A Compute (a login's check: PBKDF2 takes milliseconds) runs on the reactor's thread pool
(``deferToThread``); what its ``then`` returns is carried out back on the reactor thread. The
router lets each session have one check at a time and each client address only a few (see
``wsserver.core.logins``), so the pool's queue stays bounded by the connection limits.

An Ask (a question to the store several nodes share: Redis) is asked on the reactor thread; its
answer comes as a Deferred, and what ``then`` returns is carried out when it fires.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol


from autobahn.wamp import message as wamp
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from wsserver.core.actions import Ask
from wsserver.core.router import Action, Close, CloseReason, Compute, Delay, Send

log = Logger()


class Peer(Protocol):
    """What a transport connection offers the delivery loop (see :mod:`wsserver.transports`)."""

    wire_format: object

    def encode(self, message: wamp.Message) -> Any: ...

    def write_encoded(self, data: Any) -> None: ...

    def close_transport(self, reason: CloseReason, detail: str) -> None: ...


#: Run a function later: ``call_later(seconds, function, *args)`` (a reactor's ``callLater``).
CallLater = Callable[..., Any]
#: Run a function of no arguments on another thread: a Deferred of its result (``deferToThread``).
InThread = Callable[[Callable[[], Any]], "Deferred[Any]"]


def carry_out(
    actions: Iterable[Action[Peer]], call_later: CallLater | None = None, in_thread: InThread | None = None
) -> None:
    """
    Write every Send and perform every Close, in order; a Delay's actions are carried out later
    with ``call_later``, a Compute's work runs ``in_thread`` (default: the reactor's thread pool)
    and what follows from it after. ``call_later`` is required where the router may answer with a
    Delay or a Compute: a client's messages.
    """
    for action in actions:
        if type(action) is Send:
            recipients = action.recipients
            message = action.message
            if len(recipients) == 1:
                peer = recipients[0].peer
                peer.write_encoded(peer.encode(message))
                continue
            encoded: dict[object, Any] = {}
            for session in recipients:
                peer = session.peer
                data = encoded.get(peer.wire_format)
                if data is None:
                    data = encoded[peer.wire_format] = peer.encode(message)
                peer.write_encoded(data)
        elif type(action) is Close:
            action.session.peer.close_transport(action.reason, action.detail)
        elif type(action) is Delay:
            assert call_later is not None, action
            call_later(action.seconds, carry_out, action.actions, call_later, in_thread)
        elif type(action) is Ask:
            asking = defer.maybeDeferred(action.ask)
            asking.addCallback(_computed, action.then, call_later, in_thread)
            asking.addErrback(lambda failure: log.failure("carrying out an answer of the shared store", failure))
        else:
            assert type(action) is Compute and call_later is not None, action
            running = (in_thread or threads.deferToThread)(action.work)
            running.addCallback(_computed, action.then, call_later, in_thread)
            running.addErrback(lambda failure: log.failure("carrying out a computation", failure))


def _computed(
    result: Any, then: Callable[[Any], Sequence[Action[Peer]]], call_later: CallLater | None, in_thread: InThread | None
) -> None:
    """A Compute's work is done (back on the reactor thread) or an Ask answered: carry out what follows from it."""
    carry_out(then(result), call_later, in_thread)
