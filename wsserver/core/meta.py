"""
The vocabulary of the WAMP meta API: the router's reserved namespace, its event topics, and how
sessions and subscriptions are described in meta events and procedure results.

Theory of operation
-------------------
Meta events and meta procedures are the router's word about itself, so the ``wamp.`` namespace
is the router's: clients may subscribe to ``wamp.`` topics and call ``wamp.`` procedures, but not
publish to them or register them. The broker publishes the subscription events, the realm the
session events, and :mod:`wsserver.core.procedures` serves the procedures; all describe things
with the functions here, in the shapes the WAMP spec gives, times as ISO 8601 UTC strings.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from autobahn.util import utcstr

if TYPE_CHECKING:
    from wsserver.core.session import Session
    from wsserver.core.subscriptions import Subscription

RESERVED_PREFIX = "wamp."

ON_JOIN = "wamp.session.on_join"
ON_LEAVE = "wamp.session.on_leave"
ON_SUBSCRIPTION_CREATE = "wamp.subscription.on_create"
ON_SUBSCRIBE = "wamp.subscription.on_subscribe"
ON_UNSUBSCRIBE = "wamp.subscription.on_unsubscribe"
ON_SUBSCRIPTION_DELETE = "wamp.subscription.on_delete"


def is_reserved(uri: str) -> bool:
    """Whether ``uri`` is in the router's own namespace."""
    return uri.startswith(RESERVED_PREFIX)


def iso8601(seconds: float) -> str:
    """A time in seconds since the epoch as ISO 8601 UTC with milliseconds, e.g. ``2024-05-01T12:00:00.000Z``."""
    return str(utcstr(datetime.fromtimestamp(seconds, timezone.utc)))


def subscription_details(subscription: Subscription[Any]) -> dict[str, Any]:
    """The spec's SubscriptionDetails."""
    return {
        "id": subscription.id,
        "created": iso8601(subscription.created),
        "uri": subscription.topic,
        "match": subscription.match,
    }


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
