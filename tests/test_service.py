"""The services: a port that cannot be bound stops the server with a non-zero status, the server
says it is open to anyone only once its ports are bound, and event store evictions are logged."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, globalLogPublisher

from wsserver.core.eventstore import EventStore, StoreBudget, StoreLimits
from wsserver.service import CALL_TIMEOUT_TICK, EndpointService, EvictionReport, WampServer
from wsserver.transports.flashpolicy import FlashPolicy


class BindingReactor(MemoryReactorClock):
    """Binds real sockets, so that a taken port fails as under twistd; runs nothing."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        listening = tcp.Port(port, factory, backlog, interface, self)
        listening.startListening()
        return listening


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["log_format"].format(**e) for e in events]


def test_a_port_in_use_exits_with_status_1_and_says_why(taken_port: int) -> None:
    reactor = BindingReactor()
    service = EndpointService(reactor, f"tcp:{taken_port}:interface=127.0.0.1", object())
    with capturedLogs() as events, pytest.raises(SystemExit) as exited:
        service.privilegedStartService()
    assert exited.value.code == 1
    [critical] = [e for e in events if e["log_level"] == LogLevel.critical]
    text = texts([critical])[0]
    assert f"cannot listen on tcp:{taken_port}" in text and "Address already in use" in text
    assert "Traceback" not in text


def server(reactor: Any, tmp_path: Path, listen: str) -> WampServer:
    return WampServer(reactor, listen=[listen], web_dir=tmp_path, flash_policy=FlashPolicy(port=0))


def test_open_to_anyone_is_said_after_the_ports_are_bound(tmp_path: Path) -> None:
    reactor = BindingReactor()
    wamp = server(reactor, tmp_path, "tcp:0:interface=127.0.0.1")
    with capturedLogs() as events:
        wamp.startService()  # as when embedded: startService binds
    said = texts(events)
    listening = next(i for i, text in enumerate(said) if text.startswith("listening on http://127.0.0.1:"))
    opened = next(i for i, text in enumerate(said) if text.startswith("open to anyone"))
    assert listening < opened
    wamp.listeners[0].port.socket.close()  # type: ignore[union-attr]


def test_the_server_says_who_may_use_the_admin_page(tmp_path: Path) -> None:
    from wsserver.core.authentication import hash_ticket
    from wsserver.core.policy import Principal, RealmPolicy

    boss = Principal("boss", "admin", ticket=hash_ticket("boss-ticket", "b055", iterations=10))
    configured = RealmPolicy("ops", {"admin": ()}, principals={"boss": boss})
    for realms, said in [
        (["realm1"], "admin page: no principal has the admin role admin, so /admin.html lets no one in"),
        ([configured, "realm1"], "admin page: /admin.html for the principals of role admin in realm ops"),
    ]:
        wamp = WampServer(MemoryReactorClock(), listen=[], web_dir=tmp_path, flash_policy=FlashPolicy(port=0),
                          realms=realms)
        with capturedLogs() as events:
            wamp.startService()
        assert any(text.startswith(said) for text in texts(events)), texts(events)
    with capturedLogs() as events:
        WampServer(MemoryReactorClock(), listen=[], web_dir=tmp_path, flash_policy=FlashPolicy(port=0),
                   admin_role=None).startService()
    assert not any("admin page" in text for text in texts(events))


def test_a_server_that_cannot_bind_never_says_it_is_open(tmp_path: Path, taken_port: int) -> None:
    reactor = BindingReactor()
    wamp = server(reactor, tmp_path, f"tcp:{taken_port}:interface=127.0.0.1")
    with capturedLogs() as events, pytest.raises(SystemExit):
        wamp.privilegedStartService()
    assert not any("open to anyone" in text for text in texts(events))


def test_evictions_are_logged_once_per_report_with_their_count() -> None:
    budget = StoreBudget(StoreLimits(max_bytes=0, max_topics=2))
    retained: EventStore[str] = EventStore(1, None, lambda: 0.0, budget=budget)
    report = EvictionReport(budget)
    logged: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        report()
        for n in range(5):
            retained.keep(f"com.t{n}", "x")
        report()
        report()  # nothing new: nothing logged
    finally:
        globalLogPublisher.removeObserver(logged.append)
    (line,) = [event for event in logged if "forgotten" in event.get("log_format", "")]
    assert (line["count"], line["total"], line["topics"], line["max_topics"]) == (3, 3, 2, 2)


def test_calls_past_their_timeout_are_ended_on_the_reactors_clock(tmp_path: Path) -> None:
    reactor = MemoryReactorClock()
    wamp = WampServer(reactor, listen=[], web_dir=tmp_path, flash_policy=FlashPolicy(port=0))
    checks: list[float] = []
    wamp.router.expire_calls = lambda: checks.append(reactor.seconds()) or []  # type: ignore[method-assign]
    wamp.startService()
    try:
        for _ in range(4):
            reactor.advance(CALL_TIMEOUT_TICK)
        assert len(checks) == 5  # at start, then once a tick
    finally:
        wamp.stopService()
