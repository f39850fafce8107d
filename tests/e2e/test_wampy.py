"""
wampy.js (npm ``wampy`` 8, pinned in package-lock.json) on Node against a running server, on json,
msgpack and cbor: two wampy sessions subscribe (with and without options, and by prefix), publish
with acknowledge and ``exclude_me: false``, register, call, and get a callee's error.

wampy sends the options an application leaves out (SUBSCRIBE ``match``, ``get_retained``, ...) as
``undefined``: msgpack's extension 0 and CBOR's simple value 23. The router reads them as absent
(see :mod:`wsserver.core.decoding`); before that, msgpack and CBOR sessions were aborted at their
first SUBSCRIBE ("invalid type ExtType for 'match'") and passed 6 of these 20 checks (json: 20).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .prerequisites import REPO, unavailable

if TYPE_CHECKING:
    from .conftest import ServerProcess

WAMPY_CHECKS = Path(__file__).with_name("node") / "wampy_checks.mjs"
#: The checks wampy_checks.mjs runs; all must pass on every serializer.
CHECKS = 20


def run_wampy_checks(url: str, serializer: str) -> tuple[list[dict[str, object]], str]:
    """Every check's line as printed by wampy_checks.mjs, and Node's stderr."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed")
    if not (REPO / "node_modules" / "wampy" / "package.json").is_file():
        unavailable("node_modules/wampy is missing: run `make assets` (npm ci)")
    done = subprocess.run(
        [node, str(WAMPY_CHECKS), url, serializer], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    return lines, done.stderr


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
def test_wampy_passes_every_check(server: ServerProcess, serializer: str) -> None:
    """All 20 checks pass, and the server logged no protocol violation for them."""
    lines, stderr = run_wampy_checks(server.ws_url, serializer)
    checks, summary = lines[:-1], lines[-1]
    failed = [f"{line['check']}: {line['detail']}" for line in checks if not line["ok"]]
    assert summary == {"passed": CHECKS, "total": CHECKS}, "\n".join(failed) + "\n" + stderr
    assert "protocol_violation" not in server.log
