"""Faithfulness metrics (repcam.evaluation.faithfulness) on hand-made cases with known answers, ROAD against pytorch-grad-cam,
score_maps on a synthetic data set, and `repcam score` through the real entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from repcam.evaluation import faithfulness as fm
from repcam.models.tinycnn import TinyCNN

H = W = 16


class RegionModel(nn.Module):
    """logits = (k * mean of channel 0 over a known region, 0): the class-0 probability is sigmoid(k * region mean)."""

    def __init__(self, region: torch.Tensor, k: float = 4.0) -> None:
        super().__init__()
        self.register_buffer("region", region.float())
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x[:, 0] * self.region).sum((1, 2)) / self.region.sum()
        return torch.stack([self.k * m, torch.zeros_like(m)], 1)


@pytest.fixture
def region_case():
    region = torch.zeros(H, W)
    region[4:10, 3:9] = 1
    torch.manual_seed(0)
    images = torch.rand(3, 3, H, W) + 0.5  # positive: removing region pixels lowers the class score
    perfect = region.expand(3, H, W).clone()
    return RegionModel(region), images, perfect, 1 - perfect, torch.zeros(3, dtype=torch.long)


def test_deletion_lower_and_insertion_higher_for_the_perfect_map(region_case):
    model, x, perfect, inverted, cls = region_case
    d_good, d_bad = fm.deletion_auc(model, x, perfect, cls), fm.deletion_auc(model, x, inverted, cls)
    i_good = fm.insertion_auc(model, x, perfect, cls, baseline="zero")
    i_bad = fm.insertion_auc(model, x, inverted, cls, baseline="zero")
    assert d_good.shape == (3,)
    assert (d_good < d_bad - 0.05).all() and (i_good > i_bad + 0.05).all()
    # The curve's ends are the model's probability on the image and on the baseline (here 0: sigmoid(0) = 0.5).
    curve = fm.perturbation_curve(model, x, perfect, cls, "deletion", steps=8)
    full = torch.sigmoid(model.k * (x[:, 0] * model.region).sum((1, 2)) / model.region.sum())
    assert torch.allclose(curve[:, 0], full, atol=1e-6) and torch.allclose(curve[:, -1], torch.full((3,), 0.5), atol=1e-6)


def test_trapezoid_and_default_insertion_baseline_is_the_blur(region_case):
    model, x, perfect, _, cls = region_case
    assert torch.allclose(fm.trapezoid_auc(torch.tensor([[0.0, 1.0, 1.0]])), torch.tensor([0.75]))
    curve = fm.perturbation_curve(model, x, perfect, cls, "insertion", steps=4)
    blurred = fm.class_probability(model, fm.blur_baseline(x), cls)
    assert torch.allclose(curve[:, 0], blurred, atol=1e-6)


def test_average_drop_zero_for_an_all_ones_map_and_known_for_zeros(region_case):
    model, x, _, _, cls = region_case
    drop, inc = fm.average_drop_increase(model, x, torch.ones(3, H, W), cls)
    assert torch.all(drop == 0) and torch.all(inc == 0)
    drop, inc = fm.average_drop_increase(model, x, torch.zeros(3, H, W), cls)
    y = fm.class_probability(model, x, cls)
    assert torch.allclose(drop, (y - 0.5) / y, atol=1e-6) and torch.all(inc == 0)
    with pytest.raises(fm.FaithfulnessError, match=r"\[0, 1\]"):
        fm.average_drop_increase(model, x, 2 * torch.ones(3, H, W), cls)
    with pytest.raises(fm.FaithfulnessError, match="maps must be"):
        fm.deletion_auc(model, x, torch.ones(3, H, W + 1), cls)


def test_maxboxacc_v2_perfect_disjoint_and_best_component():
    gt = np.zeros((20, 20), dtype=bool)
    gt[2:8, 2:8] = True
    cam = gt.astype(float)
    disjoint = np.zeros((20, 20))
    disjoint[12:18, 12:18] = 1
    rows = np.stack([fm.box_correct(cam, gt), fm.box_correct(disjoint, gt)])
    assert fm.max_box_acc_v2(rows[:1])[0] == 1.0 and fm.max_box_acc_v2(rows[1:])[0] == 0.0
    value, best, per_record = fm.max_box_acc_v2(rows)
    assert value == 0.5 and np.allclose(per_record, [1.0, 0.0])
    # V2: every component of the thresholded map gives a box; a larger decoy elsewhere does not hide the match
    # (the largest-component rule of V1 would pick the decoy and fail).
    two = np.zeros((20, 20))
    two[2:8, 2:8] = 0.6
    two[10:20, 10:20] = 1.0
    assert fm.box_correct(two, gt).any(1).all()
    assert np.isclose(fm.box_iou([0, 0, 3, 3], [2, 2, 5, 5])[0, 0], 4 / 28)


def test_paired_difference_matches_the_mean_and_brackets_it():
    rng = np.random.default_rng(1)
    b = rng.random(50)
    a = b + 0.2 + 0.05 * rng.standard_normal(50)
    d, lo, hi = fm.paired_difference(a, b)
    assert np.isclose(d, (a - b).mean()) and lo < d < hi and lo > 0.1
    assert fm.paired_difference(b + 1, b)[1:] == pytest.approx((1.0, 1.0))
    with pytest.raises(fm.FaithfulnessError):
        fm.paired_difference(a, b[:3])


def test_road_equals_pytorch_grad_cam():
    pgc_road = pytest.importorskip("pytorch_grad_cam.metrics.road")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    torch.manual_seed(3)
    # A random network whose scores depend on every pixel (a random TinyCNN's softmax barely moves).
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 22 * 22, 4)).eval()
    x = torch.randn(2, 3, 24, 24)
    maps = torch.rand(2, 24, 24)
    cls = [1, 3]
    for order, klass in (("morf", pgc_road.ROADMostRelevantFirst), ("lerf", pgc_road.ROADLeastRelevantFirst)):
        torch.manual_seed(7)
        ours = fm.road(model, x, maps, cls, order, percentiles=(20, 60))
        torch.manual_seed(7)
        targets = [ClassifierOutputSoftmaxTarget(c) for c in cls]
        theirs = np.mean([klass(p)(x, maps.numpy(), targets, model) for p in (20, 60)], axis=0)
        assert np.abs(ours.numpy() - theirs).max() < 1e-5, order
        assert np.abs(theirs).max() > 1e-4  # the imputation changed the scores: the comparison is not vacuous


# ---------------------------------------------------------------------------------------------- score_maps and the CLI


def _folder(root: Path) -> Path:
    """Four 32 x 32 images with a square of class 'a' (some also 'b')."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("a\nb\n")
    rng = np.random.default_rng(0)
    for i in range(4):
        m = np.zeros((32, 32), dtype=np.uint8)
        m[4 + i : 14 + i, 6:16] = 1
        if i % 2:
            m[20:28, 18:30] = 2
        (root / "masks").mkdir(parents=True, exist_ok=True)
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(m, mode="L").save(root / "masks" / f"im{i}.png")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "images" / f"im{i}.png")
    return root


