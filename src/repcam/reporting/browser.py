"""Headless Chromium for the HTML report: find a browser, render a page to PNG (:func:`screenshot`, for docs) or
to its DOM (:func:`dump_dom`, for tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence


BROWSER_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "/usr/bin/chromium")


def find_browser() -> str | None:
    """Path of a Chromium-family browser, or None. ``REPCAM_BROWSER`` overrides the search."""
    env = os.environ.get("REPCAM_BROWSER")
    if env:
        return env if (Path(env).is_file() or shutil.which(env)) else None
    for c in BROWSER_CANDIDATES:
        p = shutil.which(c)
        if p:
            return p
    return None


def _browser_run(html_path: Path, extra: Sequence[str], browser: str | None, timeout: float) -> subprocess.CompletedProcess:
    exe = browser or find_browser()
    if exe is None:
        raise RuntimeError("no Chromium-family browser found (install chromium, or set REPCAM_BROWSER)")
    with tempfile.TemporaryDirectory(prefix="repcam-chromium-") as profile:
        cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars",
               f"--user-data-dir={profile}", *extra, Path(html_path).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{exe} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def screenshot(html_path: str | Path, png_path: str | Path, *, width: int = 1280, height: int = 1800,
               browser: str | None = None, timeout: float = 60) -> Path:
    """Render ``html_path`` in headless Chromium and save the top ``width`` x ``height`` pixels as PNG."""
    out = Path(png_path).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    _browser_run(Path(html_path), [f"--window-size={width},{height}", f"--screenshot={out}"], browser, timeout)
    if not out.is_file() or out.stat().st_size == 0:
        raise RuntimeError(f"the browser wrote no screenshot to {out}")
    return out


def dump_dom(html_path: str | Path, *, browser: str | None = None, timeout: float = 60) -> str:
    """The DOM that headless Chromium builds from ``html_path``, serialised as HTML."""
    return _browser_run(Path(html_path), ["--dump-dom"], browser, timeout).stdout
