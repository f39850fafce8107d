"""
Retained events, history and positions in Redis (with ``--redis``): a subscriber resumes on any
node, and a node restart loses nothing Redis kept.

Theory of operation
-------------------
The broker asks this store through the seam in :mod:`wsserver.core.shared`. Keys, per realm,
under the backplane's channel prefix ``wsserver:<db>:<realm>``:

- ``...:topic:<topic>``: a hash, ``epoch`` and ``seq`` (the topic's position). The epoch is set
  when the topic's history begins (from a random candidate the node sends with each
  publication), so a Redis that lost its data gives a new epoch, and resumes across the loss
  say ``recovered: false``;
- ``...:events:<topic>``: a list of the topic's last events (``LTRIM`` to its history size),
  each ``seq, publication, time`` (msgpack values one after the other);
- ``...:retained``: a hash, topic -> ``epoch, seq, publication, time`` of its retained event;
- ``...:topics``: the set of topics with history, for prefix and wildcard reads.

A history topic's TTL (``history`` rules in ``--config``) is the keys' ``PEXPIRE``, renewed per
publication, and each event's time is checked on read; retained events expire on read
(``--retain-ttl``). ``--max-store-bytes`` and ``--max-store-topics`` bound this node's memory, not
Redis's: bound Redis with its own ``maxmemory``.

One Lua script (:data:`STORE`) per publication on a topic with history or a retained event
does it all at once: increments the topic's seq, appends to its history, sets the retained event
and PUBLISHes to the realm's channel. With history, the message is the publication with its
position behind a tag byte (:data:`POSITIONED`), and every node, the publisher's too, routes it
on arrival (``deliver``): Redis runs scripts one at a time, so every node sees a topic's events in
seq order, each once. Without history (retained only), the message is the backplane's ordinary
one: the publishing node routed it already and skips it.

Redis unreachable, or the script failing: the broker delivers the publication on this node only,
without a position (counted in :attr:`RedisStore.unpositioned`), and the topic's history in Redis
is deleted (at once if Redis answered with an error, such as out of memory; else first thing when
the publishing connection is back), so its next publication begins a new epoch and no resume says
``recovered: true`` across events it never kept. Reads while unreachable answer "cannot say" (resumes: ``recovered: false``;
``get_events`` and ``get_retained``: nothing). A retained publication made then is delivered
here but not retained.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet import defer
from twisted.logger import Logger

from wsserver.backplane import codec
from wsserver.core.broker import Publication
from wsserver.core.eventstore import Kept, Position, Since
from wsserver.core.matching import EXACT, matches
from wsserver.core.shared import Keeping

log = Logger()

#: The first byte of a message the store published with a position (0xc1: never used by msgpack,
#: so it is never the first byte of an ordinary backplane message).
POSITIONED = b"\xc1"
#: Topics with lost publications remembered during an outage; past it, every topic of the realm
#: loses its history when Redis is back (never a false ``recovered: true``).
MAX_BROKEN_TOPICS = 10_000

#: KEYS: topic hash, events list, retained hash, topics set. ARGV: channel, topic, publication,
#: packed time, epoch candidate, history size (0: none), history TTL in ms (0: none), retain (1/0).
STORE = b"""
local size = tonumber(ARGV[6])
local epoch, seq = '', 0
if size > 0 then
  if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[5]) == 1 then
    redis.call('DEL', KEYS[2])  -- a new epoch: nothing of an earlier one (an evicted hash) stays
  end
  epoch = redis.call('HGET', KEYS[1], 'epoch')
  seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('RPUSH', KEYS[2], cmsgpack.pack(seq) .. ARGV[3] .. ARGV[4])
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('SADD', KEYS[4], ARGV[2])
  local ttl = tonumber(ARGV[7])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
    redis.call('PEXPIRE', KEYS[2], ttl)
  end
end
if ARGV[8] == '1' then
  redis.call('HSET', KEYS[3], ARGV[2], cmsgpack.pack(epoch, seq) .. ARGV[3] .. ARGV[4])
