"""
A draft-76 ("hixie-76") WebSocket client on a raw socket, as Safari 5 and the old web-socket-js
builds speak it: keys made as §4.1 of draft-hixie-thewebsocketprotocol-76 says, the 16-byte answer
checked, 0x00..0xFF text frames, the 0xFF 0x00 closing handshake.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import struct
from typing import Any

NOISE = [chr(c) for c in [*range(0x21, 0x30), *range(0x3A, 0x7F)]]


def make_key() -> tuple[str, int]:
    """§4.1: a key and the number the server must find in it (its digits over its spaces)."""
    spaces = random.randint(1, 12)
    number = random.randint(0, 4294967295 // spaces)
    key = list(str(number * spaces))
    for _ in range(random.randint(1, 12)):
        key.insert(random.randint(0, len(key)), random.choice(NOISE))
    for _ in range(spaces):
        key.insert(random.randint(1, len(key) - 1), " ")  # never first or last
    return "".join(key), number


class Hixie76Error(AssertionError):
    pass


class Hixie76Client:
    """One draft-76 connection; ``response_head`` keeps what the server answered."""

    def __init__(self, host: str, port: int, path: str, origin: str = "http://127.0.0.1",
                 protocol: str | None = None, timeout: float = 10.0) -> None:  # fmt: skip
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        (key1, number1), (key2, number2) = make_key(), make_key()
        key3 = os.urandom(8)
        lines = [f"GET {path} HTTP/1.1", "Upgrade: WebSocket", "Connection: Upgrade", f"Host: {host}:{port}",
                 f"Origin: {origin}", f"Sec-WebSocket-Key1: {key1}", f"Sec-WebSocket-Key2: {key2}"]  # fmt: skip
        if protocol:
            lines.append(f"Sec-WebSocket-Protocol: {protocol}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + key3)
        self.response_head = self._read_until(b"\r\n\r\n").decode("latin-1")
        if not self.response_head.startswith("HTTP/1.1 101 WebSocket Protocol Handshake\r\n"):
            raise Hixie76Error(f"refused: {self.response_head.splitlines()[0]!r}")
        expected = hashlib.md5(struct.pack(">II", number1, number2) + key3).digest()
        if self._read_exactly(16) != expected:
            raise Hixie76Error("the challenge response is wrong")

    def header(self, name: str) -> str | None:
        for line in self.response_head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.lower() == name.lower():
                return value.strip()
        return None

    def _read_more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise Hixie76Error("connection closed")
        self.buffer += chunk

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._read_more()
        data, self.buffer = self.buffer.split(marker, 1)
        return data

    def _read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self._read_more()
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def send(self, text: str) -> None:
        self.sock.sendall(b"\x00" + text.encode("utf-8") + b"\xff")

    def send_json(self, message: Any) -> None:
        self.send(json.dumps(message))

    def _next_frame(self) -> str | None:
        """The next text message, or None for a closing frame."""
        frame_type = self._read_exactly(1)
        if frame_type == b"\xff":
            if self._read_exactly(1) != b"\x00":
                raise Hixie76Error("a length-prefixed frame other than closing")
            return None
        if frame_type != b"\x00":
            raise Hixie76Error(f"unexpected frame type {frame_type!r}")
        return self._read_until(b"\xff").decode("utf-8")

    def receive(self) -> str | None:
        """The next text message, or None for the server's closing frame (which is then answered)."""
        message = self._next_frame()
        if message is None:
            self.sock.sendall(b"\xff\x00")
        return message

    def receive_json(self) -> Any:
        message = self.receive()
        if message is None:
            raise Hixie76Error("closed by the server")
        return json.loads(message)

    def wait_closed(self) -> None:
        """After the closing handshake: the server closes TCP."""
        try:
            while self.sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        self.sock.close()

    def close(self) -> None:
        """The client's closing handshake: 0xFF 0x00, the server's answer, then the server closes."""
        self.sock.sendall(b"\xff\x00")
        while self._next_frame() is not None:
            pass
        self.wait_closed()
