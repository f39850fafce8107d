"""
The core's seam for a store several nodes share (shared.py): a broker asks it (``Ask`` actions)
instead of keeping retained events, history and positions itself, and routes what it hands back
(``route_stored``). Two routers stand for two nodes; :class:`SharedStandIn` for Redis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from autobahn.wamp import message as wamp

from tests.core.harness import Harness, wire
from wsserver.core.actions import Ask
from wsserver.core.broker import EVERYONE, Publication
from wsserver.core.decoding import decode
from wsserver.core.eventstore import Kept, Position, Since
from wsserver.core.limits import SessionLimits
from wsserver.core.matching import matches
from wsserver.core.shared import Keeping

EVENT, PUBLISHED = 36, 17
SINCE = "wsserver.history.since"


class SharedStandIn:
    """A shared store in a few dicts, answering at once; ``reachable = False`` stands for Redis gone."""

    def __init__(self) -> None:
        self.reachable = True
        self.epochs = iter(f"epoch{n}" for n in range(1, 100))
        self.history: dict[tuple[str, str], tuple[str, list[Kept[Publication]]]] = {}
        self.kept_retained: dict[tuple[str, str], Publication] = {}
        #: What it hands every node: (realm, publication, position).
        self.handed: list[tuple[str, Publication, Position]] = []
        self.asked: list[str] = []

    def store(self, realm: str, publication: Publication, *, retain: bool, history: Keeping | None) -> bool:
        self.asked.append("store")
        if not self.reachable:
            return False
        kept = dataclasses.replace(publication)  # a copy, as Redis keeps bytes
        if history is not None:
            epoch, items = self.history.setdefault((realm, publication.topic), (next(self.epochs), []))
            seq = items[-1].seq + 1 if items else 1
            kept.position = Position(epoch, seq)
            items.append(Kept(seq, 0.0, kept, 0, seq))
            del items[: -history.size]
            self.handed.append((realm, kept, kept.position))
        if retain:
            self.kept_retained[(realm, publication.topic)] = kept
        return True

    def since(self, realm: str, topic: str, epoch: str, after: int, *, limit: int, ttl: float | None) -> Any:
        self.asked.append("since")
        if not self.reachable:
            return None
        if (realm, topic) not in self.history:
            return Since(False, "", 0, [])
        now, items = self.history[(realm, topic)]
        top = items[-1].seq
        missed = [k for k in items if k.seq > after]
        whole = epoch == now and after <= top and top - after <= limit and len(missed) == top - after
        return Since(whole, now, top, missed if whole else [])

    def latest(self, realm: str, pattern: str, match: str, *, limit: int) -> Any:
        self.asked.append("latest")
        return [k for (r, t), (_, items) in self.history.items() if r == realm and matches(pattern, match, t)
                for k in items[-limit:]] if self.reachable else None

    def retained(self, realm: str, pattern: str, match: str, *, ttl: float | None) -> Any:
        self.asked.append("retained")
        return [p for (r, t), p in self.kept_retained.items() if r == realm and matches(pattern, match, t)]


class Nodes:
    def __init__(self, **options: Any) -> None:
        self.shared = SharedStandIn()
        self.forwarded: list[Any] = []
        options.setdefault("history_size", 10)
        self.a = Harness(first_id=1000, shared_store=self.shared, forward=lambda *f: self.forwarded.append(f), **options)
        self.b = Harness(first_id=5000, shared_store=self.shared, **options)

    def hand(self) -> dict[str, list[Any]]:
        """Route on both nodes what the store handed them; what each peer receives."""
        received: dict[str, list[Any]] = {}
        for realm, publication, position in self.shared.handed:
            for node in (self.a, self.b):
                copy = dataclasses.replace(publication)
                for peer, messages in wire(node.router.route_stored(realm, copy, position)).items():
                    received.setdefault(peer, []).extend(messages)
        self.shared.handed.clear()
        return received


def nodes_with_subscribers() -> Nodes:
    nodes = Nodes()
    nodes.a.join("pub"), nodes.a.join("sub_a"), nodes.b.join("sub_b")
    nodes.a.subscribe("sub_a", "com.t"), nodes.b.subscribe("sub_b", "com.t")
    return nodes


def test_a_history_publication_waits_for_the_store_and_every_node_routes_it_at_the_stores_position() -> None:
    nodes = nodes_with_subscribers()
    local = wire(nodes.a.send("pub", [16, 7, {"acknowledge": True}, "com.t", [1]]))
    assert list(local) == ["pub"] and local["pub"][0][:2] == [PUBLISHED, 7]  # acknowledged once stored, routed nowhere yet
    assert nodes.forwarded == []  # the store hands it to every node, not the backplane
    nodes.a.send("pub", [16, 8, {}, "com.t", [2]])
    received = nodes.hand()
    for peer in ("sub_a", "sub_b"):
        assert [(m[4], m[3]["_epoch"], m[3]["_seq"]) for m in received[peer]] == [([1], "epoch1", 1), ([2], "epoch1", 2)]


def test_a_topic_without_history_keeps_the_fast_path_and_never_asks_the_store() -> None:
    nodes = Nodes(history_size=0)
    nodes.a.join("pub"), nodes.a.join("sub_a")
    nodes.a.subscribe("sub_a", "com.t")
    actions = nodes.a.send("pub", [16, 1, {}, "com.t", [1]])
    assert wire(actions)["sub_a"][0][4] == [1] and "_seq" not in wire(actions)["sub_a"][0][3]
    assert len(nodes.forwarded) == 1 and nodes.shared.asked == []


def test_a_retained_publication_without_history_is_routed_at_once_and_kept_in_the_store_for_any_node() -> None:
    nodes = Nodes(history_size=0)
    nodes.a.join("pub"), nodes.a.join("sub_a"), nodes.b.join("late")
    nodes.a.subscribe("sub_a", "com.t")
    received = wire(nodes.a.send("pub", [16, 1, {"retain": True}, "com.t", ["state"]]))
    assert received["sub_a"][0][4] == ["state"]
    assert nodes.forwarded == [] and nodes.shared.asked == ["store"]  # the store's script forwards it
    got = wire(nodes.b.send("late", [32, 1, {"get_retained": True}, "com.t"]))["late"]
    assert got[1][4] == ["state"] and got[1][3]["retained"] is True


def test_retained_events_answered_by_the_store_respect_the_audience_and_a_subscriber_that_left() -> None:
    nodes = Nodes()
    nodes.a.join("pub"), nodes.b.join("x"), nodes.b.join("y")
    x = nodes.b.sessions["x"].id
    nodes.a.send("pub", [16, 1, {"retain": True, "exclude_authrole": ["nobody"], "eligible_authid": ["?"]}, "com.t", [1]])
    assert [m[0] for m in wire(nodes.b.send("x", [32, 1, {"get_retained": True}, "com.t"]))["x"]] == [33]  # not eligible
    nodes.a.send("pub", [16, 2, {"retain": True}, "com.t", [2]])
    session = nodes.b.sessions["y"]
    (subscribed, ask) = nodes.b.router.receive(session, wamp.Subscribe(1, "com.t", get_retained=True))
    assert isinstance(ask, Ask)
    nodes.b.router.detach(session)  # gone before the store answered
    assert list(ask.then(ask.ask())) == []
    assert x != session.id


def test_the_store_unreachable_delivers_here_without_a_position() -> None:
    nodes = nodes_with_subscribers()
    nodes.shared.reachable = False
    received = wire(nodes.a.send("pub", [16, 1, {"acknowledge": True}, "com.t", [1]]))
    assert received["sub_a"][0][4] == [1] and "_seq" not in received["sub_a"][0][3]
    assert received["pub"][0][0] == PUBLISHED and "sub_b" not in received


def test_since_is_answered_from_the_store_on_any_node_and_never_recovered_when_it_cannot_say() -> None:
    nodes = nodes_with_subscribers()
    for n in range(4):
        nodes.a.send("pub", [16, 1, {}, "com.t", [n]])
    nodes.hand()
    reply = nodes.b.call("sub_b", SINCE, "com.t", "epoch1", 1)
    assert reply[4]["recovered"] is True and [e["args"] for e in reply[4]["events"]] == [[1], [2], [3]]
    assert nodes.b.call("sub_b", SINCE, "com.t", "other", 1)[4]["recovered"] is False
    assert nodes.b.call("sub_b", SINCE, "com.t", "epoch1", 9)[4] == "wamp.error.invalid_argument"  # past the top
    nodes.shared.reachable = False
    answer = nodes.b.call("sub_b", SINCE, "com.t", "epoch1", 1)[4]
    assert answer == {"recovered": False, "epoch": "", "top": 0, "events": []}


def test_get_events_is_answered_from_the_store_with_positions() -> None:
    nodes = nodes_with_subscribers()
    for n in range(3):
        nodes.a.send("pub", [16, 1, {}, "com.t", [n]])
    subscription = nodes.b.subscribe("sub_b", "com.", request=2, match="prefix")
    events = nodes.b.result("sub_b", "wamp.subscription.get_events", subscription, 2)
    assert [(e["args"], e["details"]["_seq"]) for e in events] == [([1], 2), ([2], 3)]


def test_a_caller_that_left_before_the_store_answered_gets_nothing() -> None:
    nodes = nodes_with_subscribers()
    session = nodes.b.sessions["sub_b"]
    (ask,) = nodes.b.router.receive(session, wamp.Call(9, SINCE, ["com.t", "e", 0]))
    assert isinstance(ask, Ask)
    nodes.b.router.detach(session)
    assert list(ask.then(ask.ask())) == []


def test_meta_events_and_publications_from_elsewhere_are_not_kept_locally_with_a_shared_store() -> None:
    nodes = nodes_with_subscribers()
    nodes.b.join("meta")
    nodes.b.subscribe("meta", "wamp.subscription.on_subscribe")
    received = wire(nodes.b.send("sub_b", [32, 5, {}, "com.other"]))
    assert "_seq" not in received["meta"][0][3]
    routed = wire(nodes.b.router.route_from_elsewhere("realm1", Publication(1, "com.t", [1], None, EVERYONE)))
    assert "_seq" not in routed["sub_b"][0][3]


def test_reads_waiting_for_the_store_count_as_calls_in_flight() -> None:
    nodes = Nodes(limits=SessionLimits(max_calls_in_flight=2))
    nodes.b.join("reader")
    session = nodes.b.sessions["reader"]
    pending = [nodes.b.router.receive(session, decode([[48, n, {}, SINCE, ["com.t", "e", 0]]])[0]) for n in (1, 2, 3)]
    assert [type(actions[0]).__name__ for actions in pending] == ["Ask", "Ask", "Send"]
    assert wire(pending[2])["reader"][0][4] == "wsserver.error.too_many_calls_in_flight"
    ask = pending[0][0]
    assert isinstance(ask, Ask)
    assert wire(list(ask.then(ask.ask())))["reader"][0][0] == 50  # answered: one more may wait
    again = nodes.b.router.receive(session, decode([[48, 4, {}, SINCE, ["com.t", "e", 0]]])[0])
    assert isinstance(again[0], Ask)


def test_a_sessions_reads_past_four_wait_their_turn_and_are_asked_as_answers_come() -> None:
    nodes = Nodes()
    nodes.b.join("reader")
    session = nodes.b.sessions["reader"]
    pending = [nodes.b.router.receive(session, decode([[48, n, {}, SINCE, ["com.t", "e", 0]]])[0]) for n in range(1, 7)]
    assert [len(actions) for actions in pending] == [1, 1, 1, 1, 0, 0]  # two wait, unasked
    first = pending[0][0]
    assert isinstance(first, Ask)
    answered = list(first.then(first.ask()))
    assert answered[0].message.request == 1 and isinstance(answered[1], Ask)  # and the fifth is asked
    nodes.b.router.detach(session)
    fifth = answered[1]
    assert isinstance(fifth, Ask) and list(fifth.then(fifth.ask())) == []  # gone: the sixth is never asked


def test_a_subscribe_repeated_before_the_store_answered_asks_it_nothing_more() -> None:
    nodes = Nodes()
    nodes.b.join("x")
    session = nodes.b.sessions["x"]
    subscribe = decode([[32, 1, {"get_retained": True}, "com.t"]])[0]
    first = nodes.b.router.receive(session, subscribe)
    again = nodes.b.router.receive(session, subscribe)
    assert [type(a).__name__ for a in first] == ["Send", "Ask"] and [type(a).__name__ for a in again] == ["Send"]
    ask = first[1]
    assert isinstance(ask, Ask)
    ask.then(ask.ask())
    assert [type(a).__name__ for a in nodes.b.router.receive(session, subscribe)] == ["Send", "Ask"]  # answered: asks anew


def test_a_publishers_burst_is_stored_a_few_at_a_time_in_order_while_others_go_ahead() -> None:
    nodes = nodes_with_subscribers()
    nodes.a.join("other")
    pub, other = nodes.a.sessions["pub"], nodes.a.sessions["other"]
    burst = [nodes.a.router.receive(pub, decode([[16, n, {}, "com.t", [n]]])[0]) for n in range(6)]
    assert [len(actions) for actions in burst] == [1, 1, 1, 1, 0, 0]  # two wait their turn, unasked
    (others,) = nodes.a.router.receive(other, decode([[16, 9, {}, "com.t", ["other"]]])[0])
    assert isinstance(others, Ask)  # another publisher is not behind the burst
    asks = [actions[0] for actions in burst[:4]]
    follow = []
    for ask in asks:
        assert isinstance(ask, Ask)
        follow += list(ask.then(ask.ask()))
    for ask in follow:
        assert isinstance(ask, Ask)
        ask.then(ask.ask())
    others.then(others.ask())
    assert [p.args for _, p, _ in nodes.shared.handed] == [[0], [1], [2], [3], [4], [5], ["other"]]  # in order
