"""
tools/copy_assets.py: assets are copied only when their bytes match the pinned SHA-256, and every
missing or mismatched asset is reported with what to do about it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "copy_assets.py"


@pytest.fixture(scope="module")
def copy_assets() -> Iterator[ModuleType]:
    """The script as a module (it is run as a file by `make assets`, so it is not importable by name)."""
    spec = importlib.util.spec_from_file_location("copy_assets", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def make_asset(copy_assets: ModuleType, repo: Path, content: bytes, sha256: str | None = None) -> object:
    source = repo / "node_modules" / "pkg" / "lib.js"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(content)
    return copy_assets.Asset(
        source="node_modules/pkg/lib.js",
        dest="pkg/lib.min.js",
        sha256=sha256 or hashlib.sha256(content).hexdigest(),
        origin="npm package pkg 1.0.0 (run `npm ci`)",
    )


def test_a_verified_asset_is_copied_to_vendor(copy_assets: ModuleType, tmp_path: Path) -> None:
    """A source that matches its checksum ends up, byte for byte, under web/vendor/<dest>."""
    asset = make_asset(copy_assets, tmp_path, b"console.log('pkg');\n")
    vendor = tmp_path / "web" / "vendor"
    assert copy_assets.copy_assets([asset], repo=tmp_path, vendor=vendor) == []
    assert (vendor / "pkg" / "lib.min.js").read_bytes() == b"console.log('pkg');\n"


def test_a_checksum_mismatch_is_reported_and_nothing_is_copied(copy_assets: ModuleType, tmp_path: Path) -> None:
    """The message names the file, both hashes and where the file came from; web/vendor/ stays untouched."""
    asset = make_asset(copy_assets, tmp_path, b"tampered", sha256="0" * 64)
    vendor = tmp_path / "web" / "vendor"
    [error] = copy_assets.copy_assets([asset], repo=tmp_path, vendor=vendor)
    assert "checksum mismatch for node_modules/pkg/lib.js" in error
    assert "0" * 64 in error and hashlib.sha256(b"tampered").hexdigest() in error
    assert "npm package pkg 1.0.0" in error
    assert not (vendor / "pkg" / "lib.min.js").exists()


def test_a_missing_source_is_reported_with_how_to_get_it(copy_assets: ModuleType, tmp_path: Path) -> None:
    asset = copy_assets.Asset("node_modules/gone/x.js", "gone/x.js", "1" * 64, "npm package gone 2.0 (run `npm ci`)")
    [error] = copy_assets.copy_assets([asset], repo=tmp_path, vendor=tmp_path / "vendor")
    assert error == "missing node_modules/gone/x.js: it comes from npm package gone 2.0 (run `npm ci`)"


def test_a_stale_copy_in_vendor_is_replaced(copy_assets: ModuleType, tmp_path: Path) -> None:
    """A file left in web/vendor/ from an older version is overwritten with the verified one."""
    asset = make_asset(copy_assets, tmp_path, b"new version")
    stale = tmp_path / "vendor" / "pkg" / "lib.min.js"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old version")
    assert copy_assets.copy_assets([asset], repo=tmp_path, vendor=tmp_path / "vendor") == []
    assert stale.read_bytes() == b"new version"
    assert list(stale.parent.iterdir()) == [stale]  # no temporary file left behind


def test_main_fails_loudly_when_an_asset_does_not_verify(
    copy_assets: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make assets` must stop: exit status 1 and the reasons on stderr."""
    asset = make_asset(copy_assets, tmp_path, b"tampered", sha256="0" * 64)
    monkeypatch.setattr(copy_assets, "ASSETS", [asset])
    monkeypatch.setattr(copy_assets, "REPO", tmp_path)
    monkeypatch.setattr(copy_assets, "VENDOR", tmp_path / "vendor")
    assert copy_assets.main() == 1
    stderr = capsys.readouterr().err
    assert "1 of 1 assets failed verification" in stderr
    assert "checksum mismatch for node_modules/pkg/lib.js" in stderr
    assert not (tmp_path / "vendor" / "pkg" / "lib.min.js").exists()


def test_every_pinned_hash_is_a_sha256(copy_assets: ModuleType) -> None:
    """Guards against a pasted MD5/SHA-1 or a truncated hash in the table."""
    for asset in copy_assets.ASSETS:
        assert len(asset.sha256) == 64 and int(asset.sha256, 16) >= 0, asset
        assert not Path(asset.dest).is_absolute() and ".." not in Path(asset.dest).parts, asset


def make_archive_asset(copy_assets: ModuleType, repo: Path, content: bytes, sha256: str | None = None) -> object:
    """An asset that is one member of a .tar.gz, as a PyPI sdist fetched by `pip download` holds it."""
    archive = repo / "downloads" / "pkg-1.0.tar.gz"
    archive.parent.mkdir(parents=True, exist_ok=True)
    member = tarfile.TarInfo("pkg-1.0/include/lib.swf")
    member.size = len(content)
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(content))
    return copy_assets.Asset(
        source="pkg-1.0/include/lib.swf",
        dest="pkg/lib.swf",
        sha256=sha256 or hashlib.sha256(content).hexdigest(),
        origin="PyPI sdist pkg==1.0 (run `make assets`)",
        archive="downloads/pkg-1.0.tar.gz",
    )


def test_a_verified_member_of_an_archive_is_copied(copy_assets: ModuleType, tmp_path: Path) -> None:
    asset = make_archive_asset(copy_assets, tmp_path, b"FWS\x0a")
    assert copy_assets.copy_assets([asset], repo=tmp_path, vendor=tmp_path / "vendor") == []
    assert (tmp_path / "vendor" / "pkg" / "lib.swf").read_bytes() == b"FWS\x0a"


def test_an_archive_member_is_checked_like_a_file(copy_assets: ModuleType, tmp_path: Path) -> None:
    asset = make_archive_asset(copy_assets, tmp_path, b"tampered", sha256="0" * 64)
    [error] = copy_assets.copy_assets([asset], repo=tmp_path, vendor=tmp_path / "vendor")
    assert "checksum mismatch for pkg-1.0/include/lib.swf (from PyPI sdist pkg==1.0" in error
    assert not (tmp_path / "vendor" / "pkg" / "lib.swf").exists()


def test_a_missing_archive_or_member_is_reported_with_how_to_get_it(copy_assets: ModuleType, tmp_path: Path) -> None:
    asset = make_archive_asset(copy_assets, tmp_path, b"FWS")
    elsewhere = dataclasses.replace(asset, source="pkg-1.0/include/other.swf")
    gone = dataclasses.replace(asset, archive="downloads/gone-2.0.tar.gz")
    assert copy_assets.copy_assets([elsewhere, gone], repo=tmp_path, vendor=tmp_path / "vendor") == [
        "missing pkg-1.0/include/other.swf in downloads/pkg-1.0.tar.gz (from PyPI sdist pkg==1.0 (run `make assets`))",
        "missing downloads/gone-2.0.tar.gz: it comes from PyPI sdist pkg==1.0 (run `make assets`)",
    ]


def test_a_damaged_archive_is_reported(copy_assets: ModuleType, tmp_path: Path) -> None:
    asset = make_archive_asset(copy_assets, tmp_path, b"FWS")
    (tmp_path / "downloads" / "pkg-1.0.tar.gz").write_bytes(b"not gzip")
    [error] = copy_assets.copy_assets([asset], repo=tmp_path, vendor=tmp_path / "vendor")
    assert error.startswith("cannot read downloads/pkg-1.0.tar.gz (from PyPI sdist pkg==1.0")
