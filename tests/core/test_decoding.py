"""Sorting bad messages into protocol violations and answerable invalid requests."""

from __future__ import annotations

import copy
from collections.abc import Callable

import cbor2
import msgpack
import pytest
from autobahn.wamp import message as wamp
from hypothesis import given, settings
from hypothesis import strategies as st
from autobahn.wamp.serializer import Serializer

from wsserver.core import decoding
from wsserver.core.broker import Audience
from wsserver.core.decoding import (
    MESSAGE_CLASSES,
    InvalidRequest,
    ProtocolViolation,
    PublishRequest,
    decode,
    decode_by_parse,
    decode_one,
    without_absent_options,
)
from wsserver.core.session import Session


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


#: What msgpack (msgpackr's undefined: extension 0, one zero byte) and CBOR (simple value 23)
#: decode an option to when wampy.js leaves it out, and nil.
MSGPACK_UNDEFINED = msgpack.ExtType(0, b"\x00")
ABSENT = [None, cbor2.undefined, MSGPACK_UNDEFINED]


@pytest.mark.parametrize("absent", ABSENT, ids=["nil", "cbor-undefined", "msgpack-undefined"])
@pytest.mark.parametrize(
    "raw, check",
    [
        # Every message a client sends that has options (or details), each option a router reads.
        ([1, "realm1", {"roles": {"subscriber": {"features": {"x": "@"}}}, "authid": "@", "authmethods": "@"}],
         lambda m: m.realm == "realm1" and m.authid is None and m.authmethods is None and "subscriber" in m.roles),
        ([5, "sig", {"extra": "@"}], lambda m: m.signature == "sig" and m.extra == {}),
        ([6, {"message": "@"}, "wamp.close.normal"], lambda m: m.reason == "wamp.close.normal" and m.message is None),
        ([3, {"message": "@"}, "wamp.error.x"], lambda m: m.reason == "wamp.error.x" and m.message is None),
        ([32, 5, {"match": "@", "get_retained": "@", "unknown": "@"}, "com.t"],
         lambda m: m.match == "exact" and not m.get_retained),
        ([32, 5, {"match": "prefix", "get_retained": "@"}, "com.t"], lambda m: m.match == "prefix"),
        ([16, 5, {"acknowledge": "@", "exclude_me": "@", "exclude": "@", "eligible": "@", "retain": "@",
                  "disclose_me": "@"}, "com.t", [1]],
         lambda m: not m.message.acknowledge and m.message.exclude_me is None and m.message.exclude is None
         and not m.disclose_me),
        ([64, 5, {"match": "@", "invoke": "@", "concurrency": "@"}, "com.p"],
         lambda m: m.match == "exact" and m.invoke == "single"),
        ([48, 5, {"timeout": "@", "receive_progress": "@", "disclose_me": "@"}, "com.p", [1]],
         lambda m: m.message.procedure == "com.p" and not m.message.timeout and not m.message.receive_progress
         and not m.disclose_me),
        ([49, 5, {"mode": "@"}], lambda m: m.request == 5 and m.mode is None),
        ([70, 5, {"progress": "@"}, [1]], lambda m: m.args == [1] and not m.progress),
        ([8, 68, 5, {"x": "@"}, "com.error", ["why"]], lambda m: m.error == "com.error" and m.args == ["why"]),
    ],
)
def test_an_absent_option_value_means_the_option_is_not_given(raw: list[object], check: object, absent: object) -> None:
    """Nil, CBOR undefined and msgpackr's undefined read as "not given" wherever "@" stands, at any depth."""

    def put(value: object) -> object:
        if value == "@":
            return absent
        return {key: put(item) for key, item in value.items()} if type(value) is dict else value

    (message,) = decode([[put(part) if type(part) is dict else part for part in raw]])
    assert callable(check) and check(message), message


@pytest.mark.parametrize(
    "raw",
    [
        [32, 5, {"match": msgpack.ExtType(0, b"\x01")}, "com.t"],  # an extension that is not undefined
        [32, 5, {"match": msgpack.ExtType(5, b"\x00")}, "com.t"],
        [32, 5, {"get_retained": cbor2.CBORSimpleValue(0)}, "com.t"],
        [48, 5, {"timeout": "soon"}, "com.p"],
        [16, 5, {"disclose_me": msgpack.ExtType(1, b"")}, "com.t"],
    ],
)
def test_any_other_value_of_the_wrong_type_is_refused_naming_the_option(raw: list[object]) -> None:
    with pytest.raises(ProtocolViolation) as refusal:
        decode([raw])
    (option,) = (key for key in raw[2] if isinstance(key, str))  # type: ignore[union-attr]
    assert f"'{option}'" in str(refusal.value)


