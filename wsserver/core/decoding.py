"""
From unserialized WAMP messages (lists) to autobahn message objects, telling apart the two ways a
message can be bad.

Theory of operation
-------------------
The transport unserializes a frame with autobahn's object serializer (json, msgpack or cbor) and
hands the resulting lists to :func:`decode`. Autobahn's ``Message.parse`` does the validation; we
only sort its complaints:

- A message whose *shape* is wrong (not a list, unknown type code, wrong length, wrong field type)
  is a protocol violation: :func:`decode` raises :class:`ProtocolViolation`, and the router cuts
  the session off with ABORT ``wamp.error.protocol_violation``.
- A well-formed request that names an invalid URI is the client's mistake, not a broken peer: it
  becomes an :class:`InvalidRequest`, which the router answers with ERROR ``wamp.error.invalid_uri``
  while the session stays open. (Autobahn raises ``InvalidUriError`` here, which a transport that
  does not sort it out turns into close 1011; Crossbar does exactly that.)
- So does a SUBSCRIBE or REGISTER whose ``match`` option is a string naming no policy: autobahn
  calls that a ``ProtocolError``, but the message is well formed and the client only asked for
  something that does not exist, so it is answered with ERROR ``wamp.error.invalid_argument``.

Options are read liberally, before autobahn sees them (:func:`without_absent_options`): in the
options or details dict of every message, a value that says "nothing" is the same as no value: a
nil (``None``, from JSON ``null`` too), CBOR ``undefined``, or msgpack's extension 0 holding one
zero byte (msgpackr's ``undefined``). wampy.js sends every option the application left out that
way, and autobahn would refuse the whole session over it ("invalid type ExtType for 'match'").
The same holds in dicts nested in options (HELLO ``roles``, ``authextra``). Options the router
does not know are ignored, as the spec says (autobahn's parse reads only the ones it knows). Any
other value of the wrong type is still refused, naming the option. A *payload* (``args``,
``kwargs``) is not options: an ``undefined`` there is a value that other wire formats cannot
carry, and is refused with the path to it (see :mod:`wsserver.core.values`).

One option the spec defines is lost in autobahn's parse: ``disclose_me`` on PUBLISH (publisher
identification) and CALL (caller identification); AutobahnJS sends it, autobahn-python 26 no
longer reads or sends it. So a PUBLISH decodes to a :class:`PublishRequest` and a CALL to a
:class:`CallRequest`: autobahn's message and that option beside it.

The PUBLISH of the usual shape (options empty or only a boolean ``acknowledge``, a list of args, a
dict of kwargs) skips ``Publish.parse``, which tests each of the sixteen options it knows by
name, and the search for absent options: :func:`_plain_publish` makes autobahn's ``Publish`` from
it directly, after autobahn's own checks of the id and the topic (``check_or_raise_id``,
``check_or_raise_uri``) and its constructor's of the kwargs' keys. Anything else, and anything
those checks refuse, goes the long way (:func:`decode_by_parse`), which decides and words the
refusal; tests/core/test_decoding.py compares both ways on generated messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from autobahn.wamp import message as wamp
from autobahn.wamp.exception import ApplicationError, InvalidUriError, ProtocolError
from autobahn.wamp.message import check_or_raise_id, check_or_raise_uri

from wsserver.core.matching import POLICIES

#: Message type code -> autobahn message class (the same map as autobahn's Serializer has; that
#: module is not imported here because importing it binds txaio's clock before the transport has
#: chosen Twisted).
MESSAGE_CLASSES: dict[int, type[wamp.Message]] = {
    getattr(cls, "MESSAGE_TYPE"): cls
    for cls in vars(wamp).values()
    if isinstance(cls, type) and issubclass(cls, wamp.Message) and isinstance(getattr(cls, "MESSAGE_TYPE", None), int)
}

#: Request messages that carry a request id at index 1, so a bad URI in them can be answered.
_REQUESTS_WITH_ID = {
    wamp.Subscribe.MESSAGE_TYPE,
    wamp.Publish.MESSAGE_TYPE,
    wamp.Register.MESSAGE_TYPE,
    wamp.Call.MESSAGE_TYPE,
}
#: Message type code -> index of its options (or details) dict, for every message that has one.
OPTIONS_INDEX: dict[int, int] = {
    wamp.Hello.MESSAGE_TYPE: 2,
    wamp.Welcome.MESSAGE_TYPE: 2,
    wamp.Abort.MESSAGE_TYPE: 1,
    wamp.Challenge.MESSAGE_TYPE: 2,
    wamp.Authenticate.MESSAGE_TYPE: 2,
    wamp.Goodbye.MESSAGE_TYPE: 1,
    wamp.Error.MESSAGE_TYPE: 3,
    wamp.Publish.MESSAGE_TYPE: 2,
    wamp.Subscribe.MESSAGE_TYPE: 2,
    wamp.Event.MESSAGE_TYPE: 3,
    wamp.Call.MESSAGE_TYPE: 2,
    wamp.Cancel.MESSAGE_TYPE: 2,
    wamp.Result.MESSAGE_TYPE: 2,
    wamp.Register.MESSAGE_TYPE: 2,
    wamp.Invocation.MESSAGE_TYPE: 3,
    wamp.Interrupt.MESSAGE_TYPE: 2,
    wamp.Yield.MESSAGE_TYPE: 2,
}
#: Requests with a ``match`` option: [type, request, options, uri].
_REQUESTS_WITH_MATCH = {wamp.Subscribe.MESSAGE_TYPE, wamp.Register.MESSAGE_TYPE}


class ProtocolViolation(Exception):
    """The peer sent something that is not a WAMP message it may send. ``str()`` says what."""


@dataclass(frozen=True, slots=True)
class InvalidRequest:
    """A well-formed request with an invalid URI or an unknown match policy in it."""

    request_type: int
    #: The request id, or 0 for a HELLO (whose "URI" is the realm).
    request: int
    #: Whether the client expects an answer: PUBLISH gets one only with ``acknowledge: true``.
    wants_reply: bool
    reason: str
    #: The error URI of the answer.
    error: str = ApplicationError.INVALID_URI

    @property
    def kind(self) -> str:
        """The name the session's transition table knows this by."""
        return "InvalidHello" if self.request_type == wamp.Hello.MESSAGE_TYPE else "InvalidRequest"


