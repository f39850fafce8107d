"""
``/healthz`` and ``/readyz``: for load balancers, supervisors and orchestrators that poll a node.

- ``GET /healthz``: 200 ``{"status": "ok"}`` whenever the process answers at all (it is alive and
  its reactor is serving). Nothing else is checked: a node whose Redis is gone is still alive, and
  restarting it would not bring Redis back.
- ``GET /readyz``: 200 ``{"status": "ready", "checks": {...}}`` when the node should take traffic;
  503 ``{"status": "not ready", "checks": {...}}`` otherwise, each check saying ``"ok"`` or what is
  not ready (its ports are not all bound yet; with ``--redis``, Redis not connected, not
  subscribed, or a subscription that stopped delivering).

Both are answered by every node, without authentication, never cached, and kept out of the access
log (they are polled every few seconds); HEAD gets the same status without the body.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from twisted.web import http, resource

HEALTH_PATH = "healthz"
READY_PATH = "readyz"

#: A readiness check: None when ready, else what is not (for people: it goes into the JSON body).
Check = Callable[[], "str | None"]


def _answer(request: Any, status: int, body: dict[str, Any]) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps(body).encode("utf-8")


class Healthz(resource.Resource):
    """200 as long as the process serves requests."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return _answer(request, http.OK, {"status": "ok"})


class Readyz(resource.Resource):
    """200 when every check of ``checks`` (name to check) passes, else 503 saying which did not and why."""

    isLeaf = True

    def __init__(self, checks: Mapping[str, Check]) -> None:
        super().__init__()
        self.checks = dict(checks)

    def render_GET(self, request: Any) -> bytes:
        results = {name: check() or "ok" for name, check in self.checks.items()}
        ready = all(result == "ok" for result in results.values())
        return _answer(request, http.OK if ready else http.SERVICE_UNAVAILABLE,
                       {"status": "ready" if ready else "not ready", "checks": results})
