#!/usr/bin/env python3
"""
Copy the site's third-party files into ``web/vendor/``, each one checked against a pinned SHA-256.

Run by ``make assets`` after ``npm ci`` has installed ``node_modules/`` from package-lock.json:

    python3 tools/copy_assets.py

Why a second checksum when package-lock.json already pins the npm tarballs: the lock pins a whole
package, this table pins the exact bytes a browser will load, so a version bump in package.json that
changes the served file cannot slip through without someone updating the hash here on purpose.

Adding an asset is adding a row to ``ASSETS``: where the file is after installation (relative to the
repository root), where it goes under ``web/vendor/``, and its SHA-256 (``sha256sum FILE``). Standard
library only, so it runs before any virtualenv exists.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENDOR = REPO / "web" / "vendor"


@dataclass(frozen=True)
class Asset:
    source: str  # path relative to the repository root, as installed by the step named in `origin`
    dest: str  # path relative to web/vendor/; the URL path is /vendor/<dest>
    sha256: str  # hex digest of the exact bytes we serve
    origin: str  # where the file comes from and how to get it, for error messages


ASSETS: list[Asset] = [
    Asset(
        source="node_modules/autobahn-browser/autobahn.min.js",
        dest="autobahn/autobahn.min.js",
        sha256="11dbee872612291599f7ccf1338ef6b0da4c685eee0b9f2add58c978a3ad8ee3",
        origin="npm package autobahn-browser 22.11.1 (run `npm ci`)",
    ),
    Asset(
        source="node_modules/autobahn-browser/LICENSE",
        dest="autobahn/LICENSE",
        sha256="6cf1c2fa3b6f9efc8b4024156cf4b2f6163b422203511eb98f93d33c094ae7cb",
        origin="npm package autobahn-browser 22.11.1 (run `npm ci`)",
    ),
]


class AssetError(Exception):
    """An asset is missing or its bytes are not the pinned ones."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(asset: Asset, repo: Path) -> bytes:
    """The source file's bytes, or AssetError if it is missing or does not match the pinned hash."""
    path = repo / asset.source
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AssetError(f"missing {asset.source}: it comes from {asset.origin}") from None
    actual = sha256_of(data)
    if actual != asset.sha256:
        raise AssetError(
            f"checksum mismatch for {asset.source} (from {asset.origin}):\n"
            f"    expected sha256 {asset.sha256}\n"
            f"    actual   sha256 {actual}\n"
            f"    If you upgraded the package on purpose, review the new file and update ASSETS in\n"
            f"    {Path(__file__).name}."
        )
    return data


def write_atomically(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a server never serves a half-written asset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def copy_assets(assets: list[Asset], repo: Path = REPO, vendor: Path = VENDOR) -> list[str]:
    """Copy every asset whose source verifies; return one error message per asset that does not."""
    errors = []
    for asset in assets:
        try:
            data = read_verified(asset, repo)
        except AssetError as error:
            errors.append(str(error))
            continue
        dest = vendor / asset.dest
        if dest.is_file() and sha256_of(dest.read_bytes()) == asset.sha256:
            print(f"up to date  web/vendor/{asset.dest}")
            continue
        write_atomically(dest, data)
        print(f"copied      web/vendor/{asset.dest}  <- {asset.source}")
    return errors


def main() -> int:
    errors = copy_assets(ASSETS, REPO, VENDOR)
    if errors:
        print(f"\n{Path(__file__).name}: {len(errors)} of {len(ASSETS)} assets failed verification:", file=sys.stderr)
        for error in errors:
            print(f"  - {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
