"""Which payloads every wire format carries: the check, its reasons, and the serializers it stands for."""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any

import cbor2
import msgpack
import pytest
from autobahn.wamp.serializer import CBORObjectSerializer, JsonObjectSerializer, MsgPackObjectSerializer
from hypothesis import given
from hypothesis import strategies as st

from tests.core.harness import Harness, outbox, wire
from wsserver.core.session import State
from wsserver.core.values import MAX_INT, MIN_INT, Foreign, has_utf8, refusal, unrepresentable

SERIALIZERS = [JsonObjectSerializer(), MsgPackObjectSerializer(), CBORObjectSerializer()]

CARRIED = [
    None, True, False, 0, MIN_INT, MAX_INT, -1.5, 1e308, "", "text", "é ✓ 🎉", b"", b"\x00\xff",
    [], {}, [1, [2, [3]]], {"a": {"b": [None]}}, (1, 2), {"\x00key": 1},
]


@pytest.mark.parametrize("value", CARRIED, ids=repr)
def test_what_every_serializer_carries_is_accepted(value: Any) -> None:
    assert unrepresentable([value], {"k": value}) is None
    for serializer in SERIALIZERS:
        message = [36, 1, 2, {}, [value], {"k": value}]
        (back,) = serializer.unserialize(serializer.serialize(message))
        assert back[5]["k"] == (list(value) if isinstance(value, tuple) else value), serializer.NAME


# (value, the reason's start after "args[0]: ")
REFUSED = [
    (2**64, "integer of 65 bits does not fit msgpack's 64 bits"),
    (MIN_INT - 1, "integer of 64 bits does not fit"),
    (2**70, "integer of 71 bits"),
    (float("nan"), "NaN is not JSON"),
    (float("inf"), "Infinity is not JSON"),
    (float("-inf"), "-Infinity is not JSON"),
    ("\ud800", "a string with a lone surrogate has no UTF-8"),
    ("\x00base64", "a string that starts with NUL would reach JSON clients as bytes"),
    ({1: "x"}, "map key 1 (int): JSON keys are strings"),
    ({b"k": "x"}, "map key b'k' (bytes): JSON keys are strings"),
    ({"\ud800": 1}, "map key '\\ud800': a string with a lone surrogate"),
    (Foreign("CBOR tag 1 (epoch date/time)"), "CBOR tag 1 (epoch date/time) has no equivalent"),
    (cbor2.undefined, "CBOR undefined has no equivalent"),
    (cbor2.CBORSimpleValue(99), "a CBOR simple value has no equivalent"),
    (msgpack.ExtType(3, b""), "a msgpack extension (ExtType) has no equivalent"),
    (msgpack.Timestamp(0), "a msgpack extension (Timestamp) has no equivalent"),
    (datetime.datetime(2026, 1, 1), "a datetime datetime value has no equivalent"),
    (decimal.Decimal("1.5"), "a decimal Decimal value has no equivalent"),
    ({1, 2}, "a set value has no equivalent"),
]


@pytest.mark.parametrize("value, reason", REFUSED, ids=lambda v: repr(v)[:30])
def test_what_some_serializer_cannot_carry_is_refused_with_its_path(value: Any, reason: str) -> None:
    assert unrepresentable([value], None) == f"args[0]: {reason}" or unrepresentable([value], None).startswith(f"args[0]: {reason}")  # type: ignore[union-attr]
    assert unrepresentable(["fine", {"deep": [1, {"x y": value}]}], {"k": 1}).startswith("args[1].deep[1]['x y']: ")  # type: ignore[union-attr]
    assert unrepresentable(None, {"k": [value]}).startswith("kwargs.k[0]: ")  # type: ignore[union-attr]
    assert refusal([value], None) == ("wamp.error.invalid_argument", unrepresentable([value], None))


@pytest.mark.parametrize("value, reason", [r for r in REFUSED if not isinstance(r[0], (Foreign, set))], ids=lambda v: repr(v)[:30])
def test_each_refused_value_really_fails_a_serializer_or_a_strict_reader(value: Any, reason: str) -> None:
    """A test that the rule is needed: each refused value breaks one of the three, or JSON readers."""
    failures = []
    for serializer in SERIALIZERS:
        try:
            data = serializer.serialize([36, 1, 2, {}, [value]])
            (back,) = serializer.unserialize(data)
            if serializer.NAME == "json":
                json.loads(data, parse_constant=_not_json)  # what JavaScript's JSON.parse accepts
        except Exception:
            failures.append(serializer.NAME)
            continue
        if back[4] != [value] and value == value:  # NaN is never equal to itself
            failures.append(serializer.NAME)
    assert failures, f"{value!r} is carried by every serializer"


def _not_json(name: str) -> None:
    raise ValueError(name)


def test_nothing_to_carry_is_fine() -> None:
    assert unrepresentable(None, None) is None
    assert unrepresentable([], {}) is None


def test_a_deep_payload_is_walked_without_recursion() -> None:
    deep: Any = [2**70]
    for _ in range(5000):
        deep = [deep]
    reason = unrepresentable([deep], None)
    assert reason is not None and reason.startswith("args[0][0][0]") and "[...0][0]" in reason
    assert reason.endswith("[0][0]: integer of 71 bits does not fit msgpack's 64 bits (-2**63 .. 2**64-1)")
    assert len(reason) < 300  # the path is cut in the middle


