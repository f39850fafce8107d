"""``twistd wsserver`` options, the plugin's registration, and makeService."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.application.internet import TimerService
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from wsserver.adminstats import StatsPublisher
from wsserver.core.eventstore import StoreLimits
from wsserver.core.logins import LoginLimits
from wsserver.demo import DemoProducer
from wsserver.service import EndpointService, WampServer
from wsserver.tap import Options, makeService
from wsserver.transports.flashpolicy import FlashPolicyService

TWISTD = str(Path(sys.executable).with_name("twistd"))


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults() -> None:
    options = parse()
    assert options["listen"] == ["tcp:8080:backlog=4096"]  # a reconnect storm waits in the queue
    assert options["realm"] == ["realm1"]
    assert options["allowed-origin"] == ["*"]
    assert options["ws-path"] == "ws"
    assert options["max-message-size"] == 1024 * 1024
    assert (options["web"] / "index.html").is_file()
    assert not options["demo"]


def test_repeatable_options_collect_every_value(tmp_path: Path) -> None:
    options = parse(
        "--listen", "tcp:1", "--listen", "tcp:2", "--realm", "a", "--realm", "b",
        "--allowed-origin", "https://x.example", "--web", str(tmp_path), "--max-message-size", "10", "--demo",
    )
    assert options["listen"] == ["tcp:1:backlog=4096", "tcp:2:backlog=4096"]
    assert options["realm"] == ["a", "b"]
    assert options["allowed-origin"] == ["https://x.example"]
    assert options["web"] == tmp_path and options["max-message-size"] == 10 and options["demo"]


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--web", "/no/such/dir"], "not a directory"),
        (["--max-message-size", "0"], "at least 1"),
        (["--max-message-size", "lots"], "invalid literal"),
        (["--ws-path", "/"], "must not be empty"),
        (["--slow-consumer", "sometimes"], "must be one of disconnect, drop"),
        (["--hello-timeout", "0"], "more than 0"),
        (["--max-connections-per-ip", "0"], "at least 1"),
        (["--flash-allow-domain", 'evil" to-ports="*'], "not a domain Flash can match"),
        (["--flash-allow-ports", "80,http"], "port numbers separated by commas"),
        (["--flash-policy-port", "99999"], "from 0 to 65535"),
        (["--http-call-timeout", "0"], "more than 0"),
    ],
)
def test_bad_options_are_refused_with_a_reason(args: list[str], complaint: str) -> None:
    with pytest.raises((usage.UsageError, ValueError), match=complaint):
        parse(*args)


def test_flash_policy_port_is_required_only_when_given() -> None:
    assert not parse()["flash-policy-port-explicit"] and parse()["flash-policy-port"] == 843
    options = parse("--flash-policy-port", "843")
    assert options["flash-policy-port-explicit"]
    assert parse("--flash-policy-port", "0")["flash-policy-port"] == 0


def test_make_service_builds_one_listener_per_endpoint_and_the_demo() -> None:
    server = makeService(parse("--listen", "tcp:0", "--listen", "tcp:0", "--demo"), reactor=MemoryReactorClock())
    assert isinstance(server, WampServer)
    children = list(server)
    assert [type(c) for c in children] == [
        TimerService, TimerService, StatsPublisher, FlashPolicyService, EndpointService, EndpointService, DemoProducer
    ]
    assert list(server.router.realms) == ["realm1"]


def test_admin_role_names_the_admin_pages_role_and_empty_turns_it_off() -> None:
    def admin_role(*args: str) -> Any:
        return makeService(parse("--listen", "tcp:0", *args), reactor=MemoryReactorClock()).router.realms["realm1"].admin_role  # type: ignore[attr-defined]

    assert admin_role() == "admin"
    assert admin_role("--admin-role", "operator") == "operator"
    assert admin_role("--admin-role", "") is None


def test_the_demo_keeps_history_for_its_topics_unless_the_config_says_otherwise(tmp_path: Path) -> None:
    def history(*args: str) -> Any:
        return makeService(parse(*args), reactor=MemoryReactorClock()).router.realms["realm1"].broker.history  # type: ignore[attr-defined]

    assert history() is None
    demo = history("--demo")
    assert demo.keeps("com.example.ticker") and demo.keeps("com.example.clock") and not demo.keeps("com.example.chat")
    assert demo.keeps("com.example.chat.room.lobby") and not demo.keeps("com.example.chatter")
    path = tmp_path / "wsserver.toml"
    path.write_text('history = [{ uri = "com.example.clock", size = 0 }]\n[realms.realm1]\n')
    configured = history("--demo", "--config", str(path))
    assert configured.keeps("com.example.ticker") and not configured.keeps("com.example.clock")


def test_twistd_lists_the_plugin_and_its_help_shows_every_option() -> None:
    # The installed twistd (pip install ., not -e): this fails if the plugin is not registered.
    listed = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, check=True).stdout
    assert "wsserver" in listed
    help_text = subprocess.run([TWISTD, "wsserver", "--help"], capture_output=True, text=True, check=True).stdout
    declared = [row[0] for row in Options.optParameters + Options.optFlags] + [
        name[len("opt_"):].replace("_", "-") for name in vars(Options) if name.startswith("opt_")
    ]
    assert {"listen", "web", "ws-path", "realm", "allowed-origin", "max-message-size", "demo"} <= set(declared)
    missing = [name for name in declared if f"--{name}=" not in help_text and f"--{name} " not in help_text]
    assert missing == [], f"options without --help text: {missing}"
    # twistd adds "[default: X]" to a row with a default: a row that says its own has none.
    assert "] [default:" not in " ".join(help_text.split()), "an option's help says its default twice"


# -- --config and the per-session limits ---------------------------------------------------------

CONFIG = """\
[server]
max-subscriptions = 7
listen = ["tcp:1", "tcp:2"]
demo = true

