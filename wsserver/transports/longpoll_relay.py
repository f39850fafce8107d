"""
Long-poll with ``--workers N``: a session's requests may reach any worker.

Theory of operation
-------------------
A long-poll session is one :class:`~wsserver.transports.longpoll.LongPollSession` in the memory
of the worker that answered its ``/open``; its later requests come on new TCP connections, which
the kernel hands to any worker. So a worker's transport ids name it (``"<index>.<token>"``), and
each worker also takes long-poll requests on a UNIX socket of its own (an abstract one, Linux:
no file to clean up or to make readable after ``--uid``). A worker that gets a request for an id
it does not hold and that names another worker relays it there over that socket
(twisted.web.proxy, HTTP/1.0, one connection per request), answer and all, with ``Via`` added.
If that worker is gone (it died; its sessions died with it), the answer is 404 "no such
long-poll transport", as for any session that ended: AutobahnJS then opens a new one.

Why not sticky routing: within one machine there is no proxy to be sticky, the kernel picks the
worker; and why not keep sessions in Redis: a session's send buffer, held ``/receive`` and router
state are live objects, not data. A relayed request costs one local connection and a copy of the
request and of the answer; an idle session relays one ``/receive`` every RECEIVE_HOLD seconds at
most.

If the client goes away while its relayed ``/receive`` is held, the relay drops its connection to
the owner, so the owner's session stops writing into an answer nobody reads.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger
from twisted.web import proxy, resource, server

from wsserver.transports.longpoll import ID_BYTES, LongPollEndpoint, finish, refusal

log = Logger()

#: Request headers that belong to one hop, not to the relayed request.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"upgrade",
              b"content-length"}
GONE = "no such long-poll transport (the worker that held it stopped)"


class RelayedAnswer(proxy.ProxyClient):
    """The owner's answer, copied into the request it relays (hop-by-hop headers left out)."""

    status_received = False

    def handleStatus(self, version: bytes, code: bytes, message: bytes) -> None:
        self.status_received = True
        super().handleStatus(version, code, message)

    def handleHeader(self, key: bytes, value: bytes) -> None:
        if key.lower() not in HOP_BY_HOP or key.lower() == b"content-length":
            super().handleHeader(key, value)

    def handleResponseEnd(self) -> None:
        if not self.status_received and not self._finished:
            # The owner went away before it answered: its session is gone with it.
            self._finished = True
            finish(self.father, refusal(self.father, 404, GONE))
            self.transport.loseConnection()
            return
        if not self.father.finished and not self.father._disconnected:
            super().handleResponseEnd()


class Relay(proxy.ProxyClientFactory):
    """One relayed request: drops the owner's connection when the client goes away first."""

    protocol = RelayedAnswer

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.answer: RelayedAnswer | None = None
        self.client_gone = False
        self.father.notifyFinish().addErrback(self._client_gone)

    def buildProtocol(self, addr: Any) -> Any:
        self.answer = super().buildProtocol(addr)
        return self.answer

    def _client_gone(self, _: Any) -> None:
        self.client_gone = True
        if self.answer is not None and self.answer.transport is not None:
            self.answer.transport.loseConnection()

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        finish(self.father, refusal(self.father, 404, GONE))


class LongPollRelay:
    """
    Worker ``index``'s part in long-poll across workers (see the module docstring):
    :meth:`new_id` for its endpoint's ``new_id``, the instance itself as its ``elsewhere``, and
    :meth:`site` to serve on its own socket (``socket_of(index)``).
    """

    def __init__(self, reactor: Any, *, index: int, socket_of: Callable[[int], str]) -> None:
        self.reactor = reactor
        self.index = index
        self.socket_of = socket_of
        self.via = f"1.0 wsserver-worker-{index}".encode()

    def new_id(self) -> str:
        return f"{self.index}.{secrets.token_urlsafe(ID_BYTES)}"

    @staticmethod
    def owner(transport_id: str) -> int | None:
        """The worker a transport id names (None: not a worker's id)."""
        index, dot, _ = transport_id.partition(".")
        return int(index) if dot and index.isdigit() else None

    def __call__(self, transport_id: str, request: Any) -> Any:
        """Relay ``request`` to the worker that holds ``transport_id`` (None: this one, or none)."""
        owner = self.owner(transport_id)
        if owner is None or owner == self.index:
            return None
        headers = {name.lower(): value for name, value in request.requestHeaders.getAllRawHeaders()
                   if name.lower() not in HOP_BY_HOP}
        headers = {name: values[-1] for name, values in headers.items()}
        request.content.seek(0)
        body = request.content.read()
        headers[b"content-length"] = b"%d" % len(body)
        request.setHeader(b"Via", self.via)
        relay = Relay(b"POST", request.uri, b"HTTP/1.0", headers, body, request)
        self.reactor.connectUNIX(self.socket_of(owner), relay)
        return server.NOT_DONE_YET

    def site(self, endpoint: LongPollEndpoint) -> server.Site:
        """The site this worker serves on its relay socket: ``endpoint`` at its path, nothing else, no access log."""
        root = resource.Resource()
        root.putChild(endpoint.settings.path.strip("/").encode("utf-8"), endpoint)
        return RelaySite(root, reactor=self.reactor)


class RelaySite(server.Site):
    noisy = False

    def log(self, request: Any) -> None:
        """Relayed requests stay out of the access log, as long-poll requests do."""