def test_undefined_in_a_payload_is_kept_for_the_payload_check() -> None:
    """A payload is not options: its undefined reaches the router, which refuses it with its path."""
    (publish,) = decode([[16, 5, {"acknowledge": True}, "com.t", [cbor2.undefined], {"k": None}]])
    assert isinstance(publish, PublishRequest)
    assert publish.message.args == [cbor2.undefined] and publish.message.kwargs == {"k": None}


def test_a_message_without_absent_options_is_passed_on_as_it_is() -> None:
    raw = [32, 5, {"match": "prefix"}, "com.t"]
    assert without_absent_options(raw) is raw
    nested = [1, "realm1", {"roles": {"caller": {"features": {"progressive_call_results": cbor2.undefined}}}}]
    assert without_absent_options(nested) == [1, "realm1", {"roles": {"caller": {"features": {}}}}]
    assert nested[2]["roles"]["caller"]["features"] == {"progressive_call_results": cbor2.undefined}  # type: ignore[index]


# -- the usual PUBLISH's shortcut decides as the long way (autobahn's Publish.parse) ---------------

_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from([2**53, 2**53 + 1, -1, 1.0, "", "x", b"x"]),
    st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.sampled_from(["a", 1]), st.integers(), max_size=2),
)
_OPTIONS = st.one_of(
    st.just({}), st.fixed_dictionaries({"acknowledge": st.booleans()}),
    st.fixed_dictionaries({"acknowledge": st.booleans()}, optional=dict.fromkeys(["disclose_me", "exclude_me", "x"], _VALUES)),
    st.dictionaries(st.sampled_from(["acknowledge", "disclose_me", "exclude_me", "retain", "exclude", "x", 7]),
                    _VALUES, max_size=3),
    _VALUES,
)
# Each part mostly what the shortcut takes, else anything: so that one wrong part at a time is common.
_REQUESTS = st.one_of(st.integers(0, 2**53), st.integers(-2, 2**53 + 1), _VALUES)
_TOPICS = st.one_of(st.sampled_from(["com.t", "a.b.c", "x", "\u00e9.t"]),
                    st.sampled_from(["a..b", "", " ", "a b", "a.#", ".a", "a.", "a\ud800", "a\tb"]),
                    st.text(max_size=4), _VALUES)
_ARGS = st.one_of(st.lists(st.integers(), max_size=2), _VALUES)
_KWARGS = st.one_of(st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
                    st.dictionaries(st.sampled_from(["a", 1, b"b"]), st.integers(), max_size=2), _VALUES)
_REST = st.one_of(st.just(()), st.tuples(_ARGS), st.tuples(_ARGS, _KWARGS), st.tuples(_ARGS, _KWARGS, _VALUES))
_PUBLISHES = st.builds(
    lambda request, options, topic, rest: [16, request, options, topic, *rest], _REQUESTS, _OPTIONS, _TOPICS, _REST,
)


def _decided(raw: list[object], decode_one: Callable[[list[object]], object]) -> object:
    """What decoding ``raw`` comes to, comparable: the message's class and marshalled form, or the refusal."""
    try:
        decoded = decode_one(copy.deepcopy(raw))
    except ProtocolViolation as violation:
        return "violation", str(violation)
    if isinstance(decoded, PublishRequest):
        return type(decoded.message), decoded.message.marshal(), decoded.disclose_me
    return decoded


@settings(max_examples=3000, deadline=None)
@given(_PUBLISHES)
def test_the_usual_publish_decodes_as_autobahns_parse_decides(raw: list[object]) -> None:
    assert _decided(raw, decode_one) == _decided(raw, decode_by_parse)
    try:
        decoded = decode_one(copy.deepcopy(raw))
    except ProtocolViolation:
        return
    if isinstance(decoded, PublishRequest) and decoded.plain:
        # Only a PUBLISH whose options are at most acknowledge may say so: the broker reads no other.
        assert type(raw[2]) is dict and set(raw[2]) <= {"acknowledge"}
        publisher: Session[None] = Session(None)
        publisher.id = 5
        for session in (publisher, None):
            assert Audience.of(decoded.message, session, plain=True) == Audience.of(decoded.message, session)


@pytest.mark.parametrize("raw", [
    [16, 1, {}, "com.t"], [16, 1, {"acknowledge": True}, "com.t", [1, "x"]], [16, 2**53, {}, "a.b", [], {"k": 1}],
    [16, 1, {"acknowledge": False}, "com.t", [], {}],
])
def test_the_usual_publish_takes_the_shortcut(raw: list[object], monkeypatch: pytest.MonkeyPatch) -> None:
    # The comparison above cannot tell the ways apart: here the long way is closed.
    monkeypatch.setattr(decoding, "decode_by_parse", None)
    (publish,) = decode([raw])
    assert isinstance(publish, PublishRequest) and publish.message.marshal() == wamp.Publish.parse(raw).marshal()
