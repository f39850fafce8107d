"""A publication survives the trip between nodes: every value the router accepts, the publisher and the audience."""

from __future__ import annotations

from wsserver.backplane import codec
from wsserver.core.broker import EVERYONE, Audience, Publication, Publisher


def test_payload_publisher_and_id_survive() -> None:
    payload = [1, -2**53, 1.5, "ü", b"\x00\xff", None, True, [{"nested": [b"x"]}]]
    publication = Publication(7, "com.t", payload, {"k": {"b": b"y"}}, EVERYONE, Publisher(42, "alice", "user"))
    node, realm, back, retain = codec.decode(codec.encode("node-a", "realm1", publication, True)) or ()
    assert (node, realm, retain) == ("node-a", "realm1", True)
    assert (back.id, back.topic, back.args, back.kwargs, back.publisher) == (
        7, "com.t", payload, {"k": {"b": b"y"}}, Publisher(42, "alice", "user")
    )
    assert back.audience == EVERYONE and back.position is None


def test_the_audience_survives() -> None:
    audience = Audience(
        5, eligible=frozenset({1, 2}), eligible_authid=None, eligible_authrole=frozenset({"r"}),
        exclude=frozenset({3}), exclude_authid=frozenset({"bob"}), exclude_authrole=frozenset(), listed=True,
    )
    publication = Publication(1, "t", None, None, audience)
    _, _, back, retain = codec.decode(codec.encode("n", "r", publication, False)) or ()
    assert back.audience == audience and retain is False
    excluded_only = Publication(1, "t", None, None, Audience(9))
    assert codec.decode(codec.encode("n", "r", excluded_only, False))[2].audience == Audience(9)  # type: ignore[index]


def test_a_message_of_another_version_is_not_a_publication() -> None:
    import msgpack

    assert codec.decode(msgpack.packb({"v": 99})) is None


def test_the_origins_number_travels_with_it_and_nodes_that_number_nothing_still_interoperate() -> None:
    publication = Publication(1, "t", None, None, EVERYONE)
    numbered = codec.encode("n", "r", publication, False, seq=41)
    assert codec.decode_numbered(numbered)[4] == 41  # type: ignore[index]
    assert codec.decode(numbered)[:2] == ("n", "r")  # type: ignore[index]  # the same message, the same version
    assert codec.decode_numbered(codec.encode("n", "r", publication, False))[4] is None  # type: ignore[index]


def test_txredisapi_reads_with_hiredis() -> None:
    """Without hiredis, txredisapi parses each pub/sub message in a reactor turn of its own (see setup.cfg)."""
    import txredisapi

    assert txredisapi.SubscriberProtocol.__mro__[1] is txredisapi.HiredisProtocol
