"""The report in a real browser: headless Chromium renders it offline, every image decodes, the page is not blank.

Skipped when no Chromium-family browser is installed (Debian: ``apt-get install -y chromium``).
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repcam.reporting.browser import BROWSER_CANDIDATES, dump_dom, find_browser, screenshot
from repcam.reporting.report import write_report

BROWSER = find_browser()
pytestmark = pytest.mark.skipif(
    BROWSER is None, reason=f"no headless browser found (looked for {', '.join(BROWSER_CANDIDATES)}; install chromium or set REPCAM_BROWSER)"
)

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from test_report import make_fake_run  # the same fake run directory as tests/test_report.py

    run = make_fake_run(tmp_path_factory.mktemp("browser"))
    return write_report(run)


def test_screenshot_is_not_blank(report, tmp_path):
    png = screenshot(report, tmp_path / "report.png", width=1200, height=1500)
    im = Image.open(png)
    im.load()
    assert im.format == "PNG" and im.size == (1200, 1500)
    a = np.asarray(im.convert("RGB"), dtype=np.int16)
    assert a.std() > 10  # text, tables and figures, not a uniform page
    assert len(np.unique(a.reshape(-1, 3)[::7], axis=0)) > 50
    # The page has a white background; a blank or error page would be nearly all one colour.
    assert (a.sum(-1) < 600).mean() > 0.01


def test_dom_has_every_image_and_table(report):
    source = report.read_text()
    dom = dump_dom(report)
    n_img = len(re.findall(r"<img\b", source))
    assert n_img >= 8
    assert len(re.findall(r"<img\b", dom)) == n_img
    assert len(re.findall(r"<table\b", dom)) == len(re.findall(r"<table\b", source)) >= 6
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom  # rendered as text, re-serialised escaped
    assert "<script" not in dom.lower()
    srcs = re.findall(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", dom)
    assert len(srcs) == n_img and all(s.startswith("data:image/png;base64,") for s in srcs)


# ---- every <img> actually decoded by the browser: Chrome DevTools protocol over --remote-debugging-pipe ----


class _Pipe:
    """Minimal CDP client: JSON messages separated by NUL bytes on fds 3 (to the browser) and 4 (from it)."""

    def __init__(self, url: str, profile: str) -> None:
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()

        def child_fds() -> None:  # in the child: the pipe ends become fds 3 and 4, as Chromium expects
            r, w = os.dup(to_r), os.dup(from_w)  # out of the way first, in case either is already 3 or 4
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [BROWSER, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "--window-size=1200,900", url],
            close_fds=False, preexec_fn=child_fds,  # fds 3, 4 are inheritable dups; the rest are close-on-exec stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        os.close(to_r)
        os.close(from_w)
        self._buf = b""
        self._id = 0

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 20) -> dict:
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" in self._buf:
                raw, self._buf = self._buf.split(b"\0", 1)
                reply = json.loads(raw)
                if reply.get("id") == self._id:
                    if "error" in reply:
                        raise RuntimeError(f"{method}: {reply['error']}")
                    return reply["result"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply to {method}")
            ready, _, _ = select.select([self._from_r], [], [], left)
            if ready:
                chunk = os.read(self._from_r, 1 << 20)
                if not chunk:
                    raise RuntimeError("the browser closed the pipe")
                self._buf += chunk

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_w)
        os.close(self._from_r)


def image_states(html_path: Path) -> list[list]:
    """[complete, naturalWidth, naturalHeight] of every <img> once the page has loaded, as Chromium sees it."""
    with tempfile.TemporaryDirectory(prefix="repcam-cdp-") as profile:
        cdp = _Pipe(html_path.resolve().as_uri(), profile)
        try:
            page = next(t for t in cdp.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
            session = cdp.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True})["sessionId"]
            # Until the file (not the initial about:blank) has fired its load event, null.
            expr = ("location.protocol === 'file:' && document.readyState === 'complete' ? Array.from(document.images).map("
                    "i => [i.complete, i.naturalWidth, i.naturalHeight]) : null")
            for _ in range(100):
                state = cdp.call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session)["result"].get("value")
                if state is not None:
                    return state
                time.sleep(0.1)
        finally:
            cdp.close()
    raise AssertionError(f"{html_path} never finished loading")


def test_image_check_detects_a_broken_image(tmp_path, report):
    good = re.search(r"<img\b[^>]*\bsrc=\"([^\"]*)\"", report.read_text()).group(1)
    page = tmp_path / "two.html"
    page.write_text(f'<!DOCTYPE html><html><body><img src="{good}"><img src="data:image/png;base64,iVBORw0KGgoAAAAbroken"></body></html>')
    (ok, broken) = image_states(page)
    assert ok[0] and ok[1] > 50
    assert broken[1] == 0


def test_every_image_decodes_in_the_browser(report):
    state = image_states(report)
    assert len(state) == len(re.findall(r"<img\b", report.read_text())) >= 8
    broken = [k for k, (done, w, h) in enumerate(state) if not (done and w > 50 and h > 50)]
    assert not broken, f"images that did not decode: {broken} of {state}"
