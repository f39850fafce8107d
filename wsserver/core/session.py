"""
One WAMP session's life, as data.

Theory of operation
-------------------
A :class:`Session` is created when a transport opens (``Router.attach``) and lives until the
transport is gone (``Router.detach``). Over that transport, WAMP sessions come and go: a HELLO
opens one, a GOODBYE handshake or an ABORT ends it, and the spec allows a new HELLO afterwards.

The states::

    ESTABLISHING --HELLO ok--> OPEN --GOODBYE from peer (we reply)-----------> ESTABLISHING
         |                      |  --router says GOODBYE--> CLOSING --GOODBYE--> (transport closed)
         |                      ^    (shutdown, wamp.session.kill)
         |                      |  --ABORT from peer---------------------------> (transport closed)
         |--HELLO, CHALLENGE--> AUTHENTICATING --AUTHENTICATE--> VERIFYING --proven: WELCOME
         |                                                           '--not: ABORT (delayed), closed
         '--HELLO refused / anything else: ABORT, transport closed

VERIFYING is the wait for the check of an AUTHENTICATE, which runs off the router's thread (a
password hash takes milliseconds): one check at a time per session, and only an ABORT may come
meanwhile. An AUTHENTICATE over the failed-login limits skips it (refused at once, see router.py).

A session that is refused (a failed login included) is CLOSED at once, while the ABORT that
tells it waits out the refusal delay: whatever it sends meanwhile is ignored.

``TRANSITIONS`` maps (state, kind of incoming message) to what the router does with it; a pair
that is not in the table is a protocol violation: the router answers ABORT
``wamp.error.protocol_violation`` and closes the transport. Messages a router only ever *sends*
(WELCOME, EVENT, ...) are not in the table either, so a client that sends them is cut off the
same way.

A session keeps the reverse indexes the router needs to drop it in one step: its subscriptions,
its registrations and the calls in flight that it made or must answer. Nothing else refers to a
session once those are gone.
"""

from __future__ import annotations

import enum
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from wsserver.core.authentication import Pending
    from wsserver.core.dealer import Invocation, Registration
    from wsserver.core.limits import TokenBucket
    from wsserver.core.subscriptions import Subscription

PeerT = TypeVar("PeerT")
MemberT = TypeVar("MemberT")

#: What a session has none of, shared: most sessions (subscribers) never register nor call, and an
#: empty set of their own would cost each 216 bytes per kind (20,000 idle sessions: 8 MB).
NONE: frozenset[Any] = frozenset()


def with_member(members: AbstractSet[MemberT], member: MemberT) -> set[MemberT]:
    """``members`` and ``member``: ``members`` itself once it is a set of its own. Assign the result."""
    own = members if isinstance(members, set) else set(members)
    own.add(member)
    return own


def without_member(members: AbstractSet[MemberT], member: MemberT) -> AbstractSet[MemberT]:
    """``members`` less ``member`` (if it was there). Assign the result."""
    if isinstance(members, set):
        members.discard(member)
    return members


class State(enum.Enum):
    ESTABLISHING = "establishing"
    AUTHENTICATING = "authenticating"
    VERIFYING = "verifying"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Handling(enum.Enum):
    """What the router does with a message in a state (the values name ``Router`` methods)."""

    HELLO = "_on_hello"
    AUTHENTICATE = "_on_authenticate"
    GOODBYE = "_on_goodbye"
    GOODBYE_REPLY = "_on_goodbye_reply"
    ABORT = "_on_abort"
    SUBSCRIBE = "_on_subscribe"
    UNSUBSCRIBE = "_on_unsubscribe"
    PUBLISH = "_on_publish"
    REGISTER = "_on_register"
    UNREGISTER = "_on_unregister"
    CALL = "_on_call"
    CANCEL = "_on_cancel"
    YIELD = "_on_yield"
    ERROR = "_on_error"
    INVALID_REQUEST = "_on_invalid_request"
    IGNORE = "_ignore"


