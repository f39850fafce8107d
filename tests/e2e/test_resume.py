"""
Never miss an event, end to end against ``twistd -n wsserver``: positions on EVENTs, the
autobahn-python helper (wsserver/client.py) across a dropped connection and a restart,
``wsserver.history.since``'s bad input, and SSE / ``/stream`` resume with curl-free HTTP.
"""

from __future__ import annotations

import http.client
import json
import threading
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from twisted.internet import defer
from websockets.sync.client import connect as ws_connect

from tests.e2e.hostile import Bystander, MemoryWatch
from tests.e2e.rawws import exchange, raw_session
from tests.e2e.wampclient import WampClient
from wsserver.client import Position, Resumption, resume

TOPIC = "com.example.feed"


class Collected:
    """What a resumed handler was given, in order (called on the reactor thread)."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.more = threading.Condition()

    def __call__(self, n: Any, **kwargs: Any) -> None:
        with self.more:
            self.events.append(n)
            self.more.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Any]:
        with self.more:
            assert self.more.wait_for(lambda: len(self.events) >= count, timeout), self.events
            return list(self.events)


def resumed(client: WampClient, handler: Collected, position: Position | None) -> Resumption:
    return client._call(lambda: defer.ensureDeferred(resume(client.session, TOPIC, handler, position)))  # type: ignore[no-any-return]


def test_a_python_subscriber_away_while_50_events_are_published_gets_exactly_those_then_a_restart_says_not_recovered(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--history-size", "100")
    with WampClient(server.ws_url) as publisher:
        first = Collected()
        subscriber = WampClient(server.ws_url)
        state = resumed(subscriber, first, None)
        assert state.recovered is False and state.position is None  # nothing to recover yet
        for n in range(5):
            publisher.publish(TOPIC, n)
        assert first.wait_for(5) == [0, 1, 2, 3, 4]
        position = state.position
        assert position is not None and position.seq == 5
        subscriber.leave()

        for n in range(5, 55):
            publisher.publish(TOPIC, n)

        again = Collected()
        subscriber = WampClient(server.ws_url)
        state = resumed(subscriber, again, position)
        assert state.recovered is True and state.missed == 50
        assert again.events == list(range(5, 55))  # exactly the 50, in order, no duplicates
        publisher.publish(TOPIC, 55)
        assert again.wait_for(51)[-1] == 55 and len(again.events) == 51
        assert state.position == Position(position.epoch, 56)
        subscriber.leave()

    server.stop()
    server.start()
    with WampClient(server.ws_url) as publisher, WampClient(server.ws_url) as subscriber:
        publisher.publish(TOPIC, "after the restart")
        after = Collected()
        state = resumed(subscriber, after, Position(position.epoch, 56))
        assert state.recovered is False and after.events == []
        assert state.position is not None and state.position.epoch != position.epoch and state.position.seq == 1


def test_events_carry_their_position_through_prefix_and_wildcard_subscriptions(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--history-size", "10")
    with raw_session(server.ws_url) as ws, WampClient(server.ws_url) as publisher:
        assert exchange(ws, [32, 1, {"match": "prefix"}, "com.example."])[0] == 33
        assert exchange(ws, [32, 2, {"match": "wildcard"}, "com..feed"])[0] == 33
        publisher.publish(TOPIC, 1)
        events = [json.loads(ws.recv(timeout=5)) for _ in range(2)]
        assert {e[3]["_seq"] for e in events} == {1} and len({e[3]["_epoch"] for e in events}) == 1
        assert all(e[3]["topic"] == TOPIC for e in events)


BAD_CALLS = [
    ([TOPIC, "e", -1], "wamp.error.invalid_argument"),
    ([TOPIC, "e", 1.5], "wamp.error.invalid_argument"),
    ([TOPIC, "e", "7"], "wamp.error.invalid_argument"),
    ([TOPIC, None, 0], "wamp.error.invalid_argument"),
    (["com..x", "e", 0], "wamp.error.invalid_argument"),
    ([TOPIC, "e", 2**62], "wamp.error.invalid_argument"),
    ([TOPIC], "wamp.error.invalid_argument"),
]


def test_bad_input_to_since_is_answered_and_the_session_kept_while_a_bystander_is_unharmed(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--history-size", "1000", "--max-store-bytes", str(16 * 2**20))
    with WampClient(server.ws_url) as publisher:
        epoch = None
        with raw_session(server.ws_url) as ws:
            assert exchange(ws, [32, 1, {}, TOPIC])[0] == 33
            publisher.publish(TOPIC, "x" * 1000)
            epoch = json.loads(ws.recv(timeout=5))[3]["_epoch"]
        with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
            for n in range(2000):  # history to resume from, as large as the store takes
                publisher.publish(TOPIC, "x" * 1000, acknowledge=n % 100 == 99)  # the last acknowledged: all are kept
            with raw_session(server.ws_url) as ws:
                request = 10
                for _ in range(20):
                    for args, error in BAD_CALLS:
                        request += 1
                        reply = exchange(ws, [48, request, {}, "wsserver.history.since", args])
                        assert reply[0] == 8 and reply[4] == error, reply
                    request += 1
                    answer = exchange(ws, [48, request, {}, "wsserver.history.since", [TOPIC, "another-life", 3]])
                    assert answer[0] == 50 and answer[4]["recovered"] is False and answer[4]["events"] == []
                    request += 1
                    future = exchange(ws, [48, request, {}, "wsserver.history.since", [TOPIC, epoch, 10**9]])
                    assert future[0] == 8 and "past the newest" in future[5][0]
                    request += 1
                    unknown = exchange(ws, [48, request, {}, "wsserver.history.since", ["com.example.never", "", 0]])
                    assert unknown[4] == {"recovered": False, "epoch": "", "top": 0, "events": []}
                    request += 1
                    # Kept, but more than --max-resume-events (300): never a partial list.
                    many = exchange(ws, [48, request, {}, "wsserver.history.since", [TOPIC, epoch, 2001 - 301]])
                    assert many[4]["recovered"] is False and many[4]["events"] == [], (many[4]["top"], len(many[4]["events"]))
                    request += 1
                    most = exchange(ws, [48, request, {}, "wsserver.history.since", [TOPIC, epoch, 2001 - 300]])
                    assert most[4]["recovered"] is True and len(most[4]["events"]) == 300
                assert exchange(ws, [32, 999, {}, "com.example.still"])[0] == 33  # the session is kept
        print(bystander.check().summary(), f"memory growth {memory.check(64 * 2**20) / 2**20:.1f} MiB")
        memory.check(64 * 2**20)


def test_a_topic_without_history_is_refused_with_a_reason(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--history-size", "0")
    with WampClient(server.ws_url) as client:
        with pytest.raises(ApplicationError) as refused:
            client._call(client.session.call, "wsserver.history.since", TOPIC, "", 0)
        assert refused.value.error == "wamp.error.no_such_procedure"


# -- SSE and /stream ----------------------------------------------------------------------------


def sse_blocks(port: int, target: str, count: int, headers: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The first ``count`` SSE blocks with fields (comments skipped) of GET ``target``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", target, headers=headers or {})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    found: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    while len(found) < count:
        line = response.readline().decode().rstrip("\n")
        if not line:
            if fields:
                found.append(fields)
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            fields[name] = value
    connection.close()
    return found


def test_sse_resumes_with_last_event_id_and_announces_a_reset_after_a_restart(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--history-size", "100")
    with WampClient(server.ws_url) as publisher:
        publisher.publish(TOPIC, 0)
        (start,) = sse_blocks(server.port, f"/sse?topic={TOPIC}", 1)
        last_id = start["id"]
        for n in range(1, 51):
            publisher.publish(TOPIC, n)
        blocks = sse_blocks(server.port, f"/sse?topic={TOPIC}", 51, {"Last-Event-ID": last_id})
        assert [json.loads(b["data"])["args"][0] for b in blocks[:50]] == list(range(1, 51))
        assert blocks[50] == {"id": blocks[49]["id"]}
    server.stop()
    server.start()
    with WampClient(server.ws_url) as publisher:
        publisher.publish(TOPIC, "new life")
        (reset, _) = sse_blocks(server.port, f"/sse?topic={TOPIC}", 2, {"Last-Event-ID": blocks[49]["id"]})
        assert reset["event"] == "reset" and json.loads(reset["data"])["topics"] == [TOPIC]


def test_stream_resumes_with_since_and_refuses_a_bad_one(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server("--history-size", "100")
    url = f"ws://127.0.0.1:{server.port}/stream?topic={TOPIC}"
    with WampClient(server.ws_url) as publisher:
        with ws_connect(url, open_timeout=5) as ws:
            position = json.loads(ws.recv(timeout=5))["id"]
        assert position == "-"
        publisher.publish(TOPIC, 1)
        with ws_connect(url, open_timeout=5) as ws:
            position = json.loads(ws.recv(timeout=5))["id"]
        for n in range(2, 12):
            publisher.publish(TOPIC, n)
        with ws_connect(f"{url}&since={position}", open_timeout=5) as ws:
            got = [json.loads(ws.recv(timeout=5)) for _ in range(11)]
        assert [g["args"][0] for g in got[:10]] == list(range(2, 12)) and got[10] == {"id": got[9]["id"]}
        with ws_connect(f"{url}&since=another-life:3", open_timeout=5) as ws:
            assert json.loads(ws.recv(timeout=5))["reset"]["topics"] == [TOPIC]
        with pytest.raises(Exception) as refused:
            ws_connect(f"{url}&since=3", open_timeout=5)
        assert "400" in str(refused.value)


# -- Chromium: an EventSource resumes by itself -------------------------------------------------


class CuttableProxy:
    """A TCP forwarder to ``port`` on 127.0.0.1 whose connections the test can cut, and refuse while down."""

    def __init__(self, port: int) -> None:
        import socket

        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.sockets: list[Any] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target))
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: Any, sink: Any) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                try:
                    end.close()
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every connection and refuse new ones until :meth:`restore`."""
        import socket

        self.up = False
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