def _key(img: torch.Tensor) -> tuple:
    """An image's identity: its first pixels (a float sum depends on the batch's summation order)."""
    return tuple(np.round(img[:, 0, :4].flatten().tolist(), 4))


def test_score_maps_mask_oracle_beats_its_inverse(tmp_path):
    from repcam.data import load_dataset
    from repcam.evaluation.score import ScoreError, score_maps

    ds = load_dataset("folder", str(_folder(tmp_path)), None)
    torch.manual_seed(0)
    model = TinyCNN(2).eval()
    masks = {}

    def transform(im):
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)

    def oracle(x, cls):  # the ground-truth mask of each record, found by the image's pixels
        return torch.stack([masks[(_key(x[b]), int(c))] for b, c in enumerate(cls)])

    for i in range(len(ds)):
        s = _key(transform(ds.image(i)))
        for c in ds.samples[i].labels:
            masks[(s, c)] = torch.from_numpy((ds.mask(i) == c + 1).astype(np.float32))
    res = score_maps({"oracle": oracle, "inverse": lambda x, c: 1 - oracle(x, c)}, ds, model, transform,
                     steps=4, road_percentiles=(50,), box_thresholds=(0.5,), n_boot=200)
    assert len(res.image_ids) == 6  # records: 4 images with 'a', 2 with 'b'
    assert res.summary["oracle"]["miou"] == pytest.approx(1.0) and res.summary["oracle"]["maxboxacc_v2"] == pytest.approx(100.0)
    assert res.summary["inverse"]["miou"] < 0.5 and res.summary["inverse"]["maxboxacc_v2"] < 100
    d, lo, hi = res.intervals["inverse"]["miou"]
    assert d < 0 and lo <= d <= hi
    assert {r["metric"] for r in res.rows()} >= {"deletion", "insertion", "road_morf", "road_lerf", "avg_drop", "maxboxacc_v2"}
    assert "MaxBoxAccV2" in res.markdown()
    only = score_maps({"oracle": oracle, "inverse": lambda x, c: 1 - oracle(x, c)}, ds, model, transform,
                      metrics=["pxap", "miou", "avg_drop"], n_boot=200)  # the selection, in METRICS order
    assert only.metrics == ("miou", "pxap", "avg_drop") and {r["metric"] for r in only.rows()} == set(only.metrics)
    assert only.markdown().splitlines()[0] == "| method | mIoU@0.15 (↑) | PxAP (↑) | Avg Drop % (↓) |"
    for key in only.metrics:  # the same numbers as with every metric
        assert only.summary["inverse"][key] == pytest.approx(res.summary["inverse"][key])
        assert only.intervals["inverse"][key][0] == pytest.approx(res.intervals["inverse"][key][0])
    assert "deletion" not in only.values["oracle"]
    drop = score_maps({"oracle": oracle, "inverse": lambda x, c: 1 - oracle(x, c)}, ds, model, transform,
                      metrics=["avg_drop"], n_boot=200)  # no mask metric asked: no mIoU bootstrap, no per-record PxAP
    assert set(drop.intervals["inverse"]) == {"avg_drop"} and set(drop.values["oracle"]) == {"avg_drop"}
    assert drop.intervals["inverse"]["avg_drop"] == pytest.approx(res.intervals["inverse"]["avg_drop"])
    with pytest.raises(ScoreError, match="unknown metric 'iou'; choose from miou, pxap, deletion"):
        score_maps(oracle, ds, model, transform, metrics=["iou"])


