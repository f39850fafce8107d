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
(twisted.web.client.Agent, one connection per request), answer and all, with ``Via`` added.
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

import io
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, endpoints
from twisted.web import resource, server
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from wsserver.transports.longpoll import ID_BYTES, LongPollEndpoint, finish, refusal

#: Headers that belong to one hop, not to the relayed request or answer.
HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"upgrade",
              b"content-length", b"host"}
GONE = "no such long-poll transport (the worker that held it stopped)"


class WorkerSockets:
    """``endpointForURI`` for an Agent: ``http://<index>/...`` is worker ``index``'s relay socket."""

    def __init__(self, reactor: Any, socket_of: Callable[[int], str]) -> None:
        self.reactor = reactor
        self.socket_of = socket_of

    def endpointForURI(self, uri: Any) -> endpoints.UNIXClientEndpoint:
        return endpoints.UNIXClientEndpoint(self.reactor, self.socket_of(int(uri.host)))


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
        self.via = f"1.1 wsserver-worker-{index}".encode()
        self.agent = Agent.usingEndpointFactory(reactor, WorkerSockets(reactor, socket_of))

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
        headers = Headers({name: values for name, values in request.requestHeaders.getAllRawHeaders()
                           if name.lower() not in HOP_BY_HOP})
        request.content.seek(0)
        body = FileBodyProducer(io.BytesIO(request.content.read()))
        asked = self.agent.request(b"POST", b"http://%d%s" % (owner, request.uri), headers, body)
        asked.addCallback(self._answer, request)
        asked.addErrback(self._gone, request)
        # A client that goes away takes the relayed request with it: the owner's session then
        # stops writing into an answer nobody reads.
        request.notifyFinish().addErrback(lambda _: asked.cancel())
        return server.NOT_DONE_YET

    def _answer(self, response: Any, request: Any) -> Any:
        def copy(body: bytes) -> None:
            if request.finished or request._disconnected:
                return
            request.setResponseCode(response.code)
            for name, values in response.headers.getAllRawHeaders():
                if name.lower() not in HOP_BY_HOP:
                    request.responseHeaders.setRawHeaders(name, values)
            request.setHeader(b"Via", self.via)
            finish(request, body)
        return readBody(response).addCallback(copy)

    def _gone(self, failure: Any, request: Any) -> None:
        if failure.check(defer.CancelledError) or request.finished or request._disconnected:
            return
        finish(request, refusal(request, 404, GONE))

    def site(self, endpoint: LongPollEndpoint) -> server.Site:
        """The site this worker serves on its relay socket: ``endpoint`` at its path, nothing else, no access log."""
        root = resource.Resource()
        root.putChild(endpoint.settings.path.strip("/").encode("utf-8"), endpoint)
        return RelaySite(root, reactor=self.reactor)


class RelaySite(server.Site):
    noisy = False

    def log(self, request: Any) -> None:
        """Relayed requests stay out of the access log, as long-poll requests do."""
