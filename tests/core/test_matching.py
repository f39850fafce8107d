"""Topic patterns: one table of (pattern, match, topic, expected) drives the predicate and the index."""

from __future__ import annotations

import random
from typing import Any

import pytest
from autobahn.wamp.exception import InvalidUriError

from wsserver.core.matching import EXACT, PREFIX, WILDCARD, PatternIndex, check_pattern, matches, may_reach

#: (pattern, match policy, published topic, whether the topic reaches the pattern)
CASES: list[tuple[str, str, str, bool]] = [
    # exact
    ("com.x", EXACT, "com.x", True),
    ("com.x", EXACT, "com.x.y", False),
    ("com.x", EXACT, "com.xy", False),
    ("com.x", EXACT, "org.com.x", False),
    # prefix: on the URI *string*, as the spec's examples and Crossbar have it
    ("com.myapp.topic.emergency", PREFIX, "com.myapp.topic.emergency.11", True),
    ("com.myapp.topic.emergency", PREFIX, "com.myapp.topic.emergency-low", True),
    ("com.myapp.topic.emergency", PREFIX, "com.myapp.topic.emergency.category.severe", True),
    ("com.myapp.topic.emergency", PREFIX, "com.myapp.topic.emergency", True),
    ("com.myapp.topic.emergency", PREFIX, "com.myapp.topic.emerge", False),
    ("com.a.", PREFIX, "com.a.b", True),
    ("com.a.", PREFIX, "com.ab", False),
    ("com.a.", PREFIX, "com.a", False),
    ("com", PREFIX, "org.com", False),
    ("", PREFIX, "any.topic.at.all", True),
    # wildcard: the spec's examples ...
    ("com.myapp..userevent", WILDCARD, "com.myapp.foo.userevent", True),
    ("com.myapp..userevent", WILDCARD, "com.myapp.a12.userevent", True),
    ("com.myapp..userevent", WILDCARD, "com.myapp.foo.userevent.bar", False),
    ("com.myapp..userevent", WILDCARD, "com.myapp.foo.user", False),
    ("com.myapp..userevent", WILDCARD, "com.myapp2.foo.userevent", False),
    # ... overlapping patterns of one length (Crossbar's wildcard test set) ...
    ("a..c", WILDCARD, "a.b.c", True),
    ("a.b.", WILDCARD, "a.b.c", True),
    ("a..", WILDCARD, "a.b.c", True),
    (".b.", WILDCARD, "a.b.c", True),
    ("a..c", WILDCARD, "a.x.c", True),
    ("a.b.", WILDCARD, "a.x.c", False),
    (".b.", WILDCARD, "a.x.c", False),
    ("a..", WILDCARD, "a.x.x", True),
    ("a..c", WILDCARD, "a.b", False),
    # ... and the edges: all wildcards, none, one component
    ("..", WILDCARD, "a.b.c", True),
    ("..", WILDCARD, "a.b", False),
    ("com.x", WILDCARD, "com.x", True),
    ("com.x", WILDCARD, "com.y", False),
    ("", WILDCARD, "a", True),
    ("", WILDCARD, "a.b", False),
]

#: Every (pattern, match) of the table, indexed together: overlaps are the point.
PATTERNS = sorted({(pattern, match) for pattern, match, _, _ in CASES})


def case_id(case: tuple[str, str, str, bool]) -> str:
    pattern, match, topic, expected = case
    return f"{match}:{pattern or '(empty)'}{'~' if expected else '!~'}{topic}"


@pytest.fixture(scope="module")
def index() -> PatternIndex[tuple[str, str]]:
    index: PatternIndex[tuple[str, str]] = PatternIndex()
    for pattern, match in PATTERNS:
        index.add(pattern, match, (pattern, match))
    return index


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_predicate(case: tuple[str, str, str, bool]) -> None:
    pattern, match, topic, expected = case
    assert matches(pattern, match, topic) is expected


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_index(index: PatternIndex[tuple[str, str]], case: tuple[str, str, str, bool]) -> None:
    pattern, match, topic, expected = case
    found = index.matching(topic)
    assert ((pattern, match) in found) is expected
    assert len(found) == len(set(found)), "a pattern is found once"


@pytest.mark.parametrize("topic", sorted({topic for _, _, topic, _ in CASES}))
def test_the_index_finds_exactly_what_the_predicate_says(index: PatternIndex[tuple[str, str]], topic: str) -> None:
    assert sorted(index.matching(topic)) == [(p, m) for p, m in PATTERNS if matches(p, m, topic)]


