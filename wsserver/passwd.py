"""
Print the stored form of a password for a principal in a ``--config`` file::

    python -m wsserver.passwd                 # ticket = "pbkdf2-sha256$100000$SALT$KEY"
    python -m wsserver.passwd --wampcra       # wampcra = { secret = "KEY", salt = "SALT", ... }
    python -m wsserver.passwd --http-key      # a new HTTP API bearer key, and its key = "sha256:..." line
    python -m wsserver.passwd --http-secret   # a new HTTP API signing secret: secret = "..."
    wsserver-passwd ...                       # the same, installed as a console script

It asks for the password twice on a terminal, or reads one line from standard input otherwise
(``echo "$PASSWORD" | wsserver-passwd``), and prints a line to paste into the principal's table.
Every run draws a new random salt.

- ticket: a salted PBKDF2-SHA256 hash; the server checks a client's ticket against it. The
  password itself is stored nowhere.
- wampcra: the key a client derives from the password and the salt (autobahn's ``derive_key``, as
  AutobahnJS's ``auth_cra.derive_key`` does): the server needs that key to check a response, so
  it is a secret too, but not the password. The client keeps using the password.
- http-key, http-secret: nothing is read; a new random key is drawn (256 bits). A bearer key is
  stored as its SHA-256 (the server never needs the key itself), so it is printed once, in a
  comment, for the client. A signing secret is needed as is to check signatures: the line holds it.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import secrets
import sys
from collections.abc import Sequence

from autobahn.wamp.auth import derive_key

from wsserver.core.authentication import TICKET_ITERATIONS, hash_ticket

#: WAMP-CRA's usual derivation (autobahn's defaults); each login costs the client this much PBKDF2.
WAMPCRA_ITERATIONS = 1000
WAMPCRA_KEYLEN = 32


def ticket_line(password: str, salt: str, iterations: int = TICKET_ITERATIONS) -> str:
    return f'ticket = "{hash_ticket(password, salt, iterations)}"'


def wampcra_line(password: str, salt: str, iterations: int = WAMPCRA_ITERATIONS, keylen: int = WAMPCRA_KEYLEN) -> str:
    key = derive_key(password, salt, iterations, keylen).decode("ascii")
    return f'wampcra = {{ secret = "{key}", salt = "{salt}", iterations = {iterations}, keylen = {keylen} }}'


def http_key_lines(key: str) -> str:
    """The comment the client's key is in, and the line for [realms.NAME.http-keys.KEYNAME]."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return f'# the client sends: Authorization: Bearer {key}\nkey = "sha256:{digest}"'


def http_secret_line(secret: str) -> str:
    return f'secret = "{secret}"'


def read_password() -> str:
    """Twice from the terminal (they must agree), or one line from standard input."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != password:
        raise SystemExit("the passwords differ")
    return password


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wsserver-passwd", description="Print the stored form of a password for a wsserver --config file."
    )
    parser.add_argument("--wampcra", action="store_true", help="a salted WAMP-CRA secret instead of a ticket hash")
    parser.add_argument(
        "--iterations", type=int, default=None,
        help=f"PBKDF2 iterations [default: {TICKET_ITERATIONS} for a ticket, {WAMPCRA_ITERATIONS} for wampcra]",
    )
    drawn = parser.add_mutually_exclusive_group()
    drawn.add_argument("--http-key", action="store_true", help="a new random bearer key for the HTTP API (--http-api)")
    drawn.add_argument("--http-secret", action="store_true", help="a new random signing secret for the HTTP API")
    args = parser.parse_args(argv)
    if args.http_key or args.http_secret:
        key = secrets.token_urlsafe(32)
        print(http_key_lines(key) if args.http_key else http_secret_line(key))
        return 0
    if args.iterations is not None and args.iterations < 1:
        parser.error("--iterations must be at least 1")
    password = read_password()
    if not password:
        raise SystemExit("an empty password would let anyone in")
    salt = secrets.token_hex(16)
    if args.wampcra:
        print(wampcra_line(password, salt, args.iterations or WAMPCRA_ITERATIONS))
    else:
        print(ticket_line(password, salt, args.iterations or TICKET_ITERATIONS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
