"""
Hostile and careless clients against the running server: a network fuzz of malformed handshakes,
frames and messages, and a churn of sessions that come and go. Throughout, a well-behaved session
receives every event; afterwards the router holds nothing for the clients that left.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from websockets.sync.client import connect as ws_connect

from tests.e2e import rawws
from tests.e2e.broker_clients import Client
from tests.e2e.conftest import wait_for
from tests.e2e.rawws import rss

HANDSHAKE = (
    "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
).encode()
HELLO = json.dumps(rawws.HELLO).encode()


def frame(payload: bytes, opcode: int = 0x1, fin: bool = True, masked: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:
    """A client frame; every field may be made wrong on purpose."""
    n = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    return header + (b"\0\0\0\0" if masked else b"") + payload


def http_api_request(rng: random.Random) -> bytes:
    """A request to the HTTP API (--http-api) with something wrong, or right, in every part."""
    path = rng.choice(["/publish", "/call", "/publish?x=1", "/call/", "/publish/extra"])
    body = rng.choice([
        lambda: json.dumps({"topic": f"com.example.fuzz.{rng.randrange(9)}", "args": [rng.random()]}).encode(),
        lambda: json.dumps({"procedure": "com.example.nobody", "args": "x", "kwargs": []}).encode(),
        lambda: json.dumps({"topic": rng.choice(["", "com..x", "wamp.session.on_join", 7, None]), "options": {"retain": "x"}}).encode(),
        lambda: b"[" * rng.randrange(1, 5000) + b"]",
        lambda: rng.randbytes(rng.randrange(0, 2000)),
        lambda: json.dumps(rng.choice([[], "s", 1, None, {"topic": "com.x", "colour": 1}])).encode(),
    ])()
    headers = {"Host": "127.0.0.1", "Content-Type": rng.choice(["application/json", "text/plain", "application/json; charset=utf-8", ""])}
    extra = rng.choice([
        {},
        {"Authorization": rng.choice(["Bearer ", "Bearer x", "Basic abc", "Bearer " + "k" * 5000])},
        {"X-Wsserver-Key": "k", "X-Wsserver-Timestamp": rng.choice(["1", "x", "99999999999999"]),
         "X-Wsserver-Nonce": rng.choice(["n", "nonce-nonce", "\u00e9" * 9]), "X-Wsserver-Signature": "zz"},
        {"Origin": "https://elsewhere.example"},
        {"X-Forwarded-For": rng.choice(["203.0.113.9", "127.0.0.1, 10.0.0.1", "garbage", ""])},
    ])
    framing = rng.randrange(4)
    if framing == 0:
        headers["Content-Length"] = str(len(body))
    elif framing == 1:  # a length that lies, or is far over --max-message-size
        headers["Content-Length"] = rng.choice(["-1", "abc", str(2**40), str(len(body) + 10)])
    elif framing == 2:
        headers["Transfer-Encoding"] = "chunked"
        body = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:100], body[100:]) if part) + rng.choice([b"0\r\n\r\n", b"zz\r\n"])
    method = rng.choice(["POST", "POST", "POST", "GET", "PUT", "OPTIONS"])
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in {**headers, **extra}.items())
    return head.encode("utf-8") + b"\r\n" + body


def fuzz_case(rng: random.Random) -> tuple[bool, bytes]:
    """(whether to do the handshake first, the bytes to send)."""
    kind = rng.randrange(13)
    if kind == 0:  # truncated handshake
        return False, HANDSHAKE[: rng.randrange(1, len(HANDSHAKE) - 4)]
    if kind == 1:  # garbage instead of HTTP
        return False, rng.randbytes(rng.randrange(1, 300))
    if kind == 12:  # the HTTP API
        return False, http_api_request(rng)
    cases = [
        lambda: frame(b"x", opcode=rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])),  # reserved opcodes
        lambda: frame(b"\xff\xfe\xc3\x28" + rng.randbytes(8)),  # bad UTF-8 in a text frame
        lambda: frame(b"ping", opcode=0x9, fin=False),  # fragmented control frame
        lambda: frame(b"", length=2**62),  # a huge length header
        lambda: frame(HELLO, masked=False),  # unmasked client frame
        lambda: frame(b"x", opcode=0x0),  # continuation with nothing to continue
        lambda: frame(HELLO, rsv=rng.randrange(1, 8)),  # reserved bits
        lambda: frame(HELLO) + rng.randbytes(rng.randrange(1, 200)),  # random bytes after a message
        lambda: frame(rng.randbytes(rng.randrange(1, 300)), opcode=0x2),  # binary garbage
        lambda: frame(HELLO) + frame(json.dumps([rng.randrange(100), rng.random(), {}]).encode()),  # bad WAMP
    ]
    return True, cases[kind - 2]()


def run_case(port: int, seed: int) -> None:
    rng = random.Random(seed)
    handshake, data = fuzz_case(rng)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if handshake:
            sock.sendall(HANDSHAKE)
            response = b""
            while b"\r\n\r\n" not in response:
                chunk = sock.recv(4096)
                assert chunk, "server closed during a valid handshake"
                response += chunk
            assert response.startswith(b"HTTP/1.1 101")
        send_and_drain(sock, data)


def send_and_drain(sock: socket.socket, data: bytes) -> None:
    """Send ``data``, say we are done, and read until the server closes, whatever it thought of it."""
    try:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError, TimeoutError):
        pass


@pytest.fixture
def watched(start_server: Any) -> Any:
    """The server (with every endpoint), a subscriber, and a publisher thread that publishes 1, 2, 3... until stopped."""
    server = start_server("--http-api")
    watcher = Client(server.ws_url)
    inbox = watcher.subscribe("com.example.heartbeat")
    publisher = Client(server.ws_url)
    stop = threading.Event()
    published: list[int] = []

    def publish() -> None:
        while not stop.is_set():
            published.append(len(published) + 1)
            publisher.publish("com.example.heartbeat", published[-1])
            stop.wait(0.01)

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()

    def finish() -> list[int]:
        stop.set()
        thread.join(10)
        received = [inbox.get()[0][0] for _ in published]
        assert inbox.nothing_within(0.2)
        return received

    yield server, watcher, finish, published
    stop.set()
    watcher.leave()
    publisher.leave()


def test_network_fuzz_leaves_the_server_serving_everyone_else(watched: Any) -> None:
    server, _, finish, published = watched
    seeds = range(2000)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda seed: run_case(server.port, seed), seeds))
    assert finish() == published
    assert server.proc.poll() is None
    assert "Unhandled Error" not in server.log and "Traceback" not in server.log


# -- long-poll (/lp): the same, over HTTP ------------------------------------------------------------

LP_PROTOCOLS = ["wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor", "wamp.2.json.batched", "wamp.2.cbor.batched"]


def lp_fuzz_case(rng: random.Random, transport: str) -> bytes:
    """One raw HTTP request at /lp, wrong in one way or another (``transport``: a live session's id)."""
    def post(path: str, body: bytes, head: str = "") -> bytes:
        return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body

    bodies = [
        lambda: rng.randbytes(rng.randrange(0, 300)),
        lambda: json.dumps([rng.randrange(100), rng.random(), {}]).encode(),
        lambda: HELLO + b"\x1e" * rng.randrange(0, 3),
        lambda: struct.pack("!I", rng.randrange(2**32)) + rng.randbytes(rng.randrange(0, 20)),
        lambda: json.dumps({"protocols": rng.choice([None, 1, [], ["wamp.2.xml"], [rng.random()]])}).encode(),
    ]
    actions = ["send", "receive", "close", "open", rng.randbytes(4).hex()]
    kind = rng.randrange(6)
    if kind == 0:  # garbage at the endpoint's address
        return post(f"/lp/{transport}/{rng.choice(actions)}", rng.choice(bodies)())
    if kind == 1:  # a body for /open
        return post("/lp/open", rng.choice(bodies)())
    if kind == 2:  # a guessed or mangled id
        return post(f"/lp/{rng.randbytes(16).hex()}/{rng.choice(actions)}", rng.choice(bodies)())
    if kind == 3:  # another method, or a preflight from anywhere
        method = rng.choice(["GET", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH"])
        return f"{method} /lp/{transport}/send HTTP/1.1\r\nHost: x\r\nOrigin: http://{rng.random()}\r\n\r\n".encode()
    if kind == 4:  # a body that is not what its Content-Length says, then hang up
        return b"POST /lp/open HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n" + rng.randbytes(100)
    return post(f"/lp/{transport}/send", rng.choice(bodies)(), "Content-Type: application/json\r\n")


def run_lp_case(port: int, seed: int) -> None:
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    connection.request("POST", "/lp/open", json.dumps({"protocols": [rng.choice(LP_PROTOCOLS)]}))
    response = connection.getresponse()
    assert response.status == 200, response.read()
    transport = json.loads(response.read())["transport"]
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        try:
            for _ in range(rng.randrange(1, 4)):
                sock.sendall(lp_fuzz_case(rng, transport))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # the server answers and closes, or holds a /receive until RECEIVE_HOLD
                pass
        except (ConnectionResetError, BrokenPipeError, TimeoutError):
            pass
    connection.request("POST", f"/lp/{transport}/close")  # the session's slot is free again
    assert connection.getresponse().status in (204, 404)
    connection.close()


def test_long_poll_fuzz_leaves_the_server_serving_everyone_else(watched: Any) -> None:
    server, watcher, finish, published = watched
    pid = server.proc.pid
    baseline = rss(pid)
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda seed: run_lp_case(server.port, seed), range(1500)))
    assert finish() == published
    assert server.proc.poll() is None
    assert "Unhandled Error" not in server.log and "Traceback" not in server.log
    growth = rss(pid) - baseline
    assert growth < 32 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB over 1500 long-poll fuzz cases"


def churn(port: int, cycles: int, seed: int) -> None:
    rng = random.Random(seed)
    for n in range(cycles):
        ws = ws_connect(f"ws://127.0.0.1:{port}/ws", subprotocols=["wamp.2.json"])
        ws.send(HELLO.decode())
        ws.recv(timeout=5)
        for topic in {f"com.example.churn.{rng.randrange(50)}", f"com.example.own.{seed}.{n}"}:
            ws.send(json.dumps([32, 1, {}, topic]))
            ws.recv(timeout=5)
        if n % 2:
            ws.close()  # clean WebSocket close, no GOODBYE
        else:
            ws.socket.close()  # the client just vanishes


def test_churn_leaves_no_session_subscription_or_memory_behind(watched: Any) -> None:
    server, watcher, finish, published = watched
    pid = server.proc.pid
    churn(server.port, 200, seed=-1)  # warm up the allocator, caches and imports
    wait_for(lambda: watcher.call("wamp.session.count") == 2, timeout=10)
    baseline = rss(pid)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda seed: churn(server.port, 500, seed), range(4)))
    wait_for(lambda: watcher.call("wamp.session.count") == 2, timeout=10)
    subscriptions = watcher.call("wamp.subscription.list")
    assert subscriptions["exact"] == [watcher_subscription(watcher)]
    assert subscriptions["prefix"] == [] and subscriptions["wildcard"] == []
    growth = rss(pid) - baseline
    assert growth < 8 * 1024 * 1024, f"RSS grew by {growth / 2**20:.1f} MiB over 2000 sessions"
    assert finish() == published


