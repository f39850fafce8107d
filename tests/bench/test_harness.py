"""
The benchmark harness keeps working: ``bench/run.py --quick`` runs every scenario against wsserver
and Crossbar.io (and the Redis backplane's against a redis-server) with no lost event, and writes its JSON and chart. Speed is not asserted here
(the machines are shared and noisy); bench/README numbers come from full runs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from loadgen import Client, Loop, masked_frame  # noqa: E402


def test_quick_run_against_both_peers_loses_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["checks"] and all(check.startswith("ok") for check in results["checks"])
    scenarios = {figure["scenario"] for figure in results["figures"]}
    assert scenarios == {"fanout", "latency", "idle", "setup", "chat", "storm", "backplane", "workers", "compression"}
    for figure in results["figures"]:
        if figure["scenario"] == "backplane":  # latency on one node and across two, both on Redis
            assert set(figure["medians"]) == {"redis one node", "redis across"}, figure
            continue
        if figure["scenario"] == "workers":  # --workers 2 against 1, both on Redis
            assert set(figure["medians"]) == {"wsserver-1w", "wsserver-2w"}, figure
            continue
        if figure["scenario"] == "compression":  # wsserver compressed against itself plain (bench/compression.py)
            assert set(figure["medians"]) == {"wsserver"}, figure
            continue
        if set(figure["medians"]) <= {"wsserver-1w", "wsserver-2w"}:
            continue  # the fan-out and setup figures the workers scenario measured on the way
        assert figure["medians"].get("wsserver") is not None, figure
        if figure["scenario"] == "fanout":  # the same node with --redis, for the backplane's ratio
            assert figure["medians"].get("wsserver+redis") is not None, figure
        if figure["scenario"] != "fanout" or "generator" not in figure["name"]:
            assert figure["medians"].get("crossbar") is not None, figure
    assert (tmp_path / "benchmark.png").read_bytes().startswith(b"\x89PNG")


def test_counting_clients_count_markers_split_across_reads() -> None:
    ours, theirs = socket.socketpair()
    client = Client(ours, topic=None)
    client.state = Client.READY
    client.start_counting()
    stream = b"".join(b"\x81\x20" + b'[36,1,2,{},[1,"abc"]]' for _ in range(5))
    for cut in (3, 17, 26, 40, len(stream)):
        theirs.sendall(stream[:cut])
        stream = stream[cut:]
        client.readable()
    assert client.events == 5
    ours.close(), theirs.close()


def test_client_frames_are_masked_with_lengths_per_rfc6455() -> None:
    assert masked_frame(b"x")[:2] == b"\x81\x81"
    assert masked_frame(b"x" * 200)[:4] == b"\x81\xfe\x00\xc8"
    assert masked_frame(b"x" * 70000)[:2] == b"\x81\xff"


def test_a_run_that_tick_finishes_ends_without_waiting_on_the_selector() -> None:
    # The setup scenario counts finished sessions in tick(): waiting on the selector after the last
    # one (up to 0.5 s, no socket left to wake it) was measured as part of the run.
    loop, counted = Loop(), []
    waits: list[object] = []
    loop.selector.select = lambda timeout=None: waits.append(timeout) or []  # type: ignore[method-assign]
    assert loop.run_until(lambda: len(counted) >= 3, timeout=10, tick=lambda: counted.append(1))
    assert len(counted) == 3 and len(waits) == 2
