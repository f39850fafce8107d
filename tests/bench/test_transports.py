"""
bench/transports.py keeps working: with tiny numbers every transport's subscribers join, receive
every event and get a row in the table. Speed is not asserted here (the machines are shared and
noisy); README numbers come from full runs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "transports.py"
TRANSPORTS = ("websocket", "longpoll", "longpoll-batched", "sse", "stream")


def test_tiny_run_of_every_transport_prints_a_row_each() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--subscribers", "3", "--events", "5", "--rounds", "1",
         "--transports", ",".join(TRANSPORTS)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rows = {line.split()[0] for line in result.stdout.splitlines()[2:]}
    assert rows == set(TRANSPORTS), result.stdout
