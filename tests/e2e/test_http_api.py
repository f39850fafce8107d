"""
The HTTP API (``--http-api``: POST /publish and POST /call) against ``twistd -n wsserver``: curl
publishes to an AutobahnJS subscriber, autobahn-python answers calls, and every refusal gets its
status (a key, a signature, a replayed nonce, a stale timestamp, an oversized or malformed body, a
role without the permission), while a bystander keeps its events and the server its memory.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import selectors
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer

from tests.e2e.broker_clients import Client
from tests.e2e.conftest import wait_for
from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.prerequisites import unavailable
from tests.e2e.test_node_autobahnjs import NodeProcess, run_node  # noqa: F401 (a fixture)

BEARER_KEY = "backend-" + "k" * 32
READER_KEY = "reader-" + "r" * 32
SECRET = "s3cret-" + "x" * 32
CONFIG = f"""\
[realms.realm1]
anonymous = "public"

[realms.realm1.roles.public]
permissions = [{{ uri = "com.example.", match = "prefix", allow = ["subscribe"] }}]

[realms.realm1.roles.backend]
permissions = [
  {{ uri = "com.example.", match = "prefix", allow = ["publish", "subscribe", "call"] }},
  {{ uri = "com.example.private.", match = "prefix", allow = [] }},
]

[realms.realm1.http-keys.backend]
role = "backend"
key = "sha256:{hashlib.sha256(BEARER_KEY.encode()).hexdigest()}"

[realms.realm1.http-keys.reader]
role = "public"
key = "sha256:{hashlib.sha256(READER_KEY.encode()).hexdigest()}"

