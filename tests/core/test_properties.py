"""
Property-based tests: many sessions send the pure core random sequences of messages (valid ones,
near misses and garbage), transports drop, the router says GOODBYE, time passes. Whatever comes:

- the core raises nothing (a malformed message is a protocol violation: ABORT and close for the
  session that sent it, and for no other session);
- its indexes agree with each other after every step: no subscription, registration or call in
  flight without a live joined session behind it, subscriber sets and counts (per role too)
  consistent in both directions, and a detached transport's session appears nowhere.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from autobahn.wamp import message as wamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.core.harness import HELLO_DETAILS, Harness
from wsserver.core.actions import Action, Close, Delay, Send
from wsserver.core.authentication import hash_ticket
from wsserver.core.decoding import ProtocolViolation, decode
from wsserver.core.limits import SessionLimits
from wsserver.core.matching import PREFIX
from wsserver.core.policy import EVERYTHING, Permission, Principal, RealmPolicy
from wsserver.core.router import ERROR_PROTOCOL_VIOLATION
from wsserver.core.session import Session, State

PEERS = [f"s{n}" for n in range(5)]
ROLES = {
    "admin": (EVERYTHING,),
    "guest": (
        Permission("com.", PREFIX, frozenset({"subscribe", "publish", "call"})),
        Permission("com.b.", PREFIX, frozenset({"subscribe"})),
        Permission("wamp.", PREFIX, frozenset({"call", "subscribe"})),
    ),
}
GUARDED = RealmPolicy(
    "guarded", ROLES, anonymous_role="guest",
    principals={"alice": Principal("alice", "admin", ticket=hash_ticket("alice-ticket", "s", iterations=1))},
)

# -- what a client may send ---------------------------------------------------------------------

uris = st.sampled_from(["com.a", "com.a.b", "com.b", "com.b.c", "com.", "com..b", "wamp.session.on_join", "", "bad uri"])
#: Mostly valid ids: small ones (router-scope ids count from 1), session ids (the harness's count from 1000).
procedures = st.sampled_from(["com.a", "com.b", "com.a", "com.b", "wamp.x", "bad uri"])
ids = st.one_of(st.integers(1, 6), st.integers(1000, 1012), st.sampled_from([0, 2**53 + 1]))
requests = st.integers(1, 6)
matches = st.sampled_from(["exact", "prefix", "wildcard", "regex"])
garbage = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**54) | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)
payload = st.lists(st.integers(0, 3), max_size=2)


def options(**values: Any) -> Any:
    return st.fixed_dictionaries({}, optional=values)


hello = st.builds(
    lambda realm, details: [1, realm, dict(HELLO_DETAILS, **details)],
    st.sampled_from(["realm1", "guarded", "nowhere", "bad realm"]),
    options(
        authmethods=st.lists(st.sampled_from(["anonymous", "ticket", "wampcra", "cryptosign", "scram"]), max_size=2),
        authid=st.sampled_from(["alice", "bob", ""]),
        authextra=st.fixed_dictionaries({"pubkey": st.sampled_from(["00" * 32, "x"])}),
    ),
)
authenticate = st.builds(lambda s: [5, s, {}], st.sampled_from(["alice-ticket", "wrong", "", "00" * 96]))
messages = st.one_of(
    st.one_of(hello, authenticate),  # mostly violations once joined: rarer than requests
    st.builds(lambda r, o, t: [32, r, o, t], requests, options(match=matches, get_retained=st.booleans()), uris),
    st.builds(lambda r, s: [34, r, s], requests, ids),
    st.builds(
        lambda r, o, t, a: [16, r, o, t, a], requests,
        options(acknowledge=st.booleans(), exclude_me=st.booleans(), retain=st.booleans(), disclose_me=st.booleans(),
                eligible=st.lists(ids, max_size=2), exclude_authrole=st.lists(st.sampled_from(["guest", "admin"]), max_size=1)),
        uris, payload,
    ),
    st.builds(lambda r, o, p: [64, r, o, p], requests, options(match=matches), procedures),
    st.builds(lambda r, g: [66, r, g], requests, ids),
    st.builds(
        lambda r, p, a: [48, r, {}, p, a], requests,
        st.sampled_from(["com.a", "com.b", "com.a", "com.b", "wamp.session.count", "wamp.session.kill", "wamp.session.get",
                         "wamp.subscription.list", "wamp.subscription.get_events", "wamp.subscription.match",
                         "wamp.subscription.list_subscribers"]),
        st.lists(st.one_of(ids, uris), max_size=2),
    ),
    # Invocation ids are router-scope: a counter shared with subscriptions and registrations.
    st.builds(lambda r, a: [70, r, {}, a], st.integers(1, 80), payload),
    st.builds(lambda t, r: [8, t, r, {}, "com.error"], st.sampled_from([68, 68, 68, 48]), st.integers(1, 80)),
    st.just([6, {}, "wamp.close.normal"]),
    st.just([3, {}, "wamp.close.normal"]),
    garbage,
)
peers = st.sampled_from(PEERS)
send = st.tuples(st.just("send"), peers, st.lists(messages, min_size=1, max_size=3))
others = st.one_of(
    st.tuples(st.just("detach"), peers, st.none()),
    st.tuples(st.just("goodbye"), peers, st.none()),
    st.tuples(st.just("time"), st.none(), st.floats(0, 5)),
)
#: Mostly messages; now and then a transport drops, the router says GOODBYE, or time passes.
steps = st.integers(0, 9).flatmap(lambda n: send if n < 8 else others)

# -- running them ---------------------------------------------------------------------------------


#: How each peer's transport starts (again after each detach), so that most traffic meets joined
#: sessions: subscriptions shared by sessions (of two roles in "guarded") and procedures to call.
LOGINS: dict[str, list[Any]] = {
    "s0": [[1, "realm1", HELLO_DETAILS], [32, 1, {}, "com.a"]],
    "s1": [[1, "realm1", HELLO_DETAILS], [32, 1, {}, "com.a"], [64, 2, {}, "com.a"]],
    "s2": [[1, "guarded", HELLO_DETAILS], [32, 1, {"match": "prefix"}, "com."]],
    "s3": [[1, "guarded", dict(HELLO_DETAILS, authmethods=["ticket"], authid="alice")], [5, "alice-ticket", {}],
           [32, 1, {"match": "prefix"}, "com."], [64, 2, {}, "com.b"]],
    "s4": [],  # says what the script says
}


class World:
    """The router under test, with one transport per peer (a new one after each detach)."""

    def __init__(self, login: bool = True) -> None:
        self.h = Harness(
            ("realm1", GUARDED), history_size=3, retain_ttl=2.0, refusal_delay=0.5,
            limits=SessionLimits(publish_rate=2, publish_burst=3, max_subscriptions=3),
        )
        self.login = login
        self.detached: list[Session[str]] = []
        for peer in PEERS:
            self.connect(peer)

    def connect(self, peer: str) -> None:
        self.h.attach(peer)
        if self.login and LOGINS[peer]:
            self.step("send", peer, LOGINS[peer])

    def step(self, kind: str, peer: str | None, argument: Any) -> None:
        h = self.h
        if kind == "time":
            h.clock.now += argument
            return
        assert peer is not None
        session = h.sessions[peer]
        if kind == "detach":
            self.check_only_for(peer, h.router.detach(session), closes=False)
            self.detached.append(session)
            self.connect(peer)
        elif kind == "goodbye":
            self.check_only_for(peer, h.router.goodbye(session), closes=True)
        else:
            try:
                decoded = decode(list(argument))
            except ProtocolViolation as violation:
                actions = h.router.violation(session, str(violation))
                assert session.state is State.CLOSED
                self.check_only_for(peer, actions, closes=True)
                return
            for message in decoded:
                self.check_only_for(peer, h.settle(h.router.receive(session, message)), closes=True)

    def reconnect_closed(self) -> None:
        """A client whose transport was closed connects again (so the traffic keeps meeting sessions)."""
        for peer, session in list(self.h.sessions.items()):
            if session.state is State.CLOSED:
                self.step("detach", peer, None)

    def check_only_for(self, peer: str, actions: list[Action[str]], closes: bool) -> None:
        """Protocol violations, ABORTs and closes concern the sender only."""
        for action in actions:
            if isinstance(action, Delay):
                self.check_only_for(peer, list(action.actions), closes)
            elif isinstance(action, Close):
                assert closes and action.session.peer == peer, action
            else:
                assert isinstance(action, Send)
                if isinstance(action.message, wamp.Abort):
                    assert [s.peer for s in action.recipients] == [peer], action.message.reason
                if isinstance(action.message, wamp.Abort) and action.message.reason == ERROR_PROTOCOL_VIOLATION:
                    assert self.h.sessions[peer].state is State.CLOSED

    def check_invariants(self) -> None:
        live = set(self.h.sessions.values())
        for session in self.detached:
            assert session.state is State.CLOSED and session.realm is None and session.id == 0
        for name, realm in self.h.router.realms.items():
            for session_id, session in realm.sessions.items():
                assert session in live and session.id == session_id and session.realm == name
                assert session.state in (State.OPEN, State.CLOSING)
            joined = set(realm.sessions.values())
            # Subscriptions: both directions, counts by role, and the index.
            subscriptions = list(realm.subscriptions)
            for subscription in subscriptions:
                assert subscription.subscribers, subscription
                assert subscription.subscribers <= joined, subscription
                assert all(subscription in s.subscriptions for s in subscription.subscribers)
                assert subscription.roles == dict(Counter(s.authrole for s in subscription.subscribers))
                assert realm.subscriptions.lookup(subscription.topic, subscription.match) is subscription
            assert len(realm.broker.subscriptions._index) == len(subscriptions)
            for session in joined:
                assert all(realm.subscriptions.get(s.id) is s for s in session.subscriptions)
                assert len(session.subscriptions) <= 3
            # Registrations and calls in flight.
            dealer = realm.dealer
            for registration in dealer._index:
                assert dealer._by_id[registration.id] is registration
                assert dealer._index.get(registration.procedure, registration.match) is registration
                assert bool(registration.callees) != (registration.provider is not None)
                for callee in registration.callees:
                    assert callee in joined and registration in callee.registrations
            assert len(dealer._by_id) == len(dealer._index)
            for invocation in dealer._in_flight.values():
                assert invocation.caller in joined and invocation.callee in joined
                assert invocation in invocation.caller.invocations and invocation in invocation.callee.invocations
            for session in joined:
                assert all(dealer._by_id.get(r.id) is r for r in session.registrations)
                assert all(dealer._in_flight.get(i.id) is i for i in session.invocations)
        for session in live:
            if session.state not in (State.OPEN, State.CLOSING):
                assert not session.subscriptions and not session.registrations and not session.invocations
                assert session.realm is None
            if session.state is not State.AUTHENTICATING:
                assert session.pending is None


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, min_size=10, max_size=60))
def test_random_traffic_never_breaks_the_core(script: list[tuple[str, Any, Any]]) -> None:
    world = World()
    for step in script:
        world.step(*step)
        world.check_invariants()
        world.reconnect_closed()
    # Every transport gone: nothing is left.
    for peer in PEERS:
        world.h.router.detach(world.h.sessions[peer])
    for realm in world.h.router.realms.values():
        assert not realm.sessions and not len(realm.subscriptions) and not realm.dealer._in_flight
        assert all(r.provider is not None for r in realm.dealer._by_id.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PEERS[:2]), garbage), max_size=20))
def test_garbage_only_ever_costs_its_sender(script: list[tuple[str, Any]]) -> None:
    world = World(login=False)
    for peer in PEERS[:3]:
        world.step("send", peer, [[1, "realm1", HELLO_DETAILS], [32, 1, {}, "com.a"]])
    for peer, raw in script:
        world.step("send", peer, [raw])
        world.check_invariants()
    # The bystanders: one joined and subscribed, two not joined yet.
    bystander = world.h.sessions[PEERS[2]]
    assert bystander.state is State.OPEN and len(bystander.subscriptions) == 1
    assert [world.h.sessions[peer].state for peer in PEERS[3:]] == [State.ESTABLISHING] * 2
