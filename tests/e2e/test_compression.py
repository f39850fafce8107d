"""
permessage-deflate against ``twistd -n wsserver``: an autobahn-python subscriber, a websockets
(the Python library) subscriber and AutobahnJS on Node on compressed connections get every event, a
plain one beside them too; a deflate bomb, in one message or in fragments, is refused with 1009 after inflating no more
than ``--max-message-size``, while the bystander keeps every event and memory stays bounded.
"""

from __future__ import annotations

import functools
import json
import zlib
from typing import Any

import pytest
from websockets.sync.client import connect

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import HELLO, frame, open_raw, read_close
from tests.e2e.test_echo import echo_url
from tests.e2e.test_node_autobahnjs import run_node  # noqa: F401 (a fixture)
from tests.e2e.wampclient import WampClient, publish_once

#: What the bomb inflates to: a thousand times --max-message-size.
BOMB_SIZE = 2**30


def quotes(seq: int) -> list[dict[str, Any]]:
    """A realistic event of about 1 KB."""
    return [{"seq": seq, "symbol": f"SYM{i}", "name": f"Company {i} Holdings", "price": 100.25 + i * seq % 7,
             "volume": 1000 * i + seq, "ts": f"2026-11-29T19:{i:02d}:{seq % 60:02d}.000Z"} for i in range(8)]


def test_compressed_and_plain_subscribers_get_every_event(server: Any) -> None:
    topic = "com.example.quotes"
    with WampClient(server.ws_url, compression=True) as compressed, WampClient(server.ws_url) as plain, \
            WampClient(server.ws_url) as publisher, \
            connect(server.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as raw:
        assert [response.__class__.__name__ for response in compressed.extensions] == ["PerMessageDeflateResponse"]
        (response,) = compressed.extensions
        assert response.server_no_context_takeover and response.client_no_context_takeover
        assert "permessage-deflate" in (raw.response.headers.get("Sec-WebSocket-Extensions") or "")
        raw.send(json.dumps(HELLO))
        assert json.loads(raw.recv(timeout=5))[0] == 2
        raw.send(json.dumps([32, 1, {}, topic]))
        assert json.loads(raw.recv(timeout=5))[0] == 33
        inboxes = [compressed.subscribe(topic), plain.subscribe(topic)]
        for seq in range(50):
            publisher.publish(topic, quotes(seq), acknowledge=True)
        for inbox in inboxes:
            assert [inbox.get()[0][0] for _ in range(50)] == [quotes(seq) for seq in range(50)]
        assert [json.loads(raw.recv(timeout=5))[4][0] for _ in range(50)] == [quotes(seq) for seq in range(50)]


def test_stream_subscribers_compressed_and_plain_get_every_event(server: Any) -> None:
    topic = "com.example.quotes"
    url = f"ws://127.0.0.1:{server.port}/stream?topic={topic}"
    with connect(url, open_timeout=5) as compressed, connect(url, open_timeout=5, compression=None) as plain, \
            WampClient(server.ws_url) as publisher:
        assert "server_no_context_takeover" in (compressed.response.headers.get("Sec-WebSocket-Extensions") or "")
        assert plain.response.headers.get("Sec-WebSocket-Extensions") is None
        for seq in range(20):
            publisher.publish(topic, quotes(seq), acknowledge=True)
        for stream in (compressed, plain):
            assert [json.loads(stream.recv(timeout=5))["args"] for _ in range(20)] == [[quotes(s)] for s in range(20)]


def test_echo_compresses_with_the_client(server: Any) -> None:
    message = json.dumps(quotes(1))
    with connect(echo_url(server), open_timeout=5) as websocket:
        assert "permessage-deflate" in (websocket.response.headers.get("Sec-WebSocket-Extensions") or "")
        websocket.send(message)
        assert websocket.recv(timeout=5) == message


@functools.cache
def bomb() -> bytes:
    """BOMB_SIZE zero bytes, deflated as one message (tail removed): about a thousandth of that."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(2**20)
    body = b"".join(compressor.compress(zeros) for _ in range(BOMB_SIZE // len(zeros)))
    return (body + compressor.flush(zlib.Z_SYNC_FLUSH))[:-4]


@pytest.mark.parametrize("fragments", [1, 64])
@pytest.mark.parametrize("path", ["/ws", "/echo"])
def test_a_deflate_bomb_is_refused_with_1009(start_server: Any, fragments: int, path: str) -> None:
    # One message fits a frame only if smaller than the limit: send a quarter of the bomb then.
    server = start_server()
    payload = bomb()[: len(bomb()) // 4] if fragments == 1 else bomb()
    size = -(-len(payload) // fragments)
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        sock = open_raw(server.port, path, "wamp.2.json" if path == "/ws" else None, extensions="permessage-deflate")
        try:
            for number, piece in enumerate(pieces):
                last = number == len(pieces) - 1
                try:
                    sock.sendall(frame(0x1 if number == 0 else 0x0, piece, fin=last, compressed=number == 0))
                except (BrokenPipeError, ConnectionResetError):
                    break  # refused already
            code, reason = read_close(sock)
        finally:
            sock.close()
        assert code == 1009, reason
    bystander.check()
    memory.check(64 * 2**20)  # --max-message-size (1 MiB) inflated, a few times over, not the bomb's 1 GiB


def test_autobahnjs_on_node_gets_a_compressed_event(server: Any, run_node: Any) -> None:
    # Node's WebSocket (undici) offers permessage-deflate and agrees to client_no_context_takeover
    # (its handshake answer, seen by hand: "permessage-deflate; client_no_context_takeover;
    # server_no_context_takeover"); a 1 KB event goes out compressed.
    topic = "com.example.node.quotes"
    node = run_node(server.ws_url, topic)
    assert node.next_line(timeout=20) == "READY"
    publish_once(server.ws_url, topic, quotes(7))
    assert json.loads(node.next_line(timeout=10)) == [quotes(7)]
    assert node.proc.wait(timeout=10) == 0, node.stderr
