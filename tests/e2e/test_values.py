"""
Payloads one wire format decodes and another cannot carry, against ``twistd -n wsserver``: each is
refused at PUBLISH / CALL / YIELD with ERROR ``wamp.error.invalid_argument`` naming the value,
the offender's session stays open, no subscriber is disturbed and nothing is retained; and a CBOR
value-sharing bomb is refused before it is ever re-encoded.

Clients here are raw WebSockets speaking each serializer (no library sends these values on
purpose), decoding with autobahn's object serializers as autobahn-python would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import cbor2
import msgpack
import pytest
from autobahn.wamp.serializer import CBORObjectSerializer, JsonObjectSerializer, MsgPackObjectSerializer
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from tests.e2e.broker_clients import NodePeer
from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import HELLO

OBJECT_SERIALIZERS = {"json": JsonObjectSerializer(), "msgpack": MsgPackObjectSerializer(), "cbor": CBORObjectSerializer()}
INVALID_ARGUMENT = "wamp.error.invalid_argument"
TOPIC = "com.example.values"


class Wire:
    """A raw WAMP session in one wire format; ``send`` takes bytes or str as is, lists serialized."""

    def __init__(self, ws_url: str, wire_format: str, hello: list[Any] = HELLO) -> None:
        self.serializer = OBJECT_SERIALIZERS[wire_format]
        self.ws = ws_connect(ws_url, subprotocols=[f"wamp.2.{wire_format}"], open_timeout=5, max_size=None)
        welcome = self.exchange(hello)
        assert welcome[0] == 2, welcome

    def send(self, message: Any) -> None:
        if isinstance(message, list):
            message = self.serializer.serialize(message)
            if not self.serializer.BINARY:
                message = message.decode("utf-8")
        self.ws.send(message)

    def recv(self, timeout: float = 5) -> list[Any]:
        data = self.ws.recv(timeout=timeout)
        (message,) = self.serializer.unserialize(data if isinstance(data, bytes) else data.encode("utf-8"))
        return list(message)

    def exchange(self, message: Any, timeout: float = 5) -> list[Any]:
        self.send(message)
        return self.recv(timeout)

    def subscribe(self, topic: str, **options: Any) -> None:
        assert self.exchange([32, 1, options, topic])[0] == 33

    def quiet(self, seconds: float = 0.3) -> bool:
        """Nothing arrives for ``seconds`` and the connection stays open."""
        try:
            self.ws.recv(timeout=seconds)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def wires(server: Any) -> Iterator[Any]:
    opened: list[Wire] = []

    def wire(wire_format: str = "json") -> Wire:
        opened.append(Wire(server.ws_url, wire_format))
        return opened[-1]

    yield wire
    for each in opened:
        each.close()


def closed_code(wire: Wire) -> tuple[list[Any], int | None]:
    """Read until the server closes: the messages received and the close code."""
    received = []
    try:
        while True:
            received.append(wire.recv())
    except ConnectionClosed as closed:
        return received, closed.rcvd.code if closed.rcvd else None


def cbor_bomb(depth: int) -> bytes:
    """A PUBLISH of ~160 bytes whose payload re-encodes to 2**depth strings (cbor2 value sharing)."""
    value: list[Any] = ["abcdefgh"]
    for _ in range(depth):
        value = [value, value]
    return cbor2.dumps([16, 7, {"acknowledge": True, "retain": True}, TOPIC, [value]], value_sharing=True)


def test_a_cbor_value_sharing_bomb_is_refused_before_it_is_re_encoded(server: Any, wires: Any) -> None:
    subscriber = wires("json")
    subscriber.subscribe(TOPIC)
    attacker = wires("cbor")
    bomb = cbor_bomb(22)
    assert len(bomb) < 200
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        start = time.monotonic()
        attacker.send(bomb)
        received, code = closed_code(attacker)
        refused_after = time.monotonic() - start
        assert received[0][0] == 3 and received[0][2] == "wamp.error.protocol_violation", received  # ABORT
        assert "CBOR tag 28" in received[0][1]["message"]
        assert code == 1002
        assert refused_after < 1.0
        assert subscriber.quiet()
    bystander.check()
    memory.check(16 * 2**20)
    # Never retained: a later subscriber asking for retained events gets none, and stays well.
    late = wires("msgpack")
    late.subscribe(TOPIC, get_retained=True)
    assert late.quiet()


def test_cbor_string_references_are_refused_too(wires: Any) -> None:
    attacker = wires("cbor")
    attacker.send(cbor2.dumps([16, 7, {"acknowledge": True}, TOPIC, ["a" * 50] * 20], string_referencing=True))
    received, code = closed_code(attacker)
    assert received[0][2] == "wamp.error.protocol_violation" and "(string reference" in received[0][1]["message"]
    assert code == 1002


# Each row: a publisher's wire format, the PUBLISH as that format's bytes (what no library sends),
# and what the reason must name.
UNREPRESENTABLE = [
    pytest.param("json", '[16, 7, {"acknowledge": true}, "%s", [%d]]' % (TOPIC, 2**70), "args[0]: integer", id="json-2**70"),
    pytest.param("json", '[16, 7, {"acknowledge": true}, "%s", [-%d]]' % (TOPIC, 2**64), "args[0]: integer", id="json--2**64"),
    pytest.param("json", '[16, 7, {"acknowledge": true}, "%s", [], {"x": [NaN]}]' % TOPIC, "kwargs.x[0]: NaN", id="json-NaN"),
    pytest.param("json", '[16, 7, {"acknowledge": true}, "%s", [Infinity]]' % TOPIC, "args[0]: Infinity", id="json-Infinity"),
    pytest.param("json", '[16, 7, {"acknowledge": true}, "%s", [1e400]]' % TOPIC, "args[0]: Infinity", id="json-1e400"),
    pytest.param("json", '[16, 7, {"acknowledge": true}, "%s", ["\\ud800"]]' % TOPIC, "args[0]: a string with a lone surrogate", id="json-lone-surrogate"),
    pytest.param("msgpack", msgpack.packb([16, 7, {"acknowledge": True}, TOPIC, [float("-inf")]]), "args[0]: -Infinity", id="msgpack--Infinity"),
    pytest.param("msgpack", msgpack.packb([16, 7, {"acknowledge": True}, TOPIC, [msgpack.ExtType(5, b"x")]]), "args[0]: a msgpack extension", id="msgpack-ext"),
    pytest.param("msgpack", msgpack.packb([16, 7, {"acknowledge": True}, TOPIC, [], {"k": {b"raw": 1}}]), "kwargs.k: map key b'raw' (bytes)", id="msgpack-bytes-key"),
    pytest.param("msgpack", msgpack.packb([16, 7, {"acknowledge": True}, TOPIC, ["\x00hello"]]), "args[0]: a string that starts with NUL", id="msgpack-NUL-string"),
    pytest.param("cbor", cbor2.dumps([16, 7, {"acknowledge": True}, TOPIC, [datetime(2026, 11, 29, tzinfo=timezone.utc)]]), "args[0]: CBOR tag 0", id="cbor-datetime"),
    pytest.param("cbor", cbor2.dumps([16, 7, {"acknowledge": True}, TOPIC, [2**70]]), "args[0]: CBOR tag 2", id="cbor-bignum"),
    pytest.param("cbor", cbor2.dumps([16, 7, {"acknowledge": True}, TOPIC, [cbor2.undefined]]), "args[0]: CBOR undefined", id="cbor-undefined"),
    pytest.param("cbor", cbor2.dumps([16, 7, {"acknowledge": True}, TOPIC, [], {"k": {1: 2}}]), "kwargs.k: map key 1 (int)", id="cbor-int-key"),
]


@pytest.mark.parametrize("wire_format, publication, reason", UNREPRESENTABLE)
def test_a_payload_that_another_wire_format_cannot_carry_is_refused(
    server: Any, wires: Any, wire_format: str, publication: Any, reason: str
) -> None:
    subscribers = [wires(each) for each in ("json", "msgpack", "cbor")]
    for subscriber in subscribers:
        subscriber.subscribe(TOPIC)
    publisher = wires(wire_format)
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        error = publisher.exchange(publication)
        assert error[:5] == [8, 16, 7, {}, INVALID_ARGUMENT], error
        assert reason in error[5][0], error
        # The same again with retain: refused, and not kept.
        publisher.send(_with_retain(wire_format, publication))
        assert publisher.recv()[4] == INVALID_ARGUMENT
        for subscriber in subscribers:
            assert subscriber.quiet(0.1)
        # The publisher's session goes on, and every subscriber gets the next event.
        assert publisher.exchange([16, 8, {"acknowledge": True}, TOPIC, ["fine"]])[:2] == [17, 8]
        for subscriber in subscribers:
            assert subscriber.recv()[4] == ["fine"]
    bystander.check()
    memory.check(16 * 2**20)
    late = wires("json")
    late.subscribe(TOPIC, get_retained=True)
    assert late.quiet()


def _with_retain(wire_format: str, publication: Any) -> Any:
    """The same PUBLISH with ``retain: true`` in its options."""
    if wire_format == "json":
        return publication.replace('{"acknowledge": true}', '{"acknowledge": true, "retain": true}')
    if wire_format == "msgpack":
        raw = msgpack.unpackb(publication, raw=False, strict_map_key=False)
        raw[2]["retain"] = True
        return msgpack.packb(raw)
    raw = cbor2.loads(publication)
    raw[2]["retain"] = True
    return cbor2.dumps(raw)


def test_an_unacknowledged_refused_publish_gets_no_answer(wires: Any) -> None:
    publisher = wires("json")
    publisher.send('[16, 7, {}, "%s", [%d]]' % (TOPIC, 2**70))
    assert publisher.quiet()
    assert publisher.exchange([16, 8, {"acknowledge": True}, TOPIC, []])[:2] == [17, 8]


def test_bytes_are_carried_to_every_wire_format(wires: Any) -> None:
    """Bytes are representable in JSON by autobahn's convention ("\\u0000" + base64): accepted."""
    subscribers = {each: wires(each) for each in ("json", "msgpack", "cbor")}
    for subscriber in subscribers.values():
        subscriber.subscribe(TOPIC)
    publisher = wires("cbor")
    assert publisher.exchange(cbor2.dumps([16, 7, {"acknowledge": True}, TOPIC, [b"\x00\xffbin"]]))[0] == 17
    for wire_format, subscriber in subscribers.items():
        assert subscriber.recv()[4] == [b"\x00\xffbin"], wire_format
    # What a JSON client sees on the wire: the convention's string, valid strict JSON.
    publisher.send(cbor2.dumps([16, 8, {}, TOPIC, [b"\x01"]]))
    raw = subscribers["json"].ws.recv(timeout=5)
    assert json.loads(raw, parse_constant=_strict)[4] == ["\u0000AQ=="]


