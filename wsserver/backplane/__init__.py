"""
Backplanes: how publications reach the subscribers of other wsserver nodes.

Theory of operation
-------------------
The core router routes every publication to this node's subscribers, then hands it to its
``forward`` (see :class:`wsserver.core.broker.Broker`): that is :meth:`Backplane.forward`. A
backplane carries it to every other node, and each of those calls ``deliver(realm, publication,
retain)``, which the service points at ``Router.route_from_elsewhere`` and carries out. A node
never delivers its own publications twice: each message names its origin node, and a node skips
the messages it sent itself, so every subscriber receives each event exactly once.

:class:`LocalOnly` (the default) forwards nothing: one process, as before. :mod:`.redis` is the
Redis pub/sub backplane (``--redis``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service

from wsserver.core.broker import Publication

#: Route a publication from another node here: ``deliver(realm, publication, retain)``.
Deliver = Callable[[str, Publication, bool], None]


class Backplane(Protocol):
    """What the service needs of a backplane (it is also a Twisted service: started and stopped with the server)."""

    #: Set by the service before it starts: where publications from other nodes go.
    deliver: Deliver | None

    def forward(self, realm: str, publication: Publication, retain: bool) -> None:
        """Send ``publication`` (routed here already) to the other nodes; copy it before returning."""

    def setServiceParent(self, parent: Any) -> Any:
        """Start and stop with ``parent`` (a Twisted service)."""

    def not_ready(self) -> str | None:
        """Why this node should not take traffic yet (``/readyz`` says it), or None."""


class LocalOnly(Service):
    """The default: nothing leaves this node, and nothing arrives."""

    deliver: Deliver | None = None

    def forward(self, realm: str, publication: Publication, retain: bool) -> None:
        pass

    def not_ready(self) -> str | None:
        return None
