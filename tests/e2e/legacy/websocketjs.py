"""
A client that talks to the server byte for byte as web-socket-js's Flash movie does.

Source: ``flash-src/src/net/gimite/websocket/WebSocket.as`` and ``WebSocketMain.as`` in the PyPI
sdist websockify 0.5.1 (the build the site serves). What the movie does, and this client copies:

- Before the socket, Flash Player fetches a socket policy (``<policy-file-request/>`` + NUL): from
  port 843, else from the destination port itself; it connects only if the policy allows the port.
  :func:`fetch_policy` asks the site's port, the fallback the tests exercise (843 is off in tests).
- The handshake is one fixed template: Host (with the port unless it is 80), ``Upgrade: websocket``,
  ``Connection: Upgrade``, a Sec-WebSocket-Key of 16 random values from 0 to 127, Origin (the page's,
  lower case), ``Sec-WebSocket-Version: 13``, ``Cookie:`` (empty when the page has none), then
  Sec-WebSocket-Protocol only if protocols were asked for.
- The response must be ``HTTP/1.1 101``, with Upgrade ``websocket`` and Connection ``upgrade``
  (compared in lower case), the right Sec-WebSocket-Accept, and one of the asked protocols.
- Frames out: text only, FIN set, always masked with a fresh random mask; lengths up to 125 inline,
  then 16-bit, then 64-bit with the high 32 bits zero. Frames in: RSV bits and masking are errors,
  binary frames fail the connection (1003), pings get a masked pong, a close frame is answered with
  an empty close frame (no code) before the socket is closed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import struct
import xml.etree.ElementTree as ElementTree
from typing import Any

WEB_SOCKET_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
POLICY_REQUEST = b"<policy-file-request/>\0"
OPCODE_TEXT, OPCODE_BINARY, OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketJsError(AssertionError):
    """What web-socket-js would report as a connection error (``onConnectionError``)."""


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def fetch_policy(host: str, port: int, timeout: float = 5.0) -> bytes:
    """The socket policy document as Flash Player fetches it: request, read until closed."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(POLICY_REQUEST)
        return read_until_closed(sock)


def policy_allows(document: bytes, port: int) -> bool:
    """Whether a policy (NUL-terminated XML) lets a movie from any domain connect to ``port``."""
    if not document.endswith(b"\0"):
        return False
    text = document[:-1].decode("utf-8")
    root = ElementTree.fromstring(text[text.index("<cross-domain-policy>"):])
    for allow in root.findall("allow-access-from"):
        ports = allow.attrib.get("to-ports", "")
        if ports == "*" or str(port) in ports.split(","):
            return True
    return False


