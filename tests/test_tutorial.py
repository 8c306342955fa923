"""docs/tutorial.md cannot rot: its Python snippet runs as written, the commands it shows are the ones
docs/make_tutorial_figures.py runs (and whose output the page quotes), every figure it links is there, and it uses
only repcam's public API."""

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

import repcam

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS))

import make_tutorial_figures as tut  # noqa: E402

FIGURES = ("explain_python.png", "explain_cli.png", "score_data.png", "report_example.png", "report_per_class.png")


def test_the_pages_python_snippet_runs_and_explains_the_cat(tmp_path, monkeypatch):
    Image.fromarray(skdata.chelsea()).save(tmp_path / "cat.png")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(tut.python_snippet(), str(tut.PAGE), "exec"), scope)  # noqa: S102 - the page's own code
    ex = scope["ex"]
    assert ex.classes[0] == "Egyptian cat" and ex.indices[0] == 285  # what the page says Lite0 predicts
    assert len(ex.classes) == 3 and ex.maps.shape == (3, 300, 451) and round(ex.scores[0], 2) == 0.77
    assert np.isfinite(ex.maps).all() and ex.maps.min() >= 0 and ex.maps.max() <= 1
    written = sorted(p.name for p in (tmp_path / "explain").glob("*.png"))
    assert len(written) == 3 and any(n.endswith("_285_Egyptian_cat.png") for n in written)  # <stem>-<digest>_<index>_<name>
    page = tut.PAGE.read_text(encoding="utf-8")
    assert f"{ex.classes!r}, {[round(p, 3) for p in ex.scores]!r}" in page  # the page's quoted output is this run's


def test_the_page_shows_the_commands_the_script_runs_and_their_output():
    page = tut.PAGE.read_text(encoding="utf-8")
    assert "PENDING" not in page
    flat = re.sub(r"\s*\\\n\s*", " ", page)  # shell lines continued with a backslash, joined
    for args in (tut.EXPLAIN_CLI, tut.SCORE_CLI, tut.RUN_CLI):
        assert "repcam " + " ".join(args) in flat, args
    assert tut.TINY_YAML in page
    assert f"mydata/classes.txt: {', '.join(tut.CLASSES)}" in page
    # the pasted outputs have the shape the commands print: the score table (a row per --method) and the ablation
    methods = [tut.SCORE_CLI[i + 1] for i, a in enumerate(tut.SCORE_CLI) if a == "--method"]
    header = re.search(r"^\| method \| mIoU@0\.15 .*\|$", page, re.M)
    assert header is not None
    for m in methods:
        assert re.search(rf"^\| {m} \| [0-9.]+ ", page, re.M), m
    assert "## Ablation on val" in page and "| Method | mIoU@T | Δ vs Grad-CAM [95% CI] |" in page
    for row in ("CAM", "Grad-CAM", "Grad-CAM (mean of layers)", "LayerCAM", "Grad-CAM+A", "Rank-a+F", "Rank-a+A+F",
                "S-1+F", "S-1+A+F", "S-1 contrast+A"):
        assert re.search(rf"^\| {re.escape(row)} \| [0-9.]+ \|", page, re.M), row


def test_every_linked_figure_is_there_and_small():
    page = tut.PAGE.read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(tutorial/([^)]+)\)", page)
    assert sorted(linked) == sorted(FIGURES)
    for name in linked:
        path = DOCS / "tutorial" / name
        assert path.is_file(), path
        assert path.stat().st_size < tut.MAX_BYTES, (path, path.stat().st_size)
        with Image.open(path) as im:
            assert im.format == "PNG" and min(im.size) > 100


def test_page_and_script_use_only_the_public_api():
    """Modules move; `import repcam`'s own names and the `repcam` command do not."""
    for path in (tut.PAGE, Path(tut.__file__)):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\bfrom repcam[.\w]* import|\bimport repcam\.", text), path
        assert "src/repcam/" not in text, path
        for name in set(re.findall(r"\brepcam\.(\w+)", text)):
            if name in ("html", "yaml", "json", "md", "csv"):  # file names such as report.html are no attribute
                continue
            assert importlib.util.find_spec(f"repcam.{name}") is None, f"{path.name}: repcam.{name} is a module path"
            assert hasattr(repcam, name), f"{path.name}: repcam.{name} is not in repcam's public API"
