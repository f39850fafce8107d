"""
Positions and resume (history.py, eventstore.py positions, wsserver.history.since), with the
harness's clock and deterministic random bytes: no reactor.
"""

from __future__ import annotations

from typing import Any

import pytest
from autobahn.wamp import message as wamp
from autobahn.wamp.exception import ApplicationError
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.core.harness import Harness, RandomBytes, wire
from wsserver.core.eventstore import EventStore, StoreBudget, StoreLimits
from wsserver.core.history import HistoryRule, HistorySettings, TopicHistory
from wsserver.core.matching import PREFIX, WILDCARD
from wsserver.core.policy import ANONYMOUS, PUBLISH, SUBSCRIBE, Permission, RealmPolicy

SINCE = "wsserver.history.since"


def positions(actions: list[Any], peer: str) -> list[tuple[str, int] | None]:
    """The (epoch, seq) of each EVENT ``peer`` receives (None: an EVENT without a position)."""
    found = []
    for raw in wire(actions).get(peer, []):
        if raw[0] == wamp.Event.MESSAGE_TYPE:
            details = raw[3]
            found.append((details["_epoch"], details["_seq"]) if "_seq" in details else None)
    return found


def publish(h: Harness, name: str, topic: str, *args: Any, **options: Any) -> list[Any]:
    return h.send(name, [16, 1, options, topic, list(args)])


def since(h: Harness, name: str, topic: Any, epoch: Any, after: Any) -> dict[str, Any]:
    reply = h.call(name, SINCE, topic, epoch, after)
    assert reply[0] == wamp.Result.MESSAGE_TYPE, reply
    answer: dict[str, Any] = reply[4]
    return answer


def refused(h: Harness, name: str, *args: Any) -> tuple[str, str]:
    reply = h.call(name, SINCE, *args)
    assert reply[0] == wamp.Error.MESSAGE_TYPE, reply
    return reply[4], reply[5][0]


@pytest.fixture
def h() -> Harness:
    harness = Harness(history_size=5)
    harness.join("pub")
    harness.join("sub")
    return harness


# -- positions on EVENTs -----------------------------------------------------------------------


def test_every_event_of_a_topic_with_history_carries_its_position_through_every_kind_of_subscription(h: Harness) -> None:
    h.subscribe("sub", "com.a.x", 1)
    h.subscribe("sub", "com.a.", 2, match=PREFIX)
    h.subscribe("sub", "com..x", 3, match=WILDCARD)
    first = positions(publish(h, "pub", "com.a.x", 1), "sub")
    second = positions(publish(h, "pub", "com.a.x", 2), "sub")
    assert len(first) == 3 and len(set(first)) == 1 and first[0] is not None
    epoch, seq = first[0]
    assert seq == 1 and len(epoch) == 12
    assert second == [(epoch, 2)] * 3
    # Another topic has a position of its own: its own epoch, counting from 1.
    other = positions(publish(h, "pub", "com.a.y", 3), "sub")
    assert other[0] is not None and other[0][1] == 1 and other[0][0] != epoch


def test_topics_without_history_carry_no_position() -> None:
    h = Harness()
    h.join("pub")
    h.join("sub")
    h.subscribe("sub", "com.a")
    assert positions(publish(h, "pub", "com.a", 1), "sub") == [None]
    assert h.call("sub", SINCE, "com.a", "", 0)[4] == ApplicationError.NO_SUCH_PROCEDURE


def test_per_pattern_rules_decide_which_topics_keep_history_the_most_specific_alone() -> None:
    rules = (
        HistoryRule("com.example.", PREFIX, size=3),
        HistoryRule("com.example.noisy.", PREFIX, size=0),
        HistoryRule("com.example.chat", size=100, ttl=60),
    )
    h = Harness(history=HistorySettings(rules=rules))
    h.join("pub")
    h.join("sub")
    h.subscribe("sub", "com.", match=PREFIX)
    assert positions(publish(h, "pub", "com.example.a", 1), "sub")[0] is not None
    assert positions(publish(h, "pub", "com.example.noisy.a", 1), "sub") == [None]
    assert positions(publish(h, "pub", "com.other", 1), "sub") == [None]
    assert positions(publish(h, "pub", "com.example.chat", 1), "sub")[0] is not None
    code, reason = refused(h, "sub", "com.example.noisy.a", "", 0)
    assert code == ApplicationError.INVALID_ARGUMENT and "keeps no history" in reason


