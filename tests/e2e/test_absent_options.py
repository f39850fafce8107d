"""
Options given as "nothing", against ``twistd -n wsserver``, on every wire format: nil (JSON
``null`` too), CBOR ``undefined`` and msgpackr's ``undefined`` (msgpack extension 0, one zero byte),
as wampy.js sends the options an application leaves out. In every message a client sends with
options they read as not given and the session goes on; unknown options are ignored. Any other
value of a wrong type in an option is still refused with ABORT ``wamp.error.protocol_violation``
naming the option (a malformed message: the spec has the session end there), and a bystander on
the same server is not disturbed either way.
"""

from __future__ import annotations

from typing import Any

import cbor2
import msgpack
import pytest
from websockets.exceptions import ConnectionClosed

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.test_values import Wire

#: Per wire format, what its decoder gives for an option that was left out.
ABSENT = {"json": None, "msgpack": msgpack.ExtType(0, b"\x00"), "cbor": cbor2.undefined}
#: Per binary wire format, a value that is not "nothing" and fits no option: refused.
FOREIGN = {"msgpack": msgpack.ExtType(5, b"x"), "cbor": cbor2.CBORSimpleValue(0)}
TOPIC = "com.example.absent"
PROCEDURE = "com.example.absent.add"


def receive_until(wire: Wire, *types: int) -> dict[int, list[Any]]:
    """Read messages until one of each type in ``types`` has come (any order): them, by type."""
    got: dict[int, list[Any]] = {}
    while not set(types) <= got.keys():
        message = wire.recv()
        got.setdefault(message[0], message)
    return got


@pytest.mark.parametrize("wire_format", ["json", "msgpack", "cbor"])
def test_every_message_with_absent_options_keeps_its_session(server: Any, wire_format: str) -> None:
    """HELLO, SUBSCRIBE, PUBLISH, REGISTER, CALL, YIELD, ERROR and GOODBYE, every option absent."""
    u = ABSENT[wire_format]
    hello = [1, "realm1", {
        "roles": {"subscriber": {"features": {"pattern_based_subscription": u}}, "publisher": {}, "caller": {},
                  "callee": {"features": u}},
        "authid": u, "authmethods": u, "authextra": u, "no_such_detail": u,
    }]
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        peer = Wire(server.ws_url, wire_format, hello=hello)
        other = Wire(server.ws_url, wire_format, hello=hello)
        assert peer.exchange([32, 1, {"match": u, "get_retained": u, "no_such_option": u}, TOPIC])[0] == 33
        # A prefix subscription that matches TOPIC and nothing else here: "com.example" would also match
        # the bystander's events, which arrive meanwhile (the peer read one instead of its own).
        assert peer.exchange([32, 2, {"match": "prefix", "get_retained": u}, TOPIC])[0] == 33
        other.send([16, 3, {"acknowledge": True, "exclude_me": u, "exclude": u, "eligible": u, "retain": u,
                            "disclose_me": u, "no_such_option": u}, TOPIC, ["x"]])
        assert other.recv()[0] == 17  # PUBLISHED
        events = [peer.recv(), peer.recv()]  # one for each of the subscriptions
        assert [(event[0], event[4]) for event in events] == [(36, ["x"]), (36, ["x"])]
        assert peer.exchange([64, 4, {"match": u, "invoke": u, "no_such_option": u}, PROCEDURE])[0] == 65

        other.send([48, 5, {"timeout": u, "receive_progress": u, "disclose_me": u}, PROCEDURE, [2, 3]])
        invocation = peer.recv()
        assert (invocation[0], invocation[4]) == (68, [2, 3])
        peer.send([70, invocation[1], {"progress": u, "no_such_option": u}, [5]])
        result = other.recv()
        assert (result[0], result[1], result[3]) == (50, 5, [5])

        other.send([48, 6, {"timeout": u}, PROCEDURE, []])
        invocation = peer.recv()
        peer.send([8, 68, invocation[1], {"no_such_detail": u}, "com.example.error.refused", ["no"]])
        error = other.recv()
        assert (error[0], error[2], error[4], error[5]) == (8, 6, "com.example.error.refused", ["no"])

        assert other.exchange([6, {"message": u}, "wamp.close.close_realm"])[0] == 6  # GOODBYE answered
        assert peer.exchange([32, 7, {}, "com.example.still.here"])[0] == 33
    bystander.check()
    memory.check(64 * 2**20)


@pytest.mark.parametrize("wire_format", ["msgpack", "cbor"])
@pytest.mark.parametrize(
    "message, option",
    [
        ([32, 1, {"match": "@"}, TOPIC], "match"),
        ([32, 1, {"get_retained": "@"}, TOPIC], "get_retained"),
        ([16, 1, {"acknowledge": "@"}, TOPIC], "acknowledge"),
        ([16, 1, {"disclose_me": "@"}, TOPIC], "disclose_me"),
        ([64, 1, {"invoke": "@"}, PROCEDURE], "invoke"),
        ([48, 1, {"timeout": "@"}, PROCEDURE], "timeout"),
        ([6, {"message": "@"}, "wamp.close.close_realm"], "message"),
    ],
)
def test_any_other_foreign_value_in_an_option_is_refused_naming_it(
    server: Any, wire_format: str, message: list[Any], option: str
) -> None:
    """ABORT protocol_violation whose message names the option; the bystander is not disturbed."""
    foreign = FOREIGN[wire_format]
    message = [{key: foreign for key in part} if type(part) is dict else part for part in message]
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        attacker = Wire(server.ws_url, wire_format)
        abort = attacker.exchange(message)
        assert abort[0] == 3 and abort[2] == "wamp.error.protocol_violation", abort
        assert f"'{option}'" in abort[1]["message"], abort
        with pytest.raises(ConnectionClosed):
            attacker.recv()
        attacker.close()
    bystander.check()
    memory.check(64 * 2**20)
