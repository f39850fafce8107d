"""
A router driven by raw WAMP lists, as a transport would drive it, with deterministic ids.

``outbox(actions)`` turns the returned actions into {peer: [messages]} so tests can assert on
what each peer would receive.
"""

from __future__ import annotations

import itertools
from typing import Any

from autobahn.wamp import message as wamp

from wsserver.core.decoding import ProtocolViolation, decode
from wsserver.core.router import Action, Close, Router, Send
from wsserver.core.session import Session

HELLO_DETAILS = {"roles": {"subscriber": {}, "publisher": {}}}


class Harness:
    def __init__(self, realms: tuple[str, ...] = ("realm1",)) -> None:
        ids = itertools.count(1000)
        self.router: Router[str] = Router(realms, ids.__next__)
        self.sessions: dict[str, Session[str]] = {}

    def attach(self, name: str) -> Session[str]:
        self.sessions[name] = self.router.attach(name)
        return self.sessions[name]

    def send(self, name: str, *raw: Any) -> list[Action[str]]:
        """Feed raw messages from ``name``; a decoding failure goes to ``violation`` as a transport does."""
        session = self.sessions[name]
        try:
            messages = decode(list(raw))
        except ProtocolViolation as violation:
            return self.router.violation(session, str(violation))
        actions: list[Action[str]] = []
        for message in messages:
            actions += self.router.receive(session, message)
        return actions

    def join(self, name: str, realm: str = "realm1") -> Session[str]:
        self.attach(name)
        (welcome,) = outbox(self.send(name, [1, realm, HELLO_DETAILS]))[name]
        assert isinstance(welcome, wamp.Welcome)
        return self.sessions[name]

    def subscribe(self, name: str, topic: str, request: int = 1, **options: Any) -> int:
        (reply,) = outbox(self.send(name, [32, request, options, topic]))[name]
        assert isinstance(reply, wamp.Subscribed), reply
        return int(reply.subscription)


def outbox(actions: list[Action[str]]) -> dict[str, list[Any]]:
    """What each peer receives: messages, and ("close", reason) for a Close."""
    received: dict[str, list[Any]] = {}
    for action in actions:
        if isinstance(action, Send):
            for session in action.recipients:
                received.setdefault(session.peer, []).append(action.message)
        else:
            assert isinstance(action, Close)
            received.setdefault(action.session.peer, []).append(("close", action.reason))
    return received
