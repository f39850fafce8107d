"""
What the core asks a transport to do: the only output of every core call.

Theory of operation
-------------------
The core never writes to a transport; it returns a list of actions that the transport carries out
in order (see :mod:`wsserver.delivery`):

- :class:`Send`: serialize ``message`` and write it to every session in ``recipients``. An EVENT
  is one message object for all its recipients, so a transport serializes and frames it once per
  wire format and writes those bytes to each (the fan-out fast path).
- :class:`Close`: close that session's transport, after writing what came before.
- :class:`Delay`: carry out ``actions`` after ``seconds`` (the transport's clock). Only a refused
  login is answered this way: every failure after the same delay, whatever failed.
- :class:`Compute`: call ``work()`` away from the thread that runs the router (it is a pure
  function of data the action holds, such as a password hash to check, and may take long), then,
  back on that thread, call ``then(result)`` and carry out the actions it returns. The router
  never waits: until then, the session waits in a state of its own.
- :class:`Ask`: call ``ask()`` (a question to a store shared by several nodes, such as Redis,
  built by an adapter the router was given), and when its answer comes, call ``then(answer)``
  and carry out the actions it returns. The router goes on meanwhile; ``then`` checks that
  what it answers (a session, a subscription) is still there.

Every part of the core (router, broker, dealer, meta API) answers with these shapes, and a
request that fails is answered with :func:`error_reply`, so there is one way to say "no".
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from autobahn.wamp import message as wamp

from wsserver.core.session import PeerT, Session


class CloseReason(enum.Enum):
    """Why a transport is closed; the transport maps it to its own close code."""

    NORMAL = "normal"
    PROTOCOL_VIOLATION = "protocol violation"
    GOING_AWAY = "going away"


@dataclass(frozen=True, slots=True)
class Send(Generic[PeerT]):
    """Write ``message`` to each of ``recipients``."""

    message: wamp.Message
    recipients: Sequence[Session[PeerT]]


@dataclass(frozen=True, slots=True)
class Close(Generic[PeerT]):
    """Close ``session``'s transport (after the sends before this action)."""

    session: Session[PeerT]
    reason: CloseReason
    detail: str


@dataclass(frozen=True, slots=True)
class Delay(Generic[PeerT]):
    """Carry out ``actions`` ``seconds`` from now (after the actions before this one)."""

    seconds: float
    actions: Sequence[Action[PeerT]]


@dataclass(frozen=True, slots=True)
class Compute(Generic[PeerT]):
    """
    Run ``work()`` off the router's thread (it touches nothing the router holds, and does not
    raise), then ``then(result)`` on the router's thread, and carry out the actions it returns.
    """

    work: Callable[[], Any]
    then: Callable[[Any], Sequence[Action[PeerT]]]


@dataclass(frozen=True, slots=True)
class Ask(Generic[PeerT]):
    """
    Call ``ask()`` on the router's thread: it returns the answer, or a Deferred of it (it asks a
    shared store, and does not raise); then call ``then(answer)`` and carry out what it returns.
    """

    ask: Callable[[], Any]
    then: Callable[[Any], Sequence[Action[PeerT]]]


Action = Send[PeerT] | Close[PeerT] | Delay[PeerT] | Compute[PeerT] | Ask[PeerT]


def error_reply(
    session: Session[PeerT], request_type: int, request: int, error: str, *args: Any, **kwargs: Any
) -> Send[PeerT]:
    """ERROR ``error`` (a WAMP error URI) with a payload, answering ``session``'s request."""
    message = wamp.Error(request_type, request, error, args=list(args) or None, kwargs=kwargs or None)
    return Send(message, (session,))
