#!/usr/bin/env python3
"""
Copy the site's third-party files into ``web/vendor/``, each one checked against a pinned SHA-256.

Run by ``make assets`` after ``npm ci`` has installed ``node_modules/`` from package-lock.json and
``pip download`` has fetched the source distributions named below into ``.venv/downloads/``:

    python3 tools/copy_assets.py

Why a second checksum when package-lock.json already pins the npm tarballs: the lock pins a whole
package, this table pins the exact bytes a browser will load, so a version bump in package.json that
changes the served file cannot slip through without someone updating the hash here on purpose.

Adding an asset is adding a row to ``ASSETS``: where the file is after installation (relative to the
repository root; or, for a file inside a downloaded ``.tar.gz``, the archive and the member's path in
it), where it goes under ``web/vendor/``, and its SHA-256 (``sha256sum FILE``). Standard library
only, so it runs before any virtualenv exists.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
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
    #: A .tar.gz (relative to the repository root) holding ``source`` as a member; "": a plain file.
    archive: str = ""


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
    # uPlot, the admin page's charts (small and fast: one canvas per chart, 50 KB minified). MIT.
    *(
        Asset(
            source=f"node_modules/uplot/{source}",
            dest=f"uplot/{dest}",
            sha256=sha256,
            origin="npm package uplot 1.6.32 (run `npm ci`)",
        )
        for source, dest, sha256 in [
            ("dist/uPlot.iife.min.js", "uPlot.iife.min.js", "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f"),
            ("dist/uPlot.min.css", "uPlot.min.css", "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04"),
            ("LICENSE", "LICENSE", "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd"),
        ]
    ),
    # web-socket-js, the Flash WebSocket shim for browsers without WebSocket. Its RFC 6455 build
    # (handshake with Sec-WebSocket-Version: 13) ships in websockify's old sdist; the Makefile
    # fetches it with `pip download`. New BSD License (swfobject.js: MIT), stated in each file.
    *(
        Asset(
            source=f"websockify-0.5.1/include/web-socket-js/{name}",
            dest=f"web-socket-js/{name}",
            sha256=sha256,
            origin="PyPI sdist websockify==0.5.1 (run `make assets`)",
            archive=".venv/downloads/websockify-0.5.1.tar.gz",
        )
        for name, sha256 in [
            ("web_socket.js", "1ee8627070e5965f132d5771eeb70b8f8da8b3d5761537c23ddfb6686b149cf1"),
            ("swfobject.js", "8677971b119ccdb82af697ff0e08f218490d15116f221d44301f1cc8797e67d4"),
            ("WebSocketMain.swf", "22733d693d0ce58b4e1e6457b6465a8b7a9dabc8a82180a93e8a5184b041b967"),
        ]
    ),
]


class AssetError(Exception):
    """An asset is missing or its bytes are not the pinned ones."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_source(asset: Asset, repo: Path) -> bytes:
    """The source's bytes, from a plain file or from a member of ``asset.archive``."""
    if not asset.archive:
        try:
            return (repo / asset.source).read_bytes()
        except FileNotFoundError:
            raise AssetError(f"missing {asset.source}: it comes from {asset.origin}") from None
    try:
        with tarfile.open(repo / asset.archive, "r:gz") as archive:
            member = archive.extractfile(asset.source)  # None for a directory
            if member is None:
                raise KeyError(asset.source)
            return member.read()
    except FileNotFoundError:
        raise AssetError(f"missing {asset.archive}: it comes from {asset.origin}") from None
    except KeyError:
        raise AssetError(f"missing {asset.source} in {asset.archive} (from {asset.origin})") from None
    except (tarfile.TarError, OSError) as error:
        raise AssetError(f"cannot read {asset.archive} (from {asset.origin}): {error}") from None


def read_verified(asset: Asset, repo: Path) -> bytes:
    """The source file's bytes, or AssetError if it is missing or does not match the pinned hash."""
    data = read_source(asset, repo)
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