#: What a joined client may send besides GOODBYE and ABORT: requests to the broker and the dealer,
#: and a callee's answers to INVOCATION (YIELD, ERROR).
REQUESTS: dict[str, Handling] = {
    "Subscribe": Handling.SUBSCRIBE,
    "Unsubscribe": Handling.UNSUBSCRIBE,
    "Publish": Handling.PUBLISH,
    "Register": Handling.REGISTER,
    "Unregister": Handling.UNREGISTER,
    "Call": Handling.CALL,
    "Cancel": Handling.CANCEL,
    "Yield": Handling.YIELD,
    "Error": Handling.ERROR,
    "InvalidRequest": Handling.INVALID_REQUEST,
}

#: (state, message name) -> handling. Message names are autobahn's (``type(message).__name__``);
#: ``InvalidRequest`` / ``InvalidHello`` are our own markers for a request the router answers
#: with ERROR (an invalid URI or option) and for a HELLO with an invalid realm name.
TRANSITIONS: dict[tuple[State, str], Handling] = {
    (State.ESTABLISHING, "Hello"): Handling.HELLO,
    (State.ESTABLISHING, "InvalidHello"): Handling.HELLO,
    (State.ESTABLISHING, "Abort"): Handling.ABORT,
    (State.AUTHENTICATING, "Authenticate"): Handling.AUTHENTICATE,
    (State.AUTHENTICATING, "Abort"): Handling.ABORT,
    (State.VERIFYING, "Abort"): Handling.ABORT,
    (State.OPEN, "Goodbye"): Handling.GOODBYE,
    (State.OPEN, "Abort"): Handling.ABORT,
    **{(State.OPEN, kind): handling for kind, handling in REQUESTS.items()},
    # After the router said GOODBYE, only the peer's GOODBYE matters; in-flight requests are
    # dropped, as the spec says.
    (State.CLOSING, "Goodbye"): Handling.GOODBYE_REPLY,
    (State.CLOSING, "Abort"): Handling.ABORT,
    **{(State.CLOSING, kind): Handling.IGNORE for kind in REQUESTS},
    # The transport is being closed: whatever still arrives is moot.
    **{
        (State.CLOSED, kind): Handling.IGNORE
        for kind in ("Hello", "InvalidHello", "Authenticate", "Goodbye", "Abort", *REQUESTS)
    },
}


class TransportInfo(Protocol):
    """
    What a transport tells the core about one connection, for ``wamp.session.get`` and the admin
    page: read when asked, never on the routing path.
    """

    @property
    def kind(self) -> str:
        """What carries the session, e.g. ``websocket/json``, ``longpoll/json``, ``sse``."""

    def buffered_bytes(self) -> int:
        """Bytes waiting for the client in the connection's send buffer now."""


class Session(Generic[PeerT]):
    """
    A transport's WAMP session state. ``peer`` is the transport's own handle, opaque to the core:
    the router hands it back in the actions it returns so the transport knows whom to write to.
    ``address``: the client's (failed logins are limited per address); ``transport``: what
    the transport tells about the connection (None: nothing, e.g. in-process).
    """

    __slots__ = (
        "peer", "state", "id", "realm", "authid", "authrole", "authmethod", "authprovider",
        "subscriptions", "registrations", "invocations", "pending", "publish_bucket", "address",
        "transport", "interruptible",
    )

    def __init__(self, peer: PeerT, address: str | None = None, transport: TransportInfo | None = None) -> None:
        self.peer = peer
        self.transport = transport
        #: The client's address, as the transport admitted it (None: unknown, e.g. in-process).
        self.address = address
        self.state = State.ESTABLISHING
        #: WAMP session id, 0 until WELCOME.
        self.id = 0
        self.realm: str | None = None
        self.authid: str | None = None
        self.authrole: str | None = None
        self.authmethod: str | None = None
        self.authprovider: str | None = None
        self.subscriptions: set[Subscription[PeerT]] = set()
        #: The procedures it provides, as a callee (change it with with_member / without_member).
        self.registrations: AbstractSet[Registration[PeerT]] = NONE
        #: The calls in flight that it made or must answer (the same).
        self.invocations: AbstractSet[Invocation[PeerT]] = NONE
        #: While AUTHENTICATING: the challenge sent and what must answer it.
        self.pending: Pending | None = None
        #: Its publish rate limit (None: not limited).
        self.publish_bucket: TokenBucket | None = None
        #: Its HELLO announced the callee feature ``call_canceling``: it may be sent INTERRUPT.
        self.interruptible = False

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.state.value} realm={self.realm!r}>"
