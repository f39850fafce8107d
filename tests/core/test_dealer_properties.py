"""
A property of the dealer's Advanced Profile: random register (shared, pattern-based) / unregister /
call (with progress, timeouts) / cancel / yield / error / leave / time passing never leaves an
invocation, a registration, a per-caller count or a deadline behind once everyone has left, every
call in flight is known from both its sides, and every registration from each of its callees.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.harness import Harness, outbox
from wsserver.core.dealer import DEADLINE_SLACK
from wsserver.core.session import State

PEERS = ("p0", "p1", "p2")
PROCEDURES = ("com.a", "com.b", "com.a.x", "com.b.x")
#: (pattern, match) a callee may register: exact ones, and patterns the called procedures match.
REGISTERED = (("com.a", "exact"), ("com.b", "exact"), ("com.a", "prefix"), ("com..x", "wildcard"), ("com.", "prefix"))
CALL, CANCEL, YIELD, ERROR, REGISTER, UNREGISTER, INVOCATION, INTERRUPT = 48, 49, 70, 8, 64, 66, 68, 69

#: p2 did not announce call_canceling (it is never sent INTERRUPT), the others did.
JOIN: dict[str, dict[str, Any]] = {
    "p0": {"roles": {"caller": {}, "callee": {"features": {"call_canceling": True}}}},
    "p1": {"roles": {"caller": {}, "callee": {"features": {"call_canceling": True}}}},
    "p2": {},
}
peers = st.sampled_from(PEERS)
call_options = st.fixed_dictionaries(
    {},
    optional={
        "receive_progress": st.booleans(),
        "timeout": st.sampled_from([0, 10, 500, 5000]),
        "disclose_me": st.booleans(),
    },
)
steps = st.one_of(
    st.tuples(
        st.just("register"), peers,
        st.tuples(st.sampled_from(REGISTERED), st.sampled_from([None, "single", "roundrobin", "random", "first", "last"])),
    ),
    st.tuples(st.just("unregister"), peers, st.integers(0, 5)),
    st.tuples(st.just("call"), peers, st.tuples(st.sampled_from(PROCEDURES), st.integers(1, 4), call_options)),
    st.tuples(st.just("cancel"), peers, st.tuples(st.integers(1, 4), st.sampled_from([None, "skip", "kill", "killnowait"]))),
    st.tuples(st.just("answer"), peers, st.tuples(st.integers(0, 5), st.sampled_from(["yield", "progress", "error"]))),
    st.tuples(st.just("leave"), peers, st.none()),
    st.tuples(st.just("rejoin"), peers, st.none()),
    st.tuples(st.just("tick"), peers, st.sampled_from([0.005, 0.2, 1.0, 10.0])),
)


class World:
    def __init__(self) -> None:
        self.h = Harness()
        for peer in PEERS:
            self.h.join(peer, **JOIN[peer])
        self.dealer = self.h.router.realms["realm1"].dealer
        #: Invocation ids each peer was sent, to answer (rightly or not).
        self.invocations: dict[str, list[int]] = {peer: [] for peer in PEERS}

    def note(self, actions: list[Any]) -> None:
        for peer, messages in outbox(actions).items():
            assert peer != "p2" or not any(getattr(m, "MESSAGE_TYPE", 0) == INTERRUPT for m in messages)
            self.invocations[peer] += [m.request for m in messages if getattr(m, "MESSAGE_TYPE", 0) == INVOCATION]

    def step(self, kind: str, peer: str, arg: Any) -> None:
        h = self.h
        open_ = h.sessions[peer].state is State.OPEN
        if kind == "rejoin":
            if not open_:
                h.join(peer, **JOIN[peer])
            return
        if kind == "tick":
            h.clock.now += arg
            self.note(h.router.expire_calls())
            return
        if not open_:
            return
        if kind == "register":
            (procedure, match), invoke = arg
            options = {"match": match, **({} if invoke is None else {"invoke": invoke})}
            self.note(h.send(peer, [REGISTER, 1, options, procedure]))
        elif kind == "unregister":
            own = sorted(r.id for r in h.sessions[peer].registrations)
            self.note(h.send(peer, [UNREGISTER, 2, own[arg % len(own)] if own else 1]))
        elif kind == "call":
            procedure, request, options = arg
            self.note(h.send(peer, [CALL, request, options, procedure, [1]]))
        elif kind == "cancel":
            request, mode = arg
            self.note(h.send(peer, [CANCEL, request, {} if mode is None else {"mode": mode}]))
        elif kind == "answer":
            index, how = arg
            known = self.invocations[peer]
            invocation = known[index % len(known)] if known else 1
            if how == "error":
                self.note(h.send(peer, [ERROR, INVOCATION, invocation, {}, "com.error.x"]))
            else:
                self.note(h.send(peer, [YIELD, invocation, {"progress": True} if how == "progress" else {}, [2]]))
        elif kind == "leave":
            self.note(h.router.detach(h.sessions[peer]))

    def check(self) -> None:
        dealer = self.dealer
        assert len(dealer._index) == len(dealer._by_id)
        for registration in dealer._by_id.values():
            assert dealer._index.get(registration.procedure, registration.match) is registration
            assert bool(registration.callees) != (registration.provider is not None)
            assert len(set(registration.callees)) == len(registration.callees)
            assert len(registration.callees) <= 1 or registration.invoke != "single"
            for callee in registration.callees:
                assert callee.state is State.OPEN and registration in callee.registrations
        for invocation in dealer._in_flight.values():
            assert invocation.caller is not None and invocation.caller.state is State.OPEN
            assert invocation.callee is not None and invocation.callee.state is State.OPEN
            assert invocation in invocation.caller.invocations and invocation in invocation.callee.invocations
        timed = sum(1 for i in dealer._in_flight.values() if i.deadline is not None)
        assert dealer.timers() <= 2 * timed + DEADLINE_SLACK + 1
        counts = {s: n for s, n in dealer._calls_made.items()}
        for session, count in counts.items():
            assert count == sum(1 for i in session.invocations if i.caller is session)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=5, max_size=80))
def test_random_calls_cancels_and_leaves_leave_nothing_behind(script: list[tuple[str, Any, Any]]) -> None:
    world = World()
    for kind, peer, arg in script:
        world.step(kind, peer, arg)
        world.check()
    for peer in PEERS:
        world.step("leave", peer, None)
    dealer = world.dealer
    assert not dealer._in_flight and not dealer._by_request and not dealer._calls_made and dealer._timed == 0
    assert len(dealer) == len([r for r in dealer._by_id.values() if r.provider is not None])  # only the router's own
    world.h.clock.now += 3600
    assert world.h.router.expire_calls() == [] and dealer.timers() == 0
