"""``twistd wsserver`` options, the plugin's registration, and makeService."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

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
    assert options["listen"] == ["tcp:8080"]
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
    assert options["listen"] == ["tcp:1", "tcp:2"]
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
    assert [type(c) for c in children] == [FlashPolicyService, EndpointService, EndpointService, DemoProducer]
    assert list(server.router.realms) == ["realm1"]


def test_twistd_lists_the_plugin_and_its_help_shows_every_option() -> None:
    # The installed twistd (pip install ., not -e): this fails if the plugin is not registered.
    listed = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, check=True).stdout
    assert "wsserver" in listed
    help_text = subprocess.run([TWISTD, "wsserver", "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--listen", "--web", "--ws-path", "--realm", "--allowed-origin", "--max-message-size", "--demo"):
        assert option in help_text
