"""
The event streams without WAMP against ``twistd -n wsserver``: ``curl -N`` of ``/sse`` and a plain
WebSocket on ``/stream`` receive the demo ticker; bad queries, refused topics and ``/ws`` without a
subprotocol get their status with the reason as text; a client of either stream that stops reading
is bounded like a stalled WebSocket (hostile harness); shutdown ends both streams.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.prerequisites import unavailable
from tests.e2e.rawws import open_raw, raw_session, read_close

MEMORY_BOUND = 64 * 2**20
FLOOD_TOPIC = "com.example.flood"
EVENT_SIZE = 64 * 1024
#: Events published at a client that never reads: 32 MiB, 32 x the default --max-send-buffer.
FLOOD_EVENTS = 512
#: A realm whose anonymous role may subscribe under com.example. only.
CONFIG = """
[realms.realm1]
anonymous = "public"

[realms.realm1.roles.public]
permissions = [
  { uri = "com.example.", match = "prefix", allow = ["publish", "subscribe"] },
  { uri = "com.example.internal.", match = "prefix", allow = [] },
]
"""


def curl_path() -> str:
    path = shutil.which("curl")
    if path is None:
        unavailable("curl is not installed (Debian: apt-get install curl)")
    return path


def curl(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run([curl_path(), "-sS", *args], capture_output=True, text=True, timeout=timeout)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if "event" in fields and "data" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


def test_curl_n_of_sse_receives_the_demo_ticker(start_server: Any) -> None:
    server = start_server("--demo")
    # -m: curl stops after 3 s; the ticker publishes at random intervals under a second.
    result = curl("-N", "-i", "-m", "3", f"{server.http_url}/sse?topic=com.example.ticker&topic=com.example.clock")
    head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 200") and "Content-Type: text/event-stream; charset=utf-8" in head
    assert "Cache-Control: no-store" in head and "X-Accel-Buffering: no" in head
    events = sse_events(body)
    ticker = [data["args"][0] for topic, data in events if topic == "com.example.ticker"]
    assert len(ticker) >= 2 and ticker == sorted(ticker) and all(isinstance(v, int) for v in ticker)
    assert any(topic == "com.example.clock" for topic, _ in events)
    assert all(data["topic"] == topic and data["kwargs"] == {} for topic, data in events)


def test_a_plain_websocket_on_stream_receives_the_demo_ticker(start_server: Any) -> None:
    server = start_server("--demo")
    with ws_connect(f"ws://127.0.0.1:{server.port}/stream?topic=com.example.ticker", open_timeout=5) as ws:
        assert ws.subprotocol is None
        # --demo keeps history for the ticker: the stream begins with its position, {"id": ...}.
        assert set(json.loads(ws.recv(timeout=5))) == {"id"}
        values = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
    assert [v["topic"] for v in values] == ["com.example.ticker"] * 3
    assert values[0]["args"][0] < values[1]["args"][0] < values[2]["args"][0]


def test_events_from_a_wamp_publisher_reach_both_streams_in_order(server: Any) -> None:
    topic = "com.example.mixed"
    sse = subprocess.Popen([curl_path(), "-sS", "-N", "-m", "10", f"{server.http_url}/sse?topic={topic}"],
                           stdout=subprocess.PIPE, text=True)
    assert sse.stdout is not None
    assert sse.stdout.readline().startswith(": subscribed")  # subscribed: what follows is delivered
    with ws_connect(f"ws://127.0.0.1:{server.port}/stream?topic={topic}", open_timeout=5) as stream, \
            raw_session(server.ws_url) as publisher:
        for n in range(20):
            publisher.send(json.dumps([16, n + 1, {"acknowledge": True}, topic, [n, "é\n\u2028"], {"n": n}]))
            assert json.loads(publisher.recv(timeout=5))[0] == 17
        received = [json.loads(stream.recv(timeout=5)) for _ in range(20)]
    assert received == [{"topic": topic, "args": [n, "é\n\u2028"], "kwargs": {"n": n}} for n in range(20)]
    lines = []
    while len(sse_events("".join(lines))) < 20:
        line = sse.stdout.readline()
        assert line, "the SSE stream ended early"
        lines.append(line)
    sse.kill()
    sse.wait()
    assert [data for _, data in sse_events("".join(lines))] == received


# -- refusals --------------------------------------------------------------------------------------


def http_status(url: str | urllib.request.Request) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, ""
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def ws_status(url: str) -> tuple[int, str]:
    try:
        with ws_connect(url, open_timeout=5):
            return 101, ""
    except InvalidStatus as refused:
        return refused.response.status_code, refused.response.body.decode()


REFUSALS = {
    "no topic": ("", 400, "no topic"),
    "an invalid URI": ("?topic=com.example..x", 400, "invalid exact pattern 'com.example..x'"),
    "an unknown match": ("?topic=com.example.x&match=regex", 400, "invalid value regex for 'match'"),
    "a topic the role may not subscribe": ("?topic=com.example.internal.x", 403,
                                           "role 'public' may not subscribe 'com.example.internal.x'"),
    "an unknown realm": ("?topic=com.example.x&realm=nope", 404, "no realm 'nope'"),
}


@pytest.mark.parametrize("query, status, reason", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refused_stream_gets_its_status_and_the_reason(start_server: Any, tmp_path: Path, query: str, status: int,
                                                         reason: str) -> None:
    config = tmp_path / "wsserver.toml"
    config.write_text(CONFIG)
    server = start_server("--config", str(config))
    assert http_status(f"{server.http_url}/sse{query}") == (status, ANY_WITH(reason))
    assert ws_status(f"ws://127.0.0.1:{server.port}/stream{query}") == (status, ANY_WITH(reason))


class ANY_WITH(str):
    """Equal to any text that contains it."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and str(self) in other

    __hash__ = str.__hash__