[realms.realm1.http-keys.signer]
role = "backend"
secret = "{SECRET}"
"""


def post(server: Any, path: str, body: Any, headers: dict[str, str] | None = None,
         raw: bytes | None = None, method: str = "POST") -> tuple[int, Any]:
    """POST ``body`` as JSON (or ``raw`` bytes); return the status and the decoded JSON answer."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{server.http_url}{path}", data=data if method == "POST" else None, method=method,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def signed(body: bytes, secret: str = SECRET, name: str = "signer", timestamp: int | None = None,
           nonce: str | None = None) -> dict[str, str]:
    """The signature headers: HMAC-SHA256(secret, timestamp "\\n" nonce "\\n" body), hex."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    nonce = nonce or secrets.token_hex(16)
    signature = hmac.new(secret.encode(), f"{timestamp}\n{nonce}\n".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Wsserver-Key": name, "X-Wsserver-Timestamp": str(timestamp), "X-Wsserver-Nonce": nonce,
            "X-Wsserver-Signature": signature}


def require(*tools: str) -> None:
    """Skip (fail in CI) without the command-line tools an example needs; .ci/run installs them."""
    for tool in tools:
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed")


@pytest.fixture
def keyed(start_server: Any, tmp_path: Path) -> Any:
    """A server with --http-api and the keys of CONFIG."""
    path = tmp_path / "wsserver.toml"
    path.write_text(CONFIG)
    return start_server("--http-api", "--config", str(path), "--max-message-size", "65536",
                        "--allowed-origin", "https://app.example")


@pytest.fixture
def open_api(start_server: Any) -> Any:
    """A server with --http-api and no keys: loopback only."""
    return start_server("--http-api", "--http-call-timeout", "1")


def test_curl_publish_reaches_an_autobahnjs_subscriber(open_api: Any, run_node: Callable[..., NodeProcess]) -> None:
    require("curl")
    startup = "HTTP API at /publish and /call: no keys configured, accepting requests from loopback addresses only"
    wait_for(lambda: startup in open_api.log)
    node = run_node(open_api.ws_url, "com.example.http")
    assert node.next_line(timeout=20) == "READY"
    body = json.dumps({"topic": "com.example.http", "args": ["from curl", 1], "kwargs": {"k": "v"}})
    answer = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "-d", body,
         f"{open_api.http_url}/publish"],
        capture_output=True, text=True, timeout=20, check=True,
    ).stdout
    payload, status = answer.rsplit("\n", 1)
    assert status == "200" and isinstance(json.loads(payload)["id"], int)
    assert json.loads(node.next_line(timeout=10)) == ["from curl", 1]


def test_without_the_option_there_is_no_http_api(server: Any) -> None:
    request = urllib.request.Request(f"{server.http_url}/publish", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code in (404, 405)
    assert "HTTP API" not in server.log


def test_keys_signatures_and_every_refusal_get_their_status(keyed: Any) -> None:
    body = {"topic": "com.example.news", "args": [1]}
    raw = json.dumps(body).encode()
    bearer = {"Authorization": f"Bearer {BEARER_KEY}"}
    assert post(keyed, "/publish", body, bearer)[0] == 200
    # Keys are configured: loopback alone is not enough, and a wrong key is refused.
    assert post(keyed, "/publish", body)[0] == 401
    assert post(keyed, "/publish", body, {"Authorization": "Bearer not-a-key"})[0] == 401
    # A signed request, and the same one again (its nonce is spent).
    headers = signed(raw)
    assert post(keyed, "/publish", None, headers, raw=raw)[0] == 200
    status, answer = post(keyed, "/publish", None, headers, raw=raw)
    assert (status, answer["error"]) == (401, "wsserver.error.replayed_nonce")
    status, answer = post(keyed, "/publish", None, signed(raw, timestamp=int(time.time()) - 3600), raw=raw)
    assert (status, answer["error"]) == (401, "wsserver.error.stale_timestamp")
    assert post(keyed, "/publish", None, signed(raw, secret="wrong"), raw=raw)[0] == 401
    assert post(keyed, "/publish", None, signed(raw, name="nobody"), raw=raw)[0] == 401
    assert post(keyed, "/publish", None, signed(raw + b" "), raw=raw)[0] == 401  # signed another body
    # Bodies: too big, not JSON, not the right shape.
    status, answer = post(keyed, "/publish", None, bearer, raw=json.dumps({"topic": "com.example.x", "args": ["x" * 70000]}).encode())
    assert (status, answer["error"]) == (413, "wsserver.error.payload_too_large")
    status, answer = post(keyed, "/publish", None, bearer, raw=b'{"topic": ')
    assert status == 400 and "Expecting value" in answer["args"][0]
    assert post(keyed, "/publish", ["com.example.x"], bearer)[0] == 400
    assert post(keyed, "/publish", {"topic": "com.example.x", "colour": "red"}, bearer)[0] == 400
    assert post(keyed, "/publish", {"topic": "com.example.x", "args": "not a list"}, bearer)[0] == 400
    status, answer = post(keyed, "/publish", {"topic": "com..bad"}, bearer)
    assert (status, answer["error"]) == (400, "wamp.error.invalid_uri")
    # Permissions: the key's role decides.
    status, answer = post(keyed, "/publish", {"topic": "com.example.private.x"}, bearer)
    assert (status, answer["error"]) == (403, "wamp.error.not_authorized")
    status, answer = post(keyed, "/publish", body, {"Authorization": f"Bearer {READER_KEY}"})
    assert (status, answer["error"]) == (403, "wamp.error.not_authorized")
    assert "may not publish" in answer["args"][0]
    status, answer = post(keyed, "/call", {"procedure": "com.example.add"}, {"Authorization": f"Bearer {READER_KEY}"})
    assert (status, answer["error"]) == (403, "wamp.error.not_authorized")
    # Realms: a key serves its own realm only.
    status, answer = post(keyed, "/publish", {**body, "realm": "realm2"}, bearer)
    assert status == 403
    status, answer = post(keyed, "/call", {"procedure": "com.example.nobody"}, bearer)
    assert (status, answer["error"]) == (404, "wamp.error.no_such_procedure")
    # The origin check of /ws, the content type a browser cannot send without asking, POST only.
    assert post(keyed, "/publish", body, {**bearer, "Origin": "https://evil.example"})[0] == 403
    assert post(keyed, "/publish", body, {**bearer, "Origin": "https://app.example"})[0] == 200
    assert post(keyed, "/publish", body, {**bearer, "Content-Type": "text/plain"})[0] == 415
    assert post(keyed, "/publish", None, bearer, method="GET")[0] == 405
    assert "Traceback" not in keyed.log


def test_call_reaches_an_autobahn_python_callee_and_errors_map_to_statuses(open_api: Any) -> None:
    with Client(open_api.ws_url) as callee:
        callee.register("com.example.add", lambda a, b: a + b)

        def refuse() -> None:
            raise ApplicationError("com.example.error.refused", "not today", reason="test")

        callee.register("com.example.refuse", refuse)
        invoked = threading.Event()

        def never_answers() -> defer.Deferred[None]:
            invoked.set()
            return defer.Deferred()

        callee.register("com.example.slow", never_answers)
        assert post(open_api, "/call", {"procedure": "com.example.add", "args": [2, 3]}) == (200, {"args": [5], "kwargs": {}})
        status, answer = post(open_api, "/call", {"procedure": "com.example.refuse"})
        assert (status, answer) == (422, {"error": "com.example.error.refused", "args": ["not today"], "kwargs": {"reason": "test"}})
        status, answer = post(open_api, "/call", {"procedure": "com.example.nobody"})
        assert (status, answer["error"]) == (404, "wamp.error.no_such_procedure")
        status, answer = post(open_api, "/call", {"procedure": "com.example.slow"})
        assert (status, answer["error"]) == (504, "wsserver.error.timeout")
        assert invoked.is_set()
        # The timed-out call is forgotten: the router holds no call of the bridge's in flight.
        assert post(open_api, "/call", {"procedure": "com.example.add", "args": [1, 1]})[1]["args"] == [2]
        status, answer = post(open_api, "/call", {"procedure": "wamp.session.count"})
        assert status == 200 and answer["args"][0] >= 1
    status, answer = post(open_api, "/publish", {"topic": "com.example.x", "realm": "nowhere"})
    assert (status, answer["error"]) == (404, "wamp.error.no_such_realm")
    assert "Traceback" not in open_api.log


def test_a_key_over_its_publish_rate_gets_429(start_server: Any) -> None:
    server = start_server("--http-api", "--max-publish-rate", "0.001", "--publish-burst", "2")
    statuses = [post(server, "/publish", {"topic": "com.example.x"})[0] for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert post(server, "/publish", {"topic": "com.example.x"})[1]["error"] == "wsserver.error.publish_rate_exceeded"


def test_a_request_from_another_address_is_refused_without_keys(open_api: Any) -> None:
    # Through a proxy (X-Forwarded-For names someone else), the request is not from loopback.
    status, answer = post(open_api, "/publish", {"topic": "com.example.x"}, {"X-Forwarded-For": "203.0.113.7"})
    assert (status, answer["error"]) == (403, "wamp.error.not_authorized")


# -- a flood of big and malformed bodies --------------------------------------------------------


def refused_while_sending(port: int, head: bytes, chunk: bytes, count: int) -> bytes:
    """Send ``head``, then ``chunk`` ``count`` times unless the server closes first; return its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        answer = b""
        try:
            for _ in range(count):
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while part := sock.recv(65536):
                answer += part
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


