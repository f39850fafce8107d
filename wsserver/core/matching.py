"""
Topic patterns, and the index that finds the patterns a published topic matches.

Theory of operation
-------------------
A subscription names a *pattern* and a *match policy* (WAMP Advanced Profile, pattern-based
subscriptions). What each policy means, and which patterns it accepts:

==========  ==========================================================  ========================
policy      the pattern matches a topic when                            valid patterns
==========  ==========================================================  ========================
exact       pattern == topic                                            no empty component
prefix      the topic starts with the pattern *as a string*:            only the last component
            ``com.a`` matches ``com.a``, ``com.a.b`` and ``com.ab``     may be empty (``com.``)
            (the spec's ``emergency`` / ``emergency-low`` example;
            Crossbar's broker does the same)
wildcard    same number of components, and every non-empty pattern    any component may be
            component equals the topic's: ``com..x`` matches            empty
            ``com.a.x``, not ``com.a.b.x``
==========  ==========================================================  ========================

:func:`matches` answers for one pattern. :class:`PatternIndex` answers for all the patterns of a
realm at once, at a cost that does not grow with the patterns that do not match:

- exact: a dict from pattern to value, one lookup;
- prefix: a radix trie of the patterns (a node per pattern and per branching, each edge a string).
  The walk follows the topic's characters edge by edge, collects the value of every node it
  reaches and stops where no pattern continues: at most the topic's length. (A trie with a node
  per character costs that for every character of every pattern: 1,000 prefixes of 1,000
  characters, which one session may hold, took 230 MB and stalled the router to build.)
- wildcard: one component trie per number of components, in which an empty pattern component is
  the child ``""`` (a published topic has no empty component, so that key is free). The walk keeps
  the nodes reached, following the topic's component and ``""`` from each: it visits only
  prefixes of patterns that still match.

The index maps (pattern, policy) to a value and knows nothing of what the value is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from autobahn.wamp.message import check_or_raise_uri

EXACT = "exact"
PREFIX = "prefix"
WILDCARD = "wildcard"
POLICIES = (EXACT, PREFIX, WILDCARD)

V = TypeVar("V")


def check_pattern(pattern: str, match: str) -> None:
    """Raise autobahn's ``InvalidUriError`` unless ``pattern`` is valid for ``match`` (one of POLICIES)."""
    check_or_raise_uri(
        pattern, f"{match} pattern", allow_empty_components=match == WILDCARD, allow_last_empty=match == PREFIX
    )


def matches(pattern: str, match: str, topic: str) -> bool:
    """Whether a publication to ``topic`` reaches the ``match`` pattern ``pattern``."""
    if match == EXACT:
        return topic == pattern
    if match == PREFIX:
        return topic.startswith(pattern)
    wanted, parts = pattern.split("."), topic.split(".")
    return len(wanted) == len(parts) and all(w == "" or w == p for w, p in zip(wanted, parts))


def may_reach(pattern: str, match: str, namespace: str) -> bool:
    """
    Whether the ``match`` pattern ``pattern`` matches some topic in ``namespace`` (a prefix that
    ends with a dot, e.g. ``wamp.``): the broker's cheap test for whether anyone may hear an event
    there. It may answer True for a pattern that matches no topic there; never False for one that does.
    """
    if match == EXACT:
        return pattern.startswith(namespace)
    if match == PREFIX:
        return pattern.startswith(namespace) or namespace.startswith(pattern)
    wanted, parts = pattern.split("."), namespace[:-1].split(".")
    return len(wanted) > len(parts) and all(w == "" or w == p for w, p in zip(wanted, parts))


class _Node(Generic[V]):
    """A trie node: the children by key (a URI component) and the value of the pattern ending here."""

    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.value: V | None = None


