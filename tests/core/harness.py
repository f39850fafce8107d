"""
A router driven by raw WAMP lists, as a transport would drive it, with deterministic ids and a
clock that moves only when a test moves it (``h.clock.now += 5``).

A Compute (a login's check) is carried out at once, as a transport would after its thread:
``send`` returns what it led to, and ``computed`` counts them. ``outbox(actions)`` turns the
returned actions into {peer: [messages]} so tests can assert on what each peer would receive (a
Delay shows as ("delay", seconds) before what it delays); ``wire(actions)`` shows them as the
lists a client would decode. Random bytes (challenges, nonces) are a counter's, so they are
different every time and the same in every run.
"""

from __future__ import annotations

import itertools
from typing import Any

from autobahn.wamp import message as wamp

from wsserver.core.actions import Ask
from wsserver.core.decoding import ProtocolViolation, decode
from wsserver.core.matching import EXACT
from wsserver.core.policy import ANONYMOUS, CALL, EVERYTHING, Permission, RealmPolicy
from wsserver.core.router import Action, Close, Compute, Delay, Router, Send
from wsserver.core.session import Session

HELLO_DETAILS = {"roles": {"subscriber": {}, "publisher": {}}}


class Clock:
    """Seconds since the epoch, standing still until a test sets ``now``."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RandomBytes:
    """Bytes that differ on every call, and in the same way in every run."""

    def __init__(self) -> None:
        self.calls = itertools.count(1)

    def __call__(self, n: int) -> bytes:
        call = next(self.calls)
        return bytes((call * 131 + i * 7) % 256 for i in range(n))


def moderated_realm(name: str = "realm1") -> RealmPolicy:
    """A realm like an open one, but configured to let its anonymous sessions end other sessions."""
    kill = Permission("wamp.session.kill", EXACT, frozenset({CALL}))
    return RealmPolicy(name, {ANONYMOUS: (EVERYTHING, kill)}, anonymous_role=ANONYMOUS)


class Harness:
    def __init__(self, realms: tuple[Any, ...] = ("realm1",), first_id: int = 1000, **router_options: Any) -> None:
        ids = itertools.count(first_id)
        self.clock = Clock()
        router_options.setdefault("random_bytes", RandomBytes())
        self.router: Router[str] = Router(realms, ids.__next__, clock=self.clock, **router_options)
        self.sessions: dict[str, Session[str]] = {}
        self._requests = itertools.count(1)
        self.computed = 0

    def attach(self, name: str, address: str | None = None) -> Session[str]:
        self.sessions[name] = self.router.attach(name, address)
        return self.sessions[name]

    def settle(self, actions: list[Action[str]]) -> list[Action[str]]:
        """``actions`` with every Compute carried out in place (its work, then what ``then`` returns)."""
        settled: list[Action[str]] = []
        for action in actions:
            if isinstance(action, Compute):
                self.computed += 1
                settled += self.settle(list(action.then(action.work())))
            elif isinstance(action, Ask):  # a stand-in store answers at once
                settled += self.settle(list(action.then(action.ask())))
            else:
                settled.append(action)
        return settled

    def send(self, name: str, *raw: Any) -> list[Action[str]]:
        """Feed raw messages from ``name``; a decoding failure goes to ``violation`` as a transport does."""
        session = self.sessions[name]
        try:
            messages = decode(list(raw))
        except ProtocolViolation as violation:
            return self.router.violation(session, str(violation))
        actions: list[Action[str]] = []
        for message in messages:
            actions += self.settle(self.router.receive(session, message))
        return actions

    def join(self, name: str, realm: str = "realm1", **details: Any) -> Session[str]:
        """HELLO with ``details`` besides the roles (e.g. authmethods) and expect WELCOME."""
        self.attach(name)
        (welcome,) = outbox(self.send(name, [1, realm, dict(HELLO_DETAILS, **details)]))[name]
        assert isinstance(welcome, wamp.Welcome), welcome
        return self.sessions[name]

    def subscribe(self, name: str, topic: str, request: int = 1, **options: Any) -> int:
        reply = outbox(self.send(name, [32, request, options, topic]))[name][0]
        assert isinstance(reply, wamp.Subscribed), reply
        return int(reply.subscription)

    def register(self, name: str, procedure: str, **options: Any) -> int:
        (reply,) = outbox(self.send(name, [64, next(self._requests), options, procedure]))[name]
        assert isinstance(reply, wamp.Registered), reply.marshal()
        return int(reply.registration)

    def call(self, name: str, procedure: str, *args: Any, **kwargs: Any) -> Any:
        """CALL and return what ``name`` gets back at once: RESULT or ERROR as a wire list, or None."""
        received = outbox(self.send(name, [48, next(self._requests), {}, procedure, list(args), kwargs]))
        replies = [m.marshal() for m in received.get(name, []) if isinstance(m, (wamp.Result, wamp.Error))]
        assert len(replies) <= 1, replies
        return replies[0] if replies else None

    def result(self, name: str, procedure: str, *args: Any, **kwargs: Any) -> Any:
        """CALL a procedure the router answers at once; return the first positional result."""
        reply = self.call(name, procedure, *args, **kwargs)
        assert reply[0] == wamp.Result.MESSAGE_TYPE, reply
        return reply[3][0]


def wire(actions: list[Action[str]]) -> dict[str, list[Any]]:
    """What each peer receives, as the WAMP lists its client would decode."""
    return {peer: [m if isinstance(m, tuple) else m.marshal() for m in messages] for peer, messages in outbox(actions).items()}


def outbox(actions: list[Action[str]]) -> dict[str, list[Any]]:
    """What each peer receives: messages, and ("close", reason) for a Close."""
    received: dict[str, list[Any]] = {}
    for action in actions:
        if isinstance(action, Send):
            for session in action.recipients:
                received.setdefault(session.peer, []).append(action.message)
        elif isinstance(action, Delay):
            for peer, messages in outbox(list(action.actions)).items():
                received.setdefault(peer, []).extend([("delay", action.seconds), *messages])
        else:
            assert isinstance(action, Close)
            received.setdefault(action.session.peer, []).append(("close", action.reason))
    return received