def watcher_subscription(watcher: Client) -> int:
    return int(watcher.call("wamp.subscription.lookup", "com.example.heartbeat"))



# -- the event streams: /sse and /stream -----------------------------------------------------------


def stream_request(rng: random.Random) -> bytes:
    """A GET of /sse or a WebSocket handshake of /stream, with something wrong, or right, in every part."""
    topics = [rng.choice(["com.example.heartbeat", "com.example.", "com..x", "", "wamp.session.on_join", " x",
                          "%00%ff", "com.example.fuzz." + "a" * rng.randrange(1, 3000), "#", "é.ü"])
              for _ in range(rng.choice([0, 1, 2, 70]))]
    params = [f"topic={topic}" for topic in topics]
    params += rng.choice([[], ["match=prefix"], ["match=wildcard"], ["match=regex"], ["match=prefix", "match=exact"],
                          ["realm=nope"], ["realm=realm1"], ["realm="], ["since=1"], ["topic"], ["&&=&"]])
    rng.shuffle(params)
    target = rng.choice(["/sse", "/stream"]) + ("?" + "&".join(params) if params or rng.random() < 0.5 else "")
    headers = ["Host: 127.0.0.1"]
    if target.startswith("/stream") and rng.random() < 0.8:
        headers += ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                    f"Sec-WebSocket-Version: {rng.choice(['13', '8', 'x'])}"]
    headers += rng.choice([
        [],
        [f"Authorization: {rng.choice(['Bearer ', 'Bearer x', 'Basic !!', 'Basic YWxpY2U6eA==', 'Digest x', 'Basic ' + 'Q' * 5000])}"],
        ["Origin: https://elsewhere.example"],
        ["Last-Event-ID: " + rng.choice(["1", "x" * 2000])],
        ["X-Forwarded-For: garbage"],
    ])
    method = rng.choice(["GET", "GET", "GET", "POST", "HEAD", "OPTIONS"])
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
    after = rng.choice([
        lambda: b"",
        lambda: rng.randbytes(rng.randrange(1, 300)),  # garbage pipelined after the request
        lambda: frame(b"hello") + frame(b"x", opcode=rng.choice([3, 11])),  # frames to a stream that only sends
        lambda: b"GET /sse?topic=com.example.heartbeat HTTP/1.1\r\nHost: x\r\n\r\n",  # a second request
    ])()
    return head.encode("utf-8", "surrogateescape") + after


def run_stream_case(port: int, seed: int) -> None:
    rng = random.Random(seed)
    data = stream_request(rng)
    if rng.random() < 0.1:
        data = data[: rng.randrange(1, len(data))]  # cut short
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        send_and_drain(sock, data)


def test_network_fuzz_of_the_event_streams_leaves_the_server_serving_everyone_else(watched: Any) -> None:
    server, watcher, finish, published = watched
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda seed: run_stream_case(server.port, seed), range(1000)))
    wait_for(lambda: watcher.call("wamp.session.count") == 2, timeout=10)  # no stream session left behind
    assert finish() == published
    assert server.proc.poll() is None
    assert "Unhandled Error" not in server.log and "Traceback" not in server.log
