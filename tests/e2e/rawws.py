"""
For end-to-end tests that need what no client library will send: a raw WebSocket (the websockets
library) speaking wamp.2.json, and the server process's resident memory.

    with raw_session(server.ws_url) as ws:                  # joined to realm1
        assert exchange(ws, [32, 7, {}, "com..bad"])[4] == "wamp.error.invalid_uri"
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
from collections.abc import Iterator
from typing import Any

from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}, "caller": {}, "callee": {}}}]


def exchange(ws: ClientConnection, message: list[Any]) -> list[Any]:
    """Send one message and return the next one received."""
    ws.send(json.dumps(message))
    return list(json.loads(ws.recv(timeout=5)))


def join(ws: ClientConnection, topic: str | None = None) -> list[Any]:
    """HELLO (and SUBSCRIBE ``topic``, if given) on ``ws``; return the WELCOME."""
    welcome = exchange(ws, HELLO)
    assert welcome[0] == 2, welcome
    if topic:
        assert exchange(ws, [32, 1, {}, topic])[0] == 33
    return welcome


@contextlib.contextmanager
def raw_session(
    ws_url: str, subprotocol: str = "wamp.2.json", hello: bool = True, **options: Any
) -> Iterator[ClientConnection]:
    """A raw WebSocket, joined to realm1 unless ``hello`` is false; closed on exit."""
    with ws_connect(ws_url, subprotocols=[subprotocol], open_timeout=5, **options) as ws:
        if hello:
            join(ws)
        yield ws


def rss(pid: int) -> int:
    """Resident memory of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


# -- below the WebSocket library: frames no library sends, and a client that never reads ----------


def open_raw(
    port: int, path: str = "/ws", subprotocol: str | None = "wamp.2.json", sock: socket.socket | None = None,
    extensions: str | None = None,
) -> socket.socket:
    """
    A WebSocket to 127.0.0.1:``port`` as a bare socket (``sock``, connected), the opening handshake
    done; ``extensions``: a Sec-WebSocket-Extensions offer (e.g. "permessage-deflate").
    """
    sock = sock or socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol = f"Sec-WebSocket-Protocol: {subprotocol}\r\n" if subprotocol else ""
    if extensions:
        protocol += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, f"no handshake answer: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    return sock


def frame(opcode: int, payload: bytes = b"", fin: bool = True, compressed: bool = False) -> bytes:
    """A client frame (masked, with a zero key: the payload goes as it is); ``compressed``: RSV1 set."""
    length = len(payload)
    if length < 126:
        size = bytes([0x80 | length])
    elif length < 65536:
        size = bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        size = bytes([0x80 | 127]) + struct.pack("!Q", length)
    return bytes([(0x80 if fin else 0) | (0x40 if compressed else 0) | opcode]) + size + b"\0\0\0\0" + payload


def read_close(sock: socket.socket, timeout: float = 10.0) -> tuple[int | None, str]:
    """
    Read (and skip) the server's frames until its close frame: its code and reason; (None, why)
    when the connection ends without one, or none comes within ``timeout`` seconds.
    """
    sock.settimeout(timeout)
    buffered = b""

    def need(count: int) -> bytes:
        nonlocal buffered
        while len(buffered) < count:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise ConnectionResetError("end of stream")
            buffered += chunk
        taken, buffered = buffered[:count], buffered[count:]
        return taken

    try:
        while True:
            first, second = need(2)
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", need(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", need(8))[0]
            payload = need(length)
            if first & 0x0F == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                return code, payload[2:].decode("utf-8", "replace")
    except (OSError, TimeoutError) as error:
        return None, f"no close frame: {error!r}"