def test_events_naming_sessions_are_not_kept_and_carry_no_position(h: Harness) -> None:
    h.subscribe("sub", "com.a")
    sub_id = h.sessions["sub"].id
    assert positions(publish(h, "pub", "com.a", 1, eligible=[sub_id]), "sub") == [None]
    assert positions(publish(h, "pub", "com.a", 2), "sub")[0][1] == 1  # type: ignore[index]


# -- since ----------------------------------------------------------------------------------------


def test_since_answers_every_event_after_a_position_in_order(h: Harness) -> None:
    h.subscribe("sub", "com.a")
    (position,) = positions(publish(h, "pub", "com.a", 0), "sub")
    assert position is not None
    epoch = position[0]
    for n in range(1, 4):
        publish(h, "pub", "com.a", n, acknowledge=True)
    answer = since(h, "sub", "com.a", epoch, 1)
    assert answer["recovered"] is True and answer["epoch"] == epoch and answer["top"] == 4
    assert [(e["seq"], e["args"]) for e in answer["events"]] == [(2, [1]), (3, [2]), (4, [3])]
    assert answer["events"][0]["topic"] == "com.a" and answer["events"][0]["kwargs"] == {}
    assert answer["events"][0]["timestamp"].endswith("Z")
    assert since(h, "sub", "com.a", epoch, 4) == {"recovered": True, "epoch": epoch, "top": 4, "events": []}


def test_a_position_before_the_oldest_kept_event_keeps_the_epoch_but_is_not_recovered(h: Harness) -> None:
    h.subscribe("sub", "com.a")
    epoch = positions(publish(h, "pub", "com.a", 1), "sub")[0][0]  # type: ignore[index]
    for n in range(2, 8):  # 7 events, 5 kept: seq 3..7
        publish(h, "pub", "com.a", n)
    assert since(h, "sub", "com.a", epoch, 1) == {"recovered": False, "epoch": epoch, "top": 7, "events": []}
    assert [e["seq"] for e in since(h, "sub", "com.a", epoch, 2)["events"]] == [3, 4, 5, 6, 7]


def test_more_than_max_resume_events_is_not_recovered_and_no_partial_list() -> None:
    h = Harness(history=HistorySettings(size=100, max_resume_events=3))
    h.join("pub")
    h.join("sub")
    h.subscribe("sub", "com.a")
    epoch = positions(publish(h, "pub", "com.a", 1), "sub")[0][0]  # type: ignore[index]
    for n in range(2, 6):
        publish(h, "pub", "com.a", n)
    assert since(h, "sub", "com.a", epoch, 1)["recovered"] is False
    assert since(h, "sub", "com.a", epoch, 1)["events"] == []
    assert [e["seq"] for e in since(h, "sub", "com.a", epoch, 2)["events"]] == [3, 4, 5]


def test_the_epoch_changes_when_the_topics_history_is_lost_by_ttl() -> None:
    h = Harness(history=HistorySettings(rules=(HistoryRule("com.a", size=10, ttl=60),)))
    h.join("pub")
    h.join("sub")
    h.subscribe("sub", "com.a")
    old = positions(publish(h, "pub", "com.a", 1), "sub")[0]
    assert old is not None
    h.clock.now += 30
    publish(h, "pub", "com.a", 2)
    h.clock.now += 31  # the first expired: same epoch, seq 1 gone
    assert since(h, "sub", "com.a", old[0], 0) == {"recovered": False, "epoch": old[0], "top": 2, "events": []}
    assert since(h, "sub", "com.a", old[0], 1)["recovered"] is True
    h.clock.now += 60  # everything expired: the topic's history is lost
    assert since(h, "sub", "com.a", old[0], 2) == {"recovered": False, "epoch": "", "top": 0, "events": []}
    new = positions(publish(h, "pub", "com.a", 3), "sub")[0]
    assert new is not None and new[0] != old[0] and new[1] == 1
    assert since(h, "sub", "com.a", old[0], 2)["recovered"] is False


