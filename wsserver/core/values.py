"""
Which payloads every wire format the router speaks can carry.

Theory of operation
-------------------
A payload (``args`` and ``kwargs`` of PUBLISH, CALL, YIELD and a callee's ERROR) is decoded in the
sender's wire format and encoded again in each receiver's: JSON, msgpack or CBOR. A value one of
them decodes and another cannot encode would fail there, after the router had accepted it (the
sender's connection closed with 1011, some receivers served and others not, a retained event that
fails every later subscriber). So the router asks :func:`unrepresentable` once, when the payload
arrives, and refuses it with ERROR ``wamp.error.invalid_argument`` (the reason names the value's
path, e.g. ``args[0].x``); a refused payload is never routed, retained or kept in history.

What all three carry (with autobahn's serializers), and nothing else::

    None, bool, str        but not a lone surrogate (no UTF-8 for it), nor a string value starting
                           with NUL: autobahn's JSON reads "\\u0000..." as base64 bytes
    int                    -2**63 .. 2**64-1: msgpack's range (CBOR's is wider, JSON has none)
    float                  finite: NaN and Infinity are not JSON (strict parsers reject the message)
    bytes                  JSON carries them as "\\u0000" + base64 (autobahn's convention)
    list, tuple            of such values
    dict                   with str keys (JSON has no other), of such values

Anything else a decoder produced is refused: a CBOR tag (the transport decodes every tag to a
:class:`Foreign` marker without running its conversion: datetimes, bignums, decimals, sets...),
CBOR undefined and simple values, msgpack extension types and timestamps.
An ``undefined`` is refused in a payload, where it would be a value, and
only there: in a message's options it means the option is not given (see
:mod:`wsserver.core.decoding`), which is how wampy.js leaves an option out.

The check is a walk over the decoded payload, which the decoders bound (message size, nesting
depth; the transport refuses CBOR's shared values, which would make a small message a large
graph). It is paid on every publication, so the walk is one type test per value, without paths;
paths are worked out only to explain a refusal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from autobahn.wamp.exception import ApplicationError

#: msgpack's integers: int64 and uint64.
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1


class Foreign:
    """
    A decoded value that only its own wire format knows (a CBOR tag, ...), kept as a marker so
    that :func:`unrepresentable` can name it; ``what`` says what it was, e.g. "CBOR tag 1 (epoch
    date/time)".
    """

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"<Foreign {self.what}>"


def unrepresentable(args: list[Any] | None, kwargs: dict[str, Any] | None) -> str | None:
    """
    Why the payload ``args``, ``kwargs`` cannot be carried in every wire format, as "path: what
    is wrong", or None if it can. The caller must then refuse the message that carried it.
    """
    if args is None and kwargs is None or _carried((args, kwargs)):
        return None
    for root, payload in (("args", args), ("kwargs", kwargs)):
        found = _first_problem(payload)
        if found is not None:
            trail, problem = found
            return f"{_short(_path(root, trail), 160)}: {problem}"
    raise AssertionError(f"no unrepresentable value found in {args!r}, {kwargs!r}")  # pragma: no cover


def refusal(args: list[Any] | None, kwargs: dict[str, Any] | None) -> tuple[str, str] | None:
    """The ERROR (URI, reason) for a request carrying this payload, or None: see :func:`unrepresentable`."""
    if args is None and kwargs is None or _carried((args, kwargs)):  # the hot path: one call
        return None
    reason = unrepresentable(args, kwargs)
    assert reason is not None
    return ApplicationError.INVALID_ARGUMENT, reason


def _carried(payload: Iterable[Any]) -> bool:
    """Whether every value in ``payload`` can be carried: the fast walk, one container at a time."""
    pending = [payload]
    while pending:
        for value in pending.pop():
            kind = type(value)
            if kind is str:
                if value and (value[0] == "\0" or not value.isascii() and not has_utf8(value)):
                    return False
            elif kind is int:
                if not MIN_INT <= value <= MAX_INT:
                    return False
            elif kind is float:
                if value - value != 0.0:  # NaN and the infinities, without a call
                    return False
            elif kind is dict:
                for key in value:
                    # A key starting with NUL is fine: autobahn's JSON reads only values as bytes.
                    if type(key) is not str or not key.isascii() and not has_utf8(key):
                        return False
                pending.append(value.values())
            elif kind is list or kind is tuple:
                pending.append(value)
            elif not (value is None or kind is bool or kind is bytes):
                return False
    return True


def _first_problem(payload: Any) -> tuple[list[Any], str] | None:
    """
    The first value in ``payload`` that cannot be carried: the keys and indexes leading to it, and
    what is wrong with it (the slow walk, depth first, holding one iterator per level).
    """
    problem = _problem(payload)
    if problem is not None:
        return [], problem
    top = _children(payload)
    if top is None:
        return None
    trail: list[Any] = []
    levels = [top]
    while levels:
        for key, value in levels[-1]:
            problem = _problem(value)
            if problem is not None:
                return [*trail, key], problem
            children = _children(value)
            if children is not None:
                trail.append(key)
                levels.append(children)
                break
        else:
            levels.pop()
            if trail:
                trail.pop()
    return None


def _children(value: Any) -> Iterator[tuple[Any, Any]] | None:
    if type(value) is list or type(value) is tuple:
        return enumerate(value)
    if type(value) is dict:
        return iter(value.items())
    return None


def _path(root: str, trail: list[Any]) -> str:
    parts = [root]
    for key in trail:
        if type(key) is str and key.isidentifier():
            parts.append(f".{key}")
        else:
            parts.append(f"[{key}]" if type(key) is int else f"[{_short(repr(key))}]")
    return "".join(parts)


def _problem(value: Any) -> str | None:
    """What is wrong with ``value`` itself (not with what it contains), or None."""
    kind = type(value)
    if kind is str:
        if value[:1] == "\0":
            return "a string that starts with NUL would reach JSON clients as bytes (autobahn's convention)"
        if not value.isascii() and not has_utf8(value):
            return "a string with a lone surrogate has no UTF-8"
        return None
    if kind is int:
        if MIN_INT <= value <= MAX_INT:
            return None
        return f"integer of {value.bit_length()} bits does not fit msgpack's 64 bits (-2**63 .. 2**64-1)"
    if kind is float:
        if value - value == 0.0:
            return None
        name = "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
        return f"{name} is not JSON (strict JSON parsers reject the whole message)"
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return f"map key {_short(repr(key))} ({type(key).__name__}): JSON keys are strings"
            if not key.isascii() and not has_utf8(key):
                return f"map key {_short(repr(key))}: a string with a lone surrogate has no UTF-8"
        return None
    if value is None or kind in (bool, bytes, list, tuple):
        return None
    return f"{_name(value)} has no equivalent in every wire format (json, msgpack, cbor)"


#: Names for what cbor2 decodes without a tag.
_CBOR_NAMES = {"UndefinedType": "CBOR undefined", "CBORSimpleValue": "a CBOR simple value", "CBORTag": "a CBOR tag"}


def _name(value: Any) -> str:
    if type(value) is Foreign:
        return value.what
    kind = type(value)
    module = kind.__module__.split(".")[0]
    if module == "msgpack":
        return f"a msgpack extension ({kind.__name__})"
    if module == "cbor2":
        return _CBOR_NAMES.get(kind.__name__, f"cbor2 {kind.__name__}")
    return f"a {kind.__name__} value" if module == "builtins" else f"a {module} {kind.__name__} value"


def has_utf8(text: str) -> bool:
    """Whether ``text`` can be encoded in UTF-8 (it has no lone surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(text: str, limit: int = 40) -> str:
    """``text``, or its start and end around "..." when it is longer than ``limit``."""
    return text if len(text) <= limit else f"{text[: limit // 2]}...{text[-limit // 2 :]}"
