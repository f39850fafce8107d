"""
The core's seam for a cluster (wsserver/core/cluster.py): two routers stand for two nodes, and a
list of what each told its ``Elsewhere`` stands for Redis; ``carry()`` hands it to the other
router as the adapter does, and returns what that router's peers receive.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.harness import Harness, wire
from wsserver.core.cluster import NODE_LOST, RemoteAnswer, RemoteCall
from wsserver.core.limits import TOO_MANY_CALLS_IN_FLIGHT, SessionLimits

RESULT, ERROR, INVOCATION, EVENT = 50, 8, 68, 36


class Told:
    """An ``Elsewhere`` that writes down what its node tells the others."""

    def __init__(self) -> None:
        self.said: list[tuple[str, Any]] = []

    def joined(self, realm: str, details: dict[str, Any]) -> None:
        self.said.append(("joined", (realm, dict(details))))

    def left(self, realm: str, session_id: int) -> None:
        self.said.append(("left", (realm, session_id)))

    def registered(self, realm: str, procedure: str, registration_id: int) -> None:
        self.said.append(("registered", (realm, procedure, registration_id)))

    def unregistered(self, realm: str, procedure: str) -> None:
        self.said.append(("unregistered", (realm, procedure)))

    def invoke(self, node: str, call: RemoteCall) -> None:
        self.said.append(("invoke", (node, call)))

    def answer(self, node: str, answer: RemoteAnswer) -> None:
        self.said.append(("answer", (node, answer)))


class Cluster:
    """Nodes "A" and "B", each telling the other (and only the other) what happens on it."""

    def __init__(self, **options: Any) -> None:
        self.told = {"A": Told(), "B": Told()}
        self.nodes = {
            "A": Harness(first_id=1000, elsewhere=self.told["A"], **options),
            "B": Harness(first_id=5000, elsewhere=self.told["B"], **options),
        }
        self.a, self.b = self.nodes["A"], self.nodes["B"]

    def carry(self) -> dict[str, list[Any]]:
        """Hand what each node said to the other (until nothing more is said); what their peers receive."""
        received: dict[str, list[Any]] = {}
        while any(t.said for t in self.told.values()):
            for origin, told in self.told.items():
                said, told.said = told.said, []
                for what, args in said:
                    for peer, messages in wire(self._hand(origin, what, args)).items():
                        received.setdefault(peer, []).extend(messages)
        return received

    def _hand(self, origin: str, what: str, args: Any) -> Any:
        other = "B" if origin == "A" else "A"
        router = self.nodes[other].router
        if what == "joined":
            return router.joined_elsewhere(origin, *args)
        if what == "left":
            return router.left_elsewhere(origin, *args)
        if what == "registered":
            router.registered_elsewhere(origin, *args)
            return []
        if what == "unregistered":
            router.unregistered_elsewhere(origin, *args)
            return []
        node, message = args
        target = self.nodes[node].router
        if what == "invoke":
            return target.call_from_elsewhere(origin, message)
        return target.answer_from_elsewhere(origin, message)


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


def test_count_list_and_get_cover_both_nodes_with_authrole_filters(cluster: Cluster) -> None:
    a1, a2, b1 = cluster.a.join("a1"), cluster.a.join("a2"), cluster.b.join("b1")
    cluster.carry()
    for node in cluster.nodes.values():
        name = "a1" if node is cluster.a else "b1"
        assert node.result(name, "wamp.session.count") == 3
        assert sorted(node.result(name, "wamp.session.list")) == sorted([a1.id, a2.id, b1.id])
        assert node.result(name, "wamp.session.count", ["nobody"]) == 0
        assert node.result(name, "wamp.session.count", ["anonymous"]) == 3
    details = cluster.a.result("a1", "wamp.session.get", b1.id)
    assert details == {"session": b1.id, "authid": b1.authid, "authrole": "anonymous", "authmethod": "anonymous",
                       "authprovider": "static"}
    assert cluster.a.call("a1", "wamp.session.get", 42)[4] == "wamp.error.no_such_session"


def test_joins_and_leaves_on_one_node_are_announced_on_the_other(cluster: Cluster) -> None:
    cluster.b.join("watcher")
    cluster.b.subscribe("watcher", "wamp.session.on_join", request=1)
    cluster.b.subscribe("watcher", "wamp.session.on_leave", request=2)
    cluster.carry()
    joining = cluster.a.join("joining")
    (on_join,) = cluster.carry()["watcher"]
    assert on_join[0] == EVENT and on_join[4][0]["session"] == joining.id
    session_id = joining.id
    cluster.a.router.detach(joining)
    (on_leave,) = cluster.carry()["watcher"]
    assert on_leave[4] == [session_id, f"anonymous-{session_id}", "anonymous"]
    assert cluster.b.result("watcher", "wamp.session.count") == 1


def test_a_call_reaches_the_callee_on_the_other_node_and_its_result_comes_back(cluster: Cluster) -> None:
    cluster.a.join("callee"), cluster.b.join("caller")
    registration = cluster.a.register("callee", "com.add")
    cluster.carry()
    assert cluster.b.call("caller", "com.add", 2, 3, unit="m") is None  # in flight, on A
    (invocation,) = cluster.carry()["callee"]
    assert invocation[0] == INVOCATION and invocation[2] == registration and invocation[4:] == [[2, 3], {"unit": "m"}]
    cluster.a.send("callee", [70, invocation[1], {}, [5], {"unit": "m"}])
    (result,) = cluster.carry()["caller"]
    assert result[0] == RESULT and result[3:] == [[5], {"unit": "m"}]
    # An error from the callee, the same way.
    cluster.b.call("caller", "com.add", "x")
    (invocation,) = cluster.carry()["callee"]
    cluster.a.send("callee", [8, INVOCATION, invocation[1], {}, "com.error.bad", ["x is no number"]])
    (error,) = cluster.carry()["caller"]
    assert error[0] == ERROR and error[4:] == ["com.error.bad", ["x is no number"]]


def test_a_procedure_registered_on_one_node_cannot_be_registered_on_the_other(cluster: Cluster) -> None:
    cluster.a.join("first"), cluster.b.join("second")
    registration = cluster.a.register("first", "com.once")
    cluster.carry()
    (refusal,) = wire(cluster.b.send("second", [64, 1, {}, "com.once"]))["second"]
    assert refusal[0] == ERROR and refusal[4] == "wamp.error.procedure_already_exists"
    cluster.a.send("first", [66, 2, registration])
    cluster.carry()
    assert cluster.b.register("second", "com.once")
    assert cluster.b.call("second", "com.nobody")[4] == "wamp.error.no_such_procedure"


def test_the_callee_leaving_on_its_node_cancels_the_call_on_the_other(cluster: Cluster) -> None:
    callee, _ = cluster.a.join("callee"), cluster.b.join("caller")
    cluster.a.register("callee", "com.slow")
    cluster.carry()
    cluster.b.call("caller", "com.slow")
    cluster.carry()
    cluster.a.router.detach(callee)
    (error,) = cluster.carry()["caller"]
    assert error[0] == ERROR and error[4] == "wamp.error.canceled"
    assert cluster.b.call("caller", "com.slow")[4] == "wamp.error.no_such_procedure"  # its registration went too


def test_a_lost_node_takes_its_sessions_registrations_and_calls_with_it(cluster: Cluster) -> None:
    cluster.a.join("callee")
    cluster.b.join("caller")
    cluster.b.subscribe("caller", "wamp.session.on_leave")
    cluster.a.register("callee", "com.slow")
    cluster.carry()
    cluster.b.call("caller", "com.slow")
    cluster.carry()  # A invoked its callee; then A dies without a word
    lost = wire(cluster.b.router.node_lost("A"))["caller"]
    assert sorted(m[0] for m in lost) == [ERROR, EVENT]
    (error,) = [m for m in lost if m[0] == ERROR]
    assert error[4] == NODE_LOST
    assert cluster.b.result("caller", "wamp.session.count") == 1
    assert cluster.b.call("caller", "com.slow")[4] == "wamp.error.no_such_procedure"
    assert cluster.b.router.node_lost("A") == []  # lost once


def test_a_call_from_a_lost_node_is_forgotten_and_its_answer_dropped(cluster: Cluster) -> None:
    cluster.a.join("callee"), cluster.b.join("caller")
    cluster.a.register("callee", "com.slow")
    cluster.carry()
    cluster.b.call("caller", "com.slow")
    (invocation,) = cluster.carry()["callee"]
    assert cluster.a.router.node_lost("B") == []
    assert cluster.a.send("callee", [70, invocation[1], {}, ["late"]]) == []
    assert cluster.told["A"].said == []  # nothing goes back to B


def test_calls_across_nodes_count_against_calls_in_flight_and_can_be_forgotten() -> None:
    cluster = Cluster(limits=SessionLimits(max_calls_in_flight=1))
    cluster.a.join("callee")
    caller = cluster.b.join("caller")
    cluster.a.register("callee", "com.slow")
    cluster.carry()
    assert cluster.b.call("caller", "com.slow") is None
    assert cluster.b.call("caller", "com.slow")[4] == TOO_MANY_CALLS_IN_FLIGHT
    (invocation,) = cluster.carry()["callee"]
    request = min(i.request for i in caller.invocations)
    cluster.b.router.forget_call(caller, request)  # the HTTP API's timeout
    cluster.a.send("callee", [70, invocation[1], {}, ["late"]])
    assert cluster.carry() == {}  # the late answer is dropped
    assert cluster.b.call("caller", "com.slow") is None  # and the caller may call again


def test_a_call_for_a_procedure_gone_meanwhile_is_answered_no_such_procedure(cluster: Cluster) -> None:
    cluster.b.join("caller")
    cluster.b.router.registered_elsewhere("A", "realm1", "com.gone", 7)
    cluster.b.call("caller", "com.gone")
    (error,) = cluster.carry()["caller"]
    assert error[4] == "wamp.error.no_such_procedure"


def test_session_ids_come_from_the_given_source_and_skip_the_other_nodes_ids() -> None:
    ids = iter([7, 7, 8])
    h = Harness(session_id=ids.__next__, elsewhere=Told())
    h.router.joined_elsewhere("B", "realm1", {"session": 7, "authid": "x", "authrole": "anonymous"})
    assert h.join("a").id == 8


def test_when_the_way_to_the_other_nodes_is_cut_calls_across_end_and_registrations_stay(cluster: Cluster) -> None:
    cluster.a.join("callee"), cluster.b.join("caller"), cluster.b.join("local")
    cluster.a.register("callee", "com.slow")
    cluster.b.register("local", "com.here")
    cluster.carry()
    cluster.b.call("caller", "com.slow")
    cluster.b.call("caller", "com.here")  # a local call in flight: not concerned
    cluster.carry()
    (error,) = wire(cluster.b.router.calls_elsewhere_lost("Redis is gone"))["caller"]
    assert error[4] == NODE_LOST and error[5] == ["Redis is gone"]
    assert cluster.b.router.calls_elsewhere_lost("again") == []
    assert cluster.b.call("caller", "com.slow") is None  # still registered on A: called again


def test_a_call_across_nodes_is_not_offered_progress_and_cancel_or_timeout_end_it_for_the_caller(cluster: Cluster) -> None:
    cluster.a.join("callee"), cluster.b.join("caller")
    cluster.a.register("callee", "com.slow")
    cluster.carry()
    assert wire(cluster.b.send("caller", [48, 1, {"receive_progress": True, "timeout": 1000}, "com.slow"])) == {}
    (invocation,) = cluster.carry()["callee"]
    assert invocation[3] == {}  # the callee answers with its final result only
    (error,) = wire(cluster.b.send("caller", [49, 1, {"mode": "kill"}]))["caller"]
    assert error[:5] == [ERROR, 48, 1, {}, "wamp.error.canceled"]
    cluster.a.send("callee", [70, invocation[1], {}, ["late"]])
    assert cluster.carry() == {}
    cluster.b.send("caller", [48, 2, {"timeout": 1000}, "com.slow"])
    cluster.carry()
    cluster.b.clock.now += 1
    (error,) = wire(cluster.b.router.expire_calls())["caller"]
    assert error[:5] == [ERROR, 48, 2, {}, "wamp.error.canceled"]
    assert cluster.b.router.realms["realm1"].dealer.calls_in_flight(cluster.b.sessions["caller"]) == 0


def test_shared_and_pattern_registrations_stay_on_their_node_and_an_exact_one_elsewhere_wins(cluster: Cluster) -> None:
    cluster.a.join("callee"), cluster.b.join("caller"), cluster.b.join("local")
    cluster.a.register("callee", "com.shared", invoke="roundrobin")
    cluster.a.register("callee", "com.", match="prefix")
    registration = cluster.a.register("callee", "com.exact")
    assert [args[1] for what, args in cluster.told["A"].said if what == "registered"] == ["com.exact"], "the only one told"
    cluster.carry()
    assert cluster.b.call("caller", "com.shared")[4] == "wamp.error.no_such_procedure"
    cluster.b.register("local", "com.", match="prefix")  # B's own pattern: no conflict with A's
    cluster.b.register("local", "com.shared", invoke="roundrobin")
    assert cluster.b.call("caller", "com.exact") is None, "the exact registration on A wins over B's prefix"
    (invocation,) = cluster.carry()["callee"]
    assert invocation[:3] == [INVOCATION, invocation[1], registration]
    (local,) = wire(cluster.b.send("caller", [48, 9, {}, "com.other", []]))["local"]
    assert local[0] == INVOCATION and local[3] == {"procedure": "com.other"}
