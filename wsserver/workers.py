"""
``--workers N``: one supervisor process binds the ports, N worker processes serve them.

Theory of operation
-------------------
The supervisor (``twistd wsserver --workers N``, built by tap.py when N > 1) serves nobody
itself. In ``privilegedStartService`` (before ``twistd --uid/--gid`` drops root) it binds every
listening socket the options name, as a single server would: each ``--listen`` endpoint (tcp: and
ssl:, whose certificates it loads now, so a bad one stops it at once) and the Flash policy port.
Then, unprivileged, it starts N workers: the same installed twistd, the same wsserver options less
``--workers``, with the bound sockets as descriptors 3, 4, ... (``spawnProcess(childFDs=...)``) and
the environment variables below saying which descriptor is which. A worker adopts them
(``tcp.Port`` with a pre-existing socket, see listening.py), so the kernel hands each new
connection to whichever worker accepts it first; every worker runs its own router, connection
limits (per worker: ``--max-connections`` and ``--max-connections-per-ip`` count what that worker
holds) and descriptor guard, and they share publications through ``--redis``, which is
therefore required.

Workers log through the supervisor: each writes its events as JSON to its stdout and the
supervisor re-emits them into its own log (file, syslog or stdout, as twistd was told) with
``worker I, pid P`` as their system.

A worker that exits, or is killed, while the supervisor runs is started again after a delay that
doubles with every exit in a row (``RESTART_DELAY`` to ``MAX_RESTART_DELAY``); a worker that ran
``STABLE_UPTIME`` seconds starts the count anew. So a worker crashing at start costs at most one
start a minute. The other workers go on serving meanwhile: connections queue on the shared
sockets, not on the dead worker.

On stop (SIGTERM, SIGINT), the supervisor sends every worker SIGTERM: each closes as a single
server does (GOODBYE, close 1001, up to ``--shutdown-timeout`` seconds); those still running
``STOP_GRACE`` seconds after that get SIGKILL; then the supervisor exits. A worker whose
supervisor is gone (SIGKILL) notices within ``ORPHAN_CHECK`` seconds and stops itself.

Long-poll sessions live in the worker that opened them: see transports/longpoll_relay.py for how
a request that reaches another worker gets there.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from twisted.application import internet
from twisted.application.internet import TimerService
from twisted.application.service import Service
from twisted.internet import address, defer, endpoints, error, protocol
from twisted.logger import FileLogObserver, ILogObserver, Logger, eventFromJSON, eventAsJSON
from twisted.python.failure import Failure

from wsserver.service import WampServer
from wsserver.transports.flashpolicy import FlashPolicyService
from wsserver.transports.longpoll_relay import LongPollRelay

log = Logger()

#: ``--workers``: one process, no supervisor (as before the option was there).
DEFAULT_WORKERS = 1
#: Seconds before the first restart of a worker that exited.
RESTART_DELAY = 1.0
#: The delay doubles for every exit in a row, up to this.
MAX_RESTART_DELAY = 60.0
#: A worker that ran this long before it exited is restarted after RESTART_DELAY again.
STABLE_UPTIME = 60.0
#: Seconds the supervisor waits, beyond --shutdown-timeout, for its workers to exit before SIGKILL.
STOP_GRACE = 5.0
#: Seconds between a worker's checks that its supervisor is alive.
ORPHAN_CHECK = 1.0

#: Environment of a worker: its index (0 to N-1) and the number of workers.
WORKER_ENV = "WSSERVER_WORKER"
WORKERS_ENV = "WSSERVER_WORKERS"
#: The inherited descriptors of the --listen endpoints, in their order, comma-separated.
LISTEN_FDS_ENV = "WSSERVER_LISTEN_FDS"
#: The inherited descriptor of the Flash policy port (absent: not served).
FLASH_FD_ENV = "WSSERVER_FLASH_POLICY_FD"
#: The supervisor's name for this group of workers (their long-poll relay sockets are named after it).
GROUP_ENV = "WSSERVER_WORKER_GROUP"


_ENDPOINT_PORT = re.compile(r"^(?P<kind>tcp6?|ssl):(?P<key>port=)?(?P<port>\d+)(?P<rest>(:.*)?)$")


def own_port(description: str, index: int) -> str:
    """
    The endpoint ``description`` with its port moved up by ``index``: each worker serves its own
    metrics (``--metrics-listen tcp:9100`` gives workers 9100, 9101, ...), since counts are per
    process and a scrape of a shared port would reach one worker at random. Port 0 stays 0.
    """
    found = _ENDPOINT_PORT.match(description)
    if found is None or found["port"] == "0":
        return description
    return f"{found['kind']}:{found['key'] or ''}{int(found['port']) + index}{found['rest']}"


@dataclass(frozen=True)
class WorkerIdentity:
    """What a worker process knows it is: ``index`` of ``count``, in ``group``; its inherited sockets."""

    index: int
    count: int
    group: str
    listen_fds: tuple[int, ...]
    flash_policy_fd: int | None

    @classmethod
    def from_environment(cls, environ: dict[str, str] | os._Environ[str] = os.environ) -> WorkerIdentity | None:
        """This process's identity, when a supervisor started it (None: it is a server on its own)."""
        if WORKER_ENV not in environ:
            return None
        flash = environ.get(FLASH_FD_ENV)
        return cls(
            index=int(environ[WORKER_ENV]),
            count=int(environ[WORKERS_ENV]),
            group=environ[GROUP_ENV],
            listen_fds=tuple(int(fd) for fd in environ[LISTEN_FDS_ENV].split(",") if fd),
            flash_policy_fd=int(flash) if flash else None,
        )

    @property
    def name(self) -> str:
        return f"worker {self.index}, pid {os.getpid()}"


