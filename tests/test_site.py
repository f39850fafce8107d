"""The static site: content types, nosniff, no directory listings, the WebSocket child."""

from __future__ import annotations

from pathlib import Path

import pytest
from autobahn.twisted.resource import WebSocketResource
from twisted.web.test.requesthelper import DummyRequest

from wsserver.site import StaticSite, build_site


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
