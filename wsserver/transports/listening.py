"""
How the site's TCP ports accept connections: a count per client address, and a pause when the
process runs out of file descriptors.

Theory of operation
-------------------
Every connection to the site (HTTP, WebSocket, Flash policy, draft 76) costs a descriptor from
the moment it is accepted, long before anyone knows what it will be. So the limits live where
connections are accepted, in a :class:`GuardedPort` (twisted's ``tcp.Port``, which
:class:`ListeningReactor` builds for the endpoint strings of ``--listen``), and one
:class:`SiteConnections` counts for every port of the site:

- **Per address.** Each accepted TCP connection counts towards its peer address until it closes.
  Past ``per_address`` (``--max-connections-per-ip``, the budget WebSockets are admitted under
  too), a plain-text port answers the request ``429`` and closes (the refused connection keeps
  its descriptor for at most ``REFUSAL_GRACE`` seconds, and counts meanwhile); a TLS port
  closes at once (an answer would first need a TLS handshake).
  Behind a proxy (``--trust-proxy``) every connection comes from the proxy's address, so there
  is no TCP-level count per address (``per_address`` None): the proxy limits its clients, and
  WebSockets are still counted per X-Forwarded-For address (admission.py).
- **Descriptors.** Twisted meets ``EMFILE`` on ``accept`` by freeing a reserved descriptor,
  accepting and closing every waiting client, and logging each; ``ENFILE`` makes it try again on
  every reactor turn. Instead, before each round of accepts a port checks its headroom: the soft
  ``ulimit -n`` less the descriptors open when it started, the connections open now, and
  ``spare`` descriptors kept for the files the site serves. With no headroom, or when a probe
  ``dup`` fails, the port stops reading: new clients wait in the kernel's backlog rather than
  being closed, one warning is logged (at most one a minute), and every port resumes when a
  connection closes (or after ``retry_after`` seconds, for descriptors freed elsewhere). A round
  never accepts more than the headroom, so Twisted's own recovery runs only in the unforeseen
  case.
"""

from __future__ import annotations

import errno
import os
import resource
import socket
from typing import Any

from twisted.internet import address, protocol, tcp
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.protocols import tls

from wsserver.transports.admission import AddressCounts

log = Logger()

#: Descriptors kept back from accepting, for the files the site opens to serve them.
SPARE_DESCRIPTORS = 16
#: Seconds a paused port waits before it looks again, when no connection closes meanwhile.
RETRY_AFTER = 1.0
#: Running out of descriptors is logged at most once in this many seconds.
WARN_INTERVAL = 60.0
#: Seconds a refused client has to send its request, read the 429 and close.
REFUSAL_GRACE = 2.0
#: A refused client's request head is not read beyond this many bytes.
MAX_REFUSED_HEAD = 16 * 1024

TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 39\r\n\r\ntoo many connections from your address\n"
)


def open_descriptors() -> int:
    """How many descriptors the process has open (Linux: /proc; elsewhere the lowest free one)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # less the one listdir itself opened
    except OSError:
        probe = os.open(os.devnull, os.O_RDONLY)
        os.close(probe)
        return probe


class SiteConnections:
    """
    The TCP connections open on all of the site's ports: per address (against ``per_address``;
    None: not limited) and in all, and the ports paused for want of descriptors.
    """

    def __init__(self, clock: IReactorTime, *, per_address: int | None, spare: int = SPARE_DESCRIPTORS,
                 retry_after: float = RETRY_AFTER) -> None:
        self.clock = clock
        self.per_address = per_address
        self.spare = spare
        self.retry_after = retry_after
        self.counts = AddressCounts()
        #: Addresses refused since they last were under the limit (logged once each).
        self.refusing: set[str] = set()
        self.paused: set[GuardedPort] = set()
        #: When running out of descriptors was last logged: a spell of pauses and resumes is
        #: one line, and one a minute while it lasts.
        self.warned_at: float | None = None
        self._retry: Any = None

    def refuses(self, host: str) -> bool:
        """Whether one more connection from ``host`` is over the limit (logged once per spell)."""
        if self.per_address is None or self.counts.of(host) < self.per_address:
            return False
        if host not in self.refusing:
            self.refusing.add(host)
            log.info("refusing connections from {ip}: {limit} open from there (--max-connections-per-ip)",
                     ip=host, limit=self.per_address)
        return True

    @property
    def total(self) -> int:
        return self.counts.total

    @property
    def open_by_host(self) -> dict[str, int]:
        return self.counts.by_address

    def opened(self, host: str) -> None:
        self.counts.add(host)

    def closed(self, host: str) -> None:
        remaining = self.counts.remove(host)
        if self.per_address is None or remaining < self.per_address:
            self.refusing.discard(host)
        self.resume()

    # -- descriptors ------------------------------------------------------------------------------

    def pause(self, port: GuardedPort, limit: int) -> None:
        """``port`` cannot accept for want of descriptors: stop it until :meth:`resume`."""
        port.stopReading()
        self.paused.add(port)
        now = self.clock.seconds()
        if self.warned_at is None or now - self.warned_at >= WARN_INTERVAL:
            self.warned_at = now
            log.warn("out of file descriptors ({open} open, ulimit -n {limit}): not accepting new connections "
                     "until some close; raise ulimit -n", open=open_descriptors(), limit=limit)
        if self._retry is None or not self._retry.active():
            self._retry = self.clock.callLater(self.retry_after, self.resume)

    def resume(self) -> None:
        """Let the paused ports look again (each pauses anew if it still has no headroom)."""
        if not self.paused:
            return
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        paused, self.paused = self.paused, set()
        for port in paused:
            if port.connected:
                port.startReading()


class CountedServer(tcp.Server):
    """A connection accepted by a :class:`GuardedPort`: counted from accept to close."""

    def __init__(self, sock: Any, protocol: Any, client: Any, server: GuardedPort, sessionno: int,
                 reactor: Any) -> None:
        super().__init__(sock, protocol, client, server, sessionno, reactor)
        self.counted_host = client[0]
        server.connections.opened(self.counted_host)

    def connectionLost(self, reason: Any) -> None:
        try:
            super().connectionLost(reason)
        finally:
            self.server.connections.closed(self.counted_host)


class TooManyConnections(protocol.Protocol):
    """
    Answers the request with ``answer`` (429) once its head is in, then closes our side, reading
    and dropping what the client still sends until it closes too; ``grace`` seconds after
    accept, it is dropped whatever it did. With no ``answer``, closes at once.

    Why wait for the request: clients read the response to a request they sent (websockets fails
    on one that comes first), and closing with the request unread would send a reset, which can
    make the client lose the 429 it had not read yet.
    """

    def __init__(self, answer: bytes, clock: IReactorTime, grace: float = REFUSAL_GRACE) -> None:
        self.answer = answer
        self.clock = clock
        self.grace = grace
        #: The request head so far; None once answered.
        self.received: bytes | None = b""
        self.deadline: Any = None

    def connectionMade(self) -> None:
        if not self.answer:
            self.transport.abortConnection()
            return
        self.deadline = self.clock.callLater(self.grace, self.transport.abortConnection)

    def dataReceived(self, data: bytes) -> None:
        if self.received is None:
            return  # answered: read on only so that closing sends no reset
        self.received += data
        if b"\r\n\r\n" in self.received or len(self.received) > MAX_REFUSED_HEAD:
            self.received = None
            self.transport.write(self.answer)
            self.transport.loseWriteConnection()

    def connectionLost(self, reason: Any = None) -> None:
        if self.deadline is not None and self.deadline.active():
            self.deadline.cancel()


class PerAddressLimit(protocol.Factory):
    """The factory a :class:`GuardedPort` accepts with: ``wrapped``'s, or a refusal past the limit."""

    def __init__(self, wrapped: protocol.Factory, connections: SiteConnections, refusal: bytes) -> None:
        self.wrapped = wrapped
        self.connections = connections
        self.refusal = refusal

    def buildProtocol(self, addr: Any) -> Any:
        if self.connections.refuses(addr.host):
            return TooManyConnections(self.refusal, self.connections.clock)
        return self.wrapped.buildProtocol(addr)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def logPrefix(self) -> str:
        return str(self.wrapped.logPrefix())


