"""
The Flash socket policy, for browsers that reach us through the web-socket-js Flash shim.

Theory of operation
-------------------
Before a Flash movie opens a raw socket to HOST:PORT, Flash Player connects to HOST:843 and sends
``<policy-file-request/>`` and a NUL byte; it expects an XML ``<cross-domain-policy>`` document
and a NUL byte back, then the connection closed. If port 843 does not answer, it asks PORT itself
the same way. The socket is allowed only if the policy lists PORT.

So the policy is served twice:

- :class:`PolicyServerFactory` on port 843 (``FlashPolicyService`` binds it before twistd drops
  root);
- :class:`SniffingFactory` on the site's own ports: a connection whose first bytes are the policy
  request gets the policy; any other is handed, with the bytes read so far, to the site. One
  that says nothing within the site's idle timeout is closed.

A connection is answered only for the exact request. Anything else is closed without an answer
as soon as it cannot be the request any more: at its first wrong byte, or when it is longer.
A client that sends nothing, or dribbles, is closed after ``timeout`` seconds; at most
``max_connections`` wait at once, so silent clients cannot pile up.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application.service import Service
from twisted.internet import error, protocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper

log = Logger()

POLICY_REQUEST = b"<policy-file-request/>\0"
DEFAULT_PORT = 843
#: Domains as Flash understands them: host names, optionally with a leading "*." wildcard, or "*".
DOMAIN_PATTERN = re.compile(r"^(\*|(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)$")


@dataclass(frozen=True)
class FlashPolicy:
    """What to serve: see the ``--flash-*`` options in tap.py."""

    port: int = DEFAULT_PORT  # 0: no policy service of its own (the site's ports still answer)
    interface: str = ""
    domains: tuple[str, ...] = ("*",)
    #: The ports to allow; empty: the ports the site listens on.
    ports: tuple[int, ...] = ()
    #: The port was asked for explicitly: failing to bind it is fatal.
    required: bool = False
    timeout: float = 3.0


def policy_document(domains: Sequence[str], ports: Sequence[int]) -> bytes:
    """The policy (NUL-terminated) allowing ``domains`` to open sockets to ``ports``."""
    for domain in domains:
        if not DOMAIN_PATTERN.match(domain):
            raise ValueError(f"not a domain Flash can match: {domain!r}")
    to_ports = ",".join(str(port) for port in sorted(set(ports))) or "*"
    allows = "".join(f'  <allow-access-from domain="{domain}" to-ports="{to_ports}"/>\n' for domain in domains)
    return (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE cross-domain-policy SYSTEM "http://www.adobe.com/xml/dtds/cross-domain-policy.dtd">\n'
        "<cross-domain-policy>\n"
        '  <site-control permitted-cross-domain-policies="master-only"/>\n'
        f"{allows}"
        "</cross-domain-policy>\n"
    ).encode("ascii") + b"\0"


def policy_response(request: bytes, document: bytes) -> bytes | None:
    """What to answer ``request``: ``document`` for the exact policy request, else nothing."""
    return document if request == POLICY_REQUEST else None


def could_be_request(data: bytes) -> bool:
    """Whether ``data`` is a beginning of the policy request (so more bytes should be awaited)."""
    return POLICY_REQUEST.startswith(data)


class PolicyProtocol(protocol.Protocol):
    """Port 843: answer the exact request, close on anything else, close the silent."""

    factory: PolicyServerFactory

    def connectionMade(self) -> None:
        self.received = b""
        if len(self.factory.waiting) >= self.factory.max_connections:
            self.transport.abortConnection()
            return
        self.factory.waiting.add(self)
        self.deadline = self.factory.clock.callLater(self.factory.timeout, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if could_be_request(self.received) and len(self.received) < len(POLICY_REQUEST):
            return
        answer = policy_response(self.received, self.factory.document())
        if answer is not None:
            self.transport.write(answer)
            self.transport.loseConnection()
        else:
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self in self.factory.waiting:
            self.factory.waiting.discard(self)
            if self.deadline.active():
                self.deadline.cancel()


class PolicyServerFactory(protocol.Factory):
    """
    Serves the policy from ``document()`` (a callable: the site's ports are known only once it
    listens). ``clock`` drives the ``timeout``.
    """

    protocol = PolicyProtocol
    noisy = False

    def __init__(self, document: Callable[[], bytes], clock: IReactorTime, timeout: float = 3.0,
                 max_connections: int = 1000) -> None:
        self.document = document
        self.clock = clock
        self.timeout = timeout
        self.max_connections = max_connections
        self.waiting: set[PolicyProtocol] = set()


def switch_protocol(transport: Any, new: protocol.Protocol, received: bytes) -> None:
    """
    Give ``transport`` to ``new`` for good, as Autobahn's WebSocketResource does (from now on bytes
    go to it directly, not through the sniffer), then the bytes the sniffer read.
    """
    if isinstance(transport, ProtocolWrapper):  # TLS
        transport.wrappedProtocol = new
    else:
        transport.protocol = new
    new.makeConnection(transport)
    if received:
        new.dataReceived(received)


def protocol_for(factory: protocol.Factory, addr: Any, first_bytes: bytes) -> Any:
    """
    ``factory``'s protocol for a connection that sent ``first_bytes`` first: its ``protocol_for``
    chooses when it has one (the site: a WebSocket handshake skips the HTTP channel), else its
    ``buildProtocol``. Then :func:`switch_protocol` gives it the connection and those bytes.
    """
    choose = getattr(factory, "protocol_for", None)
    return choose(addr, first_bytes) if choose is not None else factory.buildProtocol(addr)


class Sniffer(protocol.Protocol):
    """The first bytes on a site port: the policy request, or the site's (then it steps aside)."""

    factory: SniffingFactory

    def connectionMade(self) -> None:
        self.received = b""
        self.deadline = self.factory.clock.callLater(self.factory.timeout, self._undecided)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if could_be_request(self.received):
            if len(self.received) == len(POLICY_REQUEST):
                self.deadline.cancel()
                self.transport.write(self.factory.document())
                self.transport.loseConnection()
            return
        self.deadline.cancel()
        self._hand_over()

    def _undecided(self) -> None:
        # Silence (or a prefix of the policy request, then silence) for the site's own idle
        # timeout: the site would close it now too.
        self.transport.loseConnection()

    def _hand_over(self) -> None:
        switch_protocol(self.transport, protocol_for(self.factory.wrapped, self.transport.getPeer(), self.received),
                        self.received)

    def connectionLost(self, reason: Any = None) -> None:
        if self.deadline.active():
            self.deadline.cancel()


