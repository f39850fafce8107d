"""
Carrying out the core router's actions on real transports.

This is the fan-out fast path: an EVENT is encoded once per wire format (serializer + framing)
and the same bytes are written to every recipient with that format. Per recipient there is one
identity test (its ``wire_format`` the same object as the last recipient's: the transports keep
one per format, else one dict lookup) and one buffered write, nothing else: no logging, no
statistics. While a WebSocket read is handled, each connection's send buffer holds what is
written to it and writes it all in one ``send()`` when the read is done (see
``wsserver.transports.sendbuffer``). Deliveries are counted for the metrics once per EVENT and
batch of recipients, by the peers' ``transport_kind`` (see wsserver/tally.py).

A Compute (a login's check: PBKDF2 takes milliseconds) runs on the reactor's thread pool
(``deferToThread``); what its ``then`` returns is carried out back on the reactor thread. The
router lets each session have one check at a time and each client address only a few (see
``wsserver.core.logins``), so the pool's queue stays bounded by the connection limits.

An Ask (a question to the store several nodes share: Redis) is asked on the reactor thread; its
answer comes as a Deferred, and what ``then`` returns is carried out when it fires.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol


from autobahn.wamp import message as wamp
from twisted.internet import defer, threads
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from wsserver.core.actions import Ask
from wsserver.core.router import Action, Close, CloseReason, Compute, Delay, Send
from wsserver.tally import CLOSE_REASONS, TALLY

log = Logger()
#: What a peer that names no ``transport_kind`` is counted as.
OTHER_TRANSPORT = "other"


class Peer(Protocol):
    """What a transport connection offers the delivery loop (see :mod:`wsserver.transports`)."""

    wire_format: object
    #: The transport's name in the metrics (``wsserver_deliveries_total{transport}``).
    transport_kind: str

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
    deliveries = TALLY.deliveries
    for action in actions:
        if type(action) is Send:
            recipients = action.recipients
            message = action.message
            if len(recipients) == 1:
                peer = recipients[0].peer
                peer.write_encoded(peer.encode(message))
                if isinstance(message, wamp.Event):
                    deliveries[getattr(peer, "transport_kind", OTHER_TRANSPORT)] += 1
                continue
            encoded: dict[object, Any] = {}
            kinds: list[str] = []
            wire_format: object = encoded  # no peer's: the first recipient looks its format up
            data = None
            for session in recipients:
                peer = session.peer
                if peer.wire_format is not wire_format:
                    # A tuple's hash is computed anew each time: the dict is asked only when the
                    # format is another object than the last recipient's (the transports share one).
                    data = encoded.get(wire_format := peer.wire_format)
                    if data is None:
                        data = encoded[wire_format] = peer.encode(message)
                        kinds.append(getattr(peer, "transport_kind", OTHER_TRANSPORT))
                peer.write_encoded(data)
            if isinstance(message, wamp.Event):
                _count_deliveries(deliveries, kinds, recipients)
        elif type(action) is Close:
            TALLY.disconnects[CLOSE_REASONS[action.reason]] += 1
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


def carry_out_publication(route: Callable[[], Sequence[Action[Peer]]], call_later: CallLater | None = None) -> None:
    """
    :func:`carry_out` what ``route()`` returns: the router's answer to a publication (e.g.
    ``lambda: router.receive(session, publish)``), timed from before the routing to the last
    EVENT written, for ``wsserver_publish_to_write_seconds`` while metrics are served.
    """
    started = TALLY.started()
    actions = route()
    carry_out(actions, call_later)
    TALLY.published(started, actions)


def _count_deliveries(deliveries: defaultdict[str, int], kinds: list[str], recipients: Sequence[Any]) -> None:
    """
    Count one EVENT's ``recipients`` by transport (``kinds``: those of its wire formats): in one
    addition when they share one transport, as they mostly do; else one by one.
    """
    first = kinds[0]
    if kinds.count(first) == len(kinds):
        deliveries[first] += len(recipients)
        return
    for session in recipients:
        deliveries[getattr(session.peer, "transport_kind", OTHER_TRANSPORT)] += 1


def _computed(
    result: Any, then: Callable[[Any], Sequence[Action[Peer]]], call_later: CallLater | None, in_thread: InThread | None
) -> None:
    """A Compute's work is done (back on the reactor thread) or an Ask answered: carry out what follows from it."""
    carry_out(then(result), call_later, in_thread)