class GuardedPort(tcp.Port):
    """``tcp.Port`` with the per-address count and the descriptor pause (see the module docstring)."""

    transport = CountedServer

    def __init__(self, port: int, factory: protocol.Factory, backlog: int, interface: str, reactor: Any, *,
                 connections: SiteConnections, refusal: bytes) -> None:
        super().__init__(port, PerAddressLimit(factory, connections, refusal), backlog, interface, reactor)
        self.connections = connections
        self.descriptors_before = 0

    def adopt(self, fd: int) -> None:
        """
        Listen on the bound socket ``fd`` rather than bind: call before ``startListening``. The
        port owns ``fd`` from now on (closes it when it stops listening, so that a worker that
        stops holds no copy of the shared socket open).
        """
        sock = socket.socket(fileno=fd)
        if sock.family == socket.AF_INET6:
            self.addressFamily, self._addressType = socket.AF_INET6, address.IPv6Address
        self.interface, self.port = sock.getsockname()[:2]
        self._preexistingSocket = sock

    def startListening(self) -> None:
        super().startListening()
        self.descriptors_before = open_descriptors() - self.connections.total

    def headroom(self) -> int:
        """Connections this port may still accept before it eats into the spare descriptors."""
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if limit == resource.RLIM_INFINITY:
            return self.numberAccepts
        return limit - self.descriptors_before - self.connections.total - self.connections.spare

    def doRead(self) -> Any:
        headroom = self.headroom()
        if headroom <= 0 or not descriptor_available(self.fileno()):
            self.connections.pause(self, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
            return None
        self.numberAccepts = min(self.numberAccepts, headroom)
        return super().doRead()


def descriptor_available(fd: int) -> bool:
    """Whether the process can open one more descriptor now (a ``dup`` of ``fd``, closed at once)."""
    try:
        os.close(os.dup(fd))
    except OSError as failure:
        if failure.errno in (errno.EMFILE, errno.ENFILE):
            return False
        raise
    return True


class ListeningReactor:
    """
    ``reactor`` for ``endpoints.serverFromString``: its TCP and TLS ports are :class:`GuardedPort`
    s counting into ``connections``; everything else is ``reactor``'s own. With ``inherited``, the
    port adopts that listening descriptor (a worker's, bound by its supervisor) instead of binding.
    """

    def __init__(self, reactor: Any, connections: SiteConnections, *, inherited: int | None = None) -> None:
        self._reactor = reactor
        self._connections = connections
        self._inherited = inherited

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(self, port: int, factory: protocol.Factory, backlog: int = 50, interface: str = "",
                  refusal: bytes = TOO_MANY_CONNECTIONS) -> tcp.Port:
        listening = GuardedPort(port, factory, backlog, interface, self._reactor,
                                connections=self._connections, refusal=refusal)
        if self._inherited is not None:
            listening.adopt(self._inherited)
        listening.startListening()
        return listening

    def listenSSL(self, port: int, factory: protocol.Factory, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> tcp.Port:
        # As the posix reactor does, but on a guarded port; refused before TLS, so without a 429.
        listening = self.listenTCP(port, tls.TLSMemoryBIOFactory(contextFactory, False, factory), backlog,
                                   interface, refusal=b"")
        listening._type = "TLS"
        return listening
