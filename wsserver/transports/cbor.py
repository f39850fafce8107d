"""
CBOR as the router takes it: autobahn's decoding (cbor2) without what makes a small message large.

Theory of operation
-------------------
cbor2 converts tagged values itself before any ``tag_hook`` sees them: it follows shared values
and string references (tags 28/29, 25/256), so that about 160 bytes decode to a graph of 24
nested pairs whose every node is the same list, which takes seconds and hundreds of megabytes to
encode again for a subscriber (each extra ~6 bytes doubles it); and it builds datetimes,
bignums, decimals (a bigfloat's exponent can make that costly), sets and so on, which no other
wire format carries. :func:`loads` replaces every conversion cbor2 knows (its
``semantic_decoders``, a table passed per call):

- a reference tag refuses the whole message at once (:class:`ProtocolViolation`: ABORT, close
  1002); no conforming WAMP client sends one (autobahn and AutobahnJS encode plain CBOR);
- every other tag, known or not, decodes to a :class:`~wsserver.core.values.Foreign` marker
  that names it, without its conversion; the router refuses a payload holding one with ERROR
  ``wamp.error.invalid_argument`` (see :mod:`wsserver.core.values`), and one elsewhere in a
  message fails autobahn's own checks of that field.

What is left decodes to a tree no larger than the message (cbor2 also bounds nesting to 400 and
reads no length it was not given).
"""

from __future__ import annotations

from typing import Any

import cbor2
from autobahn.wamp.serializer import CBORObjectSerializer

from wsserver.core.decoding import ProtocolViolation
from wsserver.core.values import Foreign

#: The object serializer whose messages :func:`loads` decodes instead.
OBJECT_SERIALIZER = CBORObjectSerializer

#: CBOR tags that make one value stand for another (value sharing, string references): refused.
REFERENCE_TAGS = {25: "string reference", 256: "string reference namespace", 28: "shareable value", 29: "shared value"}
#: The tags cbor2 would convert itself (names from the IANA registry), and what they are called.
KNOWN_TAGS = {
    0: "date/time string", 1: "epoch date/time", 2: "bignum", 3: "negative bignum", 4: "decimal fraction",
    5: "bigfloat", 30: "rational number", 35: "regular expression", 36: "MIME message", 37: "UUID",
    52: "IPv4 address", 54: "IPv6 address", 100: "days since the epoch", 258: "set", 260: "network address",
    261: "network address and mask", 1004: "date string", 55799: "self-described CBOR",
}


class _Reference(Exception):
    """A CBOR reference tag: raised inside cbor2's decoder, which stops at once."""


def _refuse_reference(tag: int) -> Any:
    def refuse(value: object, immutable: bool) -> object:
        raise _Reference(f"CBOR tag {tag} ({REFERENCE_TAGS[tag]}) is not accepted: no shared or referenced values")

    return refuse


def _foreign(tag: int, what: str) -> Any:
    marker = Foreign(f"CBOR tag {tag} ({what})")
    return lambda value, immutable: marker


def _unknown_tag(tag: Any, immutable: bool) -> Foreign:
    return Foreign(f"CBOR tag {tag.tag}")


#: cbor2's semantic decoders, replaced: a marker for every tag, an error for the reference tags.
SEMANTIC_DECODERS = {
    **{tag: _foreign(tag, what) for tag, what in KNOWN_TAGS.items()},
    **{tag: _refuse_reference(tag) for tag in REFERENCE_TAGS},
}


def loads(payload: bytes) -> object:
    """
    One CBOR message as autobahn's serializer decodes it, but for tags (see the module
    docstring); raises :class:`ProtocolViolation` for a reference tag, cbor2's errors for bytes
    that are not CBOR.
    """
    try:
        return cbor2.loads(payload, semantic_decoders=SEMANTIC_DECODERS, tag_hook=_unknown_tag)
    except cbor2.CBORDecodeError as error:
        cause = error.__cause__ or error.__context__
        if isinstance(cause, _Reference):
            raise ProtocolViolation(str(cause)) from None
        raise
