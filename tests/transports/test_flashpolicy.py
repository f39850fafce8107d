"""The Flash socket policy: the document, port 843's protocol, the sniffer on site ports, and the
service's behaviour without the privilege to bind port 843."""

from __future__ import annotations

import errno
import xml.etree.ElementTree as ElementTree
from typing import Any

import pytest
from twisted.internet import error, protocol
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import LogLevel, capturedLogs

from wsserver.transports.flashpolicy import (
    POLICY_REQUEST,
    FlashPolicyService,
    PolicyServerFactory,
    SniffingFactory,
    policy_document,
    policy_response,
)

DOCUMENT = policy_document(["*", "*.example.com"], [8080, 8443])


def test_document_is_xml_allowing_each_domain_the_ports_and_ends_with_nul() -> None:
    assert DOCUMENT.endswith(b"</cross-domain-policy>\n\0")
    root = ElementTree.fromstring(DOCUMENT[:-1].split(b"\n", 2)[2])  # after the XML and DOCTYPE lines
    assert root.tag == "cross-domain-policy"
    assert root.find("site-control").attrib == {"permitted-cross-domain-policies": "master-only"}
    allows = [(a.attrib["domain"], a.attrib["to-ports"]) for a in root.findall("allow-access-from")]
    assert allows == [("*", "8080,8443"), ("*.example.com", "8080,8443")]


def test_a_domain_that_could_break_the_xml_is_refused() -> None:
    with pytest.raises(ValueError):
        policy_document(['x" to-ports="*'], [80])


@pytest.mark.parametrize(
    "request_bytes, answered",
    [(POLICY_REQUEST, True), (POLICY_REQUEST[:-1], False), (POLICY_REQUEST + b"x", False), (b"GET /", False)],
)
def test_only_the_exact_request_is_answered(request_bytes: bytes, answered: bool) -> None:
    assert (policy_response(request_bytes, DOCUMENT) == DOCUMENT) is answered


class Connection:
    def __init__(self, factory: protocol.Factory) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5000))
        self.protocol = factory.buildProtocol(self.transport.getPeer())
        self.protocol.makeConnection(self.transport)

    @property
    def closed(self) -> bool:
        return bool(self.transport.disconnecting or getattr(self.transport, "disconnected", False))

    def lose(self) -> None:
        self.protocol.connectionLost(None)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def policy_factory(clock: Clock) -> PolicyServerFactory:
    return PolicyServerFactory(lambda: DOCUMENT, clock, timeout=3, max_connections=3)


def test_port_843_answers_a_request_sent_in_pieces_then_closes(policy_factory: PolicyServerFactory) -> None:
    connection = Connection(policy_factory)
    for byte in POLICY_REQUEST:
        assert not connection.closed
        connection.protocol.dataReceived(bytes([byte]))
    assert connection.transport.value() == DOCUMENT and connection.closed


@pytest.mark.parametrize("data", [b"<policy-file-request/>\0more", b"GET / HTTP/1.1\r\n", b"<polxxx"])
def test_anything_else_is_closed_at_once_without_an_answer(policy_factory: PolicyServerFactory, data: bytes) -> None:
    connection = Connection(policy_factory)
    connection.protocol.dataReceived(data)
    assert connection.transport.value() == b"" and connection.closed


def test_silent_and_dribbling_clients_are_dropped_after_the_timeout(policy_factory: PolicyServerFactory, clock: Clock) -> None:
    silent, dribbling = Connection(policy_factory), Connection(policy_factory)
    dribbling.protocol.dataReceived(b"<policy")
    clock.advance(2.9)
    dribbling.protocol.dataReceived(b"-file")
    assert not silent.closed and not dribbling.closed
    clock.advance(0.1)
    assert silent.closed and dribbling.closed
    silent.lose(), dribbling.lose()
    assert policy_factory.waiting == set() and clock.getDelayedCalls() == []


def test_waiting_connections_are_capped(policy_factory: PolicyServerFactory) -> None:
    waiting = [Connection(policy_factory) for _ in range(3)]
    assert not any(c.closed for c in waiting)
    assert Connection(policy_factory).closed  # the fourth is turned away at once
    waiting[0].lose()
    assert not Connection(policy_factory).closed


class Site(protocol.Protocol):
    received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


def site_factory() -> protocol.Factory:
    return protocol.Factory.forProtocol(Site)


def test_site_port_answers_the_policy_request(clock: Clock) -> None:
    connection = Connection(SniffingFactory(site_factory(), lambda: DOCUMENT, clock))
    connection.protocol.dataReceived(POLICY_REQUEST)
    assert connection.transport.value() == DOCUMENT and connection.closed


def test_site_port_hands_everything_else_to_the_site_with_the_bytes_read(clock: Clock) -> None:
    connection = Connection(SniffingFactory(site_factory(), lambda: DOCUMENT, clock))
    connection.protocol.dataReceived(b"<pol")  # could still be the policy request...
    connection.protocol.dataReceived(b"ka> GET")  # ...until it cannot
    site = connection.transport.protocol
    assert isinstance(site, Site) and site.received == b"<polka> GET"
    assert not connection.closed and clock.getDelayedCalls() == []


def test_site_port_closes_a_client_that_says_nothing_within_the_timeout(clock: Clock) -> None:
    silent = Connection(SniffingFactory(site_factory(), lambda: DOCUMENT, clock, timeout=3))
    hesitant = Connection(SniffingFactory(site_factory(), lambda: DOCUMENT, clock, timeout=3))
    hesitant.protocol.dataReceived(b"<policy")
    clock.advance(2.9)
    assert not silent.closed and not hesitant.closed
    clock.advance(0.1)
    assert silent.closed and hesitant.closed


class DeniedReactor(MemoryReactor):
    """listenTCP fails the way it does for an unprivileged user on a port below 1024."""

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        raise error.CannotListenError(interface, port, PermissionError(errno.EACCES, "Permission denied"))


def test_without_privilege_the_default_port_is_skipped_with_one_warning(policy_factory: PolicyServerFactory) -> None:
    service = FlashPolicyService(DeniedReactor(), policy_factory, 843, "", required=False)
    with capturedLogs() as events:
        service.privilegedStartService()
        service.startService()
    warnings = [e for e in events if e["log_level"] == LogLevel.warn]
    assert len(warnings) == 1
    text = warnings[0]["log_format"].format(**warnings[0])
    assert "permission denied" in text and "--flash-policy-port 0" in text and "--uid" in text
    assert service.running


def test_without_privilege_an_explicit_port_refuses_to_start(policy_factory: PolicyServerFactory) -> None:
    service = FlashPolicyService(DeniedReactor(), policy_factory, 843, "", required=True)
    with pytest.raises(SystemExit, match="cannot serve the Flash socket policy on port 843: permission denied"):
        service.privilegedStartService()


def test_the_service_binds_in_privileged_start_and_only_once(policy_factory: PolicyServerFactory) -> None:
    reactor = MemoryReactor()
    service = FlashPolicyService(reactor, policy_factory, 843, "127.0.0.1", required=True)
    service.privilegedStartService()
    service.startService()
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [(843, "127.0.0.1")]
