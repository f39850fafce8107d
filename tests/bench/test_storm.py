"""
The reconnect storm's clients retry as AutobahnJS's Connection does, and the generator's
non-blocking connect reports a refused port instead of blocking the loop.
"""

from __future__ import annotations

import errno
import random
import socket
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

from loadgen import Loop  # noqa: E402
from storm import MAX_RETRY_DELAY, Backoff  # noqa: E402


def test_retry_delays_grow_by_half_with_a_tenth_of_jitter_and_reset_on_join() -> None:
    rng = random.Random(1)
    firsts, thirds = [], []
    for _ in range(2000):
        backoff = Backoff(rng)
        firsts.append(backoff.advance())
        backoff.advance()
        thirds.append(backoff.advance())
    # connection.js: delay = rand_normal(delay, delay * 0.1), then delay *= 1.5; from 1.5 s.
    assert abs(statistics.mean(firsts) - 1.5) < 0.02
    assert abs(statistics.stdev(firsts) - 0.15) < 0.02
    assert 3.2 < statistics.mean(thirds) < 3.55  # about 1.5 * 1.5 ** 2, the jitter compounding
    backoff.reset()
    assert backoff.delay == 1.5
    backoff.delay = 1000.0
    assert backoff.advance() == MAX_RETRY_DELAY


def test_dialing_a_closed_port_fails_with_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        failures: list[int] = []
        loop = Loop()
        loop.dial("127.0.0.1", port, "ws", None, on_open=lambda client: None, on_fail=failures.append)
        assert loop.run_until(lambda: bool(failures), timeout=5)
        loop.close()
    assert failures == [errno.ECONNREFUSED]
