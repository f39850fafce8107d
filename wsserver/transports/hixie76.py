"""
The draft-76 WebSocket protocol ("hixie-76"): an optional adapter, on with ``--hixie76``.

Who speaks it: Safari 5.0-5.1 and iOS 4.2-5.1 natively, Chrome 6-13, Firefox 4 betas, Opera 11,
and web-socket-js builds from before 2011 (the one in npm ``socket.io-client`` 0.9). Autobahn
dropped it years ago; this module is written from draft-hixie-thewebsocketprotocol-76 (May 2010),
whose sections are cited as §.

Theory of operation
-------------------
Wiring. A draft-76 handshake is an HTTP GET followed, *after* the blank line and without a
Content-Length, by 8 bytes of key material. twisted.web would read those 8 bytes as the start of the
next request, so the adapter does not live in the resource tree: it looks at connections before the
site does. With ``--hixie76`` the service wraps the site's factory in
:class:`Hixie76SniffingFactory` (the Flash policy sniffer wraps that in turn). Its
:class:`Hixie76Sniffer` reads a connection's first bytes:

- as soon as they cannot start ``GET <route> `` or ``GET <route>?`` (a route: ``/echo`` or the
  WAMP path), the connection is handed, with the bytes read so far, to the site: plain HTTP pays
  a few bytes of buffering, nothing else;
- otherwise it reads the request head; with both ``Sec-WebSocket-Key1`` and ``Sec-WebSocket-Key2``
  the connection becomes a :class:`Hixie76Connection`, without them (an RFC 6455 handshake) it goes
  to the site;
- a head that does not end within the handshake timeout, or within MAX_HEAD bytes, goes to the site,
  which answers it as HTTP.

Handshake (§5.2). Upgrade must be ``WebSocket``, Connection must name ``Upgrade``, Host must be
there. For each key, its digits form a number and its spaces are counted; no digits, no spaces, a
number that is not a multiple of the spaces, or a quotient over 2**32 - 1 refuses the handshake.
The server reads the 8 key bytes and answers::

    HTTP/1.1 101 WebSocket Protocol Handshake
    Upgrade: WebSocket
    Connection: Upgrade
    Sec-WebSocket-Origin: <the Origin the client sent>
    Sec-WebSocket-Location: ws://<Host><path>          (wss:// over TLS)
    Sec-WebSocket-Protocol: <the protocol>             (if the client asked for one)

    <MD5 of quotient1 (4 bytes, big-endian) + quotient2 + the 8 key bytes: 16 bytes>

Everything is checked on the head, before the key bytes arrive; a refused handshake (bad keys,
origin, connection limits, a WAMP path without ``wamp.2.json``) gets a plain HTTP error and is closed.

Frames (§4.2, §5.3). A text frame is 0x00, UTF-8 text, 0xFF. A frame whose type byte has the high
bit set carries a length (base 128, high bit = more bytes follow) and is skipped, except 0xFF with
length 0: the closing frame. A frame of another type without the high bit is read to its 0xFF and
dropped. There are no binary messages, pings or close codes. A message (or a skipped frame) longer
than ``--max-message-size`` fails the connection: it is closed at once, since no code can say why;
so do more frames a second than ``--max-frame-rate`` (after ``--frame-burst``), as on ``/ws``.

Closing (§4.2, §7.1.1). Either side sends 0xFF 0x00; the other answers the same, and the server
then closes TCP. When the server starts it (``quit``, GOODBYE, shutdown, no HELLO in time) it waits
up to CLOSE_TIMEOUT seconds for the client's closing frame, then aborts.

Routes. ``/echo`` (:class:`Hixie76Echo`) sends every text message back; ``quit`` closes. The WAMP
path (:class:`Hixie76Wamp`) carries one WAMP session, JSON over text frames (the subprotocol
``wamp.2.json`` must be asked for), through the core :class:`~wsserver.core.router.Router` like
every transport: it is a :class:`~wsserver.delivery.Peer` with the wire format ``("hixie76",
"json")``, so an EVENT is encoded and framed once for all its draft-76 subscribers. A client that
does not read is held to ``max_send_buffer`` beyond Twisted's buffer mark, as on ``/ws``.

Admission. The site's one :class:`~wsserver.transports.admission.Admission`, shared with ``/ws``
and ``/echo``: the same origins, and one connection budget.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autobahn.twisted.util import peer2str
from autobahn.wamp import message as wamp
from autobahn.wamp.serializer import JsonObjectSerializer, JsonSerializer
from twisted.internet import defer, interfaces
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from wsserver.core.limits import TokenBucket
from wsserver.core.router import CloseReason, Router
from wsserver.delivery import Peer, carry_out
from wsserver.transports.admission import Admission, ConnectionLimits, OpenConnections, Refused
from wsserver.transports.echo import QUIT
from wsserver.transports.flashpolicy import protocol_for, switch_protocol
from wsserver.transports.sendbuffer import CONTROL, PUSH, REPLY, ConnectionInfo, SendBuffer
from wsserver.transports.wampsession import WampSession, encoded

log = Logger()

#: The longest request head the sniffer reads before leaving the connection to the site.
MAX_HEAD = 8192
#: Seconds the server waits for the client's closing frame after sending its own.
CLOSE_TIMEOUT = 5.0
KEY3_LENGTH = 8
CLOSING_FRAME = b"\xff\x00"
WAMP_JSON = "wamp.2.json"
DIGITS = frozenset("0123456789")


class HandshakeError(Exception):
    """A draft-76 handshake the server refuses: ``str()`` says why (sent as a 400 response)."""


@dataclass(frozen=True)
class Request:
    """The head of a GET request: the path (with its query) and the headers, names in lower case."""

    path: str
    headers: Mapping[str, str]

    @property
    def route(self) -> str:
        return self.path.split("?", 1)[0]

    @property
    def is_draft76(self) -> bool:
        return "sec-websocket-key1" in self.headers and "sec-websocket-key2" in self.headers


def parse_head(head: bytes) -> Request | None:
    """The request in ``head`` (up to and including the blank line), or None if it is no HTTP/1.1 GET."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "GET" or parts[2] != "HTTP/1.1" or not parts[1].startswith("/"):
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, separator, value = line.partition(":")
        if not separator or not name or name != name.strip():
            return None
        name = name.lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return Request(parts[1], headers)


