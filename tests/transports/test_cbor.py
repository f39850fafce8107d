"""CBOR as the router takes it: no tag conversions, no shared or referenced values (through ``unserialize``, as transports call it)."""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal

import cbor2
import pytest
from autobahn.wamp.serializer import CBORObjectSerializer

from wsserver.core.decoding import ProtocolViolation
from wsserver.core.values import Foreign
from wsserver.transports.wampsession import unserialize

CBOR = CBORObjectSerializer()


def test_plain_cbor_decodes_as_autobahn_decodes_it() -> None:
    message = [16, 1, {"acknowledge": True}, "com.t", ["é", 2**64 - 1, -(2**63), 1.5, b"\x00", None, True], {"k": [{}]}]
    assert unserialize(CBOR, cbor2.dumps(message), True) == [message] == CBOR.unserialize(cbor2.dumps(message))


@pytest.mark.parametrize(
    "value, what",
    [
        (datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc), "CBOR tag 0 (date/time string)"),
        (2**70, "CBOR tag 2 (bignum)"),
        (-(2**70), "CBOR tag 3 (negative bignum)"),
        (Decimal("1.5"), "CBOR tag 4 (decimal fraction)"),
        (uuid.UUID(int=1), "CBOR tag 37 (UUID)"),
        ({1, 2}, "CBOR tag 258 (set)"),
        (cbor2.CBORTag(4242, [1]), "CBOR tag 4242"),
    ],
)
def test_every_cbor_tag_decodes_to_a_marker_without_its_conversion(value: object, what: str) -> None:
    (message,) = unserialize(CBOR, cbor2.dumps([16, 1, {}, "com.t", [value]]), True)
    (marker,) = message[4]
    assert type(marker) is Foreign and marker.what == what


def test_a_costly_conversion_is_not_run() -> None:
    # Tag 5 (bigfloat) with an exponent of 10**9: cbor2 itself would compute a huge Decimal.
    bigfloat = cbor2.dumps(cbor2.CBORTag(5, [10**9, 3]))
    (marker,) = unserialize(CBOR, bigfloat, True)
    assert type(marker) is Foreign and marker.what == "CBOR tag 5 (bigfloat)"


def test_shared_and_referenced_values_refuse_the_message() -> None:
    bomb: list[object] = ["x"]
    for _ in range(64):  # 2**64 strings once re-encoded: only a refusal can be this fast
        bomb = [bomb, bomb]
    with pytest.raises(ProtocolViolation, match=r"CBOR tag 28 \(shareable value\) is not accepted"):
        unserialize(CBOR, cbor2.dumps([16, 1, {}, "com.t", [bomb]], value_sharing=True), True)
    with pytest.raises(ProtocolViolation, match=r"CBOR tag 25 \(string reference\) is not accepted"):
        unserialize(CBOR, cbor2.dumps([16, 1, {}, "com.t", ["abcd"] * 4], string_referencing=True), True)
    by_hand = bytes([0x84, 0x10, 0x01, 0xA0, 0xD8, 0x1D, 0x00])  # [16, 1, {}, 29(0)]: a reference to nothing shared
    with pytest.raises(ProtocolViolation, match=r"CBOR tag 29 \(shared value\)"):
        unserialize(CBOR, by_hand, True)


def test_bad_cbor_and_frames_of_the_wrong_kind_are_violations() -> None:
    with pytest.raises(ProtocolViolation, match="cannot unserialize cbor"):
        unserialize(CBOR, b"\xff", True)
    with pytest.raises(ProtocolViolation, match="text message on a cbor session"):
        unserialize(CBOR, b"\x80", False)
