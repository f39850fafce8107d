"""
A backend process that keeps the status page (/status.html) up to date: every few seconds it
measures this machine (load average, memory in use, uptime; Linux, from /proc) and publishes it
through wsserver's HTTP API (``twistd -n wsserver --http-api``) with ``retain``, so that a page
opened later is sent the last status at once. Standard library only; it publishes with ``publish_http.py``, next to it,
so ``WSSERVER_KEY`` (a bearer key) or ``WSSERVER_KEY_NAME`` and ``WSSERVER_SECRET`` (signed
requests) work as there.

    python examples/status_publisher.py                       # http://127.0.0.1:8080, every 5 s, until ^C
    python examples/status_publisher.py --url http://127.0.0.1:8080 --interval 2 --count 1

Prints each status it published as one line of JSON. A publication that fails (the server is
restarting, say) is reported on stderr and the next one is tried as usual; with ``--count``, the
exit status is 1 if any failed.
"""

import argparse
import json
import os
import socket
import sys
import time
import urllib.error
from datetime import datetime, timezone

from publish_http import publish


def measure():
    """This machine's status: the kwargs of one publication."""
    with open("/proc/meminfo") as meminfo:
        fields = {line.split(":")[0]: int(line.split()[1]) for line in meminfo}
    with open("/proc/uptime") as uptime:
        seconds = int(float(uptime.read().split()[0]))
    return {
        "host": socket.gethostname(),
        "load": " ".join(f"{value:.2f}" for value in os.getloadavg()),
        "memory used": f"{100 * (1 - fields['MemAvailable'] / fields['MemTotal']):.0f} %",
        "uptime": f"{seconds // 86400} d {seconds // 3600 % 24} h {seconds // 60 % 60} min",
        # when it was measured, so that a page says how old a retained status is
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the server (default: %(default)s)")
    parser.add_argument("--topic", default="com.example.status", help="(default: %(default)s)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between publications (default: %(default)s)")
    parser.add_argument("--count", type=int, default=None, help="publish this many times, then exit (default: forever)")
    options = parser.parse_args()
    published = failed = 0
    while options.count is None or published + failed < options.count:
        if published + failed:
            time.sleep(options.interval)
        status = measure()
        try:
            publication = publish(options.url, options.topic, kwargs=status, options={"retain": True})
        except urllib.error.HTTPError as error:
            print(f"not published: {error.code} {error.read().decode()}", file=sys.stderr, flush=True)
            failed += 1
        except OSError as error:  # refused, unreachable, timed out
            print(f"not published: {error}", file=sys.stderr, flush=True)
            failed += 1
        else:
            print(json.dumps({"id": publication, "kwargs": status}), flush=True)
            published += 1
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        pass
