"""
The vocabulary of the WAMP meta API: the router's reserved namespace, its event topics, and how
sessions and subscriptions are described in meta events and procedure results.

Theory of operation
-------------------
Meta events and meta procedures are the router's word about itself, so the ``wamp.`` namespace
is the router's: clients may subscribe to ``wamp.`` topics and call ``wamp.`` procedures, but not
publish to them or register them. The broker publishes the subscription events, the dealer the
registration events (the same :class:`Lifecycle`), the realm the session events, and :mod:`wsserver.core.procedures` serves the procedures; all describe things
with the functions here, in the shapes the WAMP spec gives, times as ISO 8601 UTC strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from autobahn.util import utcstr

if TYPE_CHECKING:
    from wsserver.core.dealer import Registration
    from wsserver.core.session import Session
    from wsserver.core.subscriptions import Subscription

RESERVED_PREFIX = "wamp."

ON_JOIN = "wamp.session.on_join"
ON_LEAVE = "wamp.session.on_leave"


@dataclass(frozen=True, slots=True)
class Lifecycle:
    """
    The meta events of a thing sessions share (a subscription, a registration): it is created, a
    session joins it, a session leaves it, it is deleted with its last session.
    """

    created: str
    added: str
    removed: str
    deleted: str

    def joined(self, session_id: int, details: dict[str, Any], *, created: bool) -> list[tuple[str, list[Any]]]:
        """(topic, args) of the events for ``session_id`` joining the thing ``details`` describes."""
        events = [(self.created, [session_id, details])] if created else []
        return events + [(self.added, [session_id, details["id"]])]

    def left(self, session_id: int, thing_id: int, *, deleted: bool) -> list[tuple[str, list[Any]]]:
        """(topic, args) of the events for ``session_id`` leaving ``thing_id`` (and it being deleted)."""
        events = [(self.removed, [session_id, thing_id])]
        return events + [(self.deleted, [session_id, thing_id])] if deleted else events


SUBSCRIPTION_EVENTS = Lifecycle(
    "wamp.subscription.on_create", "wamp.subscription.on_subscribe",
    "wamp.subscription.on_unsubscribe", "wamp.subscription.on_delete",
)
REGISTRATION_EVENTS = Lifecycle(
    "wamp.registration.on_create", "wamp.registration.on_register",
    "wamp.registration.on_unregister", "wamp.registration.on_delete",
)


def is_reserved(uri: str) -> bool:
    """Whether ``uri`` is in the router's own namespace."""
    return uri.startswith(RESERVED_PREFIX)


def iso8601(seconds: float) -> str:
    """A time in seconds since the epoch as ISO 8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.000Z``."""
    return str(utcstr(datetime.fromtimestamp(seconds, timezone.utc)))


def subscription_details(subscription: Subscription[Any]) -> dict[str, Any]:
    """The spec's SubscriptionDetails."""
    return _shared_details(subscription.id, subscription.created, subscription.topic, subscription.match)


def registration_details(registration: Registration[Any]) -> dict[str, Any]:
    """The spec's RegistrationDetails."""
    details = _shared_details(registration.id, registration.created, registration.procedure, registration.match)
    return {**details, "invoke": registration.invoke}


def _shared_details(thing_id: int, created: float, uri: str, match: str) -> dict[str, Any]:
    return {"id": thing_id, "created": iso8601(created), "uri": uri, "match": match}


def session_details(session: Session[Any]) -> dict[str, Any]:
    """The spec's session details (``wamp.session.on_join``, ``wamp.session.get``)."""
    return {
        "session": session.id,
        "authid": session.authid,
        "authrole": session.authrole,
        "authmethod": session.authmethod,
        "authprovider": session.authprovider,
    }


def connection_details(session: Session[Any], *, with_address: bool) -> dict[str, Any]:
    """
    What ``wamp.session.get`` adds to the spec's details: what carries the session, its
    subscriptions and the bytes waiting for it; ``with_address``: its client's address too (for
    the admin role only: an address is personal data).
    """
    transport = session.transport
    details: dict[str, Any] = {
        "transport": None if transport is None else transport.kind,
        "subscriptions": len(session.subscriptions),
        "buffered_bytes": 0 if transport is None else transport.buffered_bytes(),
    }
    if with_address:
        details["address"] = session.address
    return details