class _Edge(Generic[V]):
    """
    A radix trie node: ``label``, the characters on the edge from its parent; its children by the
    first character of theirs; the value of the pattern ending here. Every node but the root has a
    value or at least two children (a node with neither is removed, one with a single child merged
    into it), so the trie has fewer nodes than twice its patterns.
    """

    __slots__ = ("label", "children", "value")

    def __init__(self, label: str, value: V | None = None) -> None:
        self.label = label
        self.children: dict[str, _Edge[V]] = {}
        self.value = value

    def add(self, pattern: str, value: V) -> None:
        node, rest = self, pattern
        while rest:
            child = node.children.get(rest[0])
            if child is None:
                node.children[rest[0]] = _Edge(rest, value)
                return
            common = _common_length(child.label, rest)
            if common < len(child.label):  # split the edge where the pattern leaves it
                middle: _Edge[V] = _Edge(child.label[:common])
                child.label = child.label[common:]
                middle.children[child.label[0]] = child
                node.children[rest[0]] = middle
                child = middle
            node, rest = child, rest[common:]
        node.value = value

    def remove(self, pattern: str) -> None:
        path: list[_Edge[V]] = [self]
        rest = pattern
        while rest:
            child = path[-1].children[rest[0]]
            path.append(child)
            rest = rest[len(child.label):]
        node = path[-1]
        node.value = None
        # Fold away what no longer holds a value or a branching (never the root).
        while len(path) > 1:
            node, parent = path.pop(), path[-1]
            if node.value is not None or len(node.children) > 1:
                break
            if node.children:
                (only,) = node.children.values()
                only.label = node.label + only.label
                parent.children[node.label[0]] = only
                break
            del parent.children[node.label[0]]

    def collect(self, topic: str, found: list[V]) -> None:
        """Append the value of every pattern ``topic`` starts with, shortest first."""
        node, at = self, 0
        if node.value is not None:
            found.append(node.value)
        while at < len(topic):
            child = node.children.get(topic[at])
            if child is None or not topic.startswith(child.label, at):
                return
            node, at = child, at + len(child.label)
            if node.value is not None:
                found.append(node.value)


def _common_length(a: str, b: str) -> int:
    """How many characters ``a`` and ``b`` start with in common."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class PatternIndex(Generic[V]):
    """(pattern, policy) -> value, and :meth:`matching` topic -> values. Values must not be None."""

    def __init__(self) -> None:
        self._values: dict[tuple[str, str], V] = {}
        self._exact: dict[str, V] = {}
        self._prefix: _Edge[V] = _Edge("")
        self._wildcard: dict[int, _Node[V]] = {}

    def __len__(self) -> int:
        return len(self._values)

    def __iter__(self) -> Iterator[V]:
        return iter(self._values.values())

    def get(self, pattern: str, match: str) -> V | None:
        return self._values.get((pattern, match))

    def add(self, pattern: str, match: str, value: V) -> None:
        """Index ``value`` under (pattern, match); the pair must not be indexed yet."""
        assert (pattern, match) not in self._values, (pattern, match)
        self._values[(pattern, match)] = value
        if match == EXACT:
            self._exact[pattern] = value
            return
        if match == PREFIX:
            self._prefix.add(pattern, value)
            return
        node = self._root(pattern, create=True)
        for key in _keys(pattern):
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node()
            node = child
        node.value = value

    def remove(self, pattern: str, match: str) -> None:
        """Forget (pattern, match), and the trie nodes no other pattern needs."""
        del self._values[(pattern, match)]
        if match == EXACT:
            del self._exact[pattern]
            return
        if match == PREFIX:
            self._prefix.remove(pattern)
            return
        keys = _keys(pattern)
        path = [self._root(pattern, create=False)]
        for key in keys:
            path.append(path[-1].children[key])
        path[-1].value = None
        for depth in range(len(keys), 0, -1):
            node = path[depth]
            if node.value is not None or node.children:
                break
            del path[depth - 1].children[keys[depth - 1]]
        if not path[0].children:
            del self._wildcard[len(keys)]

    def matching(self, topic: str) -> list[V]:
        """The values of every pattern ``topic`` matches: exact, then prefixes (shortest first), then wildcards."""
        found: list[V] = []
        exact = self._exact.get(topic)
        if exact is not None:
            found.append(exact)
        self._prefix.collect(topic, found)
        if self._wildcard:
            parts = topic.split(".")
            root = self._wildcard.get(len(parts))
            if root is not None:
                reached = [root]
                for part in parts:
                    # An empty part (a wildcard pattern looked up as a URI) must not count "" twice:
                    # the nodes reached would double with every empty component.
                    keys = (part, "") if part else ("",)
                    reached = [
                        child for node in reached for key in keys if (child := node.children.get(key)) is not None
                    ]
                    if not reached:
                        break
                found.extend(node.value for node in reached if node.value is not None)
        return found

    def _root(self, pattern: str, create: bool) -> _Node[V]:
        """The trie of the wildcard patterns with as many components as ``pattern``."""
        length = pattern.count(".") + 1
        root = self._wildcard.get(length)
        if root is None:
            assert create, pattern
            root = self._wildcard[length] = _Node()
        return root


def _keys(pattern: str) -> Sequence[str]:
    """The trie path of a wildcard pattern: its components."""
    return pattern.split(".")
