"""
Subscribe from Python with autobahn-python (``pip install autobahn``), over WebSocket, and print
every event of a topic as one line of JSON, ``{"topic", "args", "kwargs"}``, until ^C:

    python examples/subscribe.py                                     # ws://127.0.0.1:8080/ws, com.example.ticker
    python examples/subscribe.py ws://127.0.0.1:8080/ws com.example. prefix

A third argument, ``prefix`` or ``wildcard``, subscribes to a pattern. The router sends the
topic's retained event first, if there is one (``get_retained``). Autobahn reconnects by itself
when the connection drops, and the subscription is made again on every join.
"""

import json
import sys

from autobahn.asyncio.component import Component, run
from autobahn.wamp.types import SubscribeOptions

url = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080/ws"
topic = sys.argv[2] if len(sys.argv) > 2 else "com.example.ticker"
match = sys.argv[3] if len(sys.argv) > 3 else "exact"
component = Component(transports=url, realm="realm1")


def on_event(*args, details, **kwargs):
    print(json.dumps({"topic": details.topic or topic, "args": list(args), "kwargs": kwargs}), flush=True)


@component.on_join
async def joined(session, details):
    options = SubscribeOptions(match=match, get_retained=True, details_arg="details")
    await session.subscribe(on_event, topic, options=options)
    print(f"subscribed to {topic} ({match})", file=sys.stderr, flush=True)


if __name__ == "__main__":
    run([component], log_level="warn")
