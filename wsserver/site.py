"""
The twisted.web resource tree: the static site at ``/`` and the WAMP endpoint at ``/ws``.

Theory of operation
-------------------
What the static site refuses, and why:

- a path segment starting with "." (``/.env``, ``/.git/config``): 404. Such files are a
  deployment's secrets or tooling, not its pages. ``/.well-known/`` is the exception: RFC 8615
  made it the public place for ``security.txt``, ACME challenges and the like, and a file put
  there is meant to be served;
- a file or directory that resolves, through a symlink, to a place outside the site's directory:
  404 (symlinks inside it are fine);
- a path segment that is not UTF-8 or holds a NUL byte: 400 (no file can have that name, and the
  file system would raise on it).

How long a client may take: every HTTP connection has ``head_timeout`` seconds from the moment the
site gets it (after the first bytes, see flashpolicy.Sniffer) until its request head is complete,
and again between one request and the next head on a kept-alive connection: an overall deadline,
not restarted by each byte, so a client dribbling its head byte by byte is still closed on time
(with a 408 if it had begun a request). Once the head is in, twisted.web's idle timeout applies.

A WebSocket handshake skips twisted.web: Autobahn's ``WebSocketResource`` takes the request
twisted.web parsed, writes its head out again and feeds that to Autobahn, which parses it again
(twisted.web's parse, its request and the rewrite were ~60 µs of a session's ~250). So when a
connection's first bytes are a complete ``GET`` head for a WebSocket path (``/ws``, ``/echo``,
``/stream``: what ``build_site`` mounts) that twisted.web would read the same way as Autobahn (no
body, CRLF lines, within twisted.web's header count and size limits), they go straight to that
path's WebSocket protocol, as the resource would have, and no HTTP channel is built at all: every
site port reads a connection's first bytes with flashpolicy.Sniffer, which asks the site for their
protocol (:meth:`StaticWebSite.protocol_for`). Anything else (a head in pieces, a query for
another path, a body) gets an HTTP channel and takes twisted.web's way, with its deadline and refusals.
Both ways end in Autobahn's handshake and the admission's checks (origin, connection limits, the
handshake timeout).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from autobahn.twisted.resource import WebSocketResource
from twisted.web import http, pages, resource, server, static


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


#: The one dot-segment served (RFC 8615 well-known URIs), see the theory of operation.
WELL_KNOWN = ".well-known"

#: What the installed site lends a site of your own (``--web DIR``): the vendored libraries and the
#: client helpers, so the README's "connect from your page" snippets work there too. Your files win.
SHARED_FROM_INSTALLED = ("vendor", "js/wsclient.js", "js/websocket-fallback.js")


def _shared(parts: tuple[str, ...]) -> bool:
    """Is ``parts`` (a path below the site root) one of SHARED_FROM_INSTALLED, inside one, or on the way to one?"""
    path = "/".join(parts)
    return any(path == shared or path.startswith(shared + "/") or shared.startswith(path + "/")
               for shared in SHARED_FROM_INSTALLED)


REQUEST_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class StaticSite(static.File):
    """
    ``static.File`` without directory listings (a directory without index.html is 404), with
    ``X-Content-Type-Options: nosniff`` on every file, so a browser trusts our content types only,
    and without dotfiles or symlinks leading out of the site (see the theory of operation).
    """

    contentTypes = {**static.File.contentTypes, **CONTENT_TYPES}
    #: Where this directory is below the site root, as path segments.
    below_root: tuple[str, ...] = ()
    #: The same place in the installed site, asked for SHARED_FROM_INSTALLED names this one lacks.
    fallback: StaticSite | None = None

    def __init__(self, path: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(path, *args, **kwargs)
        #: The site's directory with symlinks resolved: every file served must be under it.
        self.site_root = os.path.realpath(path)

    def getChild(self, path: bytes, request: Any) -> Any:
        try:
            name = path.decode("utf-8")
        except UnicodeDecodeError:
            return pages.errorPage(http.BAD_REQUEST, "Bad request", "The path is not UTF-8.")
        if "\0" in name:
            return pages.errorPage(http.BAD_REQUEST, "Bad request", "The path holds a NUL byte.")
        if name.startswith(".") and name != WELL_KNOWN:
            return self.childNotFound
        child = super().getChild(path, request)
        if isinstance(child, static.File) and not self._inside_site(child.path):
            return self.childNotFound
        below = (*self.below_root, name)
        if self.fallback is None or not _shared(below):
            return child
        lent = self.fallback.getChild(path, request)
        if child is self.childNotFound:
            return lent
        if isinstance(child, StaticSite) and isinstance(lent, StaticSite):
            # A directory of yours on the way to a shared name (your own js/): look there first, then in ours.
            child.below_root, child.fallback = below, lent
        return child

    def _inside_site(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.site_root or real.startswith(self.site_root.rstrip(os.sep) + os.sep)

    def createSimilarFile(self, path: str) -> Any:
        child = super().createSimilarFile(path)
        child.site_root = self.site_root
        return child

    def directoryListing(self) -> resource.IResource:
        return pages.notFound("No such page", "There is no page at this address.")

    def render(self, request: Any) -> Any:
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        return super().render(request)


def websocket_for(data: bytes, websockets: dict[bytes, Any]) -> Any:
    """
    The WebSocket factory (of ``websockets``, by request path) that ``data``, a connection's first
    bytes, is a whole handshake for; None when twisted.web must read them (see the theory of operation).
    """
    if not data.startswith(b"GET /"):
        return None
    space = data.find(b" ", 4)
    if space < 0:
        return None
    factory = websockets.get(data[4:space].partition(b"?")[0])
    if factory is None or not data.startswith(b" HTTP/1.1\r\n", space):
        return None  # not ours, or a version the resource would have rewritten as 1.1
    end = data.find(b"\r\n\r\n", 0, HeadDeadlineChannel.totalHeadersSize)
    if end < 0:
        return None  # in pieces, or too long: twisted.web's deadline and limit apply
    head = data[:end].lower()
    lines = head.count(b"\n")
    if (lines != head.count(b"\r\n") or lines > HeadDeadlineChannel.maxHeaders or b"content-length" in head
            or b"transfer-encoding" in head):
        return None  # read differently by twisted.web and Autobahn: twisted.web's way, as before
    return factory


class HeadDeadlineChannel(http.HTTPChannel):
    """
    twisted.web's HTTP channel with an overall deadline for each request head (see the theory of
    operation); the site sets ``head_timeout`` on each channel it builds.
    """

    head_timeout = 10.0

    def connectionMade(self) -> None:
        super().connectionMade()
        self._head_deadline: Any = None
        self._head_begun = False
        self._await_head()

    def _await_head(self) -> None:
        self._head_begun = False
        if self._head_deadline is None or not self._head_deadline.active():
            self._head_deadline = self.callLater(self.head_timeout, self._head_too_late)

    def _stop_awaiting_head(self) -> None:
        if self._head_deadline is not None and self._head_deadline.active():
            self._head_deadline.cancel()
        self._head_deadline = None

    def dataReceived(self, data: bytes) -> None:
        if data and self._head_deadline is not None:
            self._head_begun = True
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._stop_awaiting_head()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        # Armed first: the next head may already be buffered, and the parent parses it (and
        # calls allHeadersReceived, which disarms) before returning.
        self._await_head()
        super().requestDone(request)

    def _head_too_late(self) -> None:
        self._head_deadline = None
        if self.transport is None:  # handed over (a WebSocket): no longer ours to close
            return
        if self._head_begun:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        self._stop_awaiting_head()
        super().connectionLost(reason)


class StaticWebSite(server.Site):
    """``server.Site`` whose channels give each request head ``head_timeout`` seconds in all."""

    protocol = HeadDeadlineChannel

    def __init__(self, root: resource.IResource, *, head_timeout: float, idle_timeout: float,
                 reactor: Any = None, unlogged: tuple[str, ...] = ()) -> None:
        super().__init__(root, timeout=idle_timeout, reactor=reactor)
        self.head_timeout = head_timeout
        self.unlogged = tuple(prefix.encode("utf-8") for prefix in unlogged)

    def log(self, request: Any) -> None:
        """The access log, without requests under the ``unlogged`` path prefixes."""
        if not request.path.startswith(self.unlogged):
            super().log(request)

    #: Request path -> the WebSocket factory mounted there: handshakes given to it without twisted.web.
    websockets: dict[bytes, Any] = {}

    def protocol_for(self, addr: Any, first_bytes: bytes) -> Any:
        """
        The protocol for a connection that sent ``first_bytes`` first (what flashpolicy.Sniffer read):
        the WebSocket's own when they are a whole handshake for one, without an HTTP channel built
        only to hand them on; else an HTTP channel.
        """
        factory = websocket_for(first_bytes, self.websockets)
        return factory.buildProtocol(addr) if factory is not None else self.buildProtocol(addr)

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)
        channel.head_timeout = self.head_timeout
        return channel


def build_site(web_dir: Path, ws_path: str, ws_factory: Any, idle_timeout: float = 60.0,
               websockets: dict[str, Any] | None = None, resources: dict[str, Any] | None = None, *,
               head_timeout: float = 10.0, reactor: Any = None, unlogged: tuple[str, ...] = (),
               installed: Path | None = None) -> server.Site:
    """
    The site: files under ``web_dir``, and the WebSocket factory's endpoint at ``/ws_path``;
    ``websockets`` mounts more WebSocket factories by path (e.g. ``{"echo": ...}``), ``resources``
    more resources (e.g. ``{"sse": ...}``). Requests under the ``unlogged`` path prefixes (e.g.
    ``"/lp/"``: a long-poll client polls every 10 s) stay out of the access log.
    A request head must be complete within ``head_timeout`` seconds; after it, an HTTP connection
    idle for ``idle_timeout`` seconds is closed (twisted.web suspends this while a request is
    served, so it never applies to an open WebSocket). When ``web_dir`` is not the ``installed``
    site (default: :func:`default_web_dir`), that one still serves SHARED_FROM_INSTALLED beneath it.
    """
    root = StaticSite(str(web_dir))
    installed = installed or default_web_dir()
    if installed.is_dir() and os.path.realpath(installed) != root.site_root:
        root.fallback = StaticSite(str(installed))
    mounted = {path.strip("/").encode("utf-8"): factory for path, factory in {ws_path: ws_factory, **(websockets or {})}.items()}
    for name, factory in mounted.items():
        root.putChild(name, WebSocketResource(factory))
    for path, child in (resources or {}).items():
        root.putChild(path.strip("/").encode("utf-8"), child)
    site = StaticWebSite(root, head_timeout=head_timeout, idle_timeout=idle_timeout, reactor=reactor,
                         unlogged=unlogged)
    site.displayTracebacks = False
    site.websockets = {b"/" + name: factory for name, factory in mounted.items()}
    return site
