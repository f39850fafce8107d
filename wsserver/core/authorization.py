"""
What a role may do with a URI: the permissions of a realm's roles, decided once per (role, URI).

Theory of operation
-------------------
A role's permissions are indexed by pattern in a :class:`~wsserver.core.matching.PatternIndex`,
so finding the patterns a URI matches costs what it costs to route a publication. Of those, the
most specific decides alone (:func:`most_specific`):

1. an exact pattern;
2. else the longest matching prefix (``com.example.admin.`` over ``com.example.``);
3. else the wildcard with concrete components furthest to the left (``com.example..x`` over
   ``com...x``): compared component by component, a concrete one beats an empty one.

No match allows nothing. (Crossbar's static authorizer orders its patterns the same way.)

The decision for a URI is a frozenset of actions, cached per role: a publication's topic is
decided once per role, and routing then asks "may this role receive it?" with two dict lookups.
The cache is keyed by URIs clients choose, so it is bounded: when full, it starts over.

Routing keeps one EVENT per subscription (the fan-out fast path) and filters its recipients by
role only where some subscriber's role may not receive the topic: :meth:`Authorizer.denied`
looks at the roles present in a subscription (a few), not at its subscribers (maybe thousands).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from wsserver.core.matching import EXACT, PREFIX, PatternIndex
from wsserver.core.policy import SUBSCRIBE, Permission

NOTHING: frozenset[str] = frozenset()
#: Decisions a role keeps before its cache starts over.
CACHE_SIZE = 10_000


def specificity(permission: Permission) -> tuple[int, ...]:
    """A sort key: the most specific of several patterns matching one URI is the largest."""
    if permission.match == EXACT:
        return (2,)
    if permission.match == PREFIX:
        return (1, len(permission.uri))
    return (0, *(int(component != "") for component in permission.uri.split(".")))


def most_specific(permissions: Iterable[Permission]) -> Permission | None:
    """The permission that decides, of those matching one URI; None if there are none."""
    return max(permissions, key=specificity, default=None)


class RolePermissions:
    """One role's permissions; :meth:`allowed` answers what it may do with a URI."""

    __slots__ = ("_index", "_decisions")

    def __init__(self, permissions: Iterable[Permission]) -> None:
        self._index: PatternIndex[Permission] = PatternIndex()
        for permission in permissions:
            # The configuration refuses the same pattern twice; if it came anyway, the last wins.
            if self._index.get(permission.uri, permission.match) is not None:
                self._index.remove(permission.uri, permission.match)
            self._index.add(permission.uri, permission.match, permission)
        self._decisions: dict[str, frozenset[str]] = {}

    def allowed(self, uri: str) -> frozenset[str]:
        """The actions allowed on ``uri`` (a concrete URI, or a subscription pattern as a string)."""
        decision = self._decisions.get(uri)
        if decision is None:
            if len(self._decisions) >= CACHE_SIZE:
                self._decisions.clear()
            best = most_specific(self._index.matching(uri))
            decision = self._decisions[uri] = NOTHING if best is None else best.allow
        return decision


class Authorizer:
    """The roles of one realm and what each may do. A role it does not know may do nothing."""

    __slots__ = ("_roles",)

    def __init__(self, roles: Mapping[str, Iterable[Permission]]) -> None:
        self._roles = {name: RolePermissions(permissions) for name, permissions in roles.items()}

    def allows(self, role: str | None, action: str, uri: str) -> bool:
        permissions = self._roles.get(role) if role is not None else None
        return permissions is not None and action in permissions.allowed(uri)

    def denied(self, roles: Iterable[str | None], topic: str) -> set[str | None]:
        """Which of ``roles`` may not receive events published to ``topic``."""
        return {role for role in roles if not self.allows(role, SUBSCRIBE, topic)}
