"""
Carrying out the core router's actions on real transports.

This is the fan-out fast path: an EVENT is encoded once per wire format (serializer + framing)
and the same bytes are written to every recipient with that format. Per recipient there is one
dict lookup and one buffered write, nothing else: no logging, no statistics. Twisted's
``transport.write`` only appends to a buffer, so everything written to a connection in one reactor
turn leaves in one ``send()``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol


from autobahn.wamp import message as wamp

from wsserver.core.router import Action, Close, CloseReason, Delay, Send


class Peer(Protocol):
    """What a transport connection offers the delivery loop (see :mod:`wsserver.transports`)."""

    wire_format: object

    def encode(self, message: wamp.Message) -> Any: ...

    def write_encoded(self, data: Any) -> None: ...

    def close_transport(self, reason: CloseReason, detail: str) -> None: ...


#: Run a function later: ``call_later(seconds, function, *args)`` (a reactor's ``callLater``).
CallLater = Callable[..., Any]


def carry_out(actions: Iterable[Action[Peer]], call_later: CallLater | None = None) -> None:
    """
    Write every Send and perform every Close, in order; a Delay's actions are carried out later
    with ``call_later`` (required where the router may answer with a Delay: a client's messages).
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
        else:
            assert type(action) is Delay and call_later is not None, action
            call_later(action.seconds, carry_out, action.actions, call_later)
