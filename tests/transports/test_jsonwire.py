"""The reused JSON encoder writes exactly what Autobahn's own JSON object serializer writes."""

import decimal

import pytest
from autobahn.wamp.serializer import JsonObjectSerializer

from wsserver.transports.jsonwire import ReusedEncoderJsonObjectSerializer, json_object_serializer
from wsserver.transports.websocket import WampServerFactory, wamp_serializers
from wsserver.core.router import Router

VALUES = [
    [36, 1, 2, {}, [1, "x" * 40]],
    [17, 5, 2**53],  # three integers: formatted directly
    [33, 0, -(2**70)],
    [17, 5, True],  # not an integer: the encoder writes true
    [17, 5, 1.0],
    [36, 1, 2],
    # Non-ASCII (written as UTF-8), big integers, floats, bytes as "\u0000" + base64, Decimal as a string.
    [36, 1, 2, {"publisher": 3}, ["é☃\U0001F600", 2**80, -(2**70), 1.5, 1e300, 0.1, True, None, b"\x00\xffbin", b"",
                                  decimal.Decimal("1.10")], {"k": {"ü": [b"\x01"]}}],
]


@pytest.mark.parametrize("options", [{}, {"batched": True}, {"use_binary_hex_encoding": True}])
@pytest.mark.parametrize("value", VALUES)
def test_same_bytes_as_autobahn(options: dict, value: list) -> None:
    original = JsonObjectSerializer(**options)
    reused = json_object_serializer(original)
    assert isinstance(reused, ReusedEncoderJsonObjectSerializer)
    assert reused.serialize(value) == original.serialize(value)
    assert reused.serialize(value) == original.serialize(value)  # the encoder keeps nothing between calls


def test_a_lone_surrogate_fails_alike() -> None:
    with pytest.raises(UnicodeEncodeError):
        JsonObjectSerializer().serialize(["\ud800"])
    with pytest.raises(UnicodeEncodeError):
        json_object_serializer(JsonObjectSerializer()).serialize(["\ud800"])


def test_unknown_serializers_are_kept() -> None:
    class Other(JsonObjectSerializer):
        pass

    other = Other()
    assert json_object_serializer(other) is other


def test_websocket_json_uses_the_reused_encoder() -> None:
    assert any(isinstance(s._serializer, ReusedEncoderJsonObjectSerializer) for s in wamp_serializers())
    factory = WampServerFactory(Router(["realm1"], iter(range(1, 10**6)).__next__, clock=lambda: 0.0))
    assert isinstance(factory.object_serializers["json"], ReusedEncoderJsonObjectSerializer)