def worker_arguments(arguments: Sequence[str]) -> list[str]:
    """The wsserver command line ``arguments`` less ``--workers N`` (or ``--workers=N``): a worker's."""
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
        elif argument == "--workers":
            skip = True
        elif not argument.startswith("--workers="):
            kept.append(argument)
    return kept


# -- binding in the supervisor ---------------------------------------------------------------------


class BoundSocket:
    """A socket the supervisor bound and listens on, for its workers to accept on (``getHost`` as a port has)."""

    def __init__(self, sock: socket.socket, scheme: str) -> None:
        self.socket = sock
        self.scheme = scheme

    def fileno(self) -> int:
        return self.socket.fileno()

    def getHost(self) -> address.IPv4Address | address.IPv6Address:
        host, port = self.socket.getsockname()[:2]
        if self.socket.family == socket.AF_INET6:
            return address.IPv6Address("TCP", host, port)
        return address.IPv4Address("TCP", host, port)

    def stopListening(self) -> None:
        self.socket.close()


class BindingReactor:
    """
    A stand-in reactor for ``endpoints.serverFromString`` (and FlashPolicyService): its
    ``listenTCP``/``listenSSL`` bind and listen as the reactor would, but accept nothing; the
    sockets are kept in ``bound`` for the workers. Raises ``CannotListenError`` as the reactor does.
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self.bound: list[BoundSocket] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "",
                  scheme: str = "http") -> BoundSocket:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((interface, port))
            sock.listen(backlog)
        except OSError as failure:
            sock.close()
            raise error.CannotListenError(interface, port, failure) from None
        # Shared by every worker; a worker that blocked in accept would stall its reactor.
        sock.setblocking(False)
        sock.set_inheritable(True)
        bound = BoundSocket(sock, scheme)
        self.bound.append(bound)
        return bound

    def listenSSL(self, port: int, factory: Any, contextFactory: Any, backlog: int = 50,
                  interface: str = "") -> BoundSocket:
        return self.listenTCP(port, factory, backlog, interface, scheme="https")


def bind_endpoint(reactor: BindingReactor, description: str) -> BoundSocket:
    """Bind one ``--listen`` endpoint in the supervisor; raises SystemExit with what failed."""
    if not description.startswith(("tcp:", "ssl:", "tls:")):
        raise SystemExit(f"wsserver: --workers serves tcp: and ssl: endpoints only, not {description}")
    failures: list[Failure] = []
    listening = endpoints.serverFromString(reactor, description).listen(protocol.Factory())
    listening.addErrback(failures.append)
    if failures:
        raise SystemExit(f"wsserver: cannot listen on {description}: {failures[0].getErrorMessage()}")
    return reactor.bound[-1]


# -- the supervisor ---------------------------------------------------------------------------------


class WorkerProtocol(protocol.ProcessProtocol):
    """One worker's pipes: its log events (JSON on stdout, text on stderr) into the supervisor's log."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.pid: int | None = None
        self.started_at = 0.0
        self._partial = {1: b"", 2: b""}

    @property
    def system(self) -> str:
        return f"worker {self.index}, pid {self.pid}"

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd not in self._partial:
            return
        lines = (self._partial[fd] + data).split(b"\n")
        self._partial[fd] = lines.pop()
        if len(self._partial[fd]) > 1024 * 1024:  # a line without end: log what came so far
            lines.append(self._partial[fd])
            self._partial[fd] = b""
        for line in lines:
            self.relog(line, fd)

    def relog(self, line: bytes, fd: int) -> None:
        text = line.decode("utf-8", "replace").strip("\x1e\r")
        if not text:
            return
        if fd == 1 and text.startswith("{"):
            try:
                event = eventFromJSON(text)
            except ValueError:
                pass
            else:
                event["log_system"] = self.system
                log.observer(event)
                return
        log.warn("{line}", line=text, log_system=self.system)

    def processEnded(self, reason: Failure) -> None:
        for fd in (1, 2):
            if self._partial[fd]:
                self.relog(self._partial[fd], fd)
        self.supervisor.ended(self, reason)