def _strict(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def test_call_and_yield_values_are_checked(wires: Any) -> None:
    callee, caller = wires("msgpack"), wires("json")
    assert callee.exchange([64, 1, {}, "com.example.echo"])[0] == 65
    # A CALL whose arguments the msgpack callee cannot receive: refused, never invoked.
    error = caller.exchange('[48, 5, {}, "com.example.echo", [%d]]' % 2**70)
    assert error[:5] == [8, 48, 5, {}, INVALID_ARGUMENT] and "args[0]: integer" in error[5][0]
    assert callee.quiet()
    # A YIELD the JSON caller cannot receive: the caller gets the ERROR, the callee nothing.
    caller.send([48, 6, {}, "com.example.echo", ["x"]])
    invocation = callee.recv()
    assert invocation[0] == 68
    callee.send(msgpack.packb([70, invocation[1], {}, [float("nan")]]))
    error = caller.recv()
    assert error[:5] == [8, 48, 6, {}, INVALID_ARGUMENT] and "args[0]: NaN" in error[5][0], error
    assert callee.quiet()
    # A callee's ERROR with such a payload: the same.
    caller.send([48, 7, {}, "com.example.echo", ["y"]])
    invocation = callee.recv()
    callee.send(msgpack.packb([8, 68, invocation[1], {}, "com.example.error.x", [msgpack.ExtType(1, b"")]]))
    error = caller.recv()
    assert error[:5] == [8, 48, 7, {}, INVALID_ARGUMENT] and "args[0]: a msgpack extension" in error[5][0], error
    # Both sessions go on.
    caller.send([48, 8, {}, "com.example.echo", ["z"]])
    invocation = callee.recv()
    callee.send([70, invocation[1], {}, ["z"]])
    assert caller.recv()[:4] == [50, 8, {}, ["z"]]


def test_autobahnjs_on_node_keeps_its_session_when_someone_publishes_nan(server: Any, wires: Any) -> None:
    """NaN reached JSON clients as the bare word NaN, which JSON.parse rejects: the Node process exited."""
    node = NodePeer(server.ws_url, timeout=10)
    try:
        subscription = node.request("subscribe", topic=TOPIC)
        publisher = wires("msgpack")
        error = publisher.exchange(msgpack.packb([16, 7, {"acknowledge": True}, TOPIC, [float("nan")], {"x": float("inf")}]))
        assert error[:5] == [8, 16, 7, {}, INVALID_ARGUMENT]
        assert publisher.exchange([16, 8, {"acknowledge": True}, TOPIC, ["after"]])[:2] == [17, 8]
        assert node.event(subscription)["args"] == ["after"]
        assert node.proc.poll() is None
    finally:
        node.close()


@pytest.mark.parametrize(
    "message",
    [
        '[32, 5, {}, "com.example.\\ud800"]',  # a valid URI but for its lone surrogate
        '[32, 5, {}, "com.example. \\ud800"]',  # an invalid URI, quoted back in the reason
        '[16, 5, {"acknowledge": true}, "com.example.\\udfff", []]',
        '[48, 5, {}, "com.example.\\ud800", []]',
        '[32, 5, {"match": "\\ud800"}, "com.example.t"]',
    ],
)
def test_a_uri_or_option_with_a_lone_surrogate_gets_an_error_not_1011(server: Any, wires: Any, message: str) -> None:
    watcher = wires("json")
    watcher.subscribe("com.example.", match="prefix")
    client = wires("json")
    with Bystander(server.ws_url, topic="org.bystander") as bystander:
        error = client.exchange(message)
        assert error[0] == 8 and error[2] == 5 and error[4] in ("wamp.error.invalid_uri", INVALID_ARGUMENT), error
        assert client.exchange([32, 6, {}, TOPIC])[:2] == [33, 6]  # still open
        assert watcher.quiet(0.1)
    bystander.check()
