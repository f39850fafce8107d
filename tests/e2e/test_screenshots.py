"""`make screenshots` (tools/screenshots.py): every page it names exists, and a shot is a real PNG of the page."""

from __future__ import annotations

import importlib.util
import struct
import sys
from pathlib import Path
from types import ModuleType

from .cdp import chromium_path
from .prerequisites import unavailable

REPO = Path(__file__).resolve().parents[2]


def screenshots() -> ModuleType:
    """The tool as a module (it is run as a file, so it is not importable by name)."""
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "tools" / "screenshots.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["screenshots"] = module
    spec.loader.exec_module(module)
    return module


def test_every_page_photographed_is_a_page_of_the_site() -> None:
    for shot in screenshots().PAGES:
        page = shot.path.lstrip("/").split("?")[0] or "index.html"
        assert (REPO / "web" / page).is_file(), shot


def test_a_shot_is_a_png_of_the_live_page_at_the_stated_size(tmp_path: Path) -> None:
    if chromium_path() is None:
        unavailable("chromium is not installed (Debian: apt-get install chromium)")
    tool = screenshots()
    ticker = [shot for shot in tool.PAGES if shot.name == "ticker"]
    [written] = tool.take(ticker, tmp_path / "out", tmp_path)
    data = written.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1200, 800)
