"""
Skip a test whose outside tool (chromium, node, nginx) is missing, except in CI, where it must fail:
CI installs those tools (see .ci/run), so a skip there would hide a broken setup.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]


def unavailable(reason: str) -> NoReturn:
    """Skip with ``reason`` on a developer machine; fail with it when ``CI=true``."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true, so this is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)


def nginx_binary() -> str:
    """nginx's path (Debian puts it in /usr/sbin, outside a normal user's PATH); skip or fail without it."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.access(binary, os.X_OK):
        unavailable("nginx is not installed (Debian: apt-get install nginx; it lands in /usr/sbin/nginx)")
    return binary


def node_command(script: Path, *args: str) -> list[str]:
    """``node [flags] script args...`` for a script using AutobahnJS (npm ``autobahn``)."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed")
    if not (REPO / "node_modules" / "autobahn" / "package.json").is_file():
        unavailable("node_modules/autobahn is missing: run `make assets` (npm ci)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = (int(part) for part in re.match(r"v(\d+)\.(\d+)", version).groups())  # type: ignore[union-attr]
    if (major, minor) < (20, 10):
        unavailable(f"node {version.strip()} has no WebSocket; AutobahnJS 26 needs Node 22+ (or 20.10+ with a flag)")
    # AutobahnJS 26 uses the global WebSocket, which Node 20 only has behind this flag.
    flags = ["--experimental-websocket"] if major < 22 else []
    return [node, *flags, str(script), *args]
