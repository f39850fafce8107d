"""
The servers under test, started and stopped by the harness: wsserver (this checkout, installed in
the project's venv), Crossbar.io (PyPI ``crossbar`` in a venv of its own, made on first use) and
the ceiling (bench/ceiling.py: the least a CPython process can do per delivery).

Each is pinned to one CPU (``taskset``), listens on an ephemeral loopback port, serves WAMP on
``/ws`` realm ``realm1`` with anonymous access, and is stopped by its PID. ``cpu_seconds()`` and
``rss_bytes()`` read the whole process tree (Crossbar's router runs in a child process).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
PEERS_DIR = BENCH / ".peers"
CROSSBAR_VENV = PEERS_DIR / "crossbar"
CROSSBAR_REQUIREMENTS = ["crossbar", "numpy<2"]  # numpy 2 breaks its UBJSON codec


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port} within {timeout}s")


class Server:
    """A server process (tree) pinned to ``cpu``."""

    name = "server"
    path = "ws"

    def __init__(self, cpu: int) -> None:
        self.cpu = cpu
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.log = self.workdir / "server.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Server:
        self.port = free_port()
        self._spawn()
        wait_for_port(self.port, self.process, timeout=60)  # type: ignore[arg-type]
        return self

    def _spawn(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                ["taskset", "-c", str(self.cpu), *self.command()],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def crash_and_restart(self) -> None:
        """
        SIGKILL the whole process tree (every client loses its connection at the same instant, as
        in a crash or a hard deploy) and start the server again on the same port. Returns at once:
        the caller finds out when it listens again (its clients keep retrying meanwhile).
        """
        process = self.process
        assert process is not None
        tree = self._tree()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        # Crossbar's router is a child of its controller: gone too before the restart, or the
        # "listening again" probe would find its dying socket.
        psutil.wait_procs(tree, timeout=10)
        self._spawn()

    @classmethod
    def version(cls) -> str:
        """The server's version, for the results' record."""
        return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        # Crossbar's workers are children of the controller: make sure none is left.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _tree(self) -> list[psutil.Process]:
        assert self.process is not None
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self._tree():
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                pass
        return total

    def rss_bytes(self) -> int:
        total = 0
        for process in self._tree():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total


class Wsserver(Server):
    name = "wsserver"

    def command(self) -> list[str]:
        twistd = str(Path(sys.executable).with_name("twistd"))
        return [twistd, "-n", "--pidfile=", "wsserver", "--listen", f"tcp:{self.port}:interface=127.0.0.1:backlog=1024",
                "--flash-policy-port", "0",
                # Every benchmark client comes from 127.0.0.1: lift the per-address limit (and the
                # total), which Crossbar does not have.
                "--max-connections-per-ip", "1000000", "--max-connections", "1000000",
                # Crossbar's config below turns its auto-ping off too: same work on both sides.
                "--ping-interval", "0",
                # One publisher sends as fast as the server acknowledges: no per-session rate limit.
                "--max-publish-rate", "0",
                # Nor a frame rate (Crossbar has neither).
                "--max-frame-rate", "0"]


    @classmethod
    def version(cls) -> str:
        from importlib.metadata import version

        return version("wsserver")


class WsserverWorkers(Wsserver):
    """
    wsserver with ``--redis`` on a redis-server of its own and ``--workers N``: N = 1 pinned to the
    server CPU like ``wsserver``, N > 1 on every CPU (the generator's too: the machine has no more).
    Started once every worker is subscribed on Redis, so that no publication is lost to a late one.
    """

    count = 1

    def __init__(self, cpu: int) -> None:
        super().__init__(cpu)
        self.name = f"wsserver-{self.count}w"
        self.redis: subprocess.Popen[bytes] | None = None
        self.redis_port = 0

    def start(self) -> Server:
        self.redis_port = free_port()
        self.redis = subprocess.Popen(
            ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.redis_port, self.redis, timeout=10)
        if self.count > 1:
            self.cpu = ",".join(str(cpu) for cpu in range(os.cpu_count() or 1))  # type: ignore[assignment]
        super().start()
        deadline = time.monotonic() + 60
        while self.log.read_bytes().count(b"Redis backplane: subscribed to") < self.count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: workers not subscribed on Redis within 60 s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        super().stop()
        redis, self.redis = self.redis, None
        if redis is not None:
            redis.terminate()
            redis.wait(10)

    def command(self) -> list[str]:
        return [*super().command(), "--redis", f"redis://127.0.0.1:{self.redis_port}/0", "--workers", str(self.count)]


class WsserverTwoWorkers(WsserverWorkers):
    count = 2


class Crossbar(Server):
    name = "crossbar"

    @staticmethod
    def install() -> Path:
        """Make the Crossbar venv once (about a minute and a half); return its crossbar script."""
        script = CROSSBAR_VENV / "bin" / "crossbar"
        if not script.exists():
            PEERS_DIR.mkdir(parents=True, exist_ok=True)
            print(f"installing Crossbar.io into {CROSSBAR_VENV} (once)...", file=sys.stderr, flush=True)
            subprocess.run([sys.executable, "-m", "venv", str(CROSSBAR_VENV)], check=True)
            subprocess.run(
                [str(CROSSBAR_VENV / "bin" / "pip"), "install", "-q", *CROSSBAR_REQUIREMENTS], check=True
            )
        return script

    @classmethod
    def version(cls) -> str:
        python = CROSSBAR_VENV / "bin" / "python"
        if not python.exists():
            return ""
        return subprocess.run([str(python), "-c", "from importlib.metadata import version as v; "
                               "print('crossbar', v('crossbar'), 'autobahn', v('autobahn'), 'twisted', v('twisted'))"],
                              capture_output=True, text=True).stdout.strip()

    def command(self) -> list[str]:
        script = self.install()
        cbdir = self.workdir / ".crossbar"
        cbdir.mkdir(exist_ok=True)
        config = {
            "version": 2,
            "controller": {},
            "workers": [{
                "type": "router",
                "realms": [{"name": "realm1", "roles": [{"name": "anonymous", "permissions": [{
                    "uri": "", "match": "prefix",
                    "allow": {"call": True, "register": True, "publish": True, "subscribe": True},
                    "disclose": {"caller": False, "publisher": False}, "cache": True,
                }]}]}],
                "transports": [{
                    "type": "web",
                    "endpoint": {"type": "tcp", "interface": "127.0.0.1", "port": self.port, "backlog": 1024},
                    "paths": {
                        "/": {"type": "static", "directory": str(self.workdir)},
                        "ws": {"type": "websocket", "serializers": ["json", "msgpack", "cbor"],
                               "options": {"auto_ping_interval": 0, "max_message_size": 1048576}},
                    },
                }],
            }],
        }
        (cbdir / "config.json").write_text(json.dumps(config))
        return [str(script), "start", "--cbdir", str(cbdir), "--loglevel", "warn"]


class Ceiling(Server):
    """bench/ceiling.py: writes one pre-framed EVENT to every connection, nothing else."""

    name = "ceiling"

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH / "ceiling.py"), str(self.port)]


PEERS: dict[str, type[Server]] = {"wsserver": Wsserver, "crossbar": Crossbar, "ceiling": Ceiling,
                                  "wsserver-1w": WsserverWorkers, "wsserver-2w": WsserverTwoWorkers}
