"""
Server-Sent Events at /sse over twisted.web's real HTTP channel on a StringTransport, with a
MemoryReactorClock: headers, events, the shared encoding, heartbeats, refusals, a client that
stops reading, and the end of a stream.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web import resource, server

from wsserver.core.history import HistoryRule, HistorySettings
from wsserver.core.policy import Permission, RealmPolicy
from wsserver.core.router import Router
from wsserver.delivery import carry_out
from wsserver.tally import PING_TIMEOUT, TALLY
from wsserver.transports import sse as sse_module
from wsserver.transports.admission import DROP, Admission, ConnectionLimits
from wsserver.transports.sse import HEARTBEAT_INTERVAL, SseResource

POLICY = RealmPolicy("realm1", {"public": (Permission("com.example.", "prefix", frozenset({"subscribe"})),)},
                     anonymous_role="public")


class Endpoint:
    """The /sse resource on a site, a router and a clock."""

    def __init__(self, allowed_origins: tuple[str, ...] = ("*",), history: HistorySettings | None = None, **limits: Any) -> None:
        self.clock = MemoryReactorClock()
        epochs = itertools.count(1)
        self.router: Router[Any] = Router([POLICY], itertools.count(1).__next__, history=history,
                                          random_bytes=lambda n: b"E%08d" % next(epochs))
        self.admission = Admission(ConnectionLimits(**limits), allowed_origins)
        self.sse = SseResource(self.router, self.admission, self.clock)
        root = resource.Resource()
        root.putChild(b"sse", self.sse)
        self.site = server.Site(root)
        self.ports = itertools.count(42000)

    def get(self, target: str, *headers: str, method: str = "GET", version: str = "HTTP/1.1") -> Stream:
        return Stream(self, target, headers, method, version)

    def publish(self, topic: str, *args: Any) -> None:
        carry_out(self.router.publish("realm1", topic, list(args)))


class Stream:
    """One HTTP request on its own connection; ``head`` and ``body()`` read what the server wrote."""

    def __init__(self, endpoint: Endpoint, target: str, headers: tuple[str, ...], method: str, version: str) -> None:
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", next(endpoint.ports)))
        self.channel = endpoint.site.buildProtocol(self.transport.getPeer())
        self.channel.makeConnection(self.transport)
        request = f"{method} {target} {version}\r\nHost: localhost\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n"
        self.channel.dataReceived(request.encode())
        self.head, _, self._body = self.transport.value().partition(b"\r\n\r\n")
        self.transport.clear()

    @property
    def status(self) -> int:
        return int(self.head.split(b" ", 2)[1])

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode().partition(":")
            if key.lower() == name.lower():
                return value.strip()
        return None

    def body(self) -> bytes:
        """Everything written so far, de-chunked (chunked encoding) or as is."""
        data, self._body = self._body + self.transport.value(), b""
        self.transport.clear()
        if self.header("Transfer-Encoding") != "chunked":
            return data
        out = b""
        while data:
            size, _, rest = data.partition(b"\r\n")
            n = int(size, 16)
            out, data = out + rest[:n], rest[n + 2:]
        return out

    def lose(self) -> None:
        self.channel.connectionLost(Failure(ConnectionDone()))


def events(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in body.split(b"\n\n"):
        lines = dict(line.split(b": ", 1) for line in block.split(b"\n") if line and not line.startswith(b":"))
        if b"event" in lines:
            found.append((lines[b"event"].decode(), json.loads(lines[b"data"])))
    return found


@pytest.fixture
def endpoint() -> Endpoint:
    return Endpoint()


def test_a_stream_starts_with_its_headers_and_a_comment_then_carries_each_event(endpoint: Endpoint) -> None:
    stream = endpoint.get("/sse?topic=com.example.a&topic=com.example.b")
    assert stream.status == 200
    assert stream.header("Content-Type") == "text/event-stream; charset=utf-8"
    assert stream.header("Cache-Control") == "no-store" and stream.header("X-Accel-Buffering") == "no"
    assert stream.body() == b": subscribed to com.example.a com.example.b\n\n"
    endpoint.publish("com.example.b", 1, "two")
    endpoint.publish("com.example.a")
    endpoint.publish("com.example.c", "not subscribed")
    assert stream.body() == (
        b'event: com.example.b\ndata: {"topic":"com.example.b","args":[1,"two"],"kwargs":{}}\n\n'
        b'event: com.example.a\ndata: {"topic":"com.example.a","args":[],"kwargs":{}}\n\n'
    )


def test_http_1_0_streams_get_the_same_events_unchunked_and_share_their_encoding(endpoint: Endpoint) -> None:
    old, new = endpoint.get("/sse?topic=com.example.a", version="HTTP/1.0"), endpoint.get("/sse?topic=com.example.a")
    assert old.header("Transfer-Encoding") is None and new.header("Transfer-Encoding") == "chunked"
    old.body(), new.body()
    endpoint.publish("com.example.a", 1)
    endpoint.clock.advance(HEARTBEAT_INTERVAL)
    assert old.body() == new.body() == b'event: com.example.a\ndata: {"topic":"com.example.a","args":[1],"kwargs":{}}\n\n:\n\n'


def test_pattern_streams_name_the_concrete_topic(endpoint: Endpoint) -> None:
    stream = endpoint.get("/sse?topic=com.example..price&match=wildcard")
    stream.body()
    endpoint.publish("com.example.acme.price", 12)
    assert events(stream.body()) == [("com.example.acme.price", {"topic": "com.example.acme.price", "args": [12], "kwargs": {}})]


def test_an_event_is_encoded_once_for_every_stream(endpoint: Endpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    streams = [endpoint.get("/sse?topic=com.example.a") for _ in range(5)]
    encoded = []
    original = sse_module.event_json
    monkeypatch.setattr(sse_module, "event_json", lambda *a: encoded.append(a) or original(*a))
    endpoint.publish("com.example.a", 7)
    assert len(encoded) == 1
    assert all(events(s.body())[-1][1]["args"] == [7] for s in streams)


def test_a_quiet_stream_gets_a_heartbeat_comment(endpoint: Endpoint) -> None:
    stream = endpoint.get("/sse?topic=com.example.a")
    stream.body()
    endpoint.clock.advance(HEARTBEAT_INTERVAL - 0.1)
    assert stream.body() == b""
    endpoint.clock.advance(0.1)
    assert stream.body() == b":\n\n"
    endpoint.clock.advance(HEARTBEAT_INTERVAL)
    assert stream.body() == b":\n\n"


@pytest.mark.parametrize("target, headers, status, reason", [
    ("/sse", (), 400, "no topic"),
    ("/sse?topic=com.example..x", (), 400, "invalid exact pattern"),
    ("/sse?topic=org.other", (), 403, "role 'public' may not subscribe 'org.other'"),
    ("/sse?topic=com.example.a&realm=nope", (), 404, "no realm 'nope'"),
    ("/sse?topic=com.example.a", ("Authorization: Bearer xyz",), 401, "no bearer keys"),
    ("/sse?topic=com.example.a", ("Origin: https://evil.example",), 403, "origin https://evil.example is not allowed"),
])
def test_a_refused_stream_gets_its_status_and_the_reason_as_text(
    target: str, headers: tuple[str, ...], status: int, reason: str
) -> None:
    endpoint = Endpoint(allowed_origins=("https://good.example",))
    stream = endpoint.get(target, *headers)
    assert stream.status == status
    assert stream.header("Content-Type") == "text/plain; charset=utf-8"
    assert reason in stream.body().decode()
    assert endpoint.admission.admitted == 0 and endpoint.router.realms["realm1"].sessions == {}


def test_an_allowed_foreign_origin_gets_cors_headers() -> None:
    endpoint = Endpoint(allowed_origins=("https://good.example",))
    stream = endpoint.get("/sse?topic=com.example.a", "Origin: https://good.example")
    assert stream.status == 200 and stream.header("Access-Control-Allow-Origin") == "https://good.example"


def test_streams_count_against_the_connection_limits(endpoint: Endpoint) -> None:
    endpoint = Endpoint(max_connections_per_ip=2)
    first, second = endpoint.get("/sse?topic=com.example.a"), endpoint.get("/sse?topic=com.example.a")
    assert endpoint.get("/sse?topic=com.example.a").status == 429
    first.lose()
    assert endpoint.get("/sse?topic=com.example.a").status == 200
    assert second.status == 200


def test_a_client_that_goes_away_leaves_no_session_or_slot(endpoint: Endpoint) -> None:
    stream = endpoint.get("/sse?topic=com.example.a")
    assert len(endpoint.router.realms["realm1"].sessions) == 1
    stream.lose()
    assert endpoint.router.realms["realm1"].sessions == {} and endpoint.admission.admitted == 0
    assert len(endpoint.sse.streams) == 0
    endpoint.clock.advance(HEARTBEAT_INTERVAL)  # no heartbeat for a stream that is gone
    assert stream.transport.value() == b""


def test_a_client_that_stops_reading_is_cut_off_past_the_send_buffer() -> None:
    endpoint = Endpoint(max_send_buffer=4096)
    stream = endpoint.get("/sse?topic=com.example.a")
    stream.body()
    stream.transport.producer.pauseProducing()  # what the TCP transport does when the client stops reading
    for n in range(100):
        endpoint.publish("com.example.a", "x" * 100, n)
    assert stream.transport.value() == b""  # nothing more was written while paused
    assert stream.transport.disconnected  # aborted: what waited for it is freed at once
    assert endpoint.router.realms["realm1"].sessions == {}
    stream.lose()
    assert endpoint.admission.admitted == 0


def test_with_the_drop_policy_its_events_are_dropped_and_counted_then_it_resumes() -> None:
    endpoint = Endpoint(max_send_buffer=4096, slow_consumer_policy=DROP)
    stream = endpoint.get("/sse?topic=com.example.a")
    stream.body()
    stream.transport.producer.pauseProducing()
    for n in range(100):
        endpoint.publish("com.example.a", "x" * 100, n)
    (sse,) = endpoint.sse.streams
    assert sse.send_buffer.dropped > 0 and sse.send_buffer.counted <= 4096
    # What the stream's session tells wamp.session.get and the admin page's figures.
    (session,) = endpoint.router.realms["realm1"].sessions.values()
    assert session.transport is sse and sse.kind == "sse"
    assert sse.buffered_bytes() == sse.send_buffer.counted
    endpoint.clock.advance(HEARTBEAT_INTERVAL)  # no heartbeat queued behind the waiting events
    stream.transport.producer.resumeProducing()
    received = [data["args"][1] for _, data in events(stream.body())]
    assert received == list(range(len(received))) and 0 < len(received) < 100
    assert stream.transport.connected


def test_close_all_ends_every_stream(endpoint: Endpoint) -> None:
    streams = [endpoint.get("/sse?topic=com.example.a") for _ in range(3)]
    for stream in streams:
        stream.body()
    done = endpoint.sse.close_all(endpoint.clock, 5.0)
    for stream in streams:
        assert stream.transport.value() == b"0\r\n\r\n"  # the chunked body's end
    fired: list[Any] = []
    done.addCallback(fired.append)
    for stream in streams:
        stream.lose()
    assert fired == [None] and endpoint.router.realms["realm1"].sessions == {}


def test_a_client_that_takes_nothing_for_the_ping_interval_and_timeout_is_dropped() -> None:
    endpoint = Endpoint(max_send_buffer=4096, slow_consumer_policy=DROP, ping_interval=30.0, ping_timeout=10.0)
    before = TALLY.disconnects[PING_TIMEOUT]
    reading, stalled = endpoint.get("/sse?topic=com.example.a"), endpoint.get("/sse?topic=com.example.a")
    stalled.transport.producer.pauseProducing()
    for _ in range(4):  # 60 s: the reading client is paused and resumed all along, the stalled one never
        reading.transport.producer.pauseProducing()
        endpoint.clock.advance(HEARTBEAT_INTERVAL / 2)
        reading.transport.producer.resumeProducing()
        endpoint.clock.advance(HEARTBEAT_INTERVAL / 2)
    assert stalled.transport.disconnected and not reading.transport.disconnected
    assert len(endpoint.router.realms["realm1"].sessions) == 1
    assert TALLY.disconnects[PING_TIMEOUT] - before == 1  # as a WebSocket whose pong is late


# -- positions and resume --------------------------------------------------------------------------


def blocks(body: bytes) -> list[dict[str, str]]:
    """Each SSE block as its fields (comments left out)."""
    found = []
    for block in body.split(b"\n\n"):
        fields = dict(line.decode().split(": ", 1) for line in block.split(b"\n") if line and not line.startswith(b":"))
        if fields:
            found.append(fields)
    return found


@pytest.fixture
def kept() -> Endpoint:
    rules = (HistoryRule("com.example.", "prefix", size=5), HistoryRule("com.example.live", size=0))
    return Endpoint(history=HistorySettings(rules=rules, max_resume_events=4))


def test_a_stream_of_a_topic_with_history_begins_with_its_position_and_each_event_carries_its_id(kept: Endpoint) -> None:
    kept.publish("com.example.a", 0)
    stream = kept.get("/sse?topic=com.example.a")
    epoch = "RTAwMDAwMDAx"  # base64 of the first epoch drawn
    assert blocks(stream.body()) == [{"id": f"{epoch}:1"}]
    kept.publish("com.example.a", 1)
    (event,) = blocks(stream.body())
    assert event["id"] == f"{epoch}:2" and event["event"] == "com.example.a"


def test_last_event_id_resumes_the_missed_events_in_order_then_live_without_gap_or_duplicate(kept: Endpoint) -> None:
    first = kept.get("/sse?topic=com.example.a")
    first.body()
    kept.publish("com.example.a", 1)
    last_id = blocks(first.body())[-1]["id"]
    first.lose()
    kept.publish("com.example.a", 2)
    kept.publish("com.example.a", 3)
    again = kept.get("/sse?topic=com.example.a", f"Last-Event-ID: {last_id}")
    kept.publish("com.example.a", 4)
    got = blocks(again.body())
    assert [json.loads(b["data"])["args"] for b in got if "data" in b] == [[2], [3], [4]]
    assert [b["id"].rsplit(":", 1)[1] for b in got] == ["2", "3", "3", "4"]  # the last id before live: the top
    assert not any(b.get("event") == "reset" for b in got)


def test_an_unrecoverable_gap_is_announced_with_a_reset_naming_the_topics(kept: Endpoint) -> None:
    stream = kept.get("/sse?topic=com.example.a")
    last_id = blocks(stream.body())[-1].get("id", "-")
    for n in range(6):  # more than the 5 kept, and than --max-resume-events
        kept.publish("com.example.a", n)
    again = kept.get("/sse?topic=com.example.a", f"Last-Event-ID: {last_id}")
    (reset, position) = blocks(again.body())
    assert reset["event"] == "reset" and json.loads(reset["data"])["topics"] == ["com.example.a"]
    assert "reload" in json.loads(reset["data"])["reason"]
    assert reset["id"].endswith(":6") and position["id"] == reset["id"]
    forged = kept.get("/sse?topic=com.example.a", "Last-Event-ID: another-life:3")
    assert blocks(forged.body())[0]["event"] == "reset"
    garbage = kept.get("/sse?topic=com.example.a", "Last-Event-ID: \x7f\x01nonsense")
    assert "cannot resume" in json.loads(blocks(garbage.body())[0]["data"])["reason"]


def test_a_stream_of_several_topics_carries_the_position_of_each_and_resumes_all(kept: Endpoint) -> None:
    stream = kept.get("/sse?topic=com.example.a&topic=com.example.live&topic=com.example.b")
    assert blocks(stream.body()) == [{"id": "-,-,-"}]
    kept.publish("com.example.a", 1)
    kept.publish("com.example.live", "no history")
    kept.publish("com.example.b", 2)
    got = blocks(stream.body())
    ea, eb = got[0]["id"].split(":")[0], got[2]["id"].split(",")[2].split(":")[0]
    assert [b.get("id") for b in got] == [f"{ea}:1,-,-", None, f"{ea}:1,-,{eb}:1"]
    stream.lose()
    kept.publish("com.example.b", 3)
    kept.publish("com.example.a", 4)
    again = kept.get("/sse?topic=com.example.a&topic=com.example.live&topic=com.example.b", f"Last-Event-ID: {got[2]['id']}")
    resumed = blocks(again.body())
    assert [(b["event"], json.loads(b["data"])["args"], b["id"]) for b in resumed if "data" in b] == [
        ("com.example.b", [3], f"{ea}:1,-,{eb}:2"),
        ("com.example.a", [4], f"{ea}:2,-,{eb}:2"),
    ]


def test_since_in_the_query_resumes_like_last_event_id_and_a_pattern_stream_cannot(kept: Endpoint) -> None:
    kept.publish("com.example.a", 1)
    kept.publish("com.example.a", 2)
    stream = kept.get("/sse?topic=com.example.a&since=RTAwMDAwMDAx:1")
    assert [json.loads(b["data"])["args"] for b in blocks(stream.body()) if "data" in b] == [[2]]
    pattern = kept.get("/sse?topic=com.example.&match=prefix", "Last-Event-ID: -")
    assert blocks(pattern.body())[0]["event"] == "reset"
    assert kept.get("/sse?topic=com.example.a&since=nonsense").status == 400


def test_a_whole_replay_is_bounded_by_max_resume_events_too(kept: Endpoint) -> None:
    target = "/sse?topic=com.example.a&topic=com.example.b"
    stream = kept.get(target)
    stream.body()
    kept.publish("com.example.a", 0)
    kept.publish("com.example.b", 0)
    last_id = blocks(stream.body())[-1]["id"]
    for n in range(3):  # 3 missed of each: within 4 per topic, 6 in all
        kept.publish("com.example.a", n)
        kept.publish("com.example.b", n)
    (reset, position) = blocks(kept.get(target, f"Last-Event-ID: {last_id}").body())
    assert json.loads(reset["data"])["topics"] == ["com.example.a", "com.example.b"]
    assert [p.rsplit(":", 1)[1] for p in position["id"].split(",")] == ["4", "4"]