#: ``launch(index, protocol) -> process transport`` (its ``pid`` and ``signalProcess``).
Launcher = Callable[[int, WorkerProtocol], Any]


class Supervisor(Service):
    """
    Binds the ports, then runs ``count`` workers started by ``launch`` (see the module docstring);
    ``bind()`` binds (twistd calls it in ``privilegedStartService``); ``release()`` closes the
    supervisor's copies of the sockets on stop, so that they stop listening as the workers stop.
    ``stop_timeout``: seconds the workers get to exit after SIGTERM before SIGKILL.
    """

    def __init__(self, reactor: Any, *, count: int, launch: Launcher, bind: Callable[[], Any],
                 stop_timeout: float, release: Callable[[], Any] = lambda: None) -> None:
        self.reactor = reactor
        self.count = count
        self.launch = launch
        self.bind = bind
        self.release = release
        self.stop_timeout = stop_timeout
        self.workers: dict[int, WorkerProtocol] = {}
        self.transports: dict[int, Any] = {}
        #: Exits in a row per worker index (the restart delay doubles with each).
        self.exits: dict[int, int] = {}
        self.restarts: dict[int, Any] = {}
        self.stopping = False
        self._bound = False
        self._all_gone: defer.Deferred[None] | None = None

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        self.bind()
        self._bound = True

    def startService(self) -> None:
        if not self._bound:
            self.privilegedStartService()
        super().startService()
        for index in range(self.count):
            self.start_worker(index)

    def start_worker(self, index: int) -> None:
        self.restarts.pop(index, None)
        worker = WorkerProtocol(self, index)
        try:
            transport = self.launch(index, worker)
        except OSError as failure:
            if index not in self.exits:
                # The first start (from startService): a setup error, such as an interpreter the
                # --uid user may not run, not a crash to retry. Workers already started see their
                # supervisor gone and stop (OrphanWatch).
                raise SystemExit(f"wsserver: cannot start worker {index}: {failure}") from failure
            delay = self._next_delay(index, uptime=0.0)
            log.error("cannot start worker {index} again: {reason}; trying again in {delay:g} s",
                      index=index, reason=failure, delay=delay)
            self.restarts[index] = self.reactor.callLater(delay, self.start_worker, index)
            return
        worker.pid = transport.pid
        worker.started_at = self.reactor.seconds()
        self.workers[index] = worker
        self.transports[index] = transport
        log.info("started worker {index} of {count}, pid {pid}", index=index, count=self.count, pid=transport.pid)

    def ended(self, worker: WorkerProtocol, reason: Failure) -> None:
        """A worker exited (``reason``: its ProcessDone or ProcessTerminated): restart it, unless stopping."""
        index = worker.index
        if self.workers.get(index) is not worker:
            return
        del self.workers[index]
        self.transports.pop(index, None)
        how = describe_exit(reason)
        if self.stopping:
            log.info("worker {index} (pid {pid}) stopped: {how}", index=index, pid=worker.pid, how=how)
            if not self.workers and self._all_gone is not None:
                self._all_gone.callback(None)
            return
        uptime = self.reactor.seconds() - worker.started_at
        delay = self._next_delay(index, uptime)
        log.warn("worker {index} (pid {pid}) {how} after {uptime:.1f} s; starting it again in {delay:g} s",
                 index=index, pid=worker.pid, how=how, uptime=uptime, delay=delay)
        self.restarts[index] = self.reactor.callLater(delay, self.start_worker, index)

    def _next_delay(self, index: int, uptime: float) -> float:
        """Seconds before worker ``index`` starts again, after it ran ``uptime`` seconds (and counts this exit)."""
        exits = 0 if uptime >= STABLE_UPTIME else self.exits.get(index, 0)
        self.exits[index] = exits + 1
        return min(RESTART_DELAY * 2 ** exits, MAX_RESTART_DELAY)

    def stopService(self) -> defer.Deferred[None]:
        """SIGTERM every worker; the result fires when all have exited (SIGKILL after ``stop_timeout``)."""
        super().stopService()
        self.stopping = True
        self.release()
        for restart in self.restarts.values():
            if restart.active():
                restart.cancel()
        self.restarts.clear()
        if not self.workers:
            return defer.succeed(None)
        self._all_gone = defer.Deferred()
        for index, transport in list(self.transports.items()):
            signal_worker(transport, "TERM")
        kill = self.reactor.callLater(self.stop_timeout, self._kill_stragglers)
        self._all_gone.addBoth(lambda result: kill.cancel() if kill.active() else None)
        return self._all_gone

    def _kill_stragglers(self) -> None:
        for index, transport in list(self.transports.items()):
            log.warn("worker {index} (pid {pid}) did not stop within {timeout:g} s: killed",
                     index=index, pid=transport.pid, timeout=self.stop_timeout)
            signal_worker(transport, "KILL")


