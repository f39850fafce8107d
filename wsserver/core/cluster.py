"""
The core's seam for a cluster of nodes: sessions, registrations and calls of other nodes.

Theory of operation
-------------------
A router given an :class:`Elsewhere` tells it, synchronously, what the rest of the cluster must
learn of this node: a session joined or left (:meth:`Elsewhere.joined`, :meth:`Elsewhere.left`),
a procedure was registered or unregistered, a CALL must go to the node of its callee
(:meth:`Elsewhere.invoke`), a call that came from another node was answered
(:meth:`Elsewhere.answer`). The adapter (``wsserver/backplane/cluster.py``) carries that to the
other nodes, and they hand it to their routers through the ``*_elsewhere`` methods of
:class:`~wsserver.core.router.Router`, which return actions as every other core call does.

Each node keeps a mirror of the other nodes' sessions and registrations, by node, so that the
meta API answers at once for the whole cluster and a CALL finds its callee's node without asking
anyone. A node that is lost (:meth:`~wsserver.core.router.Router.node_lost`: its presence expired,
or it said goodbye) takes its mirrored sessions (``wamp.session.on_leave`` for each), its
registrations and the calls in flight to it (ERROR :data:`NODE_LOST` to their callers) with it.

A call across nodes, as the caller's node (B) and the callee's (A) see it::

    caller --CALL--> B: invocation i (caller, request), node A --invoke(A, RemoteCall(i))--> A
    A: invocation j (no caller, origin (B, i)) --INVOCATION(j)--> callee
    callee --YIELD(j)--> A --answer(B, RemoteAnswer(i))--> B --RESULT(request)--> caller

On B the call counts against the caller's calls in flight as a local call does; the HTTP API's
timeout (``forget_call``) forgets it, and a late answer is dropped. On A a call whose caller's
node is lost is forgotten the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

#: The ERROR a caller gets when the node of its callee is lost before the callee answered.
NODE_LOST = "wsserver.error.node_lost"


@dataclass(frozen=True, slots=True)
class RemoteCall:
    """A CALL on another node for a callee on this one: ``invocation`` is the caller node's id for it."""

    realm: str
    invocation: int
    procedure: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class RemoteAnswer:
    """The answer to a :class:`RemoteCall`: RESULT (``error`` None) or ERROR ``error``, with a payload."""

    realm: str
    invocation: int
    error: str | None = None
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None


class Elsewhere(Protocol):
    """
    What a router tells the other nodes. Every method is called from inside a core call and must
    return at once (queue the I/O); it must copy what it keeps.
    """

    def joined(self, realm: str, details: dict[str, Any]) -> None:
        """A session joined ``realm`` here; ``details`` as ``wamp.session.get`` gives them."""

    def left(self, realm: str, session_id: int) -> None:
        """The session ``session_id`` of ``realm`` left this node."""

    def registered(self, realm: str, procedure: str, registration_id: int) -> None:
        """A callee here registered ``procedure`` in ``realm``."""

    def unregistered(self, realm: str, procedure: str) -> None:
        """``procedure`` of ``realm`` is no longer registered here."""

    def invoke(self, node: str, call: RemoteCall) -> None:
        """Send ``call`` to ``node``, whose callee registered its procedure."""

    def answer(self, node: str, answer: RemoteAnswer) -> None:
        """Send ``answer`` back to ``node``, where the call came from."""