def test_the_epoch_changes_when_the_store_budget_evicts_the_whole_topic() -> None:
    h = Harness(history_size=5, store_limits=StoreLimits(max_bytes=0, max_topics=1))
    h.join("pub")
    h.join("sub")
    h.subscribe("sub", "com.", match=PREFIX)
    old = positions(publish(h, "pub", "com.a", 1), "sub")[0]
    publish(h, "pub", "com.b", 1)  # over the topics budget: com.a goes
    assert old is not None
    assert since(h, "sub", "com.a", old[0], 1)["recovered"] is False
    new = positions(publish(h, "pub", "com.a", 2), "sub")[0]
    assert new is not None and new[0] != old[0] and new[1] == 1


def test_a_new_router_is_a_new_life_every_epoch_is_another() -> None:
    first = Harness(history_size=5)
    second = Harness(history_size=5, random_bytes=RandomBytes())
    for h in (first, second):
        h.join("pub")
        h.join("sub")
        h.subscribe("sub", "com.a")
    # The harness's random bytes repeat across harnesses; a real process draws from os.urandom.
    epoch = positions(publish(first, "pub", "com.a", 1), "sub")[0][0]  # type: ignore[index]
    second.join("other")
    publish(second, "pub", "com.b", 0)
    other = positions(publish(second, "pub", "com.a", 1), "sub")[0]
    assert other is not None and other[0] != epoch
    assert since(second, "sub", "com.a", epoch, 1)["recovered"] is False


# -- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, reason",
    [
        (["com.a", "e", -1], "invalid after"),
        (["com.a", "e", 1.5], "invalid after"),
        (["com.a", "e", "3"], "invalid after"),
        (["com.a", "e", True], "invalid after"),
        (["com.a", "e", 2**60], "invalid after"),
        (["com.a", 7, 1], "invalid epoch"),
        (["com.a", None, 1], "invalid epoch"),
        ([5, "e", 1], "invalid topic"),
        (["com..a", "e", 1], "invalid topic"),
        (["com.a", "e"], "missing argument 'after'"),
        ([], "missing argument 'topic'"),
    ],
)
def test_malformed_arguments_are_invalid_argument_with_the_reason(h: Harness, args: list[Any], reason: str) -> None:
    code, why = refused(h, "sub", *args)
    assert code == ApplicationError.INVALID_ARGUMENT and reason in why


def test_unknown_topic_and_foreign_epoch_are_not_recovered_and_after_in_the_future_is_refused(h: Harness) -> None:
    assert since(h, "sub", "com.never", "whatever", 3) == {"recovered": False, "epoch": "", "top": 0, "events": []}
    h.subscribe("sub", "com.a")
    epoch = positions(publish(h, "pub", "com.a", 1), "sub")[0][0]  # type: ignore[index]
    assert since(h, "sub", "com.a", "another-life", 0) == {"recovered": False, "epoch": epoch, "top": 1, "events": []}
    code, why = refused(h, "sub", "com.a", epoch, 2)
    assert code == ApplicationError.INVALID_ARGUMENT and "past the newest" in why
    assert h.sessions["sub"].realm == "realm1"  # the session stays


def test_since_is_permissioned_like_subscribe_on_the_topic() -> None:
    reader = (Permission("com.public.", PREFIX, frozenset({SUBSCRIBE, PUBLISH})),)
    h = Harness((RealmPolicy("realm1", {ANONYMOUS: reader}, anonymous_role=ANONYMOUS),), history_size=5)
    h.join("pub")
    publish(h, "pub", "com.public.a", 1)
    answer = since(h, "pub", "com.public.a", "", 0)  # callable without a call permission
    assert answer["recovered"] is False and answer["top"] == 1
    code, why = refused(h, "pub", "com.secret.a", "", 0)
    assert code == ApplicationError.NOT_AUTHORIZED and "may not subscribe" in why


def test_events_a_whitelist_kept_from_the_reader_are_left_out(h: Harness) -> None:
    h.subscribe("sub", "com.a")
    epoch = positions(publish(h, "pub", "com.a", 1), "sub")[0][0]  # type: ignore[index]
    publish(h, "pub", "com.a", 2, eligible_authrole=["admin"])
    publish(h, "pub", "com.a", 3)
    answer = since(h, "sub", "com.a", epoch, 1)
    assert answer["recovered"] is True and [e["seq"] for e in answer["events"]] == [3]


