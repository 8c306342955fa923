"""`repcam explain` and `repcam report` on hostile input (issue 13, items 6, 10, 11): large photos are drawn at a
bounded size, and bad arguments, huge or 16-bit images, read-only run directories, truncated models and refused
pickles give one-line errors through the real `repcam` entry point (a subprocess, as a user runs it)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import repcam.reporting.map_figures as map_figures
from repcam.data.images import DISPLAY_SIDE
from repcam.explain import Explainer, ExplainError
from repcam.store.storage import read_json, slug

REPCAM = Path(sys.executable).with_name("repcam")
sys.path.insert(0, str(Path(__file__).parent / "data"))
from test_images import bomb_png  # noqa: E402


def repcam(*args: str, readonly_as_root: bool = False) -> subprocess.CompletedProcess:
    """The installed `repcam` command (with this checkout's PYTHONPATH) in a subprocess."""
    cmd = [str(REPCAM), *args]
    if readonly_as_root and os.geteuid() == 0:
        # root ignores file modes; without these capabilities a read-only folder is read-only for it too
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a read-only folder")
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "1000"}  # one console line is one message line
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def assert_one_line_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def run_copy(tiny_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("explain", "report.html", "figures"))
    return run


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def baseline_model(run: Path) -> Path:
    budget = read_json(run / "budget.json") if (run / "budget.json").is_file() else {}
    path = run / budget.get("baseline_model", "multiclass/model.pt")
    return path if path.is_file() else run / "multiclass" / "model.pt"


def make_readonly(folder: Path, writable: bool = False) -> None:
    for p in [folder, *folder.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


# ---------------------------------------------------------------------------------------------- item 10: large photos


def test_large_photo_is_drawn_at_a_bounded_size(tiny_run, tmp_path, monkeypatch):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (90, 140, 60)).save(path)
    drawn: list[tuple[int, ...]] = []
    real = map_figures._as_image
    monkeypatch.setattr(map_figures, "_as_image", lambda im: drawn.append(np.asarray(im).shape) or real(im))
    explainer = Explainer.from_run(tiny_run, device="cpu")
    (ex,) = explainer.explain(path, explainer.classes[0])
    assert max(ex.image.shape[:2]) == DISPLAY_SIDE and ex.image_size == (3000, 2000)
    assert ex.full_size("Grad-CAM").shape == (2000, 3000)  # the full-size map, only when asked
    ex.save(tmp_path / "a.png")
    # display_size=None keeps the whole photo in the Explanation; the figure is still drawn bounded
    (full,) = explainer.explain(path, explainer.classes[0], display_size=None)
    assert full.image.shape == (2000, 3000, 3)
    full.save(tmp_path / "b.png")
    assert drawn and all(max(shape[:2]) <= DISPLAY_SIDE for shape in drawn), drawn
    np.testing.assert_allclose(full.fused, ex.fused)  # the maps do not depend on the display size


def test_16_bit_photo_is_not_white(tiny_run, tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray((np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)).save(path)
    explainer = Explainer.from_run(tiny_run, device="cpu")
    (ex,) = explainer.explain(path, explainer.classes[0])
    assert ex.image.min() < 10 and ex.image.max() > 240 and len(np.unique(ex.image)) > 200


# ---------------------------------------------------------------------------------------------- item 11: one-line errors


def test_cli_decompression_bomb(tiny_run, tmp_path):
    bomb = bomb_png(tmp_path / "huge.png")
    res = repcam("explain", str(bomb), "--run", str(tiny_run), "--out", str(tmp_path / "o"), "--device", "cpu")
    assert_one_line_error(res, "too large to read safely", "huge.png")


def test_cli_bad_fmt_is_refused_before_anything_is_loaded(tmp_path, photo):
    # The run directory does not even exist: the format must be refused first, not after the maps are computed.
    res = repcam("explain", str(photo), "--run", str(tmp_path / "no_run"), "--fmt", "bmp")
    assert_one_line_error(res, "--fmt 'bmp'", "png, pdf, svg")


def test_cli_explain_and_report_on_a_readonly_run(run_copy, photo, tmp_path):
    make_readonly(run_copy)
    try:
        res = repcam("explain", str(photo), "--run", str(run_copy), "--device", "cpu", readonly_as_root=True)
        assert_one_line_error(res, "cannot write figures to", "--out")
        out = tmp_path / "elsewhere"
        ok = repcam("explain", str(photo), "--run", str(run_copy), "--device", "cpu", "--out", str(out), readonly_as_root=True)
        assert ok.returncode == 0, ok.stderr
        assert list(out.glob("photo-*.png"))  # a read-only run can be explained into another folder
        res = repcam("report", str(run_copy), readonly_as_root=True)
        assert_one_line_error(res, "cannot write the report into", str(run_copy))
    finally:
        make_readonly(run_copy, writable=True)
    assert not (run_copy / "explain").exists() and not (run_copy / "report.html").exists()


def test_cli_truncated_model(run_copy, photo, tmp_path):
    model = baseline_model(run_copy)
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    res = repcam("explain", str(photo), "--run", str(run_copy), "--device", "cpu", "--out", str(tmp_path / "o"))
    assert_one_line_error(res, str(model), "checksum does not match")


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cli_malicious_pickle_with_a_forged_checksum_is_refused(run_copy, photo, tmp_path):
    model, marker = baseline_model(run_copy), tmp_path / "pwned"
    torch.save({"weight": _Exploit(marker)}, model)
    meta_path = model.with_name(model.name + ".meta.json")
    meta = json.loads(meta_path.read_text())
    meta["sha256"] = hashlib.sha256(model.read_bytes()).hexdigest()  # an attacker can recompute the checksum
    meta_path.write_text(json.dumps(meta))
    res = repcam("explain", str(photo), "--run", str(run_copy), "--device", "cpu", "--out", str(tmp_path / "o"))
    assert_one_line_error(res, str(model), "cannot be loaded")
    assert not marker.exists()


def test_api_damaged_pair_model_is_refused(run_copy, photo):
    pair = sorted((run_copy / "pairs").glob("*.pt"))[0]
    pair.with_name(pair.name + ".meta.json").unlink()  # killed between the model file and its sidecar
    explainer = Explainer.from_run(run_copy, device="cpu")
    by_slug = {slug(c): c for c in explainer.classes}
    a, b = (by_slug[s] for s in pair.stem.split("__"))
    with pytest.raises(ExplainError, match="checksum sidecar .* is missing"):
        explainer._pair(a, b)
