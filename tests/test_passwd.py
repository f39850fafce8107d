"""The password helper: what it prints is what the server checks (and what a client derives)."""

from __future__ import annotations

import io
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from autobahn.wamp.auth import derive_key

from wsserver import passwd
from wsserver.core.authentication import check_ticket, parse_ticket_hash

SCRIPT = Path(sys.executable).with_name("wsserver-passwd")


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: str, *args: str) -> dict[str, object]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert passwd.main(list(args)) == 0
    return tomllib.loads(capsys.readouterr().out)


def test_a_ticket_hash_for_a_password_from_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    line = run(monkeypatch, capsys, "s3cret pass\n", "--iterations", "10")
    stored = line["ticket"]
    assert isinstance(stored, str) and parse_ticket_hash(stored)[0] == 10
    assert check_ticket(stored, "s3cret pass") and not check_ticket(stored, "s3cret")
    again = run(monkeypatch, capsys, "s3cret pass\n", "--iterations", "10")["ticket"]
    assert again != stored  # a new salt every time


def test_a_salted_wampcra_secret_is_the_key_the_client_derives(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    line = run(monkeypatch, capsys, "pw\n", "--wampcra")
    wampcra = line["wampcra"]
    assert isinstance(wampcra, dict) and (wampcra["iterations"], wampcra["keylen"]) == (1000, 32)
    assert wampcra["secret"] == derive_key("pw", wampcra["salt"], 1000, 32).decode()


def test_an_empty_password_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))
    with pytest.raises(SystemExit, match="empty password"):
        passwd.main([])


def test_the_console_script_is_installed() -> None:
    result = subprocess.run([str(SCRIPT), "--iterations", "3"], input="pw\n", capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert check_ticket(tomllib.loads(result.stdout)["ticket"], "pw")


def test_http_api_keys_are_new_every_time_and_stored_as_the_server_checks_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import hashlib

    assert passwd.main(["--http-key"]) == 0
    output = capsys.readouterr().out
    bearer = output.split("Authorization: Bearer ", 1)[1].split()[0]
    stored = tomllib.loads(output)["key"]
    assert len(bearer) >= 40 and stored == "sha256:" + hashlib.sha256(bearer.encode()).hexdigest()
    first = run(monkeypatch, capsys, "", "--http-secret")["secret"]
    second = run(monkeypatch, capsys, "", "--http-secret")["secret"]
    assert isinstance(first, str) and len(first) >= 40 and first != second
