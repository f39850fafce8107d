"""/healthz and /readyz on the server's site: status, JSON body, what readiness waits for, no access log line, their paths kept."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.web.test.requesthelper import DummyRequest

from wsserver.backplane import LocalOnly
from wsserver.service import WampServer
from wsserver.tap import Options
from wsserver.transports.flashpolicy import FlashPolicy


class Backplane(LocalOnly):
    reason: str | None = "redis://127.0.0.1:6379/0: unreachable (Connection refused)"

    def not_ready(self) -> str | None:
        return self.reason


def get(server: WampServer, path: bytes) -> tuple[int, Any]:
    request = DummyRequest([path])
    request.path = b"/" + path
    resource = server.site.resource.getChildWithDefault(path, request)
    body = resource.render(request)
    assert request.responseHeaders.getRawHeaders(b"content-type") == [b"application/json"]
    assert request.responseHeaders.getRawHeaders(b"cache-control") == [b"no-store"]
    return request.responseCode, json.loads(body)


def server(tmp_path: Path, backplane: Any = None) -> WampServer:
    return WampServer(MemoryReactorClock(), listen=["tcp:0"], web_dir=tmp_path, flash_policy=FlashPolicy(port=0),
                      backplane=backplane)


def test_healthz_is_200_while_the_process_serves(tmp_path: Path) -> None:
    assert get(server(tmp_path, Backplane()), b"healthz") == (200, {"status": "ok"})


def test_readyz_waits_for_the_ports_and_says_why_it_is_not_ready(tmp_path: Path) -> None:
    unstarted = server(tmp_path)
    assert get(unstarted, b"readyz") == (503, {"status": "not ready", "checks": {"listening": "not listening on tcp:0",
                                                                         "stopping": "ok"}})
    started = server(tmp_path)
    started.startService()
    assert get(started, b"readyz") == (200, {"status": "ready", "checks": {"listening": "ok", "stopping": "ok"}})


def test_readyz_is_503_with_the_backplanes_reason_until_it_is_ready(tmp_path: Path) -> None:
    backplane = Backplane()
    with_redis = server(tmp_path, backplane)
    with_redis.startService()
    assert get(with_redis, b"readyz") == (503, {"status": "not ready", "checks": {
        "listening": "ok", "stopping": "ok",
        "backplane": "redis://127.0.0.1:6379/0: unreachable (Connection refused)"}})
    backplane.reason = None
    assert get(with_redis, b"readyz")[0] == 200


def test_readyz_is_503_from_the_moment_the_server_begins_to_stop(tmp_path: Path) -> None:
    stopping = server(tmp_path)
    stopping.startService()
    stopping.stopService()  # its clients' GOODBYEs are awaited on the reactor: it is still stopping
    status, body = get(stopping, b"readyz")
    assert status == 503 and body["checks"]["stopping"] == "shutting down: saying goodbye to its clients"


def test_the_polls_stay_out_of_the_access_log(tmp_path: Path) -> None:
    site = server(tmp_path).site
    logged: list[bytes] = []
    site._logFormatter = lambda timestamp, request: logged.append(request.path) or ""
    site.logFile = type("Sink", (), {"write": lambda self, line: None})()
    for path in (b"/readyz", b"/healthz", b"/index.html"):
        request = DummyRequest([path])
        request.path = path
        site.log(request)
    assert logged == [b"/index.html"]


@pytest.mark.parametrize("option, path", [("--ws-path", "readyz"), ("--longpoll-path", "/healthz/")])
def test_no_other_endpoint_may_take_their_paths(option: str, path: str) -> None:
    with pytest.raises(usage.UsageError, match=f"{option} .* taken by the health checks"):
        Options().parseOptions([option, path])
