"""docs/tutorial.md cannot rot: its Python snippet runs as written, and the commands it shows are the ones
docs/make_tutorial_figures.py runs (and whose output the page quotes)."""

import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data as skdata

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS))

import make_tutorial_figures as tut  # noqa: E402


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
    assert len(written) == 3 and "image_285_Egyptian_cat.png" in written


def test_the_page_shows_the_commands_the_script_runs():
    page = tut.PAGE.read_text(encoding="utf-8")
    flat = re.sub(r"\s*\\\n\s*", " ", page)  # shell lines continued with a backslash, joined
    for args in (tut.EXPLAIN_CLI, tut.SCORE_CLI, tut.RUN_CLI):
        assert "repcam " + " ".join(args) in flat, args
    assert tut.TINY_YAML in page
    for figure in ("explain_python.png", "explain_cli.png", "score_data.png", "report_example.png", "report_per_class.png"):
        assert f"tutorial/{figure}" in page
        assert (DOCS / "tutorial" / figure).is_file()
