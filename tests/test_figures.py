"""Figures on tiny synthetic arrays: files are written, valid, and the similarity heatmap follows the clusters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from repcam.reporting import figures as F
from repcam.reporting import run_figures as R

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _valid_png(path) -> Image.Image:
    assert path.is_file() and path.stat().st_size > 0
    assert path.read_bytes()[:8] == PNG_MAGIC
    im = Image.open(path)
    im.load()
    assert im.width > 50 and im.height > 50
    return im


def _not_blank(im: Image.Image) -> None:
    a = np.asarray(im.convert("RGB"), dtype=np.int16)
    assert a.std() > 5  # more than a uniform background


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    image = (rng.random((20, 30, 3)) * 255).astype(np.uint8)
    maps = {f"vs class {k}": rng.random((8, 8)).astype(np.float16) for k in range(3)}
    gt = np.zeros((20, 30), bool)
    gt[5:12, 8:20] = True
    return image, maps, gt


def test_overlay_grid_png_and_other_formats(tmp_path, arrays):
    image, maps, gt = arrays
    maps = dict(maps, **{"fused $x$ & <b>": np.ones((4, 4)), "missing": None, "all nan": np.full((8, 8), np.nan)})
    ignore = np.zeros_like(gt)
    ignore[0] = True
    p = F.overlay_grid(image, maps, gt, tmp_path / "ov", title="cost $5 <script>", ignore_mask=ignore)
    assert p.suffix == ".png"
    _not_blank(_valid_png(p))
    for fmt, magic in (("pdf", b"%PDF"), ("svg", b"<?xml")):
        q = F.overlay_grid(image, maps, gt, tmp_path / "ov.png", fmt=fmt)
        assert q.suffix == "." + fmt and q.read_bytes()[: len(magic)] == magic
    with pytest.raises(ValueError, match="format"):
        F.overlay_grid(image, maps, gt, tmp_path / "ov", fmt="bmp")
    fig = F.overlay_grid(image, maps, None, None)  # no path: the Figure itself, no GT panel
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0] == "Image" and len(titles) == 1 + len(maps)


def test_layer_grid(tmp_path, arrays):
    image, _, gt = arrays
    layers = np.random.default_rng(1).random((4, 16, 16))
    p = F.layer_grid(image, layers, ["layer1", "layer2", "layer3", "layer4"], layers.mean(0), tmp_path / "layers.png",
                     extra={"Grad-CAM": layers[-1]}, gt_mask=gt, title="t")
    _not_blank(_valid_png(p))
    with pytest.raises(ValueError, match="names"):
        F.layer_grid(image, layers, ["a"], layers[0], None)


def test_per_class_bars_pairwise_and_thresholds(tmp_path):
    classes = ["cat", "dog", "a very long class name $"]
    bars = F.per_class_bars({"Grad-CAM": [0.2, 0.3, math.nan], "S-1+A+F": [0.4, 0.35, 0.1]}, classes, tmp_path / "bars.png")
    _not_blank(_valid_png(bars))
    with pytest.raises(ValueError, match="values"):
        F.per_class_bars({"x": [0.1]}, classes, None)
    pw = [[None, 0.3, 0.5], [0.2, None, math.nan], [0.1, 0.6, None]]
    _not_blank(_valid_png(F.pairwise_heatmap(pw, classes, tmp_path / "pw.png")))
    sweep = {"Grad-CAM": {0.1: 0.2, 0.2: 0.3, 0.3: 0.25}, "S-1+A+F": {0.1: 0.3, 0.2: 0.4, 0.3: math.nan}, "empty": {}}
    _not_blank(_valid_png(F.threshold_curves(sweep, tmp_path / "sweep.png", primary=0.15)))


def test_similarity_heatmap_orders_by_cluster(tmp_path):
    classes = ["a", "b", "c", "d", "e"]
    clusters = [["d", "b"], ["e", "a"]]  # "c" in no cluster: goes last
    order, blocks = F.cluster_order(classes, clusters)
    assert order == [1, 3, 0, 4, 2] and blocks == [(0, 2), (2, 2)]
    assert F.cluster_order(classes, [[3, 1]])[0] == [1, 3, 0, 2, 4]  # indices work too
    assert F.cluster_order(classes, None) == ([0, 1, 2, 3, 4], [])
    B = np.arange(25, dtype=float).reshape(5, 5) + 1
    fig = F.similarity_heatmap(B, classes, clusters, None)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["b", "d", "a", "e", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b", "d", "a", "e", "c"]
    shown = ax.images[0].get_array()
    assert shown[0, 1] == B[1, 3] and shown[2, 3] == B[0, 4]  # rows and columns permuted together
    assert bool(np.ma.getmaskarray(shown)[0, 0])  # diagonal masked
    rects = [p for p in ax.patches if p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
    assert sorted((r.get_x(), r.get_width()) for r in rects) == [(-0.5, 2), (1.5, 2)]
    _not_blank(_valid_png(F.similarity_heatmap(B, classes, clusters, tmp_path / "sim.png")))
    _valid_png(F.similarity_heatmap(np.zeros((5, 5)), classes, None, tmp_path / "zeros.png"))  # degenerate B still draws
    with pytest.raises(ValueError, match="5x5"):
        F.similarity_heatmap(B[:4, :4], classes, None, None)


def test_best_method_and_pick_examples():
    rows = [{"method": "Grad-CAM", "miou": 0.5}, {"method": "S-1+A+F", "miou": 0.6}, {"method": "Rank-a+A+F", "miou": 0.7},
            {"method": "Rank-a+F", "miou": 0.65}, {"method": "S-2+A+F", "miou": float("nan")}]
    assert R.best_method(rows) == "Rank-a+A+F"
    assert R.best_method(rows, "+F") == "Rank-a+F"
    assert R.best_method([{"method": "Grad-CAM", "miou": 0.5}]) is None
    base = [("i1", 0, 0.5), ("i2", 0, 0.5), ("i3", 1, 0.5), ("i4", 1, math.nan)]
    meth = [("i1", 0, 0.9), ("i2", 0, 0.4), ("i3", 1, 0.6), ("i4", 1, 0.9)]
    picks = R.pick_examples(meth, base)
    assert picks["best"]["image_id"] == "i1" and picks["worst"]["image_id"] == "i2" and picks["median"]["image_id"] == "i3"
    assert picks["best"]["gain"] == pytest.approx(0.4)
    one = R.pick_examples(meth[:1], base)
    assert list(one) == ["best"]  # the same record is not drawn three times
    assert R.pick_examples([], base) == {}


def test_per_class_bars_wrap_80_classes_onto_panels_with_every_name():
    """COCO's 80 classes: stacked panels of at most MAX_PER_ROW classes, every class name a tick label once."""
    from repcam.reporting.chart_figures import MAX_PER_ROW

    classes = [f"class {k}" for k in range(80)]
    fig = F.per_class_bars({"a": [k / 100 for k in range(80)], "b": [0.1] * 80}, classes, None)
    axes = fig.get_axes()
    assert len(axes) == 3 and all(len(ax.get_xticklabels()) <= MAX_PER_ROW for ax in axes)
    assert [t.get_text() for ax in axes for t in ax.get_xticklabels()] == classes
    assert len(F.per_class_bars({"a": [0.1] * 12}, classes[:12], None).get_axes()) == 1
