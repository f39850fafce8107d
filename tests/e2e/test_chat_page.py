"""
The chat page in headless Chromium against ``twistd -n wsserver --demo`` (which keeps the last 50
messages of every room): two pages chat with each other, see each other's nicknames and a
presence count of 2, and a third page entering later sees the last messages; the same over
long-poll (behind a proxy that strips ``Upgrade``); and a page whose connection is cut gets the
messages it missed when it is back, while the room's count follows who is connected. Whatever
users type (markup in a nickname or a message, a payload that is no chat message) is shown as
text.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.sync.client import connect as ws_connect

from .cdp import Chromium, Page
from .hostile import Bystander, MemoryWatch
from .rawws import exchange, join
from .tcpproxy import CuttableProxy
from .test_longpoll_pages import UpgradeStrippingProxy, wait_for_transport
from .test_pages import browser, js_string, wait_for_state
from .wampclient import WampClient

if TYPE_CHECKING:
    from .conftest import ServerProcess

__all__ = ["browser"]  # the fixture, shared with test_pages.py

ROOM = "e2e"
ROOM_TOPIC = "com.example.chat.room." + ROOM
MESSAGES = "[...document.querySelectorAll('#messages .message')]"


def enter(browser: Chromium, base_url: str, nick: str, room: str = ROOM) -> Page:
    page = browser.new_page(f"{base_url}/chat.html?room={room}&nick={nick}")
    wait_for_state(page, "open", timeout=20)
    return page


def say(page: Page, text: str) -> None:
    """Type ``text`` into the message box and press Send."""
    page.evaluate(f"document.getElementById('message').value = {js_string(text)}; document.getElementById('send').click()")


def messages(page: Page) -> list[list[str]]:
    """[nick, text] of every message on the page, oldest first."""
    shown: list[list[str]] = page.evaluate(
        f"{MESSAGES}.map((m) => [m.querySelector('.nick').textContent, m.querySelector('.text').textContent])"
    )
    return shown


def wait_for_message(page: Page, nick: str, text: str, timeout: float = 10.0) -> None:
    page.wait_for(
        f"{MESSAGES}.some((m) => m.querySelector('.nick').textContent === {js_string(nick)}"
        f" && m.querySelector('.text').textContent === {js_string(text)})",
        timeout,
    )


def wait_for_presence(page: Page, count: int, *nicks: str, timeout: float = 10.0) -> list[str]:
    """Wait until the page counts ``count`` here and lists each of ``nicks``; return the list."""
    listed: list[str] = page.wait_for(
        f"document.getElementById('presence-count').textContent === '{count}'"
        f" && [...document.querySelectorAll('#members li')].length === {count}"
        f" && {js_string(list(nicks))}.every((nick) => [...document.querySelectorAll('#members li')]"
        "   .some((li) => li.textContent.replace(' (you)', '') === nick))"
        " && [...document.querySelectorAll('#members li')].map((li) => li.textContent)",
        timeout,
    )
    return listed


def chat_both_ways(alice: Page, bob: Page) -> None:
    assert "alice (you)" in wait_for_presence(alice, 2, "alice", "bob")
    assert "bob (you)" in wait_for_presence(bob, 2, "alice", "bob")
    say(alice, "hello bob")
    wait_for_message(bob, "alice", "hello bob")
    say(bob, "hi alice")
    wait_for_message(alice, "bob", "hi alice")
    wait_for_message(alice, "alice", "hello bob")  # your own messages come back, in their place
    assert messages(alice)[-2:] == messages(bob)[-2:] == [["alice", "hello bob"], ["bob", "hi alice"]]


def test_two_pages_chat_and_a_third_sees_the_last_messages(
    start_server: Callable[..., ServerProcess], browser: Chromium
) -> None:
    server = start_server("--demo")
    alice = enter(browser, server.http_url, "alice")
    bob = enter(browser, server.http_url, "bob")
    assert alice.text("#room-name") == ROOM
    chat_both_ways(alice, bob)

    # Markup is text: in a message, in a nickname, and a payload that is no chat message at all.
    say(bob, '<img src=x onerror="window.pwned = 1">')
    wait_for_message(alice, "bob", '<img src=x onerror="window.pwned = 1">')
    with WampClient(server.ws_url) as python:
        python.publish(ROOM_TOPIC, {"nick": "<b>mallory</b>", "text": "<script>window.pwned = 2</script>"})
        python.publish(ROOM_TOPIC, 42)
        python.publish("com.example.chat.room.other", {"nick": "dave", "text": "elsewhere"})
    wait_for_message(alice, "<b>mallory</b>", "<script>window.pwned = 2</script>")
    wait_for_message(alice, "?", "42")
    assert alice.evaluate("document.querySelectorAll('#messages img, #messages script, #messages b').length") == 0
    assert alice.evaluate("window.pwned") is None

    # The room list comes from a prefix subscription: another room appears, with its unread count.
    alice.wait_for("document.querySelector('#rooms li[data-room=\"other\"] .unread')?.textContent === '1'")
    assert alice.evaluate("[...document.querySelectorAll('#rooms li')].map((li) => li.dataset.room)") == ["e2e", "lobby", "other"]

    carol = enter(browser, server.http_url, "carol")
    carol.wait_for(f"{MESSAGES}.length === 5")
    assert messages(carol) == messages(alice)
    assert messages(carol)[:2] == [["alice", "hello bob"], ["bob", "hi alice"]]
    assert carol.evaluate(f"{MESSAGES}.every((m) => m.dataset.history === 'true')")
    # Her room list starts with the rooms of the messages kept, through the prefix subscription.
    carol.wait_for("!!document.querySelector('#rooms li[data-room=\"other\"]')")
    assert carol.evaluate("[...document.querySelectorAll('#rooms li')].map((li) => li.dataset.room)") == ["e2e", "lobby", "other"]
    wait_for_presence(carol, 3, "alice", "bob", "carol")
    wait_for_presence(alice, 3, "alice", "bob", "carol")

    # A page that leaves leaves the list (the router's subscription meta events say so).
    carol.goto("about:blank")
    wait_for_presence(alice, 2, "alice", "bob")
    wait_for_presence(bob, 2, "alice", "bob")
    arrivals = "[...document.querySelectorAll('#messages .arrival')].map((line) => line.textContent.slice(9))"
    assert bob.wait_for(f"{arrivals}.length === 2 && {arrivals}") == ["carol entered", "carol left"]

    # A nickname changed is seen by the others.
    bob.evaluate("document.getElementById('nick').value = 'robert'; document.querySelector('#nick-form button').click()")
    wait_for_presence(alice, 2, "alice", "robert")


def test_the_chat_works_over_long_poll(start_server: Callable[..., ServerProcess], browser: Chromium) -> None:
    server = start_server("--demo")
    with UpgradeStrippingProxy(server.port) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        alice = enter(browser, proxy.url, "alice")
        bob = enter(browser, proxy.url, "bob")
        for page in (alice, bob):
            wait_for_transport(page, "long-poll")
        chat_both_ways(alice, bob)
        carol = enter(browser, proxy.url, "carol")
        wait_for_transport(carol, "long-poll")
        carol.wait_for(f"{MESSAGES}.length === 2")
        assert messages(carol) == [["alice", "hello bob"], ["bob", "hi alice"]]
        proxy.shutdown()


def test_a_dropped_connection_gets_the_messages_it_missed(
    start_server: Callable[..., ServerProcess], browser: Chromium
) -> None:
    server = start_server("--demo")
    with CuttableProxy(server.port) as proxy:
        alice = enter(browser, f"http://127.0.0.1:{proxy.port}", "alice")
        bob = enter(browser, server.http_url, "bob")
        chat_both_ways(alice, bob)

        proxy.cut()
        wait_for_state(alice, "closed")
        wait_for_presence(bob, 1, "bob")  # alice's connection is gone: the router said so
        for n in range(3):
            say(bob, f"missed {n}")
            wait_for_message(bob, "bob", f"missed {n}")
        proxy.restore()

        wait_for_state(alice, "open", timeout=20)
        alice.wait_for(
            "[...document.querySelectorAll('#notices .notice')]"
            f".some((n) => n.textContent.includes({js_string(ROOM_TOPIC + ': resumed, 3 missed events recovered')}))",
            timeout=20,
        )
        recovered: list[Any] = alice.evaluate(
            f"{MESSAGES}.filter((m) => m.dataset.recovered === 'true').map((m) => m.querySelector('.text').textContent)"
        )
        assert recovered == ["missed 0", "missed 1", "missed 2"]
        assert messages(alice) == messages(bob)
        wait_for_presence(bob, 2, "alice", "bob")
        wait_for_presence(alice, 2, "alice", "bob")
        say(alice, "back")
        wait_for_message(bob, "alice", "back")


def test_a_client_can_neither_make_the_pages_answer_a_flood_nor_rename_someone_else(
    start_server: Callable[..., ServerProcess], browser: Chromium
) -> None:
    """
    A client in the room sends 200 "hello"s, and "here"s that claim alice's session: each page
    answers it once (not 200 times: a page publishes nothing on a stranger's behalf but its one
    answer), and a claim renames only its sender (the router discloses who published; an
    undisclosed claim is ignored).
    Meanwhile a bystander keeps every event and the server its memory.
    """
    server = start_server("--demo")
    alice = enter(browser, server.http_url, "alice")
    bob = enter(browser, server.http_url, "bob")
    wait_for_presence(bob, 2, "alice", "bob")
    alice_session = int(alice.evaluate("[...document.querySelectorAll('#members li')].find((li) => li.textContent.endsWith(' (you)')).dataset.session"))
    presence_topic = "com.example.chat.presence." + ROOM
    with ws_connect(server.ws_url, subprotocols=["wamp.2.json"], open_timeout=5) as mallory, \
            Bystander(server.ws_url) as bystander, MemoryWatch(server.proc.pid) as memory:
        # a raw session: autobahn-python cannot send disclose_me
        mallory_session = join(mallory, ROOM_TOPIC)[1]
        assert exchange(mallory, [32, 2, {}, presence_topic])[0] == 33  # SUBSCRIBED
        wait_for_presence(bob, 3, "alice", "bob")

        def publish(request: int, presence: dict[str, Any], **options: Any) -> None:
            mallory.send(json.dumps([16, request, options, presence_topic, [presence]]))  # PUBLISH

        for request in range(200):
            publish(10 + request, {"type": "hello", "session": mallory_session, "nick": "mallory"}, disclose_me=True)
        publish(1000, {"type": "here", "session": alice_session, "nick": "not disclosed"})
        publish(1001, {"type": "here", "session": alice_session, "nick": "evil"}, disclose_me=True)
        answers = []
        with contextlib.suppress(TimeoutError):
            while True:  # every EVENT until none comes for 2 s
                answers.append(json.loads(mallory.recv(timeout=2)))
        assert sorted((event[4][0]["type"], event[4][0]["nick"]) for event in answers) == [("here", "alice"), ("here", "bob")]
        for page in (alice, bob):
            page.wait_for(f"document.querySelector('#members li[data-session=\"{mallory_session}\"]')?.textContent === 'evil'")
        assert bob.evaluate(f"document.querySelector('#members li[data-session=\"{alice_session}\"]').textContent") == "alice"
    bystander.check()
    memory.check(64 * 2**20)


#: What the README says a chat user's role needs, and the history rule for the rooms without --demo.
CHAT_CONFIG = """\
history = [{ uri = "com.example.chat.room.", match = "prefix", size = 50 }]