end
if size > 0 then
  redis.call('PUBLISH', ARGV[1], '\\193' .. cmsgpack.pack(epoch, seq) .. ARGV[3])
else
  redis.call('PUBLISH', ARGV[1], ARGV[3])
end
return seq
"""

#: KEYS: topic hash, events list. ARGV: epoch, after, limit. Returns {epoch, top, events after `after`...}
#: (the events only when the epoch is the topic's and at most `limit` came after).
SINCE = b"""
local position = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local epoch, top = position[1] or '', tonumber(position[2] or '0')
local missed = top - tonumber(ARGV[2])
if epoch ~= ARGV[1] or missed <= 0 or missed > tonumber(ARGV[3]) then
  return {epoch, top}
end
local answer = redis.call('LRANGE', KEYS[2], -missed, -1)
table.insert(answer, 1, top)
table.insert(answer, 1, epoch)
return answer
"""

#: KEYS: topic hash, events list. ARGV: limit. Returns {epoch, last `limit` events...}.
LATEST = b"""
local answer = redis.call('LRANGE', KEYS[2], -tonumber(ARGV[1]), -1)
table.insert(answer, 1, redis.call('HGET', KEYS[1], 'epoch') or '')
return answer
"""

#: KEYS: topic hash, events list, topics set. ARGV: topic. Its history is gone: the next epoch is new.
FORGET = b"""
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
return 0
"""

#: KEYS: topics set. ARGV: key prefix of the realm. Every topic's history is gone.
FORGET_ALL = b"""
for _, topic in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('DEL', ARGV[1] .. 'topic:' .. topic, ARGV[1] .. 'events:' .. topic)
end
redis.call('DEL', KEYS[1])
return 0
"""

#: Route a stored publication on this node: ``deliver(realm, publication, position)``.
DeliverStored = Callable[[str, Publication, "Position | None"], None]


class RedisStore:
    """
    The shared store (:class:`wsserver.core.shared.SharedStore`) on the Redis of ``backplane``
    (a :class:`~wsserver.backplane.redis.RedisBackplane`; it hands this store its messages).
    Set ``deliver`` before the backplane starts: where stored publications go on this node.
    Counters: ``stored``, ``unpositioned`` (history publications delivered here only).
    """

    deliver: DeliverStored | None = None

    def __init__(self, backplane: Any, *, reactor: Any, new_epoch: Callable[[], str] | None = None) -> None:
        self._backplane = backplane
        self._reactor = reactor
        self._new_epoch = new_epoch or (lambda: os.urandom(8).hex())
        self._prefix = f"wsserver:{backplane.address.db}:"
        #: (realm, topic) whose history lost publications while Redis was unreachable.
        self._broken: set[tuple[str, str]] = set()
        self._broken_realms: set[str] = set()
        self.stored = 0
        self.unpositioned = 0
        backplane.store = self
        backplane.watchers.append(self._watch)

    def _key(self, realm: str, kind: str, topic: str = "") -> bytes:
        return f"{self._prefix}{realm}:{kind}{topic}".encode("utf-8")

    def _topic_keys(self, realm: str, topic: str) -> list[bytes]:
        return [self._key(realm, "topic:", topic), self._key(realm, "events:", topic)]

    # -- writing ----------------------------------------------------------------------------------

    def store(self, realm: str, publication: Publication, *, retain: bool, history: Keeping | None) -> Any:
        connection = self._backplane.publisher_connection
        if connection is None:
            return defer.succeed(self._not_stored(realm, publication, history, "unreachable"))
        topic = publication.topic
        body = codec.encode(self._backplane.node_id, realm, publication, retain)
        time: bytes = msgpack.packb(self._reactor.seconds())
        size, ttl = (history.size, history.ttl) if history is not None else (0, None)
        keys = [*self._topic_keys(realm, topic), self._key(realm, "retained"), self._key(realm, "topics")]
        args = [
            self._backplane.channel(realm), topic.encode("utf-8"), body, time, self._new_epoch().encode("ascii"),
            size, 0 if ttl is None else max(1, int(ttl * 1000)), 1 if retain else 0,
        ]
        storing = connection.eval(STORE, keys, args)
        storing.addCallbacks(self._stored, self._failed, errbackArgs=(connection, realm, publication, history))
        return storing

    def _failed(self, failure: Any, connection: Any, realm: str, publication: Publication, history: Keeping | None) -> bool:
        """The script failed: the publication is delivered here only; its topic's history must not outlive that."""
        self._not_stored(realm, publication, history, failure.getErrorMessage())
        if history is not None and connection is self._backplane.publisher_connection:
            # Redis answered with an error (out of memory, say) and the connection stays: forget the
            # topic's history now rather than on a reconnection that may never come.
            self._forget(connection, realm, publication.topic)
        return False

    def _stored(self, seq: Any) -> bool:
        self.stored += 1
        return True

    def _not_stored(self, realm: str, publication: Publication, history: Keeping | None, reason: str) -> bool:
        if history is not None:
            self.unpositioned += 1
            if len(self._broken) < MAX_BROKEN_TOPICS:
                self._broken.add((realm, publication.topic))
            else:
                self._broken_realms.add(realm)
            if self.unpositioned == 1 or self.unpositioned % 1000 == 0:
                log.warn("Redis store: {count} publication(s) on topics with history delivered on this node "
                         "only, without a position ({reason}); their topics start a new epoch when Redis is back",
                         count=self.unpositioned, reason=reason)
        return False

    def _watch(self, connection: Any) -> None:
        if connection is not None:
            self.connected(connection)

    def connected(self, connection: Any) -> None:
        """
        The publishing connection is (back) up: first forget the history of the topics that lost
        publications (each stays on the list until Redis has forgotten it, in case the connection
        is lost again first).
        """
        realms = set(self._broken_realms)
        for realm in realms:
            forgetting = connection.eval(FORGET_ALL, [self._key(realm, "topics")], [self._key(realm, "")])
            forgetting.addCallback(lambda _, realm=realm: self._realm_forgotten(realm))
            forgetting.addErrback(lambda failure: log.failure("Redis store: could not forget a realm's history",
                                                              failure))
        broken = [(realm, topic) for realm, topic in self._broken if realm not in realms]
        for realm, topic in broken:
            self._forget(connection, realm, topic)
        if broken or realms:
            log.info("Redis store: {count} topic(s) that lost publications while Redis was unreachable begin a "
                     "new epoch (resumes across the outage say recovered: false)",
                     count=len(broken) if not realms else f"{len(broken)} and every topic of {sorted(realms)}")

    def _realm_forgotten(self, realm: str) -> None:
        self._broken_realms.discard(realm)
        self._broken = {(r, topic) for r, topic in self._broken if r != realm}

    def _forget(self, connection: Any, realm: str, topic: str) -> None:
        """Delete ``topic``'s history in Redis (once it succeeds, its next event begins a new epoch)."""
        keys = [*self._topic_keys(realm, topic), self._key(realm, "topics")]
        forgetting = connection.eval(FORGET, keys, [topic.encode("utf-8")])
        forgetting.addCallback(lambda _: self._broken.discard((realm, topic)))
        forgetting.addErrback(lambda failure: log.failure("Redis store: could not forget the history of a topic",
                                                          failure))

    # -- what the backplane hands us --------------------------------------------------------------

    def takes(self, data: bytes) -> bool:
        """Whether ``data`` is a message this store published (then it is routed here, by ``deliver``)."""
        if data[:1] != POSITIONED:
            return False
        try:
            (epoch, seq), message, _ = _split(data[1:], 2, 0)
            decoded = codec.decode(message)
        except Exception:
            log.failure("Redis store: dropped a positioned message that is not a publication")
            return True
        if decoded is None:
            log.warn("Redis store: dropped a message of another format version (a node of another release?)")
            return True
        _, realm, publication, _ = decoded
        if self.deliver is not None:
            self.deliver(realm, publication, Position(epoch, seq) if epoch else None)
        return True

    # -- reading ----------------------------------------------------------------------------------

    def since(self, realm: str, topic: str, epoch: str, after: int, *, limit: int, ttl: float | None) -> Any:
        connection = self._backplane.publisher_connection
        if connection is None:
            return defer.succeed(None)
        asking = connection.eval(SINCE, self._topic_keys(realm, topic), [epoch.encode("utf-8"), after, limit])
        asking.addCallback(self._since, topic, epoch, after, ttl)
        return asking.addErrback(self._cannot_say)

    def _since(self, answer: list[Any], topic: str, epoch: str, after: int, ttl: float | None) -> Since[Publication]:
        now_epoch, top = _text(answer[0]), int(answer[1])
        if not now_epoch:
            return Since(False, "", 0, [])
        if len(answer) == 2:  # another epoch, past the top, too many missed, or none missed
            recovered = now_epoch == epoch and after == top
            return Since(recovered, now_epoch, top, [])
        kept = self._kept(answer[2:], now_epoch, ttl)
        whole = len(kept) == top - after and kept[0].seq == after + 1
        return Since(whole, now_epoch, top, kept if whole else [])

    def latest(self, realm: str, pattern: str, match: str, *, limit: int) -> Any:
        connection = self._backplane.publisher_connection
        if connection is None:
            return defer.succeed(None)
        if match == EXACT:
            topics = defer.succeed([pattern])
        else:
            topics = connection.smembers(self._key(realm, "topics"))
            topics.addCallback(lambda found: [t for t in map(_text, found) if matches(pattern, match, t)])

        def read(names: list[str]) -> Any:
            reads = [connection.eval(LATEST, self._topic_keys(realm, name), [limit]) for name in names]
            return defer.gatherResults(reads, consumeErrors=True)

        asking = topics.addCallback(read)
        asking.addCallback(lambda answers: [k for a in answers for k in self._kept(a[1:], _text(a[0]), None)])
        return asking.addErrback(self._cannot_say)

    def retained(self, realm: str, pattern: str, match: str, *, ttl: float | None) -> Any:
        connection = self._backplane.publisher_connection
        if connection is None:
            return defer.succeed(None)
        key = self._key(realm, "retained")
        if match == EXACT:
            asking = connection.hget(key, pattern.encode("utf-8"))
            asking.addCallback(lambda value: [] if value is None else [value])
        else:
            asking = connection.hgetall(key)
            asking.addCallback(lambda found: [v for t, v in found.items() if matches(pattern, match, _text(t))])
        asking.addCallback(self._retained, ttl)
        return asking.addErrback(self._cannot_say)

    def _retained(self, values: list[bytes], ttl: float | None) -> list[Publication]:
        now = self._reactor.seconds()
        found = []
        for value in values:
            (epoch, seq), message, (time,) = _split(value, 2, 1)
            decoded = codec.decode(message)
            if decoded is None or (ttl is not None and time + ttl <= now):
                continue
            publication = decoded[2]
            publication.position = Position(epoch, seq) if epoch else None
            found.append(publication)
        return found

    def _kept(self, entries: list[bytes], epoch: str, ttl: float | None) -> list[Kept[Publication]]:
        """History entries (seq, publication, time), the expired ones left out."""
        now = self._reactor.seconds()
        kept = []
        for entry in entries:
            (seq,), message, (time,) = _split(entry, 1, 1)
            decoded = codec.decode(message)
            if decoded is None or (ttl is not None and time + ttl <= now):
                continue
            publication = decoded[2]
            publication.position = Position(epoch, seq)
            kept.append(Kept(seq, time, publication, 0, seq))
        return kept

    def _cannot_say(self, failure: Any) -> None:
        log.warn("Redis store: a read failed ({reason}); answered as if Redis were unreachable",
                 reason=failure.getErrorMessage())
        return None


def _split(data: bytes, before: int, after: int) -> tuple[list[Any], bytes, list[Any]]:
    """``data`` as ``before`` msgpack values, one backplane message (its bytes, for codec.decode), ``after`` values."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    head = [unpacker.unpack() for _ in range(before)]
    start = unpacker.tell()
    unpacker.skip()
    end = unpacker.tell()
    tail = [unpacker.unpack() for _ in range(after)]
    return head, data[start:end], tail


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value or "")
