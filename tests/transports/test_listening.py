"""The site's ports: connections counted per address from accept to close, the refusal past the
limit, and the pause (and resume) when the process has no descriptors to spare."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet import protocol
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure

from wsserver.transports.listening import (
    REFUSAL_GRACE,
    RETRY_AFTER,
    TOO_MANY_CONNECTIONS,
    GuardedPort,
    ListeningReactor,
    SiteConnections,
    TooManyConnections,
)


class Recording(protocol.Factory):
    """Builds plain protocols and keeps them."""

    def __init__(self) -> None:
        self.built: list[protocol.Protocol] = []

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        built = protocol.Protocol()
        self.built.append(built)
        return built


class Site:
    """A guarded port on 127.0.0.1 (a real socket, a fake reactor) and clients to connect to it."""

    def __init__(self, per_address: int | None = 2) -> None:
        self.reactor = MemoryReactorClock()
        self.connections = SiteConnections(self.reactor, per_address=per_address)
        self.factory = Recording()
        self.port: GuardedPort = ListeningReactor(self.reactor, self.connections).listenTCP(
            0, self.factory, interface="127.0.0.1"
        )
        self.clients: list[socket.socket] = []

    def connect(self, count: int = 1) -> None:
        for _ in range(count):
            self.clients.append(socket.create_connection(("127.0.0.1", self.port.getHost().port)))

    @property
    def reading(self) -> bool:
        return self.port in self.reactor.getReaders()

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.port.socket.close()


@pytest.fixture
def site() -> Iterator[Site]:
    site = Site()
    yield site
    site.close()


def warnings(events: list[dict[str, Any]]) -> list[str]:
    return [e["log_format"].format(**e) for e in events if e["log_level"] == LogLevel.warn]


def test_connections_are_counted_per_address_and_past_the_limit_refused_with_429(site: Site) -> None:
    site.connect(3)
    with capturedLogs() as events:
        site.port.doRead()
    assert len(site.factory.built) == 2
    assert site.connections.open_by_host == {"127.0.0.1": 3}  # the third, until its 429 is out
    [refusal] = [r for r in site.reactor.getReaders() if isinstance(getattr(r, "protocol", None), TooManyConnections)]
    site.clients[2].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    refusal.doRead()
    refusal.doWrite()
    site.clients[2].settimeout(5)
    assert site.clients[2].recv(4096) == TOO_MANY_CONNECTIONS
    assert site.clients[2].recv(4096) == b""  # then our side is closed
    refusal.connectionLost(Failure(ConnectionDone()))  # the client closes too
    assert site.connections.open_by_host == {"127.0.0.1": 2}
    [line] = [e["log_format"].format(**e) for e in events if "refusing" in e["log_format"]]
    assert "127.0.0.1" in line and "--max-connections-per-ip" in line


class HalfClosing(StringTransport):
    """A TCP transport's half-close, which StringTransport lacks."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def test_the_refusal_answers_the_request_with_429_and_closes_its_side() -> None:
    clock = Clock()
    refused = HalfClosing()
    refusal = TooManyConnections(TOO_MANY_CONNECTIONS, clock)
    refusal.makeConnection(refused)
    refusal.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert refused.value() == b""
    refusal.dataReceived(b"\r\n")
    assert refused.value() == TOO_MANY_CONNECTIONS and refused.write_closed
    refusal.dataReceived(b"more")  # read and dropped
    assert not refused.disconnected
    clock.advance(REFUSAL_GRACE)
    assert refused.disconnected  # a client that does not close is dropped


def test_a_silent_refused_client_is_dropped_without_an_answer() -> None:
    clock = Clock()
    refused = HalfClosing()
    TooManyConnections(TOO_MANY_CONNECTIONS, clock).makeConnection(refused)
    clock.advance(REFUSAL_GRACE)
    assert refused.value() == b"" and refused.disconnected


def test_on_tls_the_refusal_closes_at_once() -> None:
    on_tls = HalfClosing()
    TooManyConnections(b"", Clock()).makeConnection(on_tls)
    assert on_tls.value() == b"" and on_tls.disconnected


def test_a_closed_connection_frees_its_place(site: Site) -> None:
    site.connect(2)
    site.port.doRead()
    first = site.factory.built[0]
    first.transport.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
    assert site.connections.open_by_host == {"127.0.0.1": 1}
    assert not site.connections.refuses("127.0.0.1")
    site.connect()
    site.port.doRead()
    assert len(site.factory.built) == 3


def test_behind_a_proxy_there_is_no_count_per_address() -> None:
    connections = SiteConnections(MemoryReactorClock(), per_address=None)
    for _ in range(1000):
        connections.opened("127.0.0.1")
    assert not connections.refuses("127.0.0.1")


def test_tls_ports_refuse_without_an_answer() -> None:
    from twisted.internet import ssl

    connections = SiteConnections(MemoryReactorClock(), per_address=1)
    port = ListeningReactor(MemoryReactorClock(), connections).listenSSL(
        0, Recording(), ssl.CertificateOptions(), interface="127.0.0.1"
    )
    try:
        assert port.factory.refusal == b"" and port._type == "TLS"
    finally:
        port.socket.close()


# -- out of descriptors ----------------------------------------------------------------------------


def test_without_headroom_the_port_pauses_logs_once_and_resumes_after_a_while(site: Site) -> None:
    site.connections.spare = 10**9  # no headroom left
    site.connect()
    with capturedLogs() as events:
        site.port.doRead()
        assert not site.reading and site.factory.built == []  # the client waits in the backlog
        site.reactor.advance(RETRY_AFTER)
        assert site.reading
        site.port.doRead()  # still none: paused again, not logged again
        assert not site.reading
    [line] = warnings(events)
    assert "out of file descriptors" in line and "ulimit -n" in line
    site.connections.spare = 0
    site.reactor.advance(RETRY_AFTER)
    site.port.doRead()
    assert len(site.factory.built) == 1


def test_a_closing_connection_resumes_a_paused_port(site: Site) -> None:
    site.connect()
    site.port.doRead()
    site.connections.spare = 10**9
    site.connect()
    site.port.doRead()
    assert not site.reading
    site.factory.built[0].transport.connectionLost(Failure(ConnectionDone()))  # type: ignore[attr-defined]
    assert site.reading


def test_a_round_of_accepts_takes_no_more_than_the_headroom(site: Site) -> None:
    site.connections.per_address = 100
    site.connections.spare = 0
    headroom = site.port.headroom()
    site.connections.spare = headroom - 3  # room for three
    site.connect(5)
    site.port.doRead()
    assert len(site.factory.built) == 3 and site.port.headroom() == 0
    site.port.doRead()
    assert not site.reading and len(site.factory.built) == 3
