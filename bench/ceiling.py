"""
The ceiling for one CPython process: the least a Twisted server can do to fan out an event.

It speaks just enough WebSocket and WAMP-JSON for bench/loadgen.py (upgrade, HELLO -> WELCOME,
SUBSCRIBE -> SUBSCRIBED, PUBLISH -> PUBLISHED) and, per publication, frames one EVENT once and
writes those bytes to every other connection: a loop of ``transport.write`` calls and nothing
else. No validation, no routing, one topic. Not a server: a yardstick.

    python bench/ceiling.py PORT
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys

from twisted.internet import protocol, reactor

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", 0x81, n) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class Ceiling(protocol.Protocol):
    def connectionMade(self) -> None:
        self.buffer = b""
        self.upgraded = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            key = next(line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key"))
            accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
            self.transport.write(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Protocol: wamp.2.json\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            self.upgraded = True
            self.buffer = rest
        while len(self.buffer) >= 6:
            length = self.buffer[1] & 0x7F
            offset = 2
            if length == 126:
                (length,) = struct.unpack_from("!H", self.buffer, 2)
                offset = 4
            elif length == 127:
                (length,) = struct.unpack_from("!Q", self.buffer, 2)
                offset = 10
            if len(self.buffer) < offset + 4 + length:
                return
            mask = self.buffer[offset : offset + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self.buffer[offset + 4 : offset + 4 + length])) \
                if mask != b"\0\0\0\0" else self.buffer[offset + 4 : offset + 4 + length]
            self.buffer = self.buffer[offset + 4 + length :]
            if payload[:1] == b"[":
                self.message(json.loads(payload))

    def message(self, message: list) -> None:
        kind = message[0]
        if kind == 1:
            self.transport.write(frame(json.dumps([2, id(self), {"roles": {"broker": {}}}]).encode()))
        elif kind == 32:
            self.factory.subscribers.append(self)
            self.transport.write(frame(json.dumps([33, message[1], 1]).encode()))
        elif kind == 16:
            event = frame(json.dumps([36, 1, message[1], {}, message[4]]).encode())
            for subscriber in self.factory.subscribers:
                if subscriber is not self:
                    subscriber.transport.write(event)
            if message[2].get("acknowledge"):
                self.transport.write(frame(json.dumps([17, message[1], message[1]]).encode()))

    def connectionLost(self, reason: object) -> None:
        if self in self.factory.subscribers:
            self.factory.subscribers.remove(self)


class CeilingFactory(protocol.Factory):
    protocol = Ceiling

    def __init__(self) -> None:
        self.subscribers: list[Ceiling] = []


if __name__ == "__main__":
    reactor.listenTCP(int(sys.argv[1]), CeilingFactory(), backlog=1024, interface="127.0.0.1")
    reactor.run()
