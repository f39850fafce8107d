"""
A small autobahn-python client for end-to-end tests, on asyncio (so tests need no Twisted reactor).

    async with connect(ws_url, serializer="json") as client:
        await client.session.subscribe(handler, "com.example.topic")
        await client.session.publish("com.example.topic", 1, options=PublishOptions(acknowledge=True))

``publish_once(ws_url, topic, *args)`` is the synchronous one-shot used by tests that only need an
event "published from Python".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig, PublishOptions
from autobahn.websocket.util import parse_url

SERIALIZERS = {"json": JsonSerializer, "msgpack": MsgPackSerializer, "cbor": CBORSerializer}


class Client(ApplicationSession):
    """A session whose join and leave are awaitable futures."""

    def __init__(self, config: ComponentConfig) -> None:
        super().__init__(config)
        loop = asyncio.get_running_loop()
        self.joined: asyncio.Future[Any] = loop.create_future()
        self.left: asyncio.Future[Any] = loop.create_future()
        self.disconnected: asyncio.Future[bool] = loop.create_future()

    def onJoin(self, details: Any) -> None:
        if not self.joined.done():
            self.joined.set_result(details)

    def onLeave(self, details: Any) -> None:
        if not self.joined.done():
            self.joined.set_exception(RuntimeError(f"session aborted: {details.reason} {details.message}"))
        if not self.left.done():
            self.left.set_result(details)
        self.disconnect()

    def onDisconnect(self) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("transport closed before WELCOME"))
        if not self.disconnected.done():
            self.disconnected.set_result(True)


class Connected:
    def __init__(self, session: Client, transport: Any) -> None:
        self.session = session
        self.transport = transport


@contextlib.asynccontextmanager
async def connect(ws_url: str, realm: str = "realm1", serializer: str = "json") -> AsyncIterator[Connected]:
    """Open a WebSocket, join ``realm``, and leave cleanly on exit."""
    loop = asyncio.get_running_loop()
    holder: list[Client] = []

    def make_session() -> Client:
        holder.append(Client(ComponentConfig(realm=realm)))
        return holder[0]

    factory = WampWebSocketClientFactory(make_session, url=ws_url, serializers=[SERIALIZERS[serializer]()])
    _, host, port, _, _, _ = parse_url(ws_url)
    transport, protocol = await loop.create_connection(factory, host, port)
    try:
        session = holder[0] if holder else None
        # the session is created when the WebSocket opens
        for _ in range(500):
            if holder:
                break
            await asyncio.sleep(0.01)
        session = holder[0]
        await asyncio.wait_for(session.joined, 10)
        yield Connected(session, protocol)
    finally:
        if holder and holder[0].is_attached():
            holder[0].leave()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(holder[0].disconnected), 5)
        transport.close()


def publish_once(ws_url: str, topic: str, *args: Any, **kwargs: Any) -> None:
    """Join, publish one event with acknowledgement, and leave: an event 'published from Python'."""

    async def run() -> None:
        async with connect(ws_url) as client:
            await client.session.publish(topic, *args, options=PublishOptions(acknowledge=True), **kwargs)

    asyncio.run(run())