[realms.members]
[realms.members.roles.member]
permissions = [{ uri = "com.example.", match = "prefix", allow = ["subscribe"] }]
[realms.members.principals.alice]
role = "member"
wampcra = "secret"
"""


def test_a_config_file_gives_options_and_the_command_line_overrides_them(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text(CONFIG)
    options = parse("--config", str(path), "--listen", "tcp:3", "--max-subscriptions", "9")
    assert options["listen"] == ["tcp:3:backlog=4096"] and options["max-subscriptions"] == 9 and options["demo"]
    assert options["realm"] == ["members"]
    assert parse(f"--config={path}")["listen"] == ["tcp:1:backlog=4096", "tcp:2:backlog=4096"]
    assert parse("--config", str(path), "--realm", "realm1")["realm"] == ["realm1"]


def test_make_service_serves_the_configured_realms_and_limits(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text(CONFIG)
    server = makeService(parse("--config", str(path), "--realm", "members", "--realm", "realm1",
                               "--max-publish-rate", "5", "--publish-burst", "6"), reactor=MemoryReactorClock())
    assert isinstance(server, WampServer)
    realms = server.router.realms
    assert not realms["members"].authenticator.policy.open_to_anyone
    assert realms["members"].authenticator.offered == ("wampcra",)
    assert realms["realm1"].authenticator.policy.open_to_anyone  # named on the command line, not in the file
    limits = server.router.limits
    assert (limits.publish_rate, limits.publish_burst, limits.max_subscriptions) == (5.0, 6, 7)
    default = makeService(parse("--listen", "tcp:0"), reactor=MemoryReactorClock()).router  # type: ignore[attr-defined]
    assert (default.limits.publish_rate, default.limits.publish_burst, default.limits.max_subscriptions) == (1000.0, 10_000, 1000)


def test_uri_length_registrations_and_calls_in_flight_reach_the_session_limits() -> None:
    default = makeService(parse("--listen", "tcp:0"), reactor=MemoryReactorClock()).router.limits  # type: ignore[attr-defined]
    assert (default.max_uri_length, default.max_registrations, default.max_calls_in_flight) == (1024, 1000, 1000)
    given = parse("--max-uri-length", "200", "--max-registrations", "0", "--max-calls-in-flight", "5")
    limits = makeService(given, reactor=MemoryReactorClock()).router.limits  # type: ignore[attr-defined]
    assert (limits.max_uri_length, limits.max_registrations, limits.max_calls_in_flight) == (200, 0, 5)
    for name in ("--max-uri-length", "--max-registrations", "--max-calls-in-flight"):
        with pytest.raises(usage.UsageError, match=f"{name} must not be negative"):
            parse(name, "-1")


def test_a_bad_config_file_stops_the_server_with_file_line_and_key(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text(CONFIG.replace('role = "member"', 'role = "member"\nrol = "x"'))
    with pytest.raises(usage.UsageError, match=rf"^{path}:11: realms.members.principals.alice.rol: unknown key 'rol'"):
        parse("--config", str(path))
    result = subprocess.run([TWISTD, "-n", "wsserver", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and f"{path}:11:" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args, complaint",
    [
        (["--max-publish-rate", "-1"], "must not be negative"),
        (["--max-subscriptions", "-1"], "must not be negative"),
        (["--publish-burst", "0"], "at least 1"),
        (["--max-fragments", "-1"], "must not be negative"),
        (["--max-frame-rate", "-1"], "must not be negative"),
        (["--frame-burst", "0"], "at least 1"),
        (["--longpoll-timeout", "0"], "more than 0"),
        (["--longpoll-path", "/"], "must not be empty"),
        (["--longpoll-path", "echo"], "taken by another endpoint"),
        (["--longpoll-path", "/ws/"], "taken by another endpoint"),
        (["--config", "/no/such/file.toml"], "cannot read"),
    ],
)
def test_bad_limits_and_config_paths_are_refused(args: list[str], complaint: str) -> None:
    with pytest.raises(usage.UsageError, match=complaint):
        parse(*args)


# -- what one WebSocket may send: fragments and frames ------------------------------------------------


def test_frame_limits_reach_every_endpoint_and_default_to_connection_limits() -> None:
    from wsserver.transports.admission import ConnectionLimits

    server = makeService(parse("--max-fragments", "8", "--max-frame-rate", "0", "--frame-burst", "9"),
                         reactor=MemoryReactorClock())
    limits = server.admission.limits  # type: ignore[attr-defined]
    assert (limits.max_fragments, limits.max_frame_rate, limits.frame_burst) == (8, 0.0, 9)
    defaults = parse()
    assert (defaults["max-fragments"], defaults["max-frame-rate"], defaults["frame-burst"]) == (
        ConnectionLimits.max_fragments, ConnectionLimits.max_frame_rate, ConnectionLimits.frame_burst)


def test_the_event_store_budget_comes_from_the_command_line_or_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text("[server]\nmax-store-bytes = 1000000\nmax-store-topics = 50\n\n[realms.realm1]\n")
    configured = makeService(parse("--config", str(path), "--max-store-topics", "70"), reactor=MemoryReactorClock())
    assert configured.router.store_budget.limits == StoreLimits(max_bytes=1_000_000, max_topics=70)  # type: ignore[attr-defined]
    default = makeService(parse(), reactor=MemoryReactorClock())
    assert default.router.store_budget.limits == StoreLimits()  # type: ignore[attr-defined]
    with pytest.raises(usage.UsageError, match="must not be negative"):
        parse("--max-store-bytes", "-1")


def test_the_failed_login_limits_come_from_the_command_line_or_the_config_file(tmp_path: Path) -> None:
    server = makeService(parse("--max-login-failures", "3", "--max-login-failures-per-authid", "0",
                               "--login-failure-window", "10"), reactor=MemoryReactorClock())
    assert server.router.failed_logins.limits == LoginLimits(per_address=3, per_authid=0, window=10.0)  # type: ignore[attr-defined]
    assert makeService(parse(), reactor=MemoryReactorClock()).router.failed_logins.limits == LoginLimits()  # type: ignore[attr-defined]
    path = tmp_path / "wsserver.toml"
    path.write_text("[server]\nmax-login-failures-per-authid = 7\nlogin-failure-window = 30.0\n\n[realms.realm1]\n")
    configured = makeService(parse("--config", str(path)), reactor=MemoryReactorClock())
    assert configured.router.failed_logins.limits == LoginLimits(per_authid=7, window=30.0)  # type: ignore[attr-defined]
    with pytest.raises(usage.UsageError, match="more than 0"):
        parse("--login-failure-window", "0")
    with pytest.raises(usage.UsageError, match="must not be negative"):
        parse("--max-login-failures", "-1")


def test_the_http_api_is_off_unless_asked_for_and_then_mounted_with_its_keys(tmp_path: Path) -> None:
    from wsserver.transports.http_api import DEFAULT_CALL_TIMEOUT, HttpApi

    assert parse()["http-call-timeout"] == DEFAULT_CALL_TIMEOUT
    plain = makeService(parse("--listen", "tcp:0"), reactor=MemoryReactorClock())
    assert not any(isinstance(child, HttpApi) for child in plain)
    assert b"publish" not in plain.site.resource.children
    config = tmp_path / "wsserver.toml"
    config.write_text("[realms.realm1.roles.r]\n[realms.realm1.http-keys.k]\nrole = 'r'\nsecret = '0123456789abcdef'\n")
    server = makeService(parse("--listen", "tcp:0", "--http-api", "--http-call-timeout", "2.5", "--config", str(config),
                               "--max-message-size", "5000"), reactor=MemoryReactorClock())
    (api,) = [child for child in server if isinstance(child, HttpApi)]
    assert [key.name for key in api.settings.keys] == ["k"] and api.settings.call_timeout == 2.5
    assert api.max_body == 5000 and server.site.requestFactory.max_body == 5000
    assert {b"publish", b"call"} <= set(server.site.resource.children)


def test_long_poll_options_reach_the_endpoint_and_default_to_its_settings() -> None:
    from wsserver.transports.longpoll import LongPollSettings

    server = makeService(parse("--longpoll-path", "/poll/", "--longpoll-timeout", "12"), reactor=MemoryReactorClock())
    assert server.longpoll.settings == LongPollSettings(path="/poll/", session_timeout=12.0)  # type: ignore[attr-defined]
    assert server.site.resource.children[b"poll"] is server.longpoll  # type: ignore[attr-defined]
    defaults = parse()
    assert (defaults["longpoll-path"], defaults["longpoll-timeout"]) == (
        LongPollSettings.path, LongPollSettings.session_timeout)


def test_history_rules_come_from_the_config_file_and_max_resume_events_from_either(tmp_path: Path) -> None:
    path = tmp_path / "wsserver.toml"
    path.write_text(
        'history = [{ uri = "com.example.", match = "prefix", size = 100, ttl = 300 }]\n'
        "[server]\nmax-resume-events = 50\n\n[realms.realm1]\n"
    )
    server = makeService(parse("--config", str(path)), reactor=MemoryReactorClock())
    broker = server.router.realms["realm1"].broker  # type: ignore[attr-defined]
    assert broker.max_resume_events == 50
    assert broker.history.keeps("com.example.chat") and not broker.history.keeps("com.other")
    assert server.router.realms["realm1"].dealer  # type: ignore[attr-defined]
    default = makeService(parse(), reactor=MemoryReactorClock())
    assert default.router.realms["realm1"].broker.history is None  # type: ignore[attr-defined]
    assert parse()["max-resume-events"] == 300
    with pytest.raises(usage.UsageError, match="at least 1"):
        parse("--max-resume-events", "0")


def test_the_default_listen_queue_holds_a_reconnect_storm() -> None:
    from twisted.internet import endpoints, protocol
    from twisted.internet.testing import MemoryReactor

    from wsserver.tap import DEFAULT_BACKLOG

    reactor = MemoryReactor()
    (listen,) = parse()["listen"]
    endpoints.serverFromString(reactor, listen).listen(protocol.Factory())
    ((port, _, backlog, _),) = reactor.tcpServers
    assert (port, backlog) == (8080, DEFAULT_BACKLOG) and DEFAULT_BACKLOG > 50  # Twisted's own default


@pytest.mark.parametrize("given, listened", [
    ("tcp:9000:interface=127.0.0.1", "tcp:9000:interface=127.0.0.1:backlog=4096"),
    ("ssl:8443:privateKey=k.pem:certKey=c.pem", "ssl:8443:privateKey=k.pem:certKey=c.pem:backlog=4096"),
    ("unix:/run/ws.sock", "unix:/run/ws.sock:backlog=4096"),
    ("tcp:9000:backlog=128", "tcp:9000:backlog=128"),  # named: kept
    ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),  # no queue of ours
])
def test_every_listening_endpoint_gets_the_long_queue_unless_it_names_one(given: str, listened: str) -> None:
    assert parse("--listen", given)["listen"] == [listened]