def generate_key() -> str:
    """WebSocket.as generateKey(): 16 values from 0 to 127, base64."""
    return base64.b64encode(bytes(random.randint(0, 127) for _ in range(16))).decode("ascii")


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """WebSocket.as sendFrame(): FIN, no RSV, masked, 7/16/64-bit length (high 32 bits zero)."""
    mask = bytes(random.randint(0, 255) for _ in range(4))
    length = len(payload)
    header = bytes([0x80 | opcode])
    if length <= 125:
        header += bytes([0x80 | length])
    elif length < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", length)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!II", 0, length)
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WebSocketJsClient:
    """
    One connection as the movie makes it, after the policy check. ``receive()`` returns the next
    text message; a close from the server is answered and recorded in ``close_code``/``close_reason``.
    """

    def __init__(self, host: str, port: int, path: str, origin: str, protocols: tuple[str, ...] = (),
                 cookie: str = "", timeout: float = 10.0) -> None:  # fmt: skip
        if not policy_allows(fetch_policy(host, port, timeout), port):
            raise WebSocketJsError(f"SecurityError: the socket policy does not allow port {port}")
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buffer = b""
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = False
        key = generate_key()
        expected = base64.b64encode(hashlib.sha1((key + WEB_SOCKET_GUID).encode()).digest()).decode()
        host_value = host if port == 80 else f"{host}:{port}"
        options = f"Sec-WebSocket-Protocol: {','.join(protocols)}\r\n" if protocols else ""
        self.request = (
            f"GET {path} HTTP/1.1\r\n"
            f"Host: {host_value}\r\n"
            "Upgrade: websocket\r\n"
            "Connection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n"
            f"Origin: {origin.lower()}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Cookie: {cookie}\r\n"
            f"{options}"
            "\r\n"
        ).encode("utf-8")
        self.sock.sendall(self.request)
        self.protocol = self._validate_handshake(self._read_head(), expected, protocols)

    def _read_head(self) -> str:
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise WebSocketJsError(f"closed during the handshake; got {self.buffer!r}")
            self.buffer += chunk
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        return head.decode("utf-8")

    @staticmethod
    def _validate_handshake(head: str, expected: str, protocols: tuple[str, ...]) -> str | None:
        """WebSocket.as validateHandshake()."""
        status, *lines = head.split("\r\n")
        if not status.startswith("HTTP/1.1 101 "):
            raise WebSocketJsError(f"bad response: {status}")
        headers: dict[str, str] = {}
        for line in lines:
            name, separator, value = line.partition(":")
            if not separator or not name or " " in name:
                raise WebSocketJsError(f"failed to parse response header line: {line}")
            headers[name.lower()] = value.strip()
        if headers.get("upgrade", "").lower() != "websocket":
            raise WebSocketJsError(f"invalid Upgrade: {headers.get('upgrade')}")
        if headers.get("connection", "").lower() != "upgrade":
            raise WebSocketJsError(f"invalid Connection: {headers.get('connection')}")
        if headers.get("sec-websocket-accept") != expected:
            raise WebSocketJsError(f"digest doesn't match: {headers.get('sec-websocket-accept')} != {expected}")
        if protocols:
            accepted = headers.get("sec-websocket-protocol")
            if accepted not in protocols:
                raise WebSocketJsError(f"protocol doesn't match: {accepted!r} not in {protocols}")
            return accepted
        return None

    # -- messages --------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        self.sock.sendall(masked_frame(OPCODE_TEXT, text.encode("utf-8")))

    def send_json(self, message: Any) -> None:
        self.send(json.dumps(message))

    def receive(self) -> str:
        """The next text message; raises WebSocketJsError if the connection closes first."""
        while True:
            opcode, payload = self._read_frame()
            if opcode == OPCODE_TEXT:
                return payload.decode("utf-8")
            if opcode == OPCODE_PING:
                self.sock.sendall(masked_frame(OPCODE_PONG, payload))
            elif opcode == OPCODE_CLOSE:
                self._closed_by_server(payload)
                raise WebSocketJsError(f"closed by the server: {self.close_code} {self.close_reason}")
            elif opcode != OPCODE_PONG:
                raise WebSocketJsError(f"opcode {opcode}: web-socket-js fails the connection (1003/1002)")

    def receive_json(self) -> Any:
        return json.loads(self.receive())

    def wait_closed_by_server(self) -> tuple[int | None, str]:
        """Read until the server's close frame (answering pings), answer it; return (code, reason)."""
        try:
            message = self.receive()
        except WebSocketJsError:
            if self.closed:
                return self.close_code, self.close_reason
            raise
        raise WebSocketJsError(f"expected a close, got message {message!r}")

    def close(self) -> None:
        """WebSocket.close() from the page: an empty close frame (code 1005, not sent); the server closes."""
        if self.closed:
            return
        self.sock.sendall(masked_frame(OPCODE_CLOSE, b""))
        try:
            while True:
                opcode, payload = self._read_frame()
                if opcode == OPCODE_CLOSE:
                    self.close_code, self.close_reason = _close_payload(payload)
                    break
            if self.sock.recv(1) != b"":
                raise WebSocketJsError("the server sent more after its close frame")
        finally:
            self.closed = True
            self.sock.close()

    def _closed_by_server(self, payload: bytes) -> None:
        self.close_code, self.close_reason = _close_payload(payload)
        # close(code, reason, "server"): a close frame without a code, then the socket is closed.
        try:
            self.sock.sendall(masked_frame(OPCODE_CLOSE, b""))
        except OSError:
            pass
        self.closed = True
        self.sock.close()

    def _read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise WebSocketJsError("connection closed without a close frame (1006)")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _read_frame(self) -> tuple[int, bytes]:
        """WebSocket.as parseFrame() and its checks."""
        first, second = self._read_exactly(2)
        if first & 0x70:
            raise WebSocketJsError("RSV must be 0. (1002)")
        if second & 0x80:
            raise WebSocketJsError("Frame from server must not be masked. (1002)")
        if not first & 0x80:
            raise WebSocketJsError("continuation frames are not implemented by web-socket-js (1003)")
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exactly(2))
        elif length == 127:
            high, length = struct.unpack("!II", self._read_exactly(8))
            if high:
                raise WebSocketJsError("Frame length exceeds 4294967295.")
        opcode = first & 0x0F
        if opcode >= 0x8 and length >= 126:
            raise WebSocketJsError("Payload of control frame must be less than 126 bytes. (1004)")
        return opcode, self._read_exactly(length)


def _close_payload(payload: bytes) -> tuple[int | None, str]:
    if len(payload) >= 2:
        return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8")
    return None, ""


def random_text(length: int) -> str:
    """Text with ASCII and multi-byte characters, never empty (web-socket-js misreads empty messages)."""
    alphabet = "abc xyz 0123456789 \u00e9\u00fc\u4e2d\u6587\u2603"
    return "".join(random.choice(alphabet) for _ in range(max(1, length)))