# -- the store, alone ----------------------------------------------------------------------------


def test_topic_history_spans_its_stores_in_keeping_order_for_get_events() -> None:
    clock = lambda: 0.0  # noqa: E731
    epochs = iter(f"e{n}" for n in range(100))
    history: TopicHistory[str] = TopicHistory(
        HistorySettings(size=2, rules=(HistoryRule("com.b", size=4, ttl=9),)),
        clock, new_epoch=epochs.__next__, size=lambda item: 0,
    )
    for topic, item in [("com.a", "a1"), ("com.b", "b1"), ("com.a", "a2"), ("com.b", "b2")]:
        history.keep(topic, item)
    assert [k.item for k in history.latest("com.", PREFIX)] == ["a1", "b1", "a2", "b2"]
    assert history.since("com.b", "e1", 0, 10).recovered is True


def test_an_item_larger_than_the_budget_is_lost_and_so_not_recovered() -> None:
    budget = StoreBudget(StoreLimits(max_bytes=3000, max_topics=0))
    store: EventStore[str] = EventStore(5, None, lambda: 0.0, budget=budget, size=len, new_epoch=lambda: "E")
    store.keep("t", "small")
    position = store.keep("t", "x" * 5000)
    assert position == ("E", 2)
    assert store.since("t", "E", 1, 10).recovered is False
    assert store.since("t", "E", 0, 10).recovered is False


# -- the property --------------------------------------------------------------------------------

steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(["com.a", "com.b"])),
        st.just(("disconnect",)),
        st.just(("reconnect",)),
        st.just(("tick",)),
        st.just(("flood",)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps=steps, size=st.integers(1, 6), limit=st.integers(1, 8))
def test_publish_disconnect_reconnect_never_yields_a_gap_or_duplicate_told_as_recovered(
    steps: list[tuple[str, ...]], size: int, limit: int
) -> None:
    """
    A client following the resume protocol (subscribe, buffer, since, deliver, then the buffered
    events with a greater seq) gets, whenever it is told ``recovered``, exactly the events
    published while it was away, in order; "com.b" takes the budget's single other topic slot.
    """
    h = Harness(
        history=HistorySettings(rules=(HistoryRule("com.a", size=size, ttl=5.0),), max_resume_events=limit),
        store_limits=StoreLimits(max_bytes=0, max_topics=1),
    )
    h.join("pub")
    h.join("sub")
    h.subscribe("sub", "com.a")
    published: list[int] = []  # payload n of every publication on com.a
    received: list[int] = []  # what the client delivered, in order
    position: tuple[str, int] = ("", 0)
    connected = True
    counter = 0

    def deliver_live(actions: list[Any]) -> None:
        nonlocal position
        for raw in wire(actions).get("sub", []):
            if raw[0] == wamp.Event.MESSAGE_TYPE:
                received.append(raw[4][0])
                position = (raw[3]["_epoch"], raw[3]["_seq"])

    for step in steps:
        if step[0] == "publish" or step[0] == "flood":
            topics = [step[1]] if step[0] == "publish" else ["com.a"] * 4
            for topic in topics:
                counter += 1
                if topic == "com.a":
                    published.append(counter)
                actions = publish(h, "pub", topic, counter)
                if connected:
                    deliver_live(actions)
        elif step[0] == "tick":
            h.clock.now += 3
        elif step[0] == "disconnect" and connected:
            h.router.detach(h.sessions["sub"])
            connected = False
            missed_from = len(published)
            seen_before = list(received)
        elif step[0] == "reconnect" and not connected:
            h.join("sub")
            h.subscribe("sub", "com.a")
            answer = since(h, "sub", "com.a", position[0], position[1])
            connected = True
            if answer["recovered"]:
                assert answer["epoch"] == position[0]
                recovered = [e["args"][0] for e in answer["events"]]
                assert recovered == published[missed_from:], (recovered, published[missed_from:])
                assert received == seen_before
                received.extend(recovered)
                if answer["events"]:
                    position = (answer["epoch"], answer["events"][-1]["seq"])
            else:
                assert answer["events"] == []
                received = []  # the client reloads its state
                position = (answer["epoch"], answer["top"])
    # Whatever happened, the client never holds a duplicate.
    assert len(received) == len(set(received))