def signal_worker(transport: Any, name: str) -> None:
    try:
        transport.signalProcess(name)
    except error.ProcessExitedAlready:
        pass


def describe_exit(reason: Failure) -> str:
    """How a worker ended, for the log ("exited with status 1", "was killed by SIGKILL")."""
    value = reason.value
    number = getattr(value, "signal", None)
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"was killed by {name}"
    return f"exited with status {getattr(value, 'exitCode', '?')}"


class SpawnedWorkers:
    """
    The product's launcher for :class:`Supervisor`: ``twistd -n wsserver`` with ``arguments``, the
    bound sockets as descriptors 3, 4, ... and the environment that tells the worker what it is.
    """

    def __init__(self, reactor: Any, arguments: Sequence[str], *, count: int,
                 executable: str = sys.executable) -> None:
        self.reactor = reactor
        self.arguments = worker_arguments(arguments)
        self.count = count
        self.executable = executable
        self.binding = BindingReactor(reactor)
        self.listen: list[BoundSocket] = []
        self.flash_policy: BoundSocket | None = None

    def bind(self, listen: Sequence[str], flash_policy: Callable[[BindingReactor], Any]) -> None:
        """Bind every --listen endpoint and (through ``flash_policy``, given the binding reactor) port 843."""
        for description in listen:
            bound = bind_endpoint(self.binding, description)
            address = bound.getHost()
            log.info("listening on {url}", url=f"{bound.scheme}://{address.host}:{address.port}/",
                     endpoint=description)
            self.listen.append(bound)
        before = len(self.binding.bound)
        flash_policy(self.binding)
        if len(self.binding.bound) > before:
            self.flash_policy = self.binding.bound[-1]

    def release(self) -> None:
        """Close the supervisor's copies of the sockets (the workers' stay open until they stop)."""
        for bound in self.binding.bound:
            bound.stopListening()

    def __call__(self, index: int, worker: WorkerProtocol) -> Any:
        descriptors = [bound.fileno() for bound in self.listen]
        if self.flash_policy is not None:
            descriptors.append(self.flash_policy.fileno())
        child_fds: dict[int, Any] = {0: "w", 1: "r", 2: "r"}
        child_fds.update({3 + number: fd for number, fd in enumerate(descriptors)})
        environment = dict(os.environ)
        environment.update({
            WORKER_ENV: str(index),
            WORKERS_ENV: str(self.count),
            GROUP_ENV: f"wsserver-{os.getpid()}",
            LISTEN_FDS_ENV: ",".join(str(3 + number) for number in range(len(self.listen))),
        })
        environment.pop(FLASH_FD_ENV, None)
        if self.flash_policy is not None:
            environment[FLASH_FD_ENV] = str(3 + len(self.listen))
        command = [self.executable, "-c", "from twisted.scripts.twistd import run; run()",
                   "-n", "--pidfile=", "--logger", "wsserver.workers.worker_log_observer",
                   "wsserver", *self.arguments]
        return self.reactor.spawnProcess(worker, self.executable, command, env=environment,
                                         path=os.getcwd(), childFDs=child_fds)


