"""
Every runnable example in ``examples/`` is run here, as a user runs it, against ``twistd -n
wsserver``: the standard-library HTTP publisher (with no key, a bearer key and a signature), the
curl + openssl script, the status publisher (also under ``test_status_page.py``, with the page),
and the autobahn-python programs: publish, subscribe, and resume after being stopped. And every
example the README names is a file that a test here runs.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from .broker_clients import Client
from .conftest import terminate
from .test_http_api import BEARER_KEY, SECRET, keyed, open_api, require  # noqa: F401 (keyed, open_api: fixtures)

if TYPE_CHECKING:
    from .conftest import ServerProcess

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


class Running:
    """An example running as a subprocess; its output lines, waited for with a deadline; stopped by its PID."""

    def __init__(self, *command: str, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """The first line (of stdout or stderr) from now on that ``pattern`` matches."""
        try:
            while True:
                line = self.lines.get(timeout=timeout)
                self.seen.append(line)
                found = re.search(pattern, line)
                if found:
                    return found
        except queue.Empty:
            raise AssertionError(f"no line matching {pattern!r} within {timeout}s; it printed:\n" + "\n".join(self.seen)) from None

    def __enter__(self) -> Running:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        terminate(self.proc)


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env={**os.environ, **(env or {})})


# -- over HTTP: publish_http.py, publish_signed.sh -------------------------------------------------


def test_the_python_example_publishes(open_api: Any) -> None:
    with Client(open_api.ws_url) as subscriber:
        inbox = subscriber.subscribe("com.example.status")
        done = run(sys.executable, str(EXAMPLES / "publish_http.py"), open_api.http_url, "com.example.status", "ok")
        assert done.returncode == 0, done.stderr
        assert inbox.get() == (("ok",), {})
        assert "published" in done.stdout


def test_the_examples_publish_with_a_key_and_with_a_signature(keyed: Any) -> None:
    require("curl", "openssl")
    example = str(EXAMPLES / "publish_http.py")
    signed_script = str(EXAMPLES / "publish_signed.sh")
    with Client(keyed.ws_url) as subscriber:
        inbox = subscriber.subscribe("com.example.status")
        runs = [
            ([sys.executable, example, keyed.http_url, "com.example.status", "bearer"], {"WSSERVER_KEY": BEARER_KEY}),
            ([sys.executable, example, keyed.http_url, "com.example.status", "hmac"],
             {"WSSERVER_KEY_NAME": "signer", "WSSERVER_SECRET": SECRET}),
            (["bash", signed_script, keyed.http_url, "com.example.status", '["shell"]'],
             {"WSSERVER_KEY_NAME": "signer", "WSSERVER_SECRET": SECRET}),
        ]
        for command, env in runs:
            done = run(*command, env=env)
            assert done.returncode == 0, done.stderr + done.stdout
            assert inbox.get() == ((command[-1].strip('[]"'),), {})
        refused = run(sys.executable, example, keyed.http_url, "com.example.status", "x", env={"WSSERVER_KEY": "wrong"})
        assert refused.returncode == 1 and "401" in refused.stderr


def test_the_status_publisher_publishes_retained_with_a_key_and_reports_what_fails(keyed: Any) -> None:
    """(Its page is tested with it in test_status_page.py.) Retained: a subscriber arriving later gets it."""
    example = str(EXAMPLES / "status_publisher.py")
    done = run(sys.executable, example, "--url", keyed.http_url, "--count", "1", env={"WSSERVER_KEY": BEARER_KEY})
    assert done.returncode == 0, done.stderr
    published = json.loads(done.stdout)["kwargs"]
    with Client(keyed.ws_url) as subscriber:
        inbox = subscriber.subscribe("com.example.status", get_retained=True)
        assert inbox.get() == ((), published)
    refused = run(sys.executable, example, "--url", keyed.http_url, "--count", "2", "--interval", "0")
    assert refused.returncode == 1
    assert refused.stderr.count("not published: 401") == 2  # no key: it says so, and goes on


# -- autobahn-python: publish.py, subscribe.py, resume.py -------------------------------------------


def test_the_autobahn_python_examples_subscribe_and_publish(server: ServerProcess) -> None:
    with Running(sys.executable, str(EXAMPLES / "subscribe.py"), server.ws_url, "com.example.", "prefix") as subscriber:
        subscriber.wait_for(r"^subscribed to com\.example\. \(prefix\)$")
        published = run(sys.executable, str(EXAMPLES / "publish.py"), server.ws_url, "com.example.news", "hello", '{"n": 1}')
        assert published.returncode == 0, published.stderr
        assert re.search(r"^published \d+$", published.stdout, re.MULTILINE), published.stdout
        line = subscriber.wait_for(r"^\{.*\}$")[0]
        assert json.loads(line) == {"topic": "com.example.news", "args": ["hello", {"n": 1}], "kwargs": {}}
    refused = run(sys.executable, str(EXAMPLES / "publish.py"), server.ws_url, "wamp.not.yours", "x")
    assert refused.returncode == 1 and "refused: wamp.error." in refused.stderr


def test_the_resume_example_prints_what_was_said_while_it_was_stopped(
    start_server: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = start_server("--demo")  # the chat rooms keep history
    topic = "com.example.chat.room.e2e"
    command = (sys.executable, str(EXAMPLES / "resume.py"), server.ws_url, topic, str(tmp_path / "position.json"))

    def said(text: str) -> dict[str, Any]:
        return {"args": [{"nick": "bob", "text": text}], "kwargs": {}}

    with Client(server.ws_url) as bob:
        with Running(*command) as follower:
            follower.wait_for(f"^following {re.escape(topic)}$")
            for text in ("one", "two"):
                bob.publish(topic, {"nick": "bob", "text": text})
                assert json.loads(follower.wait_for(r"^\{.*\}$")[0]) == said(text)
        for text in ("three", "four", "five"):  # while it is stopped
            bob.publish(topic, {"nick": "bob", "text": text})
        with Running(*command) as follower:
            assert [json.loads(follower.wait_for(r"^\{.*\}$")[0]) for _ in range(3)] == [said(t) for t in ("three", "four", "five")]
            follower.wait_for("^resumed, 3 missed events recovered$")
            bob.publish(topic, {"nick": "bob", "text": "six"})
            assert json.loads(follower.wait_for(r"^\{.*\}$")[0]) == said("six")


# -- the README names no example that is missing or untested --------------------------------------


def test_every_example_the_readme_names_is_a_file_and_is_run_here() -> None:
    named = set(re.findall(r"examples/([\w.-]+\.(?:py|sh))", (REPO / "README.md").read_text()))
    files = {path.name for path in EXAMPLES.iterdir() if path.suffix in (".py", ".sh")}
    assert named - files == set(), "the README names examples that are not in examples/"
    this_module = Path(__file__).read_text() + (Path(__file__).parent / "test_status_page.py").read_text()
    assert {name for name in files if f'"{name}"' not in this_module} == set(), "examples no test runs"