[realms.realm1]
anonymous = "chatter"

[realms.realm1.roles.chatter]
permissions = [
  { uri = "com.example.chat.", match = "prefix", allow = ["publish", "subscribe", "disclose"] },
  { uri = "wamp.subscription.on_create", allow = ["subscribe"] },
  { uri = "wamp.subscription.on_subscribe", allow = ["subscribe"] },
  { uri = "wamp.subscription.on_unsubscribe", allow = ["subscribe"] },
  { uri = "wamp.subscription.lookup", allow = ["call"] },
  { uri = "wamp.subscription.list_subscribers", allow = ["call"] },
  { uri = "wamp.subscription.get_events", allow = ["call"] },
]
"""


def test_the_chat_works_with_the_permissions_the_readme_lists(
    start_server: Callable[..., ServerProcess], browser: Chromium, tmp_path: Any
) -> None:
    config = tmp_path / "chat.toml"
    config.write_text(CHAT_CONFIG)
    server = start_server("--config", str(config))
    alice = enter(browser, server.http_url, "alice")
    bob = enter(browser, server.http_url, "bob")
    chat_both_ways(alice, bob)
    carol = enter(browser, server.http_url, "carol")
    carol.wait_for(f"{MESSAGES}.length === 2")
    wait_for_presence(carol, 3, "alice", "bob", "carol")
    for page in (alice, bob, carol):
        assert page.evaluate("document.getElementById('notices').textContent") == ""  # nothing refused