def test_score_extractors_are_the_stock_methods_including_contrast_and_cam():
    """`repcam score --method NAME` and `repcam explain --model --method NAME` share one engine (repcam.stock.MethodEngine)."""
    from repcam.engine.cam import MultiLayerGradCAM, zhou_cam
    from repcam.evaluation.score import ScoreError, make_extractor
    from repcam.models.backbones import gap_fc_parts
    from repcam.stock import METHODS, rival_target

    torch.manual_seed(0)
    model = TinyCNN(6).eval()
    x, cls = torch.randn(3, 3, 32, 32), torch.tensor([0, 4, 2])
    for name in METHODS:
        maps = make_extractor(name, model)(x, cls)
        assert maps.shape == (3, 32, 32) and torch.isfinite(maps).all(), name
    ranking = model(x).argsort(1, descending=True).tolist()
    targets = [rival_target(int(c), ranking[b], 4) for b, c in enumerate(cls)]
    assert all(len(t.references) == 4 and t.cls not in t.references for t in targets)
    expected = MultiLayerGradCAM(model, "auto", fusion="paper", weighting="layercam")(x, targets).fused
    assert torch.allclose(make_extractor("contrast-layercam", model)(x, cls), expected, atol=1e-6)
    assert not torch.allclose(make_extractor("layercam", model)(x, cls), expected, atol=1e-3)
    assert torch.allclose(make_extractor("cam", model)(x, cls), zhou_cam(*gap_fc_parts(model), model, x, cls.tolist()))
    no_gap = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    with pytest.raises(ScoreError, match="method 'cam': method 'cam' needs a model that ends in global average pooling"):
        make_extractor("cam", no_gap)
    with pytest.raises(ScoreError, match="unknown method 'gradcan' \\(did you mean 'gradcam'\\?\\); choose from gradcam, layercam"):
        make_extractor("gradcan", model)
    # pytorch-grad-cam's class names and any case are the same methods (issue 27)
    assert torch.allclose(make_extractor("GradCAMPlusPlus", model)(x, cls), make_extractor("gradcampp", model)(x, cls))


