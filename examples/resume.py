"""
Never miss a message, from Python: follow a chat room (or any topic that keeps history) with
``wsserver.client.resume``, print each message as a line of JSON, and keep the position of the
last one in a file. Stop it, let others talk, start it again: it prints first what was said
meanwhile ("resumed, 3 missed events recovered"), or says "reloaded" when the server no longer has
it all (it restarted, or more was said than it keeps).

    python examples/resume.py                                   # ws://127.0.0.1:8080/ws, the chat's lobby
    python examples/resume.py ws://127.0.0.1:8080/ws com.example.chat.room.lobby position.json

The server must keep history for the topic: ``--demo`` does for the chat rooms, ``--history-size``
or a ``history`` rule in ``--config`` for others. Needs autobahn-python and the ``wsserver``
package (for ``wsserver.client``, which imports nothing else of the server).
"""

import json
import pathlib
import sys

from autobahn.asyncio.component import Component, run

from wsserver.client import Position, resume

url = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8080/ws"
topic = sys.argv[2] if len(sys.argv) > 2 else "com.example.chat.room.lobby"
saved = pathlib.Path(sys.argv[3] if len(sys.argv) > 3 else "position.json")
component = Component(transports=url, realm="realm1")


@component.on_join
async def joined(session, details):
    position = Position(*json.loads(saved.read_text())) if saved.exists() else None
    following = []  # the Resumption, once resume() returns

    def on_message(*args, **kwargs):
        print(json.dumps({"args": list(args), "kwargs": kwargs}), flush=True)
        if following and following[0].position:  # resume() moves it before calling us
            saved.write_text(json.dumps(following[0].position))

    chat = await resume(session, topic, on_message, position)
    following.append(chat)
    if chat.position:
        saved.write_text(json.dumps(chat.position))
    if chat.recovered:
        print(f"resumed, {chat.missed} missed events recovered", file=sys.stderr, flush=True)
    else:
        print("reloaded" if position else f"following {topic}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    run([component], log_level="warn")
