"""
JSON as the router writes it: Autobahn's encoder, built once instead of once per message.

Theory of operation
-------------------
Autobahn's ``JsonObjectSerializer.serialize`` calls ``json.dumps(..., cls=_WAMPJsonEncoder)``,
which builds a new encoder object for every message (its ``__init__`` and the ``json.dumps``
keyword handling were about a tenth of one publication to 10 subscribers, twice: the EVENT and
the PUBLISHED). :class:`ReusedEncoderJsonObjectSerializer` keeps one instance of that same
Autobahn class, with the same arguments, and calls its ``encode``: the bytes are identical
(compact separators, non-ASCII as UTF-8, bytes as ``"\\u0000"`` + base64, ``Decimal`` as a
string, big integers and floats as the standard library writes them). A ``JSONEncoder`` keeps no
state between calls, so one instance serves every connection. A message of three plain integers
(PUBLISHED, SUBSCRIBED, REGISTERED: one per acknowledged publication) is formatted directly, as
the encoder would write it, for a tenth of the encoder's cost.

Autobahn's ``ujson`` backend (chosen by the ``AUTOBAHN_USE_UJSON`` environment variable) is not
used: it writes ``bytes`` as plain strings, so binary payloads would no longer reach JSON
subscribers as WAMP's ``"\\u0000"``-prefixed base64. When Autobahn runs on it anyway (or its
encoder class is gone), :func:`json_object_serializer` returns Autobahn's own serializer unchanged.
"""

from __future__ import annotations

from typing import Any

from autobahn.wamp import serializer as autobahn_serializer
from autobahn.wamp.serializer import JsonObjectSerializer


class ReusedEncoderJsonObjectSerializer(JsonObjectSerializer):
    """Autobahn's JSON object serializer, whose ``serialize`` reuses one encoder (see the module docstring)."""

    def __init__(self, encoder: Any, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self._encode = encoder.encode

    def serialize(self, obj: Any) -> bytes:
        if len(obj) == 3 and type(obj[0]) is int and type(obj[1]) is int and type(obj[2]) is int:
            # PUBLISHED, SUBSCRIBED, REGISTERED: "%d" writes an int as the encoder does (int.__repr__).
            data = b"[%d,%d,%d]" % (obj[0], obj[1], obj[2])
        else:
            data = self._encode(obj).encode("utf8")
        return data + b"\30" if self._batched else data


def json_object_serializer(original: JsonObjectSerializer) -> JsonObjectSerializer:
    """
    The object serializer to use in place of ``original`` (an Autobahn ``JsonObjectSerializer``):
    one that writes the same bytes with one reused encoder, or ``original`` itself when Autobahn's
    JSON is not its standard-library encoder.
    """
    encoder_class = getattr(autobahn_serializer, "_WAMPJsonEncoder", None)
    if type(original) is not JsonObjectSerializer or encoder_class is None:
        return original
    # The arguments of Autobahn's _dumps, exactly.
    encoder = encoder_class(separators=(",", ":"), ensure_ascii=False, sort_keys=False,
                            use_binary_hex_encoding=original._use_binary_hex_encoding)
    return ReusedEncoderJsonObjectSerializer(
        encoder, batched=original._batched, use_binary_hex_encoding=original._use_binary_hex_encoding,
        use_decimal_from_str=original._use_decimal_from_str, use_decimal_from_float=original._use_decimal_from_float,
    )
