"""
The cluster on Redis (with ``--redis``): session ids unique across nodes, every node's sessions
in the session meta API, and remote procedure calls to callees on other nodes.

Theory of operation
-------------------
This is the core's :class:`~wsserver.core.cluster.Elsewhere`, on the Redis backplane's two
connections (:mod:`.redis`). Keys and channels (``P`` is ``wsserver:<db>:``)::

    P nodes            SET     the ids of the nodes that joined the cluster
    P node:<id>        HASH    a node's presence: "alive" -> its slot; "seq" -> the
                               number of its last change (see below); per session
                               msgpack [s, realm, session id] -> msgpack details; per
                               registration msgpack [r, realm, procedure] -> its id.
                               EXPIRE ttl, refreshed every ttl / 3 by the node while it lives
    P slot:<k>         STRING  the node that holds session id range k (expires after ttl, refreshed too)
    P slots            INT     INCRemented to pick the next range to try
    P cluster          channel every change of presence (join, leave, register, unregister,
                               goodbye), as it happens
    P to:<id>          channel calls for a node's callees, and answers to its callers

A node writes its own hash and announces each change on ``P cluster``; the others apply the
announcement to their routers at once. Every ttl / 3 each node refreshes its TTLs and looks at
the others: a node in ``P nodes`` whose hash has expired (it died without a word: SIGKILL, a
lost machine) is lost (:meth:`~wsserver.core.router.Router.node_lost`: ``on_leave`` for its
sessions, its registrations gone, calls to it ended with ``wsserver.error.node_lost``), so a dead
node is gone from every other within ttl + ttl / 3. A node found there that is not known yet is
read whole (HGETALL). A node stopping cleanly deletes its keys and says goodbye: gone at once.
After its subscription to the channels is (re)made, a node reads every other node whole and
applies the difference, so what it missed while not subscribed is made up.

A snapshot (HGETALL on the command connection) and the announcements (on the subscription) race:
an announcement may arrive before the reply to a read that Redis answered before the change.
So every change of a node's presence is numbered (``seq``, in its hash and in its announcement),
and the others keep the number of the last change of it they applied: an announcement numbered
no later is skipped (the snapshot had it), and a snapshot older than what was applied is read
again.

Session ids: the WELCOME cannot wait for Redis, so a node claims a range of ids once, atomically
(``SET P slot:<k> node NX``: one holder per range while it lives) and draws its sessions' ids in
it: the range in the high 20 bits, 33 random bits below (the router skips ids in use). Two nodes
never hold one range, so no two sessions of the cluster share an id, by construction rather than
by chance. Range 0 is never claimed: a node that has not reached Redis yet draws its ids there,
unique against every node that has.

When Redis is unreachable, the node serves its own sessions; its presence expires from the others
after the TTL (they see its sessions leave), and is written again, whole, when it is back. A call
to another node's callee made meanwhile gets ERROR ``wsserver.error.node_lost`` at once, and so do
the calls across nodes in flight when the connection is lost (their answers would be lost with it).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack
from twisted.application.service import Service
from twisted.internet import defer, task
from twisted.logger import Logger

from wsserver.backplane.redis import RedisBackplane
from wsserver.core.cluster import NODE_LOST, RemoteAnswer, RemoteCall
from wsserver.core.router import Action, Router

log = Logger()

#: Seconds a node's presence outlives its last refresh: a dead node's sessions and registrations
#: leave the others within this (plus a third of it). Short enough for users to see a dead
#: node's sessions go soon; long enough that a busy node (or Redis) pausing a few seconds is
#: not taken for dead. Refreshed every third of it.
PRESENCE_TTL = 15.0
#: Bits of a session id drawn at random inside a node's range; the range is in the bits above
#: (53 in all, WAMP's id range): 2**20 - 1 ranges of 2**33 ids.
RANDOM_BITS = 33
RANGES = 2 ** (53 - RANDOM_BITS) - 1
#: Ranges tried before a node gives up claiming one (and draws in range 0, logged).
CLAIM_ATTEMPTS = 32
VERSION = 1
SESSION, REGISTRATION, ALIVE, SEQ = "s", "r", b"alive", b"seq"


def pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@dataclass
class NodeView:
    """What this node applied to its router of another node: its sessions and registrations."""

    sessions: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    registrations: dict[tuple[str, str], int] = field(default_factory=dict)
    #: The number of its last change applied.
    seq: int = 0


class RedisCluster(Service):
    """
    The other nodes on ``backplane``'s Redis, for ``router`` (set it before starting; the router
    must be built with ``elsewhere=`` this and ``session_id=`` :meth:`session_id`). ``carry_out``
    carries out the actions the router returns. ``ttl``: seconds a node's presence outlives it.
    """

    router: Router[Any] | None = None

    def __init__(
        self, backplane: RedisBackplane, *, reactor: Any, carry_out: Callable[[list[Action[Any]]], None],
        ttl: float = PRESENCE_TTL, randbits: Callable[[int], int] = random.SystemRandom().getrandbits,
    ) -> None:
        self.backplane = backplane
        self.reactor = reactor
        self.carry_out = carry_out
        self.ttl = ttl
        self._randbits = randbits
        self.node_id = backplane.node_id
        prefix = f"wsserver:{backplane.address.db}:"
        self._nodes_key = (prefix + "nodes").encode()
        self._slots_key = (prefix + "slots").encode()
        self._slot_prefix = prefix + "slot:"
        self._node_prefix = prefix + "node:"
        self._cluster_channel = (prefix + "cluster").encode()
        self._to_prefix = prefix + "to:"
        #: This node's hash, as it must be in Redis (rewritten whole when Redis lost it).
        self.presence: dict[bytes, bytes] = {}
        #: The other nodes, as applied to the router.
        self.known: dict[str, NodeView] = {}
        #: The session id range this node holds (0: none yet).
        self.slot = 0
        #: The number of this node's last change of presence.
        self.seq = 0
        self._connection: Any = None
        #: Whether our channels are subscribed: what comes on them (answers, announcements) reaches us.
        self._listening = False
        self._heartbeat = task.LoopingCall(self.refresh)
        self._heartbeat.clock = reactor
        backplane.listeners[self._cluster_channel] = _guarded(self.announcement_received)
        backplane.listeners[self._to(self.node_id)] = _guarded(self.direct_received)
        backplane.watchers.append(self._connection_changed)
        backplane.on_subscribed.append(self._subscribed)
        backplane.on_unsubscribed.append(self._unsubscribed)

    def _node_key(self, node: str) -> bytes:
        return (self._node_prefix + node).encode()

    def _to(self, node: str) -> bytes:
        return (self._to_prefix + node).encode()

    # -- session ids ------------------------------------------------------------------------------

    def session_id(self) -> int:
        """A session id in this node's range (the router skips one in use); range 0 before one is held."""
        return (self.slot << RANDOM_BITS) | (self._randbits(RANDOM_BITS) or 1)

    # -- the service ------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._heartbeat.start(self.ttl / 3, now=False)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self._heartbeat.running:
            self._heartbeat.stop()
        connection = self._connection
        if connection is None:
            return
        # Leave at once rather than after the TTL: the others drop this node's sessions now.
        try:
            yield connection.execute_command("PUBLISH", self._cluster_channel, self._message("bye"))
            yield connection.execute_command("DEL", self._node_key(self.node_id))
            yield connection.execute_command("SREM", self._nodes_key, self.node_id)
            if self.slot:
                yield connection.execute_command("DEL", (self._slot_prefix + str(self.slot)).encode())
        except Exception as error:  # Redis gone meanwhile: the TTL removes us instead
            log.warn("Redis cluster: could not leave the cluster cleanly ({error}); the others drop this "
                     "node within {ttl}s", error=str(error), ttl=self.ttl)

    # -- the core's Elsewhere ---------------------------------------------------------------------

    def joined(self, realm: str, details: dict[str, Any]) -> None:
        self._own(pack([SESSION, realm, details["session"]]), pack(details))
        self._announce("join", realm=realm, details=details)

    def left(self, realm: str, session_id: int) -> None:
        self._disown(pack([SESSION, realm, session_id]))
        self._announce("leave", realm=realm, session=session_id)

    def registered(self, realm: str, procedure: str, registration_id: int) -> None:
        self._own(pack([REGISTRATION, realm, procedure]), pack(registration_id))
        self._announce("register", realm=realm, procedure=procedure, registration=registration_id)

    def unregistered(self, realm: str, procedure: str) -> None:
        self._disown(pack([REGISTRATION, realm, procedure]))
        self._announce("unregister", realm=realm, procedure=procedure)

    def invoke(self, node: str, call: RemoteCall) -> None:
        message = self._message(
            "call", realm=call.realm, invocation=call.invocation, procedure=call.procedure, args=call.args,
            kwargs=call.kwargs,
        )
        # Not listening, the answer would be lost on its way back: the caller would wait for ever.
        sent = self._execute("PUBLISH", self._to(node), message, quiet=False) if self._listening else None
        if sent is None:
            self._lost_call(node, call, "Redis is unreachable")
            return

        def delivered(receivers: Any) -> None:
            if not isinstance(receivers, int):
                self._lost_call(node, call, str(receivers))
            elif not receivers:  # nobody listens on its channel: that node is gone (its TTL not out yet)
                self._lost_call(node, call, f"node {node} is gone")

        sent.addCallbacks(delivered, lambda failure: self._lost_call(node, call, failure.getErrorMessage()))

    def answer(self, node: str, answer: RemoteAnswer) -> None:
        message = self._message(
            "answer", realm=answer.realm, invocation=answer.invocation, error=answer.error, args=answer.args,
            kwargs=answer.kwargs,
        )
        self._execute("PUBLISH", self._to(node), message)

    def _lost_call(self, node: str, call: RemoteCall, why: str) -> None:
        """The call could not reach ``node``: its caller gets ERROR ``wsserver.error.node_lost`` (in a later turn)."""
        answer = RemoteAnswer(call.realm, call.invocation, NODE_LOST, [f"the callee's node cannot be reached: {why}"])
        self.reactor.callLater(0, self._apply, lambda router: router.answer_from_elsewhere(node, answer))

    # -- what the others say ----------------------------------------------------------------------

    def announcement_received(self, data: bytes) -> None:
        """A change of another node's presence, on ``P cluster``: apply it."""
        message = self._decoded(data)
        if message is None or message["node"] == self.node_id:
            return
        node, op = message["node"], message["op"]
        if op == "bye":
            self._lose(node, "left the cluster")
            return
        if op == "hello":  # it (re)wrote its presence whole: read it so
            self._read(node)
            return
        view = self.known.setdefault(node, NodeView())
        seq = message["seq"]
        if seq <= view.seq:
            return  # a snapshot read since had it
        realm = message["realm"]
        change: Callable[[Router[Any]], Iterable[Action[Any]] | None]
        if op == "join":
            details = message["details"]
            session_id = details["session"]
            view.sessions[(realm, session_id)] = details
            change = lambda router: router.joined_elsewhere(node, realm, details)  # noqa: E731
        elif op == "leave":
            session_id = message["session"]
            view.sessions.pop((realm, session_id), None)
            change = lambda router: router.left_elsewhere(node, realm, session_id)  # noqa: E731
        elif op == "register":
            procedure, registration_id = message["procedure"], message["registration"]
            view.registrations[(realm, procedure)] = registration_id
            change = lambda router: router.registered_elsewhere(node, realm, procedure, registration_id)  # noqa: E731
        elif op == "unregister":
            procedure = message["procedure"]
            view.registrations.pop((realm, procedure), None)
            change = lambda router: router.unregistered_elsewhere(node, realm, procedure)  # noqa: E731
        else:
            return
        # Numbered as applied only once it was read whole (a malformed one raised above, before).
        view.seq = seq
        self._apply(change)

    def direct_received(self, data: bytes) -> None:
        """A call for a callee here, or the answer to a call made here, on ``P to:<this node>``."""
        message = self._decoded(data)
        if message is None:
            return
        node = message["node"]
        if message["op"] == "call":
            call = RemoteCall(message["realm"], message["invocation"], message["procedure"], message["args"],
                              message["kwargs"])
            self._apply(lambda router: router.call_from_elsewhere(node, call))
        elif message["op"] == "answer":
            answer = RemoteAnswer(message["realm"], message["invocation"], message["error"], message["args"],
                                  message["kwargs"])
            self._apply(lambda router: router.answer_from_elsewhere(node, answer))

    def _decoded(self, data: bytes) -> dict[str, Any] | None:
        try:
            message = unpack(data)
        except Exception:
            log.failure("Redis cluster: dropped a message that is not one")
            return None
        if not isinstance(message, dict) or message.get("v") != VERSION:
            log.warn("Redis cluster: dropped a message of another format version (a node of another release?)")
            return None
        return message

    # -- presence ---------------------------------------------------------------------------------

    def _connection_changed(self, connection: Any) -> None:
        self._connection = connection
        if connection is None:
            # Answers on their way are lost with the connection: no caller waits for them in vain.
            self._apply(lambda router: router.calls_elsewhere_lost("the connection to Redis was lost"))
        elif self._listening:
            self._join()

    def _subscribed(self) -> None:
        """Our channels are subscribed (again): join, and read every other node for what was missed meanwhile."""
        self._listening = True
        if self._connection is not None:
            self._join()

    def _unsubscribed(self) -> None:
        self._listening = False
        self._apply(lambda router: router.calls_elsewhere_lost("the subscription to Redis was lost"))

    def _join(self) -> None:
        """
        Both connections are up: join the cluster. Not before: a node is present only once calls
        and announcements reach it, so that the others never call a node that cannot hear them.
        """
        self._join_cluster().addErrback(lambda failure: log.failure("Redis cluster: joining failed", failure))

    @defer.inlineCallbacks
    def _join_cluster(self) -> Any:
        """(Re)connected: hold a range, write our presence whole, and read the others."""
        if not self.slot:
            yield self._claim_range()
        yield self._write_presence()
        others = yield self._look_around(reread=True)
        log.info("Redis cluster: node {node} joined the cluster with session id range {slot} ({others} other "
                 "node(s) seen; presence TTL {ttl}s)", node=self.node_id, slot=self.slot, others=others, ttl=self.ttl)

    @defer.inlineCallbacks
    def _claim_range(self) -> Any:
        for _ in range(CLAIM_ATTEMPTS):
            counter = yield self._connection.execute_command("INCR", self._slots_key)
            candidate = (int(counter) - 1) % RANGES + 1
            held = yield self._connection.execute_command(
                "SET", (self._slot_prefix + str(candidate)).encode(), self.node_id, "PX", self._ttl_ms, "NX"
            )
            if held:
                self.slot = candidate
                return
        log.warn("Redis cluster: no free session id range after {attempts} attempts; drawing ids at random",
                 attempts=CLAIM_ATTEMPTS)

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    @defer.inlineCallbacks
    def _write_presence(self) -> Any:
        key = self._node_key(self.node_id)
        connection = self._connection
        # Not DEL and write: the others would find no hash in between, and take this node for dead.
        fields: list[Any] = [ALIVE, str(self.slot).encode(), SEQ, self.seq]
        for name, value in self.presence.items():
            fields += [name, value]
        yield connection.execute_command("HSET", key, *fields)
        stale = set((yield connection.execute_command("HKEYS", key)) or ()) - set(self.presence) - {ALIVE, SEQ}
        if stale:
            yield connection.execute_command("HDEL", key, *stale)
        yield connection.execute_command("PEXPIRE", key, self._ttl_ms)
        yield connection.execute_command("SADD", self._nodes_key, self.node_id)
        # Tell the others to read us whole (they may hold what we said before Redis lost it).
        yield connection.execute_command("PUBLISH", self._cluster_channel, self._message("hello"))

    @defer.inlineCallbacks
    def refresh(self) -> Any:
        """Every ttl / 3: keep our presence and range alive, and see who is gone or new."""
        if self._connection is None:
            return
        try:
            kept = yield self._connection.execute_command("PEXPIRE", self._node_key(self.node_id), self._ttl_ms)
            if not kept:  # Redis lost it (restarted) or we were away longer than the TTL
                yield self._write_presence()
            if self.slot:
                slot_key = (self._slot_prefix + str(self.slot)).encode()
                held = yield self._connection.execute_command(
                    "SET", slot_key, self.node_id, "PX", self._ttl_ms, "NX"
                )
                if not held:
                    holder = yield self._connection.execute_command("GET", slot_key)
                    if holder is not None and holder.decode() != self.node_id:
                        log.warn("Redis cluster: node {other} took over session id range {slot} while this node "
                                 "was away; new sessions get ids in another range", other=holder.decode(),
                                 slot=self.slot)
                        self.slot = 0
                        yield self._claim_range()
                    else:
                        yield self._connection.execute_command("PEXPIRE", slot_key, self._ttl_ms)
            yield self._look_around(reread=False)
        except Exception as error:
            log.debug("Redis cluster: refresh failed ({error}); trying again in {seconds}s", error=str(error),
                      seconds=self.ttl / 3)

    @defer.inlineCallbacks
    def _look_around(self, *, reread: bool) -> Any:
        """Lose the nodes whose presence expired; read the new ones (every one, if ``reread``); how many live."""
        connection = self._connection
        members = yield connection.execute_command("SMEMBERS", self._nodes_key)
        others = sorted({m.decode() for m in members} - {self.node_id})
        alive = 0
        for node in others:
            exists = yield connection.execute_command("EXISTS", self._node_key(node))
            if not exists:
                yield connection.execute_command("SREM", self._nodes_key, node)
                self._lose(node, "its presence expired")
                continue
            alive += 1
            if reread or node not in self.known:
                snapshot = yield connection.hgetall(self._node_key(node))
                self._apply_snapshot(node, snapshot)
        for node in [n for n in self.known if n not in others]:
            self._lose(node, "its presence is gone")
        return alive

    def _read(self, node: str) -> None:
        """Read ``node``'s presence whole and apply the difference."""
        connection = self._connection
        if connection is None:
            return
        reading = connection.hgetall(self._node_key(node))
        reading.addCallback(lambda snapshot: self._apply_snapshot(node, snapshot) if snapshot else None)
        reading.addErrback(lambda failure: log.failure("Redis cluster: reading node {node} failed", failure, node=node))

    def _apply_snapshot(self, node: str, snapshot: dict[bytes, bytes]) -> None:
        """Make the router's view of ``node`` what its hash says (joins, leaves, registrations)."""
        seq = int(snapshot.get(SEQ, 0))
        known = self.known.get(node)
        if known is not None and seq < known.seq:
            self._read(node)  # older than announcements applied already: read it again
            return
        sessions: dict[tuple[str, int], dict[str, Any]] = {}
        registrations: dict[tuple[str, str], int] = {}
        for name, value in snapshot.items():
            if name in (ALIVE, SEQ):
                continue
            kind, realm, key = unpack(name)
            if kind == SESSION:
                sessions[(realm, key)] = unpack(value)
            elif kind == REGISTRATION:
                registrations[(realm, key)] = unpack(value)
        view = self.known.setdefault(node, NodeView())
        view.seq = seq
        actions: list[Action[Any]] = []
        router = self.router
        assert router is not None
        for (realm, session_id) in [k for k in view.sessions if k not in sessions]:
            del view.sessions[(realm, session_id)]
            actions += router.left_elsewhere(node, realm, session_id)
        for (realm, procedure) in [k for k in view.registrations if k not in registrations]:
            del view.registrations[(realm, procedure)]
            router.unregistered_elsewhere(node, realm, procedure)
        for (realm, session_id), details in sessions.items():
            if (realm, session_id) not in view.sessions:
                view.sessions[(realm, session_id)] = details
                actions += router.joined_elsewhere(node, realm, details)
        for (realm, procedure), registration_id in registrations.items():
            view.registrations[(realm, procedure)] = registration_id
            router.registered_elsewhere(node, realm, procedure, registration_id)
        self.carry_out(actions)

    def _lose(self, node: str, why: str) -> None:
        view = self.known.pop(node, None)
        if view is None:
            return
        log.info("Redis cluster: node {node} is gone ({why}); {sessions} session(s) left with it",
                 node=node, why=why, sessions=len(view.sessions))
        self._apply(lambda router: router.node_lost(node))

    # -- helpers ----------------------------------------------------------------------------------

    def _own(self, name: bytes, value: bytes) -> None:
        self.presence[name] = value
        self.seq += 1
        self._execute("HSET", self._node_key(self.node_id), name, value, SEQ, self.seq)

    def _disown(self, name: bytes) -> None:
        self.presence.pop(name, None)
        self.seq += 1
        self._execute("HDEL", self._node_key(self.node_id), name)
        self._execute("HSET", self._node_key(self.node_id), SEQ, self.seq)

    def _announce(self, op: str, **fields: Any) -> None:
        self._execute("PUBLISH", self._cluster_channel, self._message(op, seq=self.seq, **fields))

    def _message(self, op: str, **fields: Any) -> bytes:
        return pack(dict(fields, v=VERSION, node=self.node_id, op=op))

    def _execute(self, *command: Any, quiet: bool = True) -> defer.Deferred[Any] | None:
        """
        Send ``command`` on the command connection; None when there is none (what it changed is
        rewritten on reconnecting). ``quiet``: its failure is nobody's business (the same).
        """
        connection = self._connection
        if connection is None:
            return None
        try:
            sent: defer.Deferred[Any] = connection.execute_command(*command)
        except Exception:  # not connected after all: as above
            return None
        if quiet:
            sent.addErrback(lambda failure: None)
        return sent

    def _apply(self, change: Callable[[Router[Any]], Iterable[Action[Any]] | None]) -> None:
        """Apply ``change`` to the router and carry out what it returns."""
        router = self.router
        if router is None:
            return
        actions = change(router)
        if actions:
            self.carry_out(list(actions))


def _guarded(handle: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """``handle``, logging what it raises: one bad message must not take the subscription down with it."""

    def guarded(data: bytes) -> None:
        try:
            handle(data)
        except Exception:
            log.failure("Redis cluster: dropped a message it could not apply")

    return guarded
