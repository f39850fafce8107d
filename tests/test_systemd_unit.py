"""examples/wsserver.service: the options it runs with are ours, and its limits fit them."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from wsserver import tap

UNIT = Path(__file__).resolve().parent.parent / "examples" / "wsserver.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read(UNIT)
    return parser


def test_the_unit_runs_twistd_in_the_foreground_with_options_wsserver_accepts() -> None:
    command = shlex.split(unit()["Service"]["ExecStart"])
    assert command[0].endswith("/twistd") and "-n" in command[:command.index("wsserver")]
    options = tap.Options()
    options.parseOptions(command[command.index("wsserver") + 1:])
    assert options["trust-proxy"]


def test_the_descriptor_limit_covers_the_connections_and_the_stop_outlasts_the_goodbyes() -> None:
    service = unit()["Service"]
    options = tap.Options()
    command = shlex.split(service["ExecStart"])
    options.parseOptions(command[command.index("wsserver") + 1:])
    assert int(service["LimitNOFILE"]) > options["max-connections"]
    assert float(service["TimeoutStopSec"]) > options["shutdown-timeout"]
