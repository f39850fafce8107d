"""
The twisted.web resource tree: the static site at ``/`` and the WAMP endpoint at ``/ws``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.web import pages, resource, server, static

#: Content types the static site needs that the platform's mime tables may lack or get wrong.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".swf": "application/x-shockwave-flash",
    ".map": "application/json",
}


def default_web_dir() -> Path:
    """The site installed with the package (``wsserver/web``), or ``web/`` of a source checkout."""
    package = Path(__file__).resolve().parent
    installed = package / "web"
    return installed if installed.is_dir() else package.parent / "web"


class StaticSite(static.File):
    """
    ``static.File`` without directory listings (a directory without index.html is 404) and with
    ``X-Content-Type-Options: nosniff`` on every file, so a browser trusts our content types only.
    """

    contentTypes = {**static.File.contentTypes, **CONTENT_TYPES}

    def directoryListing(self) -> resource.IResource:
        return pages.notFound("No such page", "There is no page at this address.")

    def render(self, request: Any) -> Any:
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return super().render(request)


def build_site(web_dir: Path, ws_path: str, ws_factory: Any, idle_timeout: float = 60.0,
               websockets: dict[str, Any] | None = None, resources: dict[str, Any] | None = None) -> server.Site:
    """
    The site: files under ``web_dir``, and the WebSocket factory's endpoint at ``/ws_path``;
    ``websockets`` mounts more WebSocket factories by path (e.g. ``{"echo": ...}``), ``resources``
    more resources (e.g. ``{"sse": ...}``).
    An HTTP connection idle for ``idle_timeout`` seconds is closed (twisted.web suspends this while
    a request is served, so it never applies to an open WebSocket).
    """
    root = StaticSite(str(web_dir))
    for path, factory in {ws_path: ws_factory, **(websockets or {})}.items():
        root.putChild(path.strip("/").encode("utf-8"), WebSocketResource(factory))
    for path, child in (resources or {}).items():
        root.putChild(path.strip("/").encode("utf-8"), child)
    site = server.Site(root, timeout=idle_timeout)
    site.displayTracebacks = False
    return site