def test_a_browsers_event_source_resumes_with_last_event_id_after_a_dropped_connection(start_server, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.e2e.cdp import Chromium, chromium_path
    from tests.e2e.prerequisites import unavailable

    executable = chromium_path()
    if executable is None:
        unavailable("chromium is not installed (Debian: apt-get install chromium)")
    server = start_server("--history-size", "100")
    proxy = CuttableProxy(server.port)
    try:
        with Chromium.launch(tmp_path / "chromium-profile", executable) as browser, WampClient(server.ws_url) as publisher:
            page = browser.new_page(f"http://127.0.0.1:{proxy.port}/index.html")
            page.evaluate(
                "window.got = []; window.resets = 0; window.opens = 0;"
                f"window.source = new EventSource('/sse?topic={TOPIC}');"
                f"source.addEventListener('{TOPIC}', (e) => {{ got.push(JSON.parse(e.data).args[0]); window.lastId = e.lastEventId; }});"
                "source.addEventListener('reset', () => resets++);"
                "source.onopen = () => opens++; true"
            )
            page.wait_for("window.opens === 1")
            for n in range(5):
                publisher.publish(TOPIC, n)
            page.wait_for("window.got.length === 5")
            proxy.cut()
            page.wait_for("window.source.readyState === EventSource.CONNECTING")
            for n in range(5, 55):
                publisher.publish(TOPIC, n)
            proxy.restore()
            page.wait_for("window.opens === 2 && window.got.length >= 55", timeout=20)
            publisher.publish(TOPIC, 55)
            page.wait_for("window.got.length === 56")
            assert page.evaluate("window.got") == list(range(56))
            assert page.evaluate("window.resets") == 0
            assert page.evaluate("window.lastId").endswith(":56")
    finally:
        proxy.close()


def test_many_sse_resumes_that_never_read_and_forged_positions_cost_little_and_harm_no_one(start_server) -> None:  # type: ignore[no-untyped-def]
    import socket

    server = start_server("--history-size", "300")
    with WampClient(server.ws_url) as publisher:
        publisher.publish(TOPIC, "x" * 1000)
        (start,) = sse_blocks(server.port, f"/sse?topic={TOPIC}", 1)
        for n in range(299):
            publisher.publish(TOPIC, "x" * 1000, acknowledge=n == 298)
        with Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
            sockets = []
            for n in range(200):  # each asks for 299 events of 1 kB, and reads none of them
                sock = socket.create_connection(("127.0.0.1", server.port))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                last = start["id"] if n % 2 else f"forged-{n}:{n}" + ",-" * (n % 5)
                sock.sendall(f"GET /sse?topic={TOPIC} HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {last}\r\n\r\n".encode())
                sockets.append(sock)
            refused = sse_refusal(server.port, f"/sse?topic={TOPIC}&since=" + "9" * 5000)
            assert refused.startswith("400"), refused
            for n in range(50):
                publisher.publish(TOPIC, n)
            for sock in sockets:
                sock.close()
        print(bystander.check().summary(), f"memory growth {memory.check(64 * 2**20) / 2**20:.1f} MiB")


def sse_refusal(port: int, target: str) -> str:
    """The status line and body of a refused GET ``target``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", target)
    response = connection.getresponse()
    answer = f"{response.status} {response.read().decode()}"
    connection.close()
    return answer
