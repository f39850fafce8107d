"""
A publication as it travels between nodes: one msgpack map per message.

msgpack keeps every value the router accepts (core/values.py admits only what JSON, msgpack and
CBOR all carry, and msgpack keeps bytes as bytes). The message carries what another node needs
to route the publication exactly as the origin did: its id (publication ids stay the origin's,
so they stay unique), topic, payload, disclosed publisher and audience, plus the origin node's
id, so that the origin skips its own messages.
"""

from __future__ import annotations

from typing import Any

import msgpack

from wsserver.core.broker import EVERYONE, Audience, Publication, Publisher

#: Bumped when the format changes; a node drops messages of a version it does not know.
VERSION = 1


def encode(node: str, realm: str, publication: Publication, retain: bool) -> bytes:
    """The message for ``publication`` published in ``realm`` on ``node``."""
    audience = publication.audience
    publisher = publication.publisher
    message: dict[str, Any] = {
        "v": VERSION, "node": node, "realm": realm, "id": publication.id, "topic": publication.topic,
        "args": publication.args, "kwargs": publication.kwargs, "retain": retain,
        "publisher": None if publisher is None else [publisher.session, publisher.authid, publisher.authrole],
        "excluded_publisher": audience.excluded_publisher,
    }
    if audience.listed:
        message["lists"] = [
            _listed(audience.eligible), _listed(audience.eligible_authid), _listed(audience.eligible_authrole),
            sorted(audience.exclude), sorted(audience.exclude_authid), sorted(audience.exclude_authrole),
        ]
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def decode(data: bytes) -> tuple[str, str, Publication, bool] | None:
    """(origin node, realm, publication, retain), or None for a message of another version."""
    message = msgpack.unpackb(data, raw=False, strict_map_key=False)
    if not isinstance(message, dict) or message.get("v") != VERSION:
        return None
    lists = message.get("lists")
    if lists is None:
        excluded = message["excluded_publisher"]
        audience = EVERYONE if excluded is None else Audience(excluded)
    else:
        eligible, eligible_authid, eligible_authrole, exclude, exclude_authid, exclude_authrole = lists
        audience = Audience(
            message["excluded_publisher"],
            eligible=_set(eligible), eligible_authid=_set(eligible_authid), eligible_authrole=_set(eligible_authrole),
            exclude=frozenset(exclude), exclude_authid=frozenset(exclude_authid),
            exclude_authrole=frozenset(exclude_authrole), listed=True,
        )
    disclosed = message["publisher"]
    publication = Publication(
        message["id"], message["topic"], message["args"], message["kwargs"], audience,
        None if disclosed is None else Publisher(*disclosed),
    )
    return message["node"], message["realm"], publication, bool(message["retain"])


def _listed(whitelist: frozenset[Any] | None) -> list[Any] | None:
    return None if whitelist is None else sorted(whitelist)


def _set(given: list[Any] | None) -> frozenset[Any] | None:
    return None if given is None else frozenset(given)