def key_number(key: str) -> int:
    """§5.2: a key's digits as a number, divided by its count of spaces; HandshakeError if invalid."""
    digits = "".join(character for character in key if character in DIGITS)
    spaces = key.count(" ")
    if not digits:
        raise HandshakeError("a Sec-WebSocket-Key has no digits")
    if spaces == 0:
        raise HandshakeError("a Sec-WebSocket-Key has no spaces")
    number = int(digits)
    if number % spaces:
        raise HandshakeError("a Sec-WebSocket-Key is not a multiple of its count of spaces")
    if number // spaces > 0xFFFFFFFF:
        raise HandshakeError("a Sec-WebSocket-Key is too large")
    return number // spaces


def challenge_response(key1: str, key2: str, key3: bytes) -> bytes:
    """§5.2: the 16 bytes the server answers the two keys and the 8 key bytes with."""
    return hashlib.md5(struct.pack(">II", key_number(key1), key_number(key2)) + key3).digest()


def check_request(request: Request, required_protocol: str | None) -> str | None:
    """
    Refuse (HandshakeError) a head that is not a valid draft-76 handshake for a route that needs
    ``required_protocol`` (None: any); return the protocol to answer with (None: none asked for).
    """
    headers = request.headers
    if headers.get("upgrade", "").lower() != "websocket":
        raise HandshakeError("Upgrade must be WebSocket")
    if "upgrade" not in [token.strip().lower() for token in headers.get("connection", "").split(",")]:
        raise HandshakeError("Connection must be Upgrade")
    if not headers.get("host"):
        raise HandshakeError("Host is missing")
    key_number(headers["sec-websocket-key1"])
    key_number(headers["sec-websocket-key2"])
    asked = headers.get("sec-websocket-protocol")
    if required_protocol is None:
        return asked
    offered = [token.strip() for token in (asked or "").replace(",", " ").split()]
    if required_protocol not in offered:
        raise HandshakeError(f"this endpoint speaks WAMP: ask for the subprotocol {required_protocol}")
    return required_protocol