# -- in a worker --------------------------------------------------------------------------------------


def worker_log_observer(out: TextIO | None = None) -> ILogObserver:
    """twistd ``--logger`` of a worker: its events as JSON lines on stdout, for the supervisor to re-emit."""
    stream = out if out is not None else sys.stdout

    def one_line(event: dict[str, Any]) -> str:
        return eventAsJSON(event).replace("\n", "\\n") + "\n"

    return FileLogObserver(stream, one_line)


class OrphanWatch(TimerService):
    """Stops the worker's reactor when its supervisor is gone (it was re-parented: ``getppid`` changed)."""

    def __init__(self, reactor: Any, *, supervisor_pid: int, getppid: Callable[[], int] = os.getppid,
                 interval: float = ORPHAN_CHECK) -> None:
        super().__init__(interval, self.check)
        self.clock = reactor
        self.reactor = reactor
        self.supervisor_pid = supervisor_pid
        self.getppid = getppid

    def check(self) -> None:
        if self.getppid() != self.supervisor_pid:
            log.warn("the supervisor (pid {pid}) is gone: stopping", pid=self.supervisor_pid)
            self.reactor.stop()


def relay_socket_name(group: str, index: int) -> str:
    """The abstract UNIX socket (Linux) on which worker ``index`` of ``group`` takes long-poll requests."""
    return f"\0{group}-longpoll-{index}"



class AdoptingReactor:
    """``reactor`` for a worker's FlashPolicyService: its ``listenTCP`` adopts the inherited socket ``fd``."""

    def __init__(self, reactor: Any, fd: int) -> None:
        self._reactor = reactor
        self._fd = fd

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def listenTCP(self, port: int, factory: Any, backlog: int = 50, interface: str = "") -> Any:
        with socket.socket(fileno=self._fd) as inherited:  # closed once adopted (a duplicate)
            return self._reactor.adoptStreamPort(inherited.fileno(), inherited.family, factory)


def serve_as_worker(server: WampServer, identity: WorkerIdentity, reactor: Any) -> None:
    """
    Make ``server`` (built from the same options as a single server) worker ``identity``: its
    ports adopt the supervisor's sockets, its long-poll sessions are reachable from the other
    workers, and it stops when its supervisor is gone. Call before the server starts.
    """
    if len(identity.listen_fds) != len(server.listeners):
        raise SystemExit(f"wsserver: {identity.name} inherited {len(identity.listen_fds)} sockets "
                         f"for {len(server.listeners)} --listen endpoints")
    for listener, fd in zip(server.listeners, identity.listen_fds):
        listener.inherited = fd
    for service in list(server):
        if isinstance(service, FlashPolicyService):
            if identity.flash_policy_fd is None:
                service.disownServiceParent()  # the supervisor could not bind it, and said so
            else:
                service.reactor = AdoptingReactor(reactor, identity.flash_policy_fd)
    relay = LongPollRelay(reactor, index=identity.index,
                          socket_of=lambda index: relay_socket_name(identity.group, index))
    server.longpoll.new_id = relay.new_id
    server.longpoll.elsewhere = relay
    internet.UNIXServer(relay_socket_name(identity.group, identity.index), relay.site(server.longpoll),
                        reactor=reactor).setServiceParent(server)
    OrphanWatch(reactor, supervisor_pid=os.getppid()).setServiceParent(server)
    log.info("worker {index} of {count}, pid {pid}: serving the supervisor's sockets", index=identity.index,
             count=identity.count, pid=os.getpid())