def test_has_utf8() -> None:
    assert has_utf8("é") and has_utf8("🎉") and not has_utf8("\udfff")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_an_accepted_value_is_carried_by_every_serializer(value: Any) -> None:
    if unrepresentable([value], None) is not None:
        return
    for serializer in SERIALIZERS:
        data = serializer.serialize([36, 1, 2, {}, [value]])
        serializer.unserialize(data)
        if serializer.NAME == "json":
            json.loads(data, parse_constant=_not_json)


# -- the router refuses such payloads wherever it would forward them --------------------------

ERROR, PUBLISH, PUBLISHED, EVENT, CALL, RESULT, INVOCATION, YIELD = 8, 16, 17, 36, 48, 50, 68, 70
INVALID_ARGUMENT = "wamp.error.invalid_argument"


@pytest.fixture
def h() -> Harness:
    h = Harness(history_size=10)
    for name in ("p", "s", "caller", "callee"):
        h.join(name)
    h.subscribe("s", "com.t")
    return h


def test_an_acknowledged_publish_is_refused_never_routed_retained_or_kept(h: Harness) -> None:
    received = wire(h.send("p", [PUBLISH, 5, {"acknowledge": True, "retain": True}, "com.t", [2**70]]))
    assert received == {"p": [[ERROR, PUBLISH, 5, {}, INVALID_ARGUMENT, ["args[0]: integer of 71 bits does not fit msgpack's 64 bits (-2**63 .. 2**64-1)"]]]}
    assert wire(h.send("p", [PUBLISH, 6, {"retain": True}, "com.t", [], {"x": float("nan")}])) == {}  # not asked: no answer
    h.join("late")
    (subscribed,) = wire(h.send("late", [32, 1, {"get_retained": True}, "com.t"]))["late"]  # no retained EVENT
    subscription = subscribed[2]
    assert h.result("late", "wamp.subscription.get_events", subscription) == []
    assert h.sessions["p"].state is State.OPEN
    assert wire(h.send("p", [PUBLISH, 7, {"acknowledge": True}, "com.t", [1]]))["p"][0][0] == PUBLISHED


def test_a_call_is_refused_before_any_invocation(h: Harness) -> None:
    h.register("callee", "com.f")
    received = wire(h.send("caller", [CALL, 5, {}, "com.f", [], {"when": Foreign("CBOR tag 1 (epoch date/time)")}]))
    assert received == {"caller": [[ERROR, CALL, 5, {}, INVALID_ARGUMENT, ["kwargs.when: CBOR tag 1 (epoch date/time) has no equivalent in every wire format (json, msgpack, cbor)"]]]}


def _invoked(h: Harness, request: int) -> int:
    (invocation,) = wire(h.send("caller", [CALL, request, {}, "com.f", ["x"]]))["callee"]
    assert invocation[0] == INVOCATION
    return int(invocation[1])


def test_an_undeliverable_yield_or_callee_error_ends_the_call_with_an_error_to_the_caller(h: Harness) -> None:
    h.register("callee", "com.f")
    invocation = _invoked(h, 5)
    received = wire(h.send("callee", [YIELD, invocation, {}, [float("inf")]]))
    assert received == {"caller": [[ERROR, CALL, 5, {}, INVALID_ARGUMENT, ["the callee's answer cannot be delivered: args[0]: Infinity is not JSON (strict JSON parsers reject the whole message)"]]]}
    assert wire(h.send("callee", [YIELD, invocation, {}, ["late"]])) == {}  # the call is over
    invocation = _invoked(h, 6)
    received = wire(h.send("callee", [ERROR, INVOCATION, invocation, {}, "com.error.x", [{b"k": 1}]]))
    assert received["caller"][0][:5] == [ERROR, CALL, 6, {}, INVALID_ARGUMENT]
    assert "args[0]: map key b'k' (bytes)" in received["caller"][0][5][0]
    assert not h.sessions["caller"].invocations and not h.sessions["callee"].invocations
    invocation = _invoked(h, 7)
    assert wire(h.send("callee", [YIELD, invocation, {}, ["ok"]])) == {"caller": [[RESULT, 7, {}, ["ok"]]]}


def test_python_code_in_the_server_cannot_publish_such_a_payload(h: Harness) -> None:
    with pytest.raises(ValueError, match=r"args\[0\]: a datetime datetime value"):
        h.router.publish("realm1", "com.t", [datetime.datetime(2026, 1, 1)])
    assert outbox(h.router.publish("realm1", "com.t", ["fine"]))["s"][0].args == ["fine"]


hostile_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.binary()
    | st.text(st.characters(codec=None, exclude_categories=())) | st.sampled_from(["\x00x", "\ud800", 2**64, -(2**63) - 1]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=3) | st.integers() | st.sampled_from(["\udfff", b"k"]), children, max_size=4),
    max_leaves=20,
)


@given(hostile_values, hostile_values)
def test_exactly_what_every_serializer_carries_unchanged_is_accepted(args: Any, kwargs: Any) -> None:
    """And a refusal always finds its value (the fast walk and the explaining walk apply one rule)."""
    reason = unrepresentable([args], {"k": kwargs})
    accepted = all(_fails_no_serializer(value) for value in (args, kwargs))
    assert (reason is None) == accepted, reason


def _fails_no_serializer(value: Any) -> bool:
    try:
        for serializer in SERIALIZERS:
            data = serializer.serialize([36, 1, 2, {}, [value]])
            (back,) = serializer.unserialize(data)
            if serializer.NAME == "json":
                json.loads(data, parse_constant=_not_json)
            if back[4] != [value]:  # carried, but as something else (or NaN, never equal)
                return False
    except Exception:
        return False
    return True