def handshake_response(request: Request, key3: bytes, protocol_answered: str | None, secure: bool) -> bytes:
    """§5.2: the 101 response with its 16-byte challenge response, for a request check_request accepted."""
    headers = request.headers
    lines = ["HTTP/1.1 101 WebSocket Protocol Handshake", "Upgrade: WebSocket", "Connection: Upgrade"]
    if "origin" in headers:
        lines.append(f"Sec-WebSocket-Origin: {headers['origin']}")
    lines.append(f"Sec-WebSocket-Location: {'wss' if secure else 'ws'}://{headers['host']}{request.path}")
    if protocol_answered is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocol_answered}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + challenge_response(headers["sec-websocket-key1"], headers["sec-websocket-key2"], key3)


def refusal(status: int, reason: str) -> bytes:
    """A short HTTP error response for a refused handshake (the connection is closed after it)."""
    phrases = {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests", 503: "Service Unavailable"}
    body = f"{reason}\n".encode("utf-8")
    head = (f"HTTP/1.1 {status} {phrases.get(status, 'Error')}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")  # fmt: skip
    return head.encode("latin-1") + body


def text_frame(payload: bytes) -> bytes:
    """§4.2: a text frame around UTF-8 ``payload`` (UTF-8 never contains the 0xFF that ends it)."""
    return b"\x00" + payload + b"\xff"


class FrameTooLarge(Exception):
    """A frame is longer than the limit: the connection must be failed."""


class FrameReader:
    """
    Incremental §5.3 frame parser. ``feed(data)`` returns the complete text messages (bytes) in
    order, and CLOSING for the closing frame, after which nothing more is read.
    """

    CLOSING = None  # marker in the returned list

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.closed = False
        #: Frames read so far, skipped ones too (for the frame rate).
        self.count = 0
        self._buffer = bytearray()
        self._scanned = 1  # where to resume looking for a sentinel frame's 0xFF

    def feed(self, data: bytes) -> list[bytes | None]:
        if self.closed:
            return []
        buffer = self._buffer
        buffer += data
        frames: list[bytes | None] = []
        while buffer:
            frame_type = buffer[0]
            if frame_type & 0x80:
                consumed, length = self._length(buffer)
                if consumed == 0:
                    break
                if frame_type == 0xFF and length == 0:
                    frames.append(self.CLOSING)
                    self.closed = True
                    buffer.clear()
                    break
                if len(buffer) < consumed + length:
                    break
                del buffer[: consumed + length]
                self.count += 1
            else:
                end = buffer.find(b"\xff", self._scanned)
                if end < 0:
                    if len(buffer) - 1 > self.max_size:
                        raise FrameTooLarge(f"a message longer than {self.max_size} bytes")
                    self._scanned = len(buffer)
                    break
                if end - 1 > self.max_size:
                    raise FrameTooLarge(f"a message longer than {self.max_size} bytes")
                if frame_type == 0x00:
                    frames.append(bytes(buffer[1:end]))
                del buffer[: end + 1]
                self.count += 1
                self._scanned = 1
        return frames

    def _length(self, buffer: bytearray) -> tuple[int, int]:
        """A length-prefixed frame's header size and length; (0, 0) while incomplete."""
        length = 0
        for index in range(1, len(buffer)):
            byte = buffer[index]
            length = length * 128 + (byte & 0x7F)
            if length > self.max_size:
                raise FrameTooLarge(f"a frame longer than {self.max_size} bytes")
            if not byte & 0x80:
                return index + 1, length
        return 0, 0


# -- connections ----------------------------------------------------------------------------------

AWAITING_KEY3, OPEN, CLOSING, CLOSED = "awaiting key", "open", "closing", "closed"


class Hixie76Connection(Protocol):
    """
    One draft-76 connection from its request head on: checks the head, answers the handshake, reads
    frames. Subclasses say what messages do: :meth:`opened`, :meth:`message_received`, :meth:`gone`.
    """

    #: The subprotocol the route requires (None: any, echoed back).
    required_protocol: str | None = None

    def __init__(self, endpoints: Hixie76Endpoints, request: Request) -> None:
        self.endpoints = endpoints
        self.request: Any = request  # the head, until the handshake is answered
        self.state = AWAITING_KEY3
        self.reader = FrameReader(endpoints.admission.limits.max_message_size)
        self.peer = "?"
        self._received = b""
        self._client_ip: str | None = None
        self._protocol_answered: str | None = None
        self._deadline: Any = None
        self._answered = False  # the handshake was answered: gone() is due when the connection ends
        self._frame_rate: TokenBucket | None = None

    def connectionMade(self) -> None:
        self.peer = peer2str(self.transport)  # "tcp4:1.2.3.4:5678", as Autobahn names peers
        try:
            self._protocol_answered = check_request(self.request, self.required_protocol)
        except HandshakeError as error:
            log.info("refused draft-76 handshake from {peer}: {reason}", peer=self.peer, reason=str(error))
            self._refuse(400, str(error))
            return
        try:
            self._client_ip = self.endpoints.admission.admit(self.peer, self.request.headers,
                                                             self.request.headers.get("origin"))
        except Refused as refused:
            self._refuse(refused.status, refused.reason)
            return
        self.endpoints.connections.add(self)
        clock = self.endpoints.clock
        self._deadline = clock.callLater(self.endpoints.admission.limits.handshake_timeout, self._abort)

    def _refuse(self, status: int, reason: str) -> None:
        self.state = CLOSED
        self.transport.write(refusal(status, reason))
        self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.state == AWAITING_KEY3:
            self._received += data
            if len(self._received) < KEY3_LENGTH:
                return
            key3, data = self._received[:KEY3_LENGTH], self._received[KEY3_LENGTH:]
            self._received = b""
            self._open(key3)
        if self.state not in (OPEN, CLOSING) or not data:
            return
        counted = self.reader.count
        try:
            frames = self.reader.feed(data)
        except FrameTooLarge as error:
            log.info("closing draft-76 connection from {peer}: {reason}", peer=self.peer, reason=str(error))
            self._abort()
            return
        if self._frame_rate is not None:
            now = self.endpoints.clock.seconds()
            for _ in range(self.reader.count - counted):
                if not self._frame_rate.take(now):
                    log.info("closing draft-76 connection from {peer}: more than {rate} frames a second",
                             peer=self.peer, rate=self._frame_rate.rate)
                    self._abort()  # no close code could say why
                    return
        for payload in frames:
            if payload is FrameReader.CLOSING:
                self._closing_frame_received()
                return
            if self.state == OPEN:
                self.message_received(payload)

    def _open(self, key3: bytes) -> None:
        self._cancel_deadline()
        secure = interfaces.ISSLTransport.providedBy(self.transport)
        self.transport.write(handshake_response(self.request, key3, self._protocol_answered, secure))
        self.request = None  # not needed any more: an idle connection should cost little
        self.state = OPEN
        self._answered = True
        limits = self.endpoints.admission.limits
        if limits.max_frame_rate:
            self._frame_rate = TokenBucket(limits.max_frame_rate, max(1, limits.frame_burst), self.endpoints.clock.seconds())
        # Told when the client stops reading (see write_frame).
        self.send_buffer = SendBuffer(self.transport, limits=self.endpoints.admission.limits,
                                      overflow=self._send_buffer_overflowed, peer=self.peer)
        self.transport.registerProducer(self.send_buffer, True)
        self.opened()

    def send_text(self, payload: bytes) -> None:
        self.write_frame(text_frame(payload))

    def start_closing(self) -> None:
        """The server's side of the closing handshake: 0xFF 0x00, then wait for the client's."""
        if self.state == AWAITING_KEY3:
            self._abort()
        if self.state != OPEN:
            return
        self.state = CLOSING
        self.send_buffer.write(CLOSING_FRAME, CONTROL)  # behind what waits for the client
        self._deadline = self.endpoints.clock.callLater(CLOSE_TIMEOUT, self._abort)

    def _closing_frame_received(self) -> None:
        if self.state == OPEN:
            self.transport.write(CLOSING_FRAME)
        self.state = CLOSED
        self.transport.loseConnection()

    def _abort(self) -> None:
        self.state = CLOSED
        self.transport.abortConnection()

    def _cancel_deadline(self) -> None:
        self._cancel(self._deadline)
        self._deadline = None

    @staticmethod
    def _cancel(call: Any) -> None:
        if call is not None and call.active():
            call.cancel()

    def connectionLost(self, reason: Any = None) -> None:
        self.state = CLOSED
        self._cancel_deadline()
        self.endpoints.connections.discard(self)
        if self._client_ip is not None:
            self.endpoints.admission.release(self._client_ip)
            self._client_ip = None
        if self._answered:
            self._answered = False
            self.gone()

    # -- a client that does not read: the connection's SendBuffer (sendbuffer.py) ---------------

    send_buffer: SendBuffer

    def write_frame(self, frame: bytes, kind: str = PUSH) -> None:
        """Write ``frame`` if open, through the send buffer (``kind``: see sendbuffer.py)."""
        if self.state == OPEN:
            self.send_buffer.write(frame, kind)

    def _send_buffer_overflowed(self, limit: int) -> None:
        self._abort()  # draft 76 has no close code to say why

    # -- what a route does -------------------------------------------------------------------------

    def opened(self) -> None:
        """The handshake is answered; messages may be sent."""

    def message_received(self, payload: bytes) -> None:
        """A text message (UTF-8 bytes, not checked) arrived while open."""

    def gone(self) -> None:
        """The connection, once open, is closed."""


class Hixie76Echo(Hixie76Connection):
    """``/echo`` over draft 76: every text message back; ``quit`` closes."""

    def message_received(self, payload: bytes) -> None:
        if payload == QUIT:
            self.start_closing()
        else:
            self.send_text(payload)


class Hixie76Wamp(Hixie76Connection):
    """The WAMP path over draft 76: one WAMP-JSON session, a :class:`~wsserver.delivery.Peer`."""

    required_protocol = WAMP_JSON
    wire_format: object = ("hixie76", "json")
    transport_kind = "hixie76"

    def encode(self, message: wamp.Message) -> tuple[Any, str]:
        """The message as one text frame, and its kind for the send buffer (a REPLY: framed as it leaves)."""
        return encoded(message, self.frame_message)

    def frame_message(self, message: wamp.Message) -> bytes:
        payload, _ = self.endpoints.json.serialize(message)
        return text_frame(payload)

    def write_encoded(self, encoded: tuple[Any, str]) -> None:
        frame, kind = encoded
        if kind is not REPLY:
            self.write_frame(frame, kind)
        elif self.state == OPEN:
            self.send_buffer.write_reply(frame, self.frame_message)

    def close_transport(self, reason: CloseReason, detail: str) -> None:
        log.info("closing draft-76 WAMP connection from {peer}: {reason}: {detail}",
                 peer=self.peer, reason=reason.value, detail=detail)
        self.start_closing()

    # -- Hixie76Connection --------------------------------------------------------------------------

    wamp: WampSession | None = None

    def opened(self) -> None:
        endpoints = self.endpoints
        # Draft 76's closing frame carries no code or reason: silence and errors close alike.
        self.wamp = WampSession(self, router=endpoints.router, clock=endpoints.clock,
                                limits=endpoints.admission.limits, name=self.peer,
                                close_for_silence=lambda reason: self.start_closing(),
                                close_for_internal_error=self.start_closing)
        self.wamp.start(self._client_ip, ConnectionInfo("hixie76/json", self.send_buffer))

    def message_received(self, payload: bytes) -> None:
        if self.wamp is not None:
            self.wamp.message_received(payload, False, self.endpoints.json_objects)

    def gone(self) -> None:
        if self.wamp is not None:
            self.wamp.end()


class Hixie76Endpoints:
    """
    What the draft-76 connections share: the routes (``/echo`` and ``/<wamp_path>``), the router,
    the admission rules and limits, the clock, and the open connections (for shutdown).
    """

    def __init__(self, router: Router[Peer], admission: Admission, clock: IReactorTime,
                 wamp_path: str = "ws", echo_path: str = "echo") -> None:  # fmt: skip
        self.router = router
        self.admission = admission
        self.clock = clock
        self.routes: dict[str, type[Hixie76Connection]] = {
            "/" + echo_path.strip("/"): Hixie76Echo,
            "/" + wamp_path.strip("/"): Hixie76Wamp,
        }
        self.connections = OpenConnections()
        self.json = JsonSerializer()
        self.json_objects = JsonObjectSerializer()

    def connection_for(self, request: Request) -> Hixie76Connection | None:
        """A connection for a draft-76 handshake on one of the routes; None: not ours."""
        route = self.routes.get(request.route)
        return route(self, request) if route is not None and request.is_draft76 else None

    def close_all(self, clock: IReactorTime, timeout: float) -> defer.Deferred[None]:
        """GOODBYE to every WAMP session, the closing frame to the rest; aborted after ``timeout``."""
        for connection in self.connections:
            wamp = getattr(connection, "wamp", None)
            if wamp is None or not wamp.say_goodbye():
                connection.start_closing()
        return self.connections.all_gone(clock, timeout, lambda c: c.transport.abortConnection(),
                                         close=lambda c: c.start_closing())


# -- sniffing ---------------------------------------------------------------------------------------


class Hixie76Sniffer(Protocol):
    """A site connection's first bytes: a draft-76 handshake on a route, or the site's (see the top)."""

    factory: Hixie76SniffingFactory

    def connectionMade(self) -> None:
        self.received = b""
        self.deadline = self.factory.clock.callLater(self.factory.timeout, self._to_site)

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if not self._may_be_route():
            self._to_site()
            return
        end = self.received.find(b"\r\n\r\n")
        if end < 0:
            if len(self.received) > MAX_HEAD:
                self._to_site()
            return
        request = parse_head(self.received[: end + 4])
        connection = self.factory.endpoints.connection_for(request) if request is not None else None
        if connection is None:
            self._to_site()
            return
        self.deadline.cancel()
        switch_protocol(self.transport, connection, self.received[end + 4 :])

    def _may_be_route(self) -> bool:
        """Whether the bytes so far can still begin ``GET <route> `` or ``GET <route>?``."""
        for route in self.factory.endpoints.routes:
            start = f"GET {route}".encode("latin-1")
            if start.startswith(self.received) or (
                self.received.startswith(start) and self.received[len(start) : len(start) + 1] in (b" ", b"?")
            ):
                return True
        return False

    def _to_site(self) -> None:
        if self.deadline.active():
            self.deadline.cancel()
        site = protocol_for(self.factory.site, self.transport.getPeer(), self.received)
        switch_protocol(self.transport, site, self.received)

    def connectionLost(self, reason: Any = None) -> None:
        if self.deadline.active():
            self.deadline.cancel()


class Hixie76SniffingFactory(Factory):
    """Wraps the site's factory so that its ports also take draft-76 handshakes (``--hixie76``)."""

    protocol = Hixie76Sniffer
    noisy = False

    def __init__(self, site: Factory, endpoints: Hixie76Endpoints, clock: IReactorTime,
                 timeout: float) -> None:  # fmt: skip
        self.site = site
        self.endpoints = endpoints
        self.clock = clock
        self.timeout = timeout

    def doStart(self) -> None:
        self.site.doStart()
        super().doStart()

    def doStop(self) -> None:
        self.site.doStop()
        super().doStop()
