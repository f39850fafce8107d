"""
``--workers N``: the supervisor's restarts, backoff and stop with a Clock and a stand-in launcher;
the options; how a worker learns what it is, relays its log and notices its supervisor is gone.
"""

from __future__ import annotations

import io
import json
import os
import socket
from typing import Any

import pytest
from twisted.internet import error, task
from twisted.logger import Logger, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure

from wsserver.tap import Options
from wsserver.transports.listening import GuardedPort, SiteConnections
from wsserver.transports.longpoll_relay import LongPollRelay
from wsserver.workers import (
    MAX_RESTART_DELAY,
    RESTART_DELAY,
    STABLE_UPTIME,
    BindingReactor,
    OrphanWatch,
    Supervisor,
    WorkerIdentity,
    WorkerProtocol,
    bind_endpoint,
    own_port,
    worker_arguments,
    worker_log_observer,
)


class StandInProcess:
    """What the supervisor sees of a worker process: a pid, and the signals it was sent."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: list[str] = []
        self.exited = False

    def signalProcess(self, name: str) -> None:
        if self.exited:
            raise error.ProcessExitedAlready()
        self.signals.append(name)


class StandInLauncher:
    """Starts nothing: records each launch, so a test can end a worker as the OS would."""

    def __init__(self) -> None:
        self.launched: list[tuple[int, WorkerProtocol, StandInProcess]] = []
        self._pids = iter(range(1000, 2000))

    def __call__(self, index: int, worker: WorkerProtocol) -> StandInProcess:
        process = StandInProcess(next(self._pids))
        self.launched.append((index, worker, process))
        return process

    def end(self, index: int, reason: Failure | None = None) -> None:
        """The running worker ``index`` exits (killed by SIGKILL unless ``reason`` says otherwise)."""
        _, worker, process = [launch for launch in self.launched if launch[0] == index and not launch[2].exited][-1]
        process.exited = True
        worker.processEnded(reason or Failure(error.ProcessTerminated(signal=9)))

    def pids(self, index: int) -> list[int]:
        return [process.pid for i, _, process in self.launched if i == index]


def supervisor(count: int = 2, stop_timeout: float = 10.0) -> tuple[Supervisor, StandInLauncher, task.Clock, list[str]]:
    clock = task.Clock()
    launcher = StandInLauncher()
    bound: list[str] = []
    service = Supervisor(clock, count=count, launch=launcher, bind=lambda: bound.append("bound"),
                         stop_timeout=stop_timeout, release=lambda: bound.append("released"))
    return service, launcher, clock, bound


def test_the_supervisor_binds_first_then_starts_every_worker() -> None:
    service, launcher, _, bound = supervisor(count=3)
    service.privilegedStartService()
    assert bound == ["bound"] and launcher.launched == []  # twistd drops privileges between the two
    service.startService()
    assert [index for index, _, _ in launcher.launched] == [0, 1, 2]
    assert bound == ["bound"]


def test_a_worker_that_dies_is_started_again_after_a_delay_that_doubles_while_it_keeps_dying() -> None:
    service, launcher, clock, _ = supervisor()
    service.startService()
    delays = []
    for _ in range(9):
        launcher.end(1)
        before = len(launcher.pids(1))
        waited = 0.0
        while len(launcher.pids(1)) == before:
            clock.advance(0.5)
            waited += 0.5
            assert waited <= MAX_RESTART_DELAY
        delays.append(waited)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert delays[0] == RESTART_DELAY
    assert len(launcher.pids(0)) == 1  # the other worker was left alone
    assert len(set(launcher.pids(1))) == 10


def test_a_worker_that_ran_long_enough_is_started_again_after_the_first_delay() -> None:
    service, launcher, clock, _ = supervisor()
    service.startService()
    for _ in range(3):
        launcher.end(0)
        clock.advance(MAX_RESTART_DELAY)
    clock.advance(STABLE_UPTIME)
    launcher.end(0)
    clock.advance(RESTART_DELAY)
    assert len(launcher.pids(0)) == 5


def test_stop_terminates_every_worker_and_waits_for_them() -> None:
    service, launcher, clock, bound = supervisor()
    service.startService()
    stopped = service.stopService()
    assert [process.signals for _, _, process in launcher.launched] == [["TERM"], ["TERM"]]
    assert bound == ["bound", "released"]  # the supervisor's copies of the sockets: no new connections wait there
    results: list[Any] = []
    stopped.addBoth(results.append)
    launcher.end(0, Failure(error.ProcessTerminated(signal=15)))
    assert results == []
    launcher.end(1, Failure(error.ProcessDone(0)))
    assert results == [None]
    clock.advance(MAX_RESTART_DELAY * 2)
    assert len(launcher.launched) == 2  # none started again
    assert clock.getDelayedCalls() == []


def test_stop_kills_the_workers_still_running_after_the_timeout() -> None:
    service, launcher, clock, _ = supervisor(stop_timeout=7.0)
    service.startService()
    results: list[Any] = []
    service.stopService().addBoth(results.append)
    launcher.end(0, Failure(error.ProcessTerminated(signal=15)))
    clock.advance(6.9)
    assert launcher.launched[1][2].signals == ["TERM"]
    clock.advance(0.1)
    assert launcher.launched[1][2].signals == ["TERM", "KILL"]
    launcher.end(1)
    assert results == [None]


def test_stop_cancels_a_pending_restart() -> None:
    service, launcher, clock, _ = supervisor()
    service.startService()
    launcher.end(0)
    results: list[Any] = []
    service.stopService().addBoth(results.append)
    launcher.end(1, Failure(error.ProcessTerminated(signal=15)))
    assert results == [None]
    clock.advance(MAX_RESTART_DELAY)
    assert len(launcher.launched) == 2


def test_a_worker_that_cannot_be_started_stops_the_server_at_first_and_is_retried_later() -> None:
    service, launcher, clock, _ = supervisor()
    stopped: list[bool] = []
    clock.stop = lambda: stopped.append(True)  # type: ignore[attr-defined]
    service.startService()
    launcher.end(0)

    def refuse(index: int, worker: WorkerProtocol) -> Any:
        raise PermissionError(13, "Permission denied")

    service.launch = refuse
    clock.advance(RESTART_DELAY)  # a restart that cannot fork or exec: tried again, later
    assert stopped == [] and len(service.restarts) == 1
    service.launch = launcher
    clock.advance(2 * RESTART_DELAY)
    assert len(launcher.pids(0)) == 2
    fresh, _, _, _ = supervisor()
    fresh.launch = refuse
    with pytest.raises(SystemExit, match="cannot start worker 0: .*Permission denied"):
        fresh.startService()  # never started: a setup error, the server stops


# -- options -------------------------------------------------------------------------------------------


def test_more_than_one_worker_needs_redis() -> None:
    with pytest.raises(usage.UsageError, match="--workers 2 needs --redis URL"):
        Options().parseOptions(["--workers", "2"])
    options = Options()
    options.parseOptions(["--workers", "2", "--redis", "redis://127.0.0.1:6379/0"])
    assert options["workers"] == 2


@pytest.mark.parametrize("count", ["0", "-1"])
def test_workers_must_be_at_least_one(count: str) -> None:
    with pytest.raises(usage.UsageError, match="--workers must be at least 1"):
        Options().parseOptions(["--workers", count])


def test_one_worker_is_the_default_and_needs_nothing() -> None:
    options = Options()
    options.parseOptions([])
    assert options["workers"] == 1


def test_workers_may_come_from_the_config_file_and_its_workers_read_it_again(tmp_path: Any) -> None:
    config = tmp_path / "wsserver.toml"
    config.write_text('[server]\nworkers = 3\nredis = "redis://127.0.0.1:6379/0"\n\n[realms.realm1]\n')
    options = Options()
    options.parseOptions(["--config", str(config), "--demo"])
    assert options["workers"] == 3
    assert worker_arguments(options.arguments) == ["--config", str(config), "--demo"]
    config.write_text('[server]\nworkers = 3\n\n[realms.realm1]\n')
    with pytest.raises(usage.UsageError, match="--workers 3 needs --redis URL"):
        Options().parseOptions(["--config", str(config)])


def test_a_worker_gets_the_command_line_less_workers() -> None:
    assert worker_arguments(["--workers", "3", "--redis", "redis://x", "--workers=2", "--demo"]) == [
        "--redis", "redis://x", "--demo"]


def test_a_worker_knows_what_it_is_from_its_environment() -> None:
    assert WorkerIdentity.from_environment({}) is None
    identity = WorkerIdentity.from_environment({
        "WSSERVER_WORKER": "1", "WSSERVER_WORKERS": "4", "WSSERVER_WORKER_GROUP": "wsserver-77",
        "WSSERVER_LISTEN_FDS": "3,4", "WSSERVER_FLASH_POLICY_FD": "5",
    })
    assert identity == WorkerIdentity(index=1, count=4, group="wsserver-77", listen_fds=(3, 4), flash_policy_fd=5)


# -- binding and adopting ------------------------------------------------------------------------------


def test_the_supervisor_binds_an_endpoint_without_accepting_and_a_port_adopts_it() -> None:
    binding = BindingReactor(task.Clock())
    bound = bind_endpoint(binding, "tcp:0:interface=127.0.0.1")
    try:
        host = bound.getHost()
        assert host.host == "127.0.0.1" and host.port > 0
        assert bound.socket.get_inheritable() and not bound.socket.getblocking()
        port = GuardedPort(0, None, 50, "", task.Clock(), connections=SiteConnections(task.Clock(), per_address=1),
                           refusal=b"")
        inherited = os.dup(bound.fileno())
        port.adopt(inherited)
        assert (port.interface, port.port) == ("127.0.0.1", host.port)
        assert port._preexistingSocket is not None and port._preexistingSocket.fileno() == inherited
        port._preexistingSocket.close()
    finally:
        bound.stopListening()


def test_a_port_the_supervisor_cannot_bind_stops_it_with_the_reason() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(SystemExit, match="cannot listen on tcp:"):
            bind_endpoint(BindingReactor(task.Clock()), f"tcp:{taken.getsockname()[1]}:interface=127.0.0.1")
    with pytest.raises(SystemExit, match="tcp: and ssl: endpoints only"):
        bind_endpoint(BindingReactor(task.Clock()), "unix:/tmp/x.sock")


# -- a worker's log and its supervisor ------------------------------------------------------------------


def test_a_workers_log_events_reach_the_supervisors_log_with_the_worker_as_system() -> None:
    out = io.StringIO()
    Logger(observer=worker_log_observer(out)).warn("refusing {ip}", ip="10.0.0.1")
    service, _, _, _ = supervisor()
    worker = WorkerProtocol(service, 1)
    worker.pid = 4321
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        line = out.getvalue().encode()
        worker.childDataReceived(1, line[:10])
        worker.childDataReceived(1, line[10:])
        worker.childDataReceived(2, b"Traceback (most recent call last):\n")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert [(event["log_system"], event.get("ip", event.get("line"))) for event in seen] == [
        ("worker 1, pid 4321", "10.0.0.1"), ("worker 1, pid 4321", "Traceback (most recent call last):")]
    assert seen[0]["log_level"].name == "warn"
    assert json.loads(line.decode())["log_format"] == "refusing {ip}"


def test_a_worker_stops_when_its_supervisor_is_gone() -> None:
    clock = task.Clock()
    stopped: list[bool] = []
    clock.stop = lambda: stopped.append(True)  # type: ignore[attr-defined]
    parent = [77]
    watch = OrphanWatch(clock, supervisor_pid=77, getppid=lambda: parent[0])
    watch.startService()
    clock.advance(5)
    assert stopped == []
    parent[0] = 1  # re-parented to init
    clock.advance(1)
    assert stopped == [True]


# -- long-poll across workers ---------------------------------------------------------------------------


def test_a_long_poll_transport_id_names_its_worker() -> None:
    relay = LongPollRelay(task.Clock(), index=3, socket_of=str)
    transport_id = relay.new_id()
    assert transport_id.startswith("3.") and len(transport_id) == 2 + 22
    assert LongPollRelay.owner(transport_id) == 3
    assert LongPollRelay.owner("abc") is None and LongPollRelay.owner("x.abc") is None
    assert relay(transport_id, object()) is None  # its own: not relayed


@pytest.mark.parametrize("given, index, expected", [
    ("tcp:9100:interface=127.0.0.1", 2, "tcp:9102:interface=127.0.0.1"),
    ("tcp:port=9100", 1, "tcp:port=9101"),
    ("tcp6:9100", 0, "tcp6:9100"),
    ("tcp:0:interface=127.0.0.1", 3, "tcp:0:interface=127.0.0.1"),
    ("unix:/run/metrics.sock", 1, "unix:/run/metrics.sock"),
])
def test_each_worker_serves_its_metrics_on_a_port_of_its_own(given: str, index: int, expected: str) -> None:
    assert own_port(given, index) == expected