@dataclass(frozen=True, slots=True)
class PublishRequest:
    """A PUBLISH: autobahn's message, and the ``disclose_me`` option that autobahn does not parse."""

    message: wamp.Publish
    disclose_me: bool
    #: Whether its options are known to be at most ``acknowledge`` (no audience lists, no
    #: ``exclude_me``, no ``retain``): the broker then reads none of them.
    plain: bool = False
    kind: ClassVar[str] = "Publish"


@dataclass(frozen=True, slots=True)
class CallRequest:
    """A CALL: autobahn's message, and the ``disclose_me`` option (caller identification) that autobahn does not parse."""

    message: wamp.Call
    disclose_me: bool
    kind: ClassVar[str] = "Call"


Decoded = wamp.Message | InvalidRequest | PublishRequest | CallRequest


def decode(raw_messages: list[object]) -> list[Decoded]:
    """
    Turn unserialized messages into autobahn messages, :class:`PublishRequest` and
    :class:`InvalidRequest` markers.

    Raises :class:`ProtocolViolation` for the first message that is not valid WAMP; the caller
    must then end the session (messages before it in the same batch are dropped with it).
    """
    return [decode_one(raw) for raw in raw_messages]


def decode_one(raw: object) -> Decoded:
    """Decode one unserialized message; see :func:`decode`."""
    if type(raw) is not list or not raw:
        raise ProtocolViolation(f"a WAMP message must be a non-empty list, not {_describe(raw)}")
    message_type = raw[0]
    if type(message_type) is not int:
        raise ProtocolViolation(f"a WAMP message type must be an integer, not {_describe(message_type)}")
    if message_type == _PUBLISH:
        plain = _plain_publish(raw)
        if plain is not None:
            return plain
    return decode_by_parse(raw)


def decode_by_parse(raw: list[Any]) -> Decoded:
    """
    :func:`decode_one` of a non-empty list whose first item is an int, always by autobahn's
    ``parse`` (the long way, which every message but the usual PUBLISH takes).
    """
    message_type = raw[0]
    message_class = MESSAGE_CLASSES.get(message_type)
    if message_class is None:
        raise ProtocolViolation(f"unknown WAMP message type {message_type}")
    raw = without_absent_options(raw)
    try:
        parsed: wamp.Message = message_class.parse(raw)
    except InvalidUriError as error:
        if message_type == wamp.Hello.MESSAGE_TYPE:
            return InvalidRequest(message_type, 0, True, _quoted(error))
        if message_type in _REQUESTS_WITH_ID and len(raw) > 2 and is_id(raw[1]):
            options = raw[2] if type(raw[2]) is dict else {}
            wants_reply = message_type != wamp.Publish.MESSAGE_TYPE or options.get("acknowledge") is True
            return InvalidRequest(message_type, raw[1], wants_reply, _quoted(error))
        raise ProtocolViolation(_quoted(error)) from error
    except ProtocolError as error:
        if _names_an_unknown_policy(raw):
            return InvalidRequest(message_type, raw[1], True, _quoted(error), ApplicationError.INVALID_ARGUMENT)
        raise ProtocolViolation(_quoted(error)) from error
    except Exception as error:  # autobahn's parse also raises plain errors for odd shapes
        raise ProtocolViolation(f"malformed {message_class.__name__.upper()}: {_quoted(error)}") from error
    if isinstance(parsed, wamp.Publish):
        return PublishRequest(parsed, _disclose_me(raw, "PUBLISH"))
    if isinstance(parsed, wamp.Call):
        return CallRequest(parsed, _disclose_me(raw, "CALL"))
    return parsed


