"""
A minimal headless-Chromium driver for end-to-end tests: the Chrome DevTools Protocol over a pipe.

Why not a browser-automation package: Debian's ``/usr/bin/chromium`` is already on the machine, no
browser may be downloaded, and the tests need only three things: open a URL, evaluate JavaScript,
and read what the page logged. ``--remote-debugging-pipe`` gives the protocol on file descriptors 3
(commands in) and 4 (replies and events out) as NUL-terminated JSON, so the standard library is
enough: no WebSocket client, no debugging port to race for.

    with Chromium.launch(tmp_path) as browser:
        page = browser.new_page(url)
        page.wait_for("document.querySelector('#state').textContent === 'open'")
        assert page.evaluate("1 + 1") == 2

Theory of operation: one reader thread splits the pipe's output on NUL, hands replies (messages
with an ``id``) to the caller waiting for that id, and keeps console messages and uncaught
exceptions per session so a failing test can show them. Commands for one page carry that page's
``sessionId`` (``Target.attachToTarget`` with ``flatten``).
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-pipe",
]
PUT_ON_FDS_3_AND_4_AND_EXEC = (
    "import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); os.execv(sys.argv[3], sys.argv[3:])"
)


class BrowserError(RuntimeError):
    """The browser answered a command with an error, died, or did not answer in time."""


def chromium_path() -> str | None:
    """The Chromium executable to use, or None when it is not installed."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    return shutil.which("chromium")


class Chromium:
    """One headless Chromium process with a fresh profile, driven over the DevTools pipe."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc = proc
        self._to_browser = os.fdopen(to_browser, "wb", buffering=0)
        self._from_browser = os.fdopen(from_browser, "rb", buffering=0)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._replied = threading.Condition(self._lock)
        self._closed = False
        # console lines and uncaught exceptions per sessionId, for failure messages
        self.logs: dict[str, list[str]] = {}
        threading.Thread(target=self._read, name="cdp-reader", daemon=True).start()

    @classmethod
    @contextmanager
    def launch(cls, profile_dir: Path, executable: str | None = None) -> Iterator[Chromium]:
        """Start Chromium with ``profile_dir`` as a fresh ``--user-data-dir``; stop it by PID on exit."""
        executable = executable or chromium_path()
        if executable is None:
            raise BrowserError("chromium is not installed")
        profile_dir.mkdir(parents=True, exist_ok=True)
        # Two pipes, moved to fd 5 or above so that putting them on 3 and 4 cannot clobber either.
        browser_reads, we_write = os.pipe()
        we_read, browser_writes = os.pipe()
        child_in = fcntl.fcntl(browser_reads, fcntl.F_DUPFD_CLOEXEC, 5)
        child_out = fcntl.fcntl(browser_writes, fcntl.F_DUPFD_CLOEXEC, 5)
        os.close(browser_reads)
        os.close(browser_writes)
        # subprocess cannot put a pipe on a fixed fd number; this trampoline does, then exec()s
        # Chromium so that the PID we hold is Chromium's own.
        command = [
            sys.executable, "-c", PUT_ON_FDS_3_AND_4_AND_EXEC, str(child_in), str(child_out),
            executable, *FLAGS, f"--user-data-dir={profile_dir}", "about:blank",
        ]  # fmt: skip
        stderr_path = profile_dir / "chromium-stderr.log"  # read only to explain a failed start
        with stderr_path.open("wb") as stderr:
            proc = subprocess.Popen(
                command,
                pass_fds=(child_in, child_out),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        os.close(child_in)
        os.close(child_out)
        browser = cls(proc, we_write, we_read)
        try:
            try:
                browser.call("Browser.getVersion", timeout=30)
            except BrowserError as error:
                tail = stderr_path.read_text(errors="replace")[-2000:]
                raise BrowserError(f"chromium did not start ({error}); its stderr ends:\n{tail}") from None
            yield browser
        finally:
            browser.close()

    # -- protocol --------------------------------------------------------------------------------

    def _read(self) -> None:
        buffered = b""
        while True:
            try:
                chunk = self._from_browser.read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            buffered += chunk
            *messages, buffered = buffered.split(b"\0")
            for raw in messages:
                self._dispatch(json.loads(raw))
        with self._lock:
            self._closed = True
            self._replied.notify_all()

    def _dispatch(self, message: dict[str, Any]) -> None:
        if "id" in message:
            with self._lock:
                self._replies[message["id"]] = message
                self._replied.notify_all()
            return
        session = message.get("sessionId", "")
        params = message.get("params", {})
        if message.get("method") == "Runtime.consoleAPICalled":
            text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
            self.logs.setdefault(session, []).append(f"console.{params['type']}: {text}")
        elif message.get("method") == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text", "")
            self.logs.setdefault(session, []).append(f"uncaught: {text}")

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 10.0) -> dict[str, Any]:  # fmt: skip
        """Send one command and wait for its reply; return its ``result`` or raise BrowserError."""
        command: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session:
            command["sessionId"] = session
        with self._lock:
            if self._closed:
                raise BrowserError(f"{method}: the browser has exited")
        self._to_browser.write(json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._lock:
            while command["id"] not in self._replies:
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    why = "the browser has exited" if self._closed else f"no reply within {timeout}s"
                    raise BrowserError(f"{method}: {why}")
                self._replied.wait(remaining)
            reply = self._replies.pop(command["id"])
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    def new_page(self, url: str) -> Page:
        """Open ``url`` in a new tab and return it once its document has loaded."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        self.call("Runtime.enable", session=session)
        page.goto(url)
        return page

    def close(self) -> None:
        """Ask the browser to quit; SIGTERM, then SIGKILL, its PID if it does not."""
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except (BrowserError, OSError):
                pass
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
        for stream in (self._to_browser, self._from_browser):
            try:
                stream.close()
            except OSError:
                pass


class Page:
    """One tab: navigate, evaluate JavaScript, and poll for a condition with a deadline."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    @property
    def log(self) -> str:
        """What the page printed to the console and any uncaught exceptions, one per line."""
        return "\n".join(self.browser.logs.get(self.session, []))

    def goto(self, url: str, timeout: float = 15.0) -> None:
        """Navigate and wait until the document has finished loading."""
        result = self.browser.call("Page.navigate", {"url": url}, self.session, timeout)
        if result.get("errorText"):
            raise BrowserError(f"cannot load {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout)

    def evaluate(self, expression: str, timeout: float = 10.0) -> Any:
        """The value of a JavaScript expression (JSON-serialisable values only); raises on exceptions."""
        result = self.browser.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self.session,
            timeout,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise BrowserError(f"{expression!r} threw: {text}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0, interval: float = 0.05) -> Any:
        """Poll a JavaScript expression until it is truthy and return its value; fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            last = self.evaluate(expression)
            if last:
                return last
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {expression}; last value {last!r}\n"
                    f"page console:\n{self.log or '(empty)'}"
                )
            time.sleep(interval)

    def text(self, selector: str) -> str | None:
        """The text content of the first element matching ``selector``, or None if there is none."""
        text: str | None = self.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")
        return text

    def screenshot(self, width: int = 1200, height: int = 800) -> bytes:
        """The page as a PNG, drawn at ``width`` x ``height`` CSS pixels."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        self.browser.call("Emulation.setDeviceMetricsOverride", metrics, self.session)
        shot = self.browser.call("Page.captureScreenshot", {"format": "png"}, self.session, 20.0)
        return base64.b64decode(shot["data"])