BEARER = "stream-test-bearer-key"
#: CONFIG, and a key (the HTTP API's, --http-api) whose role may publish and read com.example.internal.
CONFIG_WITH_KEY = CONFIG + f"""
[realms.realm1.roles.insider]
permissions = [{{ uri = "com.example.", match = "prefix", allow = ["publish", "subscribe"] }}]

[realms.realm1.http-keys.dashboard]
role = "insider"
key = "sha256:{hashlib.sha256(BEARER.encode()).hexdigest()}"
"""


def test_a_bearer_key_opens_a_stream_with_its_role(start_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "wsserver.toml"
    config.write_text(CONFIG_WITH_KEY)
    server = start_server("--config", str(config), "--http-api")
    topic = "com.example.internal.x"
    with ws_connect(f"ws://127.0.0.1:{server.port}/stream?topic={topic}", open_timeout=5,
                    additional_headers={"Authorization": f"Bearer {BEARER}"}) as stream:
        sse = subprocess.Popen([curl_path(), "-sS", "-N", "-m", "10", "-H", f"Authorization: Bearer {BEARER}",
                                f"{server.http_url}/sse?topic={topic}"], stdout=subprocess.PIPE, text=True)
        assert sse.stdout is not None
        assert sse.stdout.readline().startswith(": subscribed")
        # The same key publishes through the HTTP API (the anonymous role may not publish there).
        publish = urllib.request.Request(f"{server.http_url}/publish", data=json.dumps({"topic": topic, "args": [1]}).encode(),
                                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {BEARER}"})
        assert http_status(publish)[0] == 200
        assert json.loads(stream.recv(timeout=5)) == {"topic": topic, "args": [1], "kwargs": {}}
        lines = [sse.stdout.readline() for _ in range(3)]
        sse.kill()
        sse.wait()
    assert sse_events("".join(lines)) == [(topic, {"topic": topic, "args": [1], "kwargs": {}})]
    # Without the key, the anonymous role may not; with a wrong one, 401.
    assert http_status(f"{server.http_url}/sse?topic={topic}")[0] == 403
    wrong = urllib.request.Request(f"{server.http_url}/sse?topic={topic}", headers={"Authorization": "Bearer nope"})
    assert http_status(wrong)[0] == 401
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(f"ws://127.0.0.1:{server.port}/stream?topic={topic}", open_timeout=5,
                   additional_headers={"Authorization": "Bearer nope"})
    assert refused.value.response.status_code == 401


def test_ws_without_a_wamp_subprotocol_says_why_and_where_to_go(server: Any) -> None:
    status, body = ws_status(server.ws_url)
    assert status == 400
    assert "/stream?topic=URI" in body and "/sse?topic=URI" in body  # was: an empty body
    assert all(subprotocol in body for subprotocol in ("wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor"))


@pytest.mark.parametrize("path", ["/ws", "/echo", "/stream"])
def test_a_plain_get_of_a_websocket_endpoint_is_426_and_redirects_nowhere(server: Any, path: str) -> None:
    # Was: Autobahn's status page, and with ?redirect= a 303 to any URL (an open redirect).
    result = curl("-i", f"{server.http_url}{path}?topic=com.example.x&redirect=https%3A%2F%2Fevil.example%2F&after=x")
    head, _, body = result.stdout.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 426 ") and "Location" not in head and "evil" not in result.stdout
    assert "Upgrade" in body and "Traceback" not in server.log


# -- clients that stop reading ---------------------------------------------------------------------


def stuck_socket(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # and nothing read
    sock.connect(("127.0.0.1", port))
    return sock


def open_sse(port: int, sock: socket.socket, topic: str = FLOOD_TOPIC) -> socket.socket:
    sock.sendall(f"GET /sse?topic={topic} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = b""
    while b"subscribed" not in head:
        chunk = sock.recv(1)
        assert chunk, head
        head += chunk
    return sock


def publish_flood(ws_url: str) -> None:
    padding = "x" * EVENT_SIZE
    with raw_session(ws_url) as publisher:
        for n in range(FLOOD_EVENTS):
            publisher.send(json.dumps([16, n + 1, {"acknowledge": True}, FLOOD_TOPIC, [n, padding]]))
            assert json.loads(publisher.recv(timeout=10))[0] == 17


def read_until_closed(sock: socket.socket, timeout: float = 20.0) -> str:
    """Read everything until the server ends the connection: "reset" or "closed" (or "open" on timeout)."""
    sock.settimeout(1.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if not sock.recv(1 << 20):
                return "closed"
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            continue
    return "open"


STALLED = 10


def test_sse_clients_that_stop_reading_are_cut_off_and_cost_no_one_else(start_server: Any) -> None:
    server = start_server()
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        stuck = [open_sse(server.port, stuck_socket(server.port)) for _ in range(STALLED)]
        publish_flood(server.ws_url)
        ends = [read_until_closed(sock) for sock in stuck]
        for sock in stuck:
            sock.close()
    assert ends == ["reset"] * STALLED  # aborted: what waited for each is freed at once
    assert server.log.count("is not reading: disconnecting it") == STALLED
    bystander.check()
    memory.check(MEMORY_BOUND)


def test_with_the_drop_policy_a_stalled_sse_client_holds_the_send_buffer_at_most(start_server: Any) -> None:
    server = start_server("--slow-consumer", "drop")
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        stuck = [open_sse(server.port, stuck_socket(server.port)) for _ in range(STALLED)]
        publish_flood(server.ws_url)
        # Each still open, its events dropped; what it reads now is what waited for it.
        waited = []
        for sock in stuck:
            sock.settimeout(0.5)
            received = b""
            try:
                while chunk := sock.recv(1 << 20):
                    received += chunk
            except TimeoutError:
                pass
            waited.append(received.count(b"event: "))
            sock.close()
    assert all(0 < count < FLOOD_EVENTS // 4 for count in waited), waited
    bystander.check()
    memory.check(MEMORY_BOUND)


def test_stream_clients_that_stop_reading_are_closed_1008_and_cost_no_one_else(start_server: Any) -> None:
    server = start_server()
    with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        stuck = [open_raw(server.port, f"/stream?topic={FLOOD_TOPIC}", None, sock=stuck_socket(server.port))
                 for _ in range(STALLED)]
        publish_flood(server.ws_url)
        closes = [read_close(sock, timeout=20) for sock in stuck]
        for sock in stuck:
            sock.close()
    # Each connection ended: 1008 "not reading", or, once Autobahn's close handshake timed out
    # before the attacker read that far, a reset (as on /ws, test_slow_consumer.py).
    assert all(code == 1008 and "not reading" in reason or code is None and "reset" in reason
               for code, reason in closes), closes
    assert server.log.count("is not reading: disconnecting it") == STALLED
    bystander.check()
    memory.check(MEMORY_BOUND)


def test_shutdown_ends_sse_responses_and_closes_streams_1001(server: Any) -> None:
    sse = subprocess.Popen([curl_path(), "-sS", "-N", "-m", "20", f"{server.http_url}/sse?topic=com.example.x"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sse.stdout is not None and sse.stdout.readline().startswith(": subscribed")
    stream = open_raw(server.port, "/stream?topic=com.example.x", None)
    started = time.monotonic()
    server.stop()
    assert read_close(stream)[0] == 1001
    _, errors = sse.communicate(timeout=10)
    assert sse.returncode == 0, errors  # the response ended properly (curl exits 18 or 28 otherwise)
    assert time.monotonic() - started < 10
