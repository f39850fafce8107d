"""
A synchronous autobahn-python client for end-to-end tests.

txaio, under autobahn, serves one framework per process, and the server's adapters (tested in the
same pytest process) are Twisted: so the test client is autobahn's *Twisted* client, run on a
reactor in a background thread, behind a blocking facade::

    with WampClient(server.ws_url, serializer="cbor") as client:
        inbox = client.subscribe("com.example.topic")
        client.publish("com.example.topic", 1, "two", k=3)        # acknowledged by default
        assert inbox.get() == ((1, "two"), {"k": 3})

WAMP errors raise ``autobahn.wamp.exception.ApplicationError`` in the calling thread. To log in,
pass one of autobahn's authenticators and the authid::

    WampClient(url, authenticator=create_authenticator("ticket", ticket="..."), authid="alice")
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import txaio

txaio.use_twisted()

from autobahn.twisted.wamp import ApplicationSession  # noqa: E402
from autobahn.twisted.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateResponseAccept  # noqa: E402
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer  # noqa: E402
from autobahn.wamp.types import ComponentConfig, PublishOptions, SubscribeOptions  # noqa: E402
from autobahn.websocket.util import parse_url  # noqa: E402
from twisted.internet import defer, ssl  # noqa: E402
from twisted.internet.threads import blockingCallFromThread  # noqa: E402

SERIALIZERS = {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}
_reactor_lock = threading.Lock()


def reactor() -> Any:
    """The global reactor, running in a daemon thread (started on first use)."""
    from twisted.internet import reactor as the_reactor

    with _reactor_lock:
        if not the_reactor.running:
            started = threading.Event()
            the_reactor.callWhenRunning(started.set)
            threading.Thread(
                target=the_reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
            ).start()
            if not started.wait(10):
                raise RuntimeError("the test reactor did not start")
    return the_reactor


class Inbox:
    """Events of one subscription, as (args, kwargs) tuples, in arrival order."""

    def __init__(self) -> None:
        self.events: queue.Queue[tuple[tuple[Any, ...], dict[str, Any]]] = queue.Queue()
        self.subscription: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("details", None)
        self.events.put((args, kwargs))

    def get(self, timeout: float = 5.0) -> tuple[tuple[Any, ...], dict[str, Any]]:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout}s") from None

    def nothing_within(self, seconds: float) -> bool:
        try:
            self.events.get(timeout=seconds)
        except queue.Empty:
            return True
        return False


class _Session(ApplicationSession):
    def __init__(self, config: ComponentConfig, authenticator: Any = None, authid: str | None = None) -> None:
        super().__init__(config)
        self.authenticator = authenticator
        self.login_authid = authid
        self.joined: defer.Deferred[Any] = defer.Deferred()
        self.gone: defer.Deferred[None] = defer.Deferred()

    def onConnect(self) -> None:
        if self.authenticator is None:
            return super().onConnect()
        auth = self.authenticator
        self.join(self.config.realm, authmethods=[auth.name], authid=self.login_authid, authextra=auth.authextra)
        return None

    def onChallenge(self, challenge: Any) -> Any:
        return self.authenticator.on_challenge(self, challenge)

    def onJoin(self, details: Any) -> None:
        self.joined.callback(details)

    def onLeave(self, details: Any) -> None:
        if not self.joined.called:
            self.joined.errback(RuntimeError(f"session refused: {details.reason} {details.message}"))
        self.disconnect()

    def onDisconnect(self) -> None:
        if not self.joined.called:
            self.joined.errback(ConnectionError("transport closed before WELCOME"))
        if not self.gone.called:
            self.gone.callback(None)


class WampClient:
    """One WAMP session over WebSocket, joined on construction (raises if refused)."""

    def __init__(
        self, ws_url: str, realm: str = "realm1", serializer: str = "json", timeout: float = 10.0,
        trust_pem: bytes | None = None, authenticator: Any = None, authid: str | None = None,
        compression: bool = False,
    ) -> None:
        """
        ``trust_pem``: for wss://, the certificate (PEM) to trust, e.g. a test's self-signed one.
        ``compression``: offer permessage-deflate; ``self.extensions`` are what the server accepted.
        """
        self.timeout = timeout
        self.compression = compression
        self.extensions: list[Any] = []
        self.trust_pem = trust_pem
        self.authenticator = authenticator
        self.authid = authid
        self._reactor = reactor()
        self.session: _Session = self._call(self._connect, ws_url, realm, serializer)

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        def with_timeout() -> Any:
            result = defer.maybeDeferred(function, *args, **kwargs)
            return result.addTimeout(self.timeout, self._reactor)

        return blockingCallFromThread(self._reactor, with_timeout)

    def _connect(self, ws_url: str, realm: str, serializer: str) -> defer.Deferred[_Session]:
        """Connect and join; fires with the session, or fails with why it could not."""
        created: defer.Deferred[_Session] = defer.Deferred()

        def make_session() -> _Session:
            session = _Session(ComponentConfig(realm=realm), self.authenticator, self.authid)
            created.callback(session)  # Autobahn makes it once the WebSocket is open
            return session

        def failed(connector: Any, reason: Any) -> None:
            if not created.called:
                created.errback(reason)

        factory = WampWebSocketClientFactory(make_session, url=ws_url, serializers=[SERIALIZERS[serializer]()])
        factory.clientConnectionFailed = failed
        if self.compression:
            def accept(response: Any) -> Any:
                self.extensions.append(response)
                return PerMessageDeflateResponseAccept(response)

            factory.setProtocolOptions(perMessageCompressionOffers=[PerMessageDeflateOffer()],
                                       perMessageCompressionAccept=accept)
        secure, host, port, _, _, _ = parse_url(ws_url)
        if secure:
            trust = ssl.Certificate.loadPEM(self.trust_pem) if self.trust_pem else None
            options = ssl.optionsForClientTLS("localhost", trustRoot=trust)
            self._reactor.connectSSL(host, port, factory, options)
        else:
            self._reactor.connectTCP(host, port, factory)
        return created.addCallback(lambda session: session.joined.addCallback(lambda _: session))

    @property
    def session_id(self) -> int:
        return int(self.session._session_id)

    def subscribe(self, topic: str, **options: Any) -> Inbox:
        inbox = Inbox()
        inbox.subscription = self._call(
            self.session.subscribe, inbox, topic, options=SubscribeOptions(details=True, **options)
        )
        return inbox

    def unsubscribe(self, inbox: Inbox) -> None:
        self._call(inbox.subscription.unsubscribe)

    def publish(self, topic: str, *args: Any, acknowledge: bool = True, **kwargs: Any) -> Any:
        """Publish; with ``acknowledge`` (the default) wait for PUBLISHED and return the publication."""
        option_names = ("exclude_me", "retain", "exclude", "eligible")
        options = {name: kwargs.pop(name) for name in option_names if name in kwargs}
        publish_options = PublishOptions(acknowledge=acknowledge, **options)
        return self._call(self.session.publish, topic, *args, options=publish_options, **kwargs)

    def leave(self) -> None:
        """GOODBYE and wait until the transport is closed."""

        def leave() -> Any:
            if self.session.is_attached():
                self.session.leave()
                return self.session.gone
            return None

        self._call(leave)

    def __enter__(self) -> WampClient:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.leave()


def publish_once(ws_url: str, topic: str, *args: Any, **kwargs: Any) -> None:
    """Join, publish one event with acknowledgement, and leave: an event 'published from Python'."""
    with WampClient(ws_url) as client:
        client.publish(topic, *args, **kwargs)