def _repcam(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("repcam")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_cli_score_writes_a_table_and_rejects_bad_arguments(tmp_path):
    data = _folder(tmp_path / "data")
    torch.manual_seed(0)
    from repcam.models.backbones import build_classifier

    torch.save(build_classifier("tiny_cnn", 2, None).model.state_dict(), tmp_path / "tiny.pt")
    r = _repcam("score", "--folder", str(data), "--model", "tiny_cnn", "--weights", str(tmp_path / "tiny.pt"),
                "--method", "gradcam", "--method", "layercam", "--max-images", "2", "--input-size", "32", "--steps", "4",
                "--road-percentile", "50", "--out", str(tmp_path / "t.json"), "--no-progress", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "| gradcam |" in r.stdout and "| layercam |" in r.stdout
    import json

    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    lay = {x["metric"]: x for x in rows if x["method"] == "layercam"}
    assert lay["deletion"]["low"] <= lay["deletion"]["diff"] <= lay["deletion"]["high"]
    bad = _repcam("score", "--folder", str(data), "--model", "tiny_cnn", "--weights", str(tmp_path / "tiny.pt"),
                  "--method", "nosuchcam", cwd=tmp_path)
    assert bad.returncode == 2
    lines = [ln for ln in bad.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "nosuchcam" in lines[0] and "Traceback" not in bad.stderr
    bad = _repcam("score", "--folder", str(data), "--model", "tiny_cnn", "--weights", str(tmp_path / "tiny.pt"),
                  "--method", "gradcam", "--metric", "miou", "--metric", "road", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: unknown metric 'road'; choose from miou")
    few = _repcam("score", "--folder", str(data), "--model", "tiny_cnn", "--weights", str(tmp_path / "tiny.pt"),
                  "--method", "gradcam", "--method", "cam", "--metric", "miou", "--metric", "pxap", "--input-size", "32",
                  "--no-progress", cwd=tmp_path)
    assert few.returncode == 0, few.stderr
    assert "| method | mIoU@0.15 (↑) | PxAP (↑) |" in few.stdout and "| cam |" in few.stdout


def test_score_names_are_checked_before_anything_is_loaded(tmp_path):
    """``repcam score`` checks its method and metric names first, with torch-free helpers (a typo answers in a
    fraction of a second; tests/test_import_graph.py checks that no torch is imported)."""
    from typer.testing import CliRunner

    from repcam.cli import app
    from repcam.evaluation.metric_names import METRICS, metric_keys
    from repcam.evaluation.score import ScoreError
    from repcam.stock.methods import score_method

    assert score_method("GradCAMPlusPlus") == "gradcampp" and score_method("pgc:EigenCAM") == "pgc:EigenCAM"
    with pytest.raises(ScoreError, match=r"unknown method 'gradcm' \(did you mean 'gradcam'\?\); choose from gradcam"):
        score_method("gradcm")
    assert metric_keys(None) == tuple(k for k, _, _ in METRICS)
    assert metric_keys(["pxap", "miou"]) == ("miou", "pxap")  # the table's order, whatever the command line's
    with pytest.raises(ScoreError, match="unknown metric 'road'; choose from miou, pxap"):
        metric_keys(["miou", "road"])
    with pytest.raises(ScoreError, match="no metric to score"):
        metric_keys([])
    res = CliRunner().invoke(app, ["score", "--folder", str(tmp_path), "--model", "tiny_cnn", "--method", "gradcm"])
    assert res.exit_code == 2 and "unknown method 'gradcm'" in res.output
    res = CliRunner().invoke(app, ["score", "--folder", str(tmp_path), "--model", "tiny_cnn", "--method", "cam", "--metric", "road"])
    assert res.exit_code == 2 and "unknown metric 'road'" in res.output
