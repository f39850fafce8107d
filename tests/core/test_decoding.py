"""Sorting bad messages into protocol violations and answerable invalid requests."""

from __future__ import annotations

import pytest
from autobahn.wamp import message as wamp
from autobahn.wamp.serializer import Serializer

from wsserver.core.decoding import MESSAGE_CLASSES, InvalidRequest, ProtocolViolation, PublishRequest, decode


def test_message_classes_are_autobahns_own_map() -> None:
    assert MESSAGE_CLASSES == Serializer.MESSAGE_TYPE_MAP


def test_valid_messages_become_autobahn_messages() -> None:
    hello, subscribe = decode([[1, "realm1", {"roles": {"subscriber": {}}}], [32, 5, {}, "com.t"]])
    assert isinstance(hello, wamp.Hello) and hello.realm == "realm1"
    assert isinstance(subscribe, wamp.Subscribe) and (subscribe.request, subscribe.topic) == (5, "com.t")


@pytest.mark.parametrize("options, disclose_me", [({}, False), ({"disclose_me": True}, True), ({"disclose_me": False}, False)])
def test_a_publish_keeps_the_disclose_me_option_autobahn_drops(options: dict[str, object], disclose_me: bool) -> None:
    (publish,) = decode([[16, 5, {"acknowledge": True, **options}, "com.t", [1]]])
    assert isinstance(publish, PublishRequest) and publish.kind == "Publish"
    assert publish.disclose_me is disclose_me
    assert publish.message.acknowledge and publish.message.args == [1]


@pytest.mark.parametrize("raw", [[32, 5, {"match": "regex"}, "com.t"], [64, 5, {"match": "glob"}, "com.p"]])
def test_an_unknown_match_policy_is_an_invalid_argument_not_a_violation(raw: list[object]) -> None:
    (invalid,) = decode([raw])
    assert isinstance(invalid, InvalidRequest)
    assert (invalid.request_type, invalid.request, invalid.error) == (raw[0], 5, "wamp.error.invalid_argument")
    assert invalid.wants_reply


@pytest.mark.parametrize(
    "raw, wants_reply",
    [
        ([32, 5, {}, "bad uri"], True),
        ([16, 5, {}, "bad uri"], False),
        ([16, 5, {"acknowledge": True}, "bad uri"], True),
        ([16, 5, {"acknowledge": "yes"}, "bad uri"], False),
    ],
)
def test_a_bad_uri_in_a_well_formed_request_is_an_invalid_request(raw: list[object], wants_reply: bool) -> None:
    (invalid,) = decode([raw])
    assert isinstance(invalid, InvalidRequest)
    assert (invalid.request_type, invalid.request, invalid.wants_reply) == (raw[0], 5, wants_reply)
    assert "bad uri" in invalid.reason
    assert invalid.kind == "InvalidRequest"


def test_a_bad_realm_name_is_an_invalid_hello() -> None:
    (invalid,) = decode([[1, "no such realm", {"roles": {"subscriber": {}}}]])
    assert isinstance(invalid, InvalidRequest) and invalid.kind == "InvalidHello"


@pytest.mark.parametrize(
    "raw",
    [
        "text",
        None,
        [],
        [None],
        [1.5],
        [12345],
        [32, "not an id", {}, "com.t"],
        [32, 1, "not a dict", "com.t"],
        [32, 1, {}, "com.t", "extra"],
        [16, 1, {}, "com.t", "args must be a list"],
        [32, 2**60, {}, "bad uri"],  # id out of range: nothing to answer to
        [1, "realm1", {}],  # HELLO without roles
        [32, 1, {"match": 1}, "com.t"],  # a match option that is not even a string
        [32, "x", {"match": "regex"}, "com.t"],  # unknown policy, but no request id to answer
        [16, 1, {"disclose_me": 1}, "com.t"],
    ],
)
def test_malformed_messages_are_protocol_violations(raw: object) -> None:
    with pytest.raises(ProtocolViolation):
        decode([raw])


def test_one_bad_message_fails_the_whole_batch() -> None:
    with pytest.raises(ProtocolViolation):
        decode([[32, 1, {}, "com.t"], [999]])


@pytest.mark.parametrize(
    "raw",
    [
        [32, 5, {}, "com. " + "x" * 500_000],
        [16, 5, {"acknowledge": True}, "a b\ud800", []],
        [32, 5, {"match": "\ud800"}, "com.t"],
    ],
)
def test_a_complaint_quoting_the_client_is_short_and_has_utf8(raw: list[object]) -> None:
    (invalid,) = decode([raw])
    assert isinstance(invalid, InvalidRequest)
    assert len(invalid.reason) <= 300
    invalid.reason.encode("utf-8")  # the ERROR that carries it can be encoded
