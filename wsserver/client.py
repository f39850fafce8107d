"""
Never miss an event, from autobahn-python: subscribe to a topic and get what was published while
you were away, from wsserver's positions (``details._epoch``, ``details._seq``) and its
``wsserver.history.since`` procedure.

Theory of operation
-------------------
:func:`resume` follows the protocol the README draws::

    SUBSCRIBE topic               live events from here on are buffered, with their positions
    CALL wsserver.history.since   (topic, epoch, after) of the last position you had
    deliver the events it returns (if recovered), then the buffered live events whose seq is
    greater than the newest delivered: no gap, no duplicate

and keeps :attr:`Resumption.position` at the newest event delivered, so that you can store it
and pass it to the next :func:`resume` (after a reconnect, or a restart of your program).

autobahn-python builds EVENT details from the keys it knows and drops ``_epoch`` and ``_seq``;
so this module reads them where the EVENT is parsed: it wraps ``Event.parse`` (once, when it is
imported) to note the position of every positioned EVENT by publication id, in a small table the
handler takes it from (bounded: entries of events nobody here asked for age out).

It is plain ``async`` code over autobahn's session API, so it runs on either framework autobahn
supports: on asyncio, ``await resume(...)``; on Twisted, await it in an ``async def`` driven by
``defer.ensureDeferred`` (Deferreds are awaitable). It imports nothing of the server.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from autobahn.wamp import message
from autobahn.wamp.types import SubscribeOptions

#: The router's resume procedure.
SINCE = "wsserver.history.since"
#: Positions of EVENTs noted but not yet taken by a handler, at most.
NOTED = 4096


class Position(NamedTuple):
    """Where a topic's history stood at an event: its epoch and its sequence number there."""

    epoch: str
    seq: int


_positions: OrderedDict[int, Position] = OrderedDict()
_parse = message.Event.parse


def _parse_noting_position(raw: list[Any]) -> message.Event:
    event = _parse(raw)
    details = raw[3] if len(raw) > 3 and isinstance(raw[3], dict) else {}
    epoch, seq = details.get("_epoch"), details.get("_seq")
    if type(epoch) is str and type(seq) is int:
        _positions[event.publication] = Position(epoch, seq)
        if len(_positions) > NOTED:
            _positions.popitem(last=False)
    return event


if not getattr(message.Event.parse, "notes_position", False):
    _parse_noting_position.notes_position = True  # type: ignore[attr-defined]
    message.Event.parse = staticmethod(_parse_noting_position)  # type: ignore[method-assign, assignment]


@dataclass
class Resumption:
    """
    A subscription made by :func:`resume`. ``recovered``: whether every event since the position
    given was delivered (otherwise reload your state from its source); ``missed``: how many
    were; ``position``: the newest event delivered (store it; None: none yet).
    """

    topic: str
    subscription: Any = None
    recovered: bool = False
    missed: int = 0
    position: Position | None = None
    _buffer: list[tuple[tuple[Any, ...], dict[str, Any], Position | None]] | None = field(default_factory=list)


async def resume(
    session: Any, topic: str, handler: Callable[..., Any], position: Position | tuple[str, int] | None = None,
) -> Resumption:
    """
    Subscribe ``handler`` (called as ``handler(*args, **kwargs)``, as autobahn calls handlers)
    to ``topic`` on ``session`` (a joined autobahn ``ApplicationSession``), first delivering what
    was published after ``position`` (from :attr:`Resumption.position`; None: you have none,
    so nothing is recovered). Returns the :class:`Resumption` once the missed events are
    delivered; live events follow. Raises autobahn's ``ApplicationError`` as the router answers
    (``wamp.error.invalid_argument``: the topic keeps no history; ``not_authorized``).
    """
    given = None if position is None else Position(*position)
    state = Resumption(topic, position=given)

    def deliver(args: tuple[Any, ...], kwargs: dict[str, Any], at: Position | None) -> None:
        last = state.position
        if at is not None:
            if last is not None and at.epoch == last.epoch and at.seq <= last.seq:
                return  # delivered already (returned by since, or seen before)
            state.position = at
        handler(*args, **kwargs)

    def on_event(*args: Any, details: Any = None, **kwargs: Any) -> None:
        at = _positions.pop(details.publication, None) if details is not None else None
        if state._buffer is not None:
            state._buffer.append((args, kwargs, at))
        else:
            deliver(args, kwargs, at)

    state.subscription = await session.subscribe(on_event, topic, options=SubscribeOptions(details_arg="details"))
    epoch, after = given if given is not None else ("", 0)
    answer = await session.call(SINCE, topic, epoch, after)
    # kwargs only: autobahn answers a CallResult (a dict, should a future autobahn unwrap it).
    found = answer.kwresults if hasattr(answer, "kwresults") else answer
    if found["recovered"] and given is not None:
        state.recovered = True
        for event in found["events"]:
            deliver(tuple(event["args"]), event["kwargs"], Position(found["epoch"], event["seq"]))
            state.missed += 1
    else:
        # Nothing to recover: live events from the router's position now on.
        state.position = Position(found["epoch"], found["top"]) if found["epoch"] else None
    buffered, state._buffer = state._buffer or [], None
    for args, kwargs, at in buffered:
        deliver(args, kwargs, at)
    return state