_PUBLISH = wamp.Publish.MESSAGE_TYPE


def _plain_publish(raw: list[Any]) -> PublishRequest | None:
    """
    A PUBLISH of the usual shape (see the module docstring) as :func:`decode_by_parse` decodes it;
    None for any other, which the caller must decode by parse.
    """
    length = len(raw)
    if length < 4 or length > 6:
        return None
    options = raw[2]
    if options:
        if type(options) is not dict or len(options) != 1:
            return None
        acknowledge = options.get("acknowledge")
        if type(acknowledge) is not bool:
            return None
    elif type(options) is dict:
        acknowledge = None
    else:
        return None
    args = raw[4] if length > 4 else None
    if length > 4 and type(args) is not list:
        return None
    kwargs = raw[5] if length > 5 else None
    if length > 5 and type(kwargs) is not dict:
        return None
    try:
        # Autobahn's own checks, as its parse makes them, in its order; the long way words a refusal.
        request = check_or_raise_id(raw[1])
        topic = check_or_raise_uri(raw[3])
        return PublishRequest(wamp.Publish(request, topic, args=args, kwargs=kwargs, acknowledge=acknowledge), False, True)
    except (ProtocolError, InvalidUriError):
        return None


def _disclose_me(raw: list[object], name: str) -> bool:
    """The ``disclose_me`` option of a PUBLISH or CALL (options at index 2, a dict once parsed)."""
    options = raw[2]
    assert type(options) is dict
    disclose_me = options.get("disclose_me", False)
    if type(disclose_me) is not bool:
        raise ProtocolViolation(f"invalid type {type(disclose_me).__name__} for 'disclose_me' option in {name}")
    return disclose_me


def without_absent_options(raw: list[Any]) -> list[Any]:
    """
    ``raw`` with every absent value (see :func:`is_absent`) left out of its options dict and the
    dicts nested in it; ``raw`` itself when there is none (the usual case costs one pass over the
    options' values). The caller parses the result instead of ``raw``.
    """
    index = OPTIONS_INDEX.get(raw[0])
    if index is None or len(raw) <= index or type(raw[index]) is not dict:
        return raw
    options = raw[index]
    if not _has_absent(options):
        return raw
    return [*raw[:index], _present(options), *raw[index + 1 :]]


def _has_absent(options: dict[object, object]) -> bool:
    pending = [options]
    while pending:
        for value in pending.pop().values():
            if is_absent(value):
                return True
            if type(value) is dict:
                pending.append(value)
    return False


def _present(options: dict[object, object]) -> dict[object, object]:
    """A copy of ``options`` without absent values, at any depth of nested dicts."""
    top: dict[object, object] = {}
    pending = [(options, top)]
    while pending:  # a loop, not recursion: the decoders allow deeper nesting than Python's stack
        source, copy = pending.pop()
        for key, value in source.items():
            if is_absent(value):
                continue
            if type(value) is dict:
                nested: dict[object, object] = {}
                pending.append((value, nested))
                value = nested
            copy[key] = value
    return top


def is_absent(value: object) -> bool:
    """
    Whether an option's ``value`` means "not given": nil, CBOR undefined (cbor2's ``undefined``),
    or msgpackr's undefined (msgpack extension 0 with the single byte 0). Recognized by type
    name, as :mod:`wsserver.core.values` does, so that the core imports no decoder.
    """
    if value is None:
        return True
    kind = type(value)
    if kind.__name__ == "UndefinedType":
        return kind.__module__.startswith("cbor2")
    if kind.__name__ == "ExtType" and kind.__module__.startswith("msgpack"):
        return getattr(value, "code", None) == 0 and getattr(value, "data", None) == b"\x00"
    return False


def _names_an_unknown_policy(raw: list[object]) -> bool:
    """A SUBSCRIBE or REGISTER, well formed but for a ``match`` option naming no policy."""
    if raw[0] not in _REQUESTS_WITH_MATCH or len(raw) != 4 or not is_id(raw[1]) or type(raw[2]) is not dict:
        return False
    match = raw[2].get("match")
    return type(match) is str and match not in POLICIES


def is_id(value: object) -> bool:
    """Whether ``value`` is a valid WAMP id (autobahn's rule)."""
    try:
        check_or_raise_id(value)
    except ProtocolError:
        return False
    return True


#: Characters of autobahn's complaint that go back to the client.
MAX_REASON = 300


def _quoted(error: Exception) -> str:
    """
    Autobahn's complaint, fit to send back: it quotes the client's value, which may be as long as
    the message (a 500 KB URI) or not valid Unicode (a lone surrogate from JSON, which no wire
    format could encode: the answer would fail instead of the request).
    """
    text = str(error)
    if len(text) > MAX_REASON:
        text = f"{text[: MAX_REASON - 40]}...{text[-37:]}"
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _describe(value: object) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40]}{'...' if len(text) > 40 else ''}"