class SniffingFactory(protocol.Factory):
    """Wraps the site's factory so that its ports answer policy requests too."""

    protocol = Sniffer
    noisy = False

    def __init__(self, wrapped: protocol.Factory, document: Callable[[], bytes], clock: IReactorTime,
                 timeout: float = 3.0) -> None:
        self.wrapped = wrapped
        self.document = document
        self.clock = clock
        self.timeout = timeout

    def doStart(self) -> None:
        self.wrapped.doStart()
        super().doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()
        super().doStop()


class FlashPolicyService(Service):
    """
    Port 843 (or ``port``), bound in ``privilegedStartService`` so that ``twistd --uid/--gid``
    can bind it as root and drop privileges after. Without the privilege: if the port is the
    default (``required`` false), one log line says what failed and what still works, and the
    server goes on; if the user asked for the port explicitly, the server refuses to start.
    """

    def __init__(self, reactor: IReactorTCP, factory: PolicyServerFactory, port: int, interface: str,
                 required: bool) -> None:
        self.reactor = reactor
        self.factory = factory
        self.port = port
        self.interface = interface
        self.required = required
        self.listening: Any = None

    _bound_once = False

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self._bound_once = True
        try:
            self.listening = self.reactor.listenTCP(self.port, self.factory, interface=self.interface)
        except error.CannotListenError as failure:
            denied = isinstance(failure.socketError, OSError) and failure.socketError.errno == errno.EACCES
            reason = "permission denied" if denied else str(failure.socketError)
            if self.required:
                raise SystemExit(
                    f"wsserver: cannot serve the Flash socket policy on port {self.port}: {reason}. "
                    + ("Run as root with --uid/--gid, or give Python CAP_NET_BIND_SERVICE. " if denied else "")
                ) from failure
            log.warn(
                "Flash socket policy not served on port {port} ({reason}); the site's own ports still "
                "answer policy requests, which Flash tries next. To serve port {port}: start as root with "
                "twistd --uid/--gid, or grant CAP_NET_BIND_SERVICE; to silence this: --flash-policy-port 0.",
                port=self.port, reason=reason,
            )
            return
        log.info("Flash socket policy on port {port}", port=self.listening.getHost().port)

    def startService(self) -> None:
        # twistd calls privilegedStartService first; a plain startService (tests, embedding) binds.
        if not self._bound_once:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        listening, self.listening = self.listening, None
        return listening.stopListening() if listening is not None else None
