"""The static site: content types, nosniff, no directory listings, the WebSocket child, what it refuses, the request-head deadline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from autobahn.twisted.resource import WebSocketResource
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.test.requesthelper import DummyRequest

from wsserver.site import HeadDeadlineChannel, StaticSite, build_site
from wsserver.transports.flashpolicy import SniffingFactory


@pytest.fixture
def web(tmp_path: Path) -> Path:
    (tmp_path / "index.html").write_text("<h1>hi</h1>")
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "app.js").write_text("1")
    (tmp_path / "x.swf").write_bytes(b"FWS")
    (tmp_path / "empty").mkdir()
    return tmp_path


def render(root: StaticSite, *segments: bytes) -> DummyRequest:
    request = DummyRequest(list(segments))
    resource = root
    for segment in segments:
        resource = resource.getChildWithDefault(segment, request)
    request.postpath = []
    result = resource.render(request)
    if isinstance(result, bytes):
        request.write(result)
        request.finish()
    return request


@pytest.mark.parametrize(
    "path, content_type",
    [((b"index.html",), b"text/html; charset=utf-8"), ((b"js", b"app.js"), b"text/javascript; charset=utf-8"),
     ((b"x.swf",), b"application/x-shockwave-flash")],
)
def test_files_have_their_content_type_and_nosniff(web: Path, path: tuple[bytes, ...], content_type: bytes) -> None:
    request = render(StaticSite(str(web)), *path)
    assert request.responseHeaders.getRawHeaders(b"content-type") == [content_type]
    assert request.responseHeaders.getRawHeaders(b"x-content-type-options") == [b"nosniff"]


def test_directories_are_not_listed(web: Path) -> None:
    request = render(StaticSite(str(web)), b"empty", b"")
    assert request.responseCode == 404
    assert b"empty" not in b"".join(request.written)


def test_ws_path_is_the_websocket_resource(web: Path) -> None:
    site = build_site(web, "/live/", object())
    assert isinstance(site.resource.getStaticEntity(b"live"), WebSocketResource)


# -- what the static site refuses ------------------------------------------------------------------


@pytest.mark.parametrize("path", [(b".env",), (b".git", b"config"), (b"js", b".hidden.js"), (b"..",)])
def test_dot_segments_are_not_found(web: Path, path: tuple[bytes, ...]) -> None:
    (web / ".env").write_text("SECRET=1")
    (web / ".git").mkdir()
    (web / ".git" / "config").write_text("[core]")
    (web / "js" / ".hidden.js").write_text("2")
    request = render(StaticSite(str(web)), *path)
    assert request.responseCode == 404
    assert b"SECRET" not in b"".join(request.written)


def test_well_known_is_served(web: Path) -> None:
    (web / ".well-known").mkdir()
    (web / ".well-known" / "security.txt").write_text("Contact: mailto:security@example.com")
    request = render(StaticSite(str(web)), b".well-known", b"security.txt")
    assert request.responseCode in (None, 200)
    assert b"Contact" in b"".join(request.written)


def test_symlinks_out_of_the_site_are_not_found_and_inside_are_served(web: Path, tmp_path_factory: Any) -> None:
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.txt").write_text("SECRET")
    (web / "leak.txt").symlink_to(outside / "secret.txt")
    (web / "leakdir").symlink_to(outside)
    (web / "alias.js").symlink_to(web / "js" / "app.js")
    site = StaticSite(str(web))
    for path in [(b"leak.txt",), (b"leakdir", b"secret.txt")]:
        request = render(site, *path)
        assert request.responseCode == 404, path
        assert b"SECRET" not in b"".join(request.written)
    assert b"".join(render(site, b"alias.js").written) == b"1"


@pytest.mark.parametrize("segment", [b"a\0b", b"index.html\0", b"\xff\xfe"])
def test_nul_or_undecodable_segments_are_a_bad_request(web: Path, segment: bytes) -> None:
    assert render(StaticSite(str(web)), segment).responseCode == 400


# -- the request-head deadline ---------------------------------------------------------------------

#: A page that is not there: answered at once (a file would need its producer driven).
HEAD = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"


def connect(web: Path, head_timeout: float = 10.0, idle_timeout: float = 60.0) -> tuple[Any, StringTransport, Clock]:
    clock = Clock()
    site = build_site(web, "ws", object(), idle_timeout=idle_timeout, head_timeout=head_timeout, reactor=clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport, clock


def test_a_dribbled_head_is_cut_off_at_the_deadline_with_408(web: Path) -> None:
    channel, transport, clock = connect(web, head_timeout=10, idle_timeout=3)
    for byte in HEAD[:9]:  # a byte a second: each would restart an idle timeout
        channel.dataReceived(bytes([byte]))
        clock.advance(1)
    assert clock.seconds() == 9 and not transport.disconnecting
    channel.dataReceived(HEAD[9:10])
    clock.advance(1)
    assert transport.value().startswith(b"HTTP/1.1 408 ")
    assert transport.disconnecting


def test_a_silent_connection_is_closed_without_an_answer(web: Path) -> None:
    _, transport, clock = connect(web, head_timeout=2)
    clock.advance(2)
    assert transport.disconnecting and transport.value() == b""


def test_each_head_on_a_kept_alive_connection_has_its_deadline(web: Path) -> None:
    channel, transport, clock = connect(web, head_timeout=2, idle_timeout=60)
    clock.advance(1.5)
    channel.dataReceived(HEAD)
    assert transport.value().startswith(b"HTTP/1.1 404 ")
    clock.advance(1.5)  # past the first head's deadline: it no longer applies
    assert not transport.disconnecting
    transport.clear()
    channel.dataReceived(HEAD[:10])  # the next head: 2 s from the end of the last response
    clock.advance(0.5)
    assert transport.value().startswith(b"HTTP/1.1 408 ") and transport.disconnecting


def test_a_silent_kept_alive_connection_is_closed_after_the_deadline(web: Path) -> None:
    channel, transport, clock = connect(web, head_timeout=2, idle_timeout=60)
    channel.dataReceived(HEAD)
    transport.clear()
    clock.advance(2)
    assert transport.disconnecting and transport.value() == b""


def test_requests_under_an_unlogged_prefix_stay_out_of_the_access_log(web: Path) -> None:
    import io

    site = build_site(web, "ws", object(), unlogged=("/lp/",), reactor=Clock())
    site._logFile = written = io.StringIO()  # what twistd sets up: the access log
    for path in (b"/lp/abc/receive", b"/index.html"):
        request = DummyRequest([])
        request.path, request.uri, request.method = path, path, b"POST"
        request.client = IPv4Address("TCP", "127.0.0.1", 1234)
        request.code, request.sentLength = 200, 0
        site.log(request)
    assert "/index.html" in written.getvalue() and "/lp/" not in written.getvalue()


# -- a site of your own (--web DIR) keeps the installed site's libraries and helpers ---------------


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    site = tmp_path / "installed"
    (site / "vendor" / "autobahn").mkdir(parents=True)
    (site / "vendor" / "autobahn" / "autobahn.min.js").write_text("autobahn")
    (site / "js").mkdir()
    (site / "js" / "wsclient.js").write_text("ours")
    (site / "js" / "dashboard.js").write_text("dashboard")
    (site / "index.html").write_text("installed index")
    return site


def served(site: Any, *segments: bytes) -> tuple[int, bytes]:
    request = render(site.resource, *segments)
    return request.responseCode or 200, b"".join(request.written)


def test_your_site_keeps_the_vendored_libraries_and_the_client_helper(web: Path, installed: Path) -> None:
    site = build_site(web, "ws", object(), installed=installed)
    assert served(site, b"vendor", b"autobahn", b"autobahn.min.js") == (200, b"autobahn")
    assert served(site, b"js", b"wsclient.js") == (200, b"ours")  # through your own js/ directory
    assert served(site, b"js", b"app.js") == (200, b"1")
    assert served(site, b"index.html") == (200, b"<h1>hi</h1>")


def test_only_the_shared_names_are_lent_and_your_files_win(web: Path, installed: Path) -> None:
    (web / "js" / "wsclient.js").write_text("yours")
    site = build_site(web, "ws", object(), installed=installed)
    assert served(site, b"js", b"wsclient.js") == (200, b"yours")
    assert served(site, b"js", b"dashboard.js")[0] == 404
    (web / "index.html").unlink()
    assert b"installed" not in served(site, b"index.html")[1]


def test_the_installed_site_lends_nothing_to_itself(installed: Path) -> None:
    site = build_site(installed, "ws", object(), installed=installed)
    assert site.resource.fallback is None
    assert served(site, b"js", b"wsclient.js") == (200, b"ours")


# -- a WebSocket handshake skips twisted.web ---------------------------------------------------------

UPGRADE = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


class Recorder(Protocol):
    """Stands in for a WebSocket protocol: what it was given."""

    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class RecordingFactory(Factory):
    protocol = Recorder

    def __init__(self) -> None:
        self.built: list[Recorder] = []

    def buildProtocol(self, addr: Any) -> Recorder:
        self.built.append(Recorder())
        return self.built[-1]


def upgrade(web: Path, *chunks: bytes) -> tuple[Any, StringTransport, Clock, RecordingFactory]:
    """A site connection as every site port has it (the Flash policy sniffer first), given ``chunks``."""
    clock, factory, echo = Clock(), RecordingFactory(), RecordingFactory()
    site = build_site(web, "ws", factory, websockets={"echo": echo}, head_timeout=5, idle_timeout=5, reactor=clock)
    sniffer = SniffingFactory(site, lambda: b"<cross-domain-policy/>", clock).buildProtocol(None)
    transport = StringTransport()
    transport.protocol = sniffer  # as a TCP transport has it: the sniffer and WebSocketResource switch it
    sniffer.makeConnection(transport)
    for chunk in chunks:
        transport.protocol.dataReceived(chunk)
    return transport.protocol, transport, clock, factory


@pytest.mark.parametrize("head", [UPGRADE, UPGRADE.replace(b"/ws ", b"/ws?token=1 ")])
def test_a_whole_handshake_goes_to_the_websocket_as_sent_and_no_http_timer_stays(web: Path, head: bytes) -> None:
    _, transport, clock, factory = upgrade(web, head + b"\x81\x80")
    (websocket,) = factory.built
    assert websocket.received == head + b"\x81\x80", "the bytes as sent, not twisted.web's rewrite of them"
    assert transport.protocol is websocket
    clock.advance(60)
    assert not transport.disconnecting and transport.value() == b"" and not clock.getDelayedCalls()


@pytest.mark.parametrize("first_read, channel", [(UPGRADE, False), (UPGRADE[:20], True)])
def test_a_sniffed_whole_handshake_builds_no_http_channel(web: Path, first_read: bytes, channel: bool) -> None:
    clock, factory = Clock(), RecordingFactory()
    site = build_site(web, "ws", factory, head_timeout=5, idle_timeout=5, reactor=clock)
    channels: list[Any] = []
    site.buildProtocol = lambda addr: channels.append(type(site).buildProtocol(site, addr)) or channels[-1]
    sniffer = SniffingFactory(site, lambda: b"<cross-domain-policy/>", clock).buildProtocol(None)
    transport = StringTransport()
    transport.protocol = sniffer
    sniffer.makeConnection(transport)
    sniffer.dataReceived(first_read)
    if channel:  # the rest of the head comes later: twisted.web reads it, under its deadline
        assert transport.protocol is channels[0] and not factory.built
        assert isinstance(channels[0], HeadDeadlineChannel) and clock.getDelayedCalls()
    else:  # straight to the WebSocket, as sent: no channel, so none of its timers either
        (websocket,) = factory.built
        assert transport.protocol is websocket and websocket.received == UPGRADE
        assert not channels and not clock.getDelayedCalls()


@pytest.mark.parametrize("chunks", [
    (UPGRADE[:20], UPGRADE[20:]),  # in pieces: twisted.web's deadline applies
    (UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"),),
    (UPGRADE.replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\nab"),),
    (UPGRADE.replace(b"Host: x\r\n", b"Host: x\n"),),
    (UPGRADE.replace(b"\r\n\r\n", b"\r\n" + b"X: y\r\n" * 500 + b"\r\n"),),
])
def test_what_twisted_web_and_autobahn_could_read_differently_takes_twisted_webs_way(
    web: Path, chunks: tuple[bytes, ...]
) -> None:
    _, transport, _, factory = upgrade(web, *chunks)
    if factory.built:  # through WebSocketResource: the head twisted.web parsed, written again as 1.1
        (websocket,) = factory.built
        assert websocket.received.startswith(b"GET /ws HTTP/1.1\r\n") and websocket.received != b"".join(chunks)
    else:  # refused by twisted.web
        assert transport.value().startswith(b"HTTP/1.1 400 ")


def test_other_paths_and_the_static_site_are_twisted_webs(web: Path) -> None:
    _, transport, _, factory = upgrade(web, UPGRADE.replace(b"/ws ", b"/wsx "))
    assert not factory.built and transport.value().startswith(b"HTTP/1.1 404 ")