def oversized(port: int, declared: int) -> bytes:
    """Declare a body of ``declared`` bytes, then send it (the server must refuse without reading it all)."""
    head = (f"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {declared}\r\n\r\n").encode()
    return refused_while_sending(port, head, b"[" * 65536, declared // 65536)


def chunked(port: int, total: int) -> bytes:
    """A chunked body that never says how long it is."""
    head = b"POST /call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    return refused_while_sending(port, head, b"10000\r\n" + b"{" * 65536 + b"\r\n", total // 65536)


def test_a_flood_of_big_and_malformed_bodies_is_refused_and_costs_no_memory(open_api: Any) -> None:
    port = open_api.port

    def attack(n: int) -> int:
        kind = n % 3
        if kind == 0:
            answer = oversized(port, 32 * 2**20)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        elif kind == 1:
            answer = chunked(port, 8 * 2**20)
            assert answer.startswith(b"HTTP/1.1 413"), answer[:100]
        else:
            status, body = post(open_api, "/publish", None, raw=b'{"topic": "com.example.x", "args": [' + b"1," * 200_000)
            assert status == 400, body
        return kind

    with Bystander(open_api.ws_url) as bystander, MemoryWatch(open_api.proc.pid) as memory:
        with ThreadPoolExecutor(max_workers=6) as pool:
            kinds = list(pool.map(attack, range(60)))
    assert sorted(set(kinds)) == [0, 1, 2]
    bystander.check()
    memory.check(64 * 2**20)
    assert "Traceback" not in open_api.log


def test_calls_held_open_are_bounded_and_freed_when_their_clients_leave(start_server: Any) -> None:
    """1100 callers wait on a callee that never answers: 1000 wait (the bound), 100 get 503 at once."""
    # All 1100 come from 127.0.0.1: more than --max-connections-per-ip allows one address by default.
    server = start_server("--http-api", "--http-call-timeout", "60", "--max-connections-per-ip", "2000")
    body = json.dumps({"procedure": "com.example.never"}).encode()
    request = (f"POST /call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with Client(server.ws_url) as callee, Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        callee.register("com.example.never", lambda: defer.Deferred())
        selector = selectors.DefaultSelector()
        callers = []
        for n in range(1100):
            if n % 20 == 0:
                # Paced, so that the listen backlog (50) never overflows: the kernel would then
                # delay our packets by seconds, and this test is about the server, not the backlog.
                time.sleep(0.05)
            callers.append(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            callers[-1].sendall(request)
            selector.register(callers[-1], selectors.EVENT_READ)
        answered: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(answered) < 100 and time.monotonic() < deadline:
            for ready, _ in selector.select(timeout=1):
                answered.append(ready.fileobj.recv(4096))  # type: ignore[union-attr]
                selector.unregister(ready.fileobj)
        assert len(answered) == 100 and all(a.startswith(b"HTTP/1.1 503") for a in answered), answered[:1]
        assert selector.select(timeout=0.5) == []  # the other 1000 wait for the callee
        for caller in callers:
            caller.close()
        # Their calls were forgotten with them: there is room for new callers.
        wait_for(lambda: post(server, "/call", {"procedure": "com.example.nobody"})[0] == 404)
        status, answer = post(server, "/call", {"procedure": "wamp.session.count"})
        assert status == 200
    bystander.check()
    memory.check(64 * 2**20)
    assert "Traceback" not in server.log
