"""The dealer end to end with autobahn-python callers and callees against ``twistd -n wsserver``."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallOptions, CallResult, RegisterOptions
from twisted.internet import defer

from tests.e2e.broker_clients import Client
from tests.e2e.rawws import exchange, join, raw_session
from tests.e2e.test_session_kill import MODERATED


def test_call_register_yield_and_callee_errors(server: Any) -> None:
    with Client(server.ws_url) as callee, Client(server.ws_url) as caller:
        callee.register("com.example.add", lambda a, b, carry=0: a + b + carry)
        assert caller.call("com.example.add", 2, 3) == 5
        assert caller.call("com.example.add", 2, 3, carry=1) == 6
        callee.register("com.example.pair", lambda: CallResult(1, 2, named="yes"))
        pair = caller.call("com.example.pair")
        assert (list(pair.results), pair.kwresults) == ([1, 2], {"named": "yes"})

        def refuse() -> None:
            raise ApplicationError("com.example.error.refused", "not today", reason="test")

        callee.register("com.example.refuse", refuse)
        with pytest.raises(ApplicationError) as refused:
            caller.call("com.example.refuse")
        assert refused.value.error == "com.example.error.refused"
        assert refused.value.args == ("not today",) and refused.value.kwargs == {"reason": "test"}


def test_no_such_procedure_already_exists_and_unregister(server: Any) -> None:
    with Client(server.ws_url) as callee, Client(server.ws_url) as other:
        with pytest.raises(ApplicationError) as missing:
            other.call("com.example.nobody")
        assert missing.value.error == "wamp.error.no_such_procedure"
        registration = callee.register("com.example.mine", lambda: "callee")
        with pytest.raises(ApplicationError) as taken:
            other.register("com.example.mine", lambda: "other")
        assert taken.value.error == "wamp.error.procedure_already_exists"
        with pytest.raises(ApplicationError) as reserved:
            other.register("wamp.session.count", lambda: 0)
        assert reserved.value.error == "wamp.error.invalid_uri"
        callee._call(registration.unregister)
        other.register("com.example.mine", lambda: "other")
        assert callee.call("com.example.mine") == "other"


def test_a_callee_leaving_mid_call_cancels_the_call(server: Any) -> None:
    callee, caller = Client(server.ws_url), Client(server.ws_url)
    invoked = threading.Event()

    def never_answers() -> defer.Deferred[None]:
        invoked.set()
        return defer.Deferred()

    callee.register("com.example.slow", never_answers)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            caller.call("com.example.slow")
        except BaseException as error:  # noqa: BLE001 - the test inspects it
            outcome.append(error)

    thread = threading.Thread(target=call)
    thread.start()
    assert invoked.wait(5)
    callee.leave()
    thread.join(10)
    (error,) = outcome
    assert isinstance(error, ApplicationError) and error.error == "wamp.error.canceled"
    with pytest.raises(ApplicationError) as gone:
        caller.call("com.example.slow")
    assert gone.value.error == "wamp.error.no_such_procedure"
    caller.leave()


def test_the_meta_api_is_served_by_the_dealer(server: Any) -> None:
    with Client(server.ws_url) as caller:
        assert caller.call("wamp.session.count") == 1
        with pytest.raises(ApplicationError) as bad:
            caller.call("wamp.session.get", "not an id")
        assert bad.value.error == "wamp.error.invalid_argument"
        assert caller.call("wamp.session.get", caller.session_id)["session"] == caller.session_id


def test_progressive_results_reach_on_progress_before_the_final_result(server: Any) -> None:
    with Client(server.ws_url) as callee, Client(server.ws_url) as caller:
        asked: list[bool] = []

        def count_to(n: int, details: Any) -> str:
            asked.append(details.progress is not None)
            if details.progress is not None:
                for step in range(1, n + 1):
                    details.progress(step, of=n)
            return "done"

        callee._call(callee.session.register, count_to, "com.example.count", options=RegisterOptions(details_arg="details"))
        progress: list[tuple[Any, ...]] = []
        options = CallOptions(on_progress=lambda *args, **kwargs: progress.append((*args, kwargs)))
        assert caller._call(caller.session.call, "com.example.count", 3, options=options) == "done"
        assert progress == [(1, {"of": 3}), (2, {"of": 3}), (3, {"of": 3})]
        assert caller.call("com.example.count", 2) == "done"  # no on_progress: the final result only
        assert asked == [True, False]


def test_canceling_a_call_interrupts_the_callee_and_the_caller_goes_on(server: Any) -> None:
    with Client(server.ws_url) as callee, Client(server.ws_url) as caller:
        invoked, interrupted = threading.Event(), threading.Event()

        def never_answers() -> defer.Deferred[None]:
            invoked.set()
            return defer.Deferred(lambda _: interrupted.set())

        callee.register("com.example.slow", never_answers)
        calls: list[defer.Deferred[Any]] = []

        def start() -> None:
            call = caller.session.call("com.example.slow")
            call.addErrback(lambda failure: failure.trap(defer.CancelledError))
            calls.append(call)

        caller._call(start)
        assert invoked.wait(5)
        caller._call(lambda: calls[0].cancel())  # autobahn sends CANCEL (mode absent: kill)
        assert interrupted.wait(5), "the callee got no INTERRUPT"
        callee.register("com.example.add", lambda a, b: a + b)
        assert caller.call("com.example.add", 1, 2) == 3  # the session goes on


def test_a_call_timeout_ends_the_call_with_canceled(server: Any) -> None:
    with Client(server.ws_url) as callee, Client(server.ws_url) as caller:
        interrupted = threading.Event()
        callee.register("com.example.slow", lambda: defer.Deferred(lambda _: interrupted.set()))
        with pytest.raises(ApplicationError) as timed_out:
            caller._call(caller.session.call, "com.example.slow", options=CallOptions(timeout=200))
        assert timed_out.value.error == "wamp.error.canceled"
        assert interrupted.wait(5), "the callee got no INTERRUPT"


def test_caller_disclosure_reaches_the_callee(server: Any) -> None:
    # autobahn-python 26 no longer sends disclose_me (AutobahnJS does): a raw caller sends it.
    with Client(server.ws_url) as callee, raw_session(server.ws_url, hello=False) as caller:
        welcome = join(caller)
        callee._call(
            callee.session.register, lambda details: [details.caller, details.caller_authrole], "com.example.who",
            options=RegisterOptions(details_arg="details"),
        )
        result = exchange(caller, [48, 2, {"disclose_me": True}, "com.example.who"])
        assert result[:4] == [50, 2, {}, [[welcome[1], "anonymous"]]]
        result = exchange(caller, [48, 3, {}, "com.example.who"])
        assert result[:4] == [50, 3, {}, [[None, None]]]


def test_a_roundrobin_registration_shares_calls_between_two_callees(server: Any) -> None:
    with Client(server.ws_url) as one, Client(server.ws_url) as two, Client(server.ws_url) as caller:
        shared = RegisterOptions(invoke="roundrobin")
        first = one._call(one.session.register, lambda: "one", "com.example.shared", options=shared)
        second = two._call(two.session.register, lambda: "two", "com.example.shared", options=shared)
        assert first.id == second.id, "one registration, two callees"
        assert [caller.call("com.example.shared") for _ in range(4)] == ["one", "two", "one", "two"]
        with pytest.raises(ApplicationError) as other_policy:
            caller._call(caller.session.register, lambda: "x", "com.example.shared", options=RegisterOptions(invoke="first"))
        assert other_policy.value.error == "wamp.error.procedure_already_exists"
        one._call(first.unregister)
        assert [caller.call("com.example.shared") for _ in range(2)] == ["two", "two"]


def test_a_prefix_registration_tells_the_callee_which_procedure_was_called(server: Any) -> None:
    with Client(server.ws_url) as callee, Client(server.ws_url) as caller:
        options = RegisterOptions(match="prefix", details_arg="details")
        callee._call(callee.session.register, lambda *args, details: details.procedure, "com.example.api.", options=options)
        callee.register("com.example.api.exact", lambda: "exact")
        assert caller.call("com.example.api.users.get") == "com.example.api.users.get"
        assert caller.call("com.example.api.exact") == "exact", "an exact registration wins"
        wildcard = RegisterOptions(match="wildcard", details_arg="details")
        callee._call(callee.session.register, lambda *args, details: details.procedure, "org..get", options=wildcard)
        assert caller.call("org.users.get") == "org.users.get"


def test_the_registration_meta_api_describes_callees_and_tells_of_them(server: Any) -> None:
    with Client(server.ws_url) as watcher, Client(server.ws_url) as one, Client(server.ws_url) as two:
        created: list[Any] = []
        registered = threading.Event()
        watcher._call(watcher.session.subscribe, lambda session, details: created.append(details), "wamp.registration.on_create")
        watcher._call(watcher.session.subscribe, lambda session, rid: registered.set(), "wamp.registration.on_register")
        shared = RegisterOptions(invoke="last")
        registration = one._call(one.session.register, lambda: "one", "com.example.meta", options=shared)
        two._call(two.session.register, lambda: "two", "com.example.meta", options=shared)
        assert registered.wait(5)
        assert [(d["id"], d["uri"], d["invoke"]) for d in created] == [(registration.id, "com.example.meta", "last")]
        assert watcher.call("wamp.registration.lookup", "com.example.meta") == registration.id
        assert watcher.call("wamp.registration.match", "com.example.meta") == registration.id
        assert watcher.call("wamp.registration.get", registration.id)["invoke"] == "last"
        assert sorted(watcher.call("wamp.registration.list_callees", registration.id)) == sorted([one.session_id, two.session_id])
        assert watcher.call("wamp.registration.count_callees", registration.id) == 2
        assert watcher.call("wamp.registration.list")["exact"] == [registration.id]
        assert watcher.call("com.example.meta") == "two"


def test_a_moderator_role_kills_sessions_by_authid(start_server: Any, tmp_path: Any) -> None:
    config = tmp_path / "wsserver.toml"
    config.write_text(MODERATED.format(role="moderator"))
    server = start_server("--config", str(config))
    with Client(server.ws_url) as moderator:
        victim = Client(server.ws_url)
        authid = moderator.call("wamp.session.get", victim.session_id)["authid"]
        assert moderator.call("wamp.session.kill_by_authid", authid, reason="com.example.out") == 1
        for _ in range(100):  # the victim answers GOODBYE, then it is gone
            if moderator.call("wamp.session.count") == 1:
                break
            threading.Event().wait(0.05)
        assert moderator.call("wamp.session.count") == 1
        assert moderator.call("wamp.session.kill_all") == 0, "never the caller"