def test_removing_patterns_keeps_the_others_and_prunes_the_tries() -> None:
    index: PatternIndex[str] = PatternIndex()
    for pattern, match in PATTERNS:
        index.add(pattern, match, f"{match}:{pattern}")
    index.remove("com.a.", PREFIX)
    assert "prefix:com" in index.matching("com.a.b") and "prefix:com.a." not in index.matching("com.a.b")
    index.remove("a.b.", WILDCARD)
    assert set(index.matching("a.b.c")) == {"prefix:", "wildcard:a..c", "wildcard:a..", "wildcard:.b.", "wildcard:.."}
    for pattern, match in PATTERNS:
        if index.get(pattern, match) is not None:
            index.remove(pattern, match)
    assert len(index) == 0
    assert index._exact == {} and index._prefix.children == {} and index._prefix.value is None
    assert index._wildcard == {}


def test_a_pattern_is_indexed_once() -> None:
    index: PatternIndex[int] = PatternIndex()
    index.add("com.x", PREFIX, 1)
    assert index.get("com.x", PREFIX) == 1 and index.get("com.x", EXACT) is None
    with pytest.raises(AssertionError):
        index.add("com.x", PREFIX, 2)


@pytest.mark.parametrize(
    "pattern, match, valid",
    [
        ("com.x", EXACT, True),
        ("com..x", EXACT, False),
        ("com.x.", EXACT, False),
        ("", EXACT, False),
        ("com.x", PREFIX, True),
        ("com.x.", PREFIX, True),
        ("", PREFIX, True),
        ("com..x", PREFIX, False),
        ("com..x", WILDCARD, True),
        ("..", WILDCARD, True),
        ("", WILDCARD, True),
        ("com x", WILDCARD, False),
        ("com.#", PREFIX, False),
    ],
)
def test_which_patterns_each_policy_accepts(pattern: str, match: str, valid: bool) -> None:
    if valid:
        check_pattern(pattern, match)
    else:
        with pytest.raises(InvalidUriError):
            check_pattern(pattern, match)


def test_prefix_patterns_added_and_removed_in_any_order_are_found_exactly_with_few_nodes() -> None:
    draw = random.Random(14)
    index: PatternIndex[str] = PatternIndex()
    kept: set[str] = set()

    def nodes(edge: Any) -> int:
        return 1 + sum(nodes(child) for child in edge.children.values())

    for _ in range(3000):
        pattern = "".join(draw.choice("ab.") for _ in range(draw.randint(1, 6)))
        if pattern in kept:
            index.remove(pattern, PREFIX)
            kept.remove(pattern)
        else:
            index.add(pattern, PREFIX, pattern)
            kept.add(pattern)
        topic = "".join(draw.choice("ab.") for _ in range(draw.randint(0, 8)))
        assert index.matching(topic) == sorted((p for p in kept if topic.startswith(p)), key=len)
        assert nodes(index._prefix) <= 2 * len(kept) + 1
    for pattern in list(kept):
        index.remove(pattern, PREFIX)
    assert index._prefix.children == {} and index._prefix.value is None


#: Topics of the router's meta events, and patterns that may or may not reach them.
META_TOPICS = ["wamp.session.on_join", "wamp.session.on_leave", "wamp.subscription.on_create", "wamp.registration.on_delete"]
NEAR_META = [
    ("wamp.session.on_join", EXACT), ("wamp", EXACT), ("wamp.", PREFIX), ("wamp.session", PREFIX), ("w", PREFIX),
    ("", PREFIX), ("wamp.session.on_join", PREFIX), ("wampx", PREFIX), ("com.", PREFIX), ("wamp.session.", WILDCARD),
    (".session.on_join", WILDCARD), ("wamp..on_join", WILDCARD), ("..", WILDCARD), ("", WILDCARD),
    ("wamp.", WILDCARD), ("wamp", WILDCARD), ("com..on_join", WILDCARD), ("...", WILDCARD), ("wamp.session.on_join", WILDCARD),
]


@pytest.mark.parametrize(("pattern", "match"), NEAR_META + PATTERNS)
def test_may_reach_never_misses_a_pattern_that_matches_a_topic_in_the_namespace(pattern: str, match: str) -> None:
    if any(matches(pattern, match, topic) for topic in META_TOPICS):
        assert may_reach(pattern, match, "wamp.")


@pytest.mark.parametrize(("pattern", "match", "expected"), [
    ("com.x", EXACT, False), ("wamp", EXACT, False), ("com.", PREFIX, False), ("wampx", PREFIX, False),
    ("com..", WILDCARD, False), ("wamp", WILDCARD, False), ("", WILDCARD, False),
    ("wamp.x", EXACT, True), ("w", PREFIX, True), ("", PREFIX, True), ("...", WILDCARD, True), ("wamp.", WILDCARD, True),
])
def test_may_reach_says_no_for_the_patterns_applications_use(pattern: str, match: str, expected: bool) -> None:
    assert may_reach(pattern, match, "wamp.") is expected
