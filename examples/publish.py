"""
Publish one event from Python with autobahn-python (``pip install autobahn``), over WebSocket:

    python examples/publish.py                                              # ws://127.0.0.1:8080/ws
    python examples/publish.py ws://127.0.0.1:8080/ws com.example.status ok 42

Each argument after the topic is one of the event's args, as JSON if it parses (``42``,
``'{"load": 0.3}'``), else as text. Asks the router to acknowledge the publication, prints its id,
and leaves; exits 1 with the router's error if it is refused.
"""

import json
import sys

from autobahn.asyncio.component import Component, run
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import PublishOptions

url = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080/ws"
topic = sys.argv[2] if len(sys.argv) > 2 else "com.example.status"


def parsed(argument):
    try:
        return json.loads(argument)
    except ValueError:
        return argument


args = [parsed(argument) for argument in sys.argv[3:]] or ["ok"]
component = Component(transports=url, realm="realm1")
failed = []


@component.on_join
async def joined(session, details):
    try:
        publication = await session.publish(topic, *args, options=PublishOptions(acknowledge=True))
        print("published", publication.id, flush=True)
    except ApplicationError as error:
        print(f"refused: {error.error} {' '.join(map(str, error.args))}", file=sys.stderr, flush=True)
        failed.append(error)
    session.leave()


if __name__ == "__main__":
    run([component], log_level="warn")
    sys.exit(1 if failed else 0)
