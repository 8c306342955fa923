"""evaluation.faithfulness (repcam.evaluation.faith_ablation): the ablation's faithfulness columns, on copies of the tiny run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repcam.config import ConfigError, from_dict
from repcam.evaluation import faith_ablation
from repcam.evaluation import faithfulness as fm
from repcam.pipeline.context import RunContext
from repcam.pipeline.run import Run
from repcam.store.layout import RunDir
from repcam.store.storage import Artefact, config_key
from test_config_hardening import assert_one_line_error, cli
from tiny_run import TINY, tiny_config

METRICS = ["deletion", "avg_drop"]  # the cheap ones: 21 + 2 forward passes a map


def faith_config():
    """The tiny run with the switch on; the paper's rows only (no variants), to keep the test short."""
    return tiny_config(evaluation__faithfulness=METRICS, evaluation__variants=[])


def _copy(tiny_run: Path, dest: Path) -> Path:
    shutil.copytree(tiny_run, dest)
    return dest


@pytest.fixture(scope="module")
def faith_run(tiny_run: Path, tmp_path_factory) -> Path:
    """The tiny run's copy, evaluated again with the switch on (models and maps reused)."""
    run_dir = _copy(tiny_run, tmp_path_factory.mktemp("faith") / "run")
    Run(faith_config(), run_dir, show_progress=False).run()
    return run_dir


def _ablation(run_dir: Path) -> dict:
    return json.loads(RunDir(run_dir).ablation("val").read_text())


# ---- off: nothing changes ---------------------------------------------------------------------------------------------

def test_off_keeps_the_config_key_and_the_tables(tiny_run: Path, tmp_path: Path):
    assert "faithfulness" not in tiny_config().to_dict()["evaluation"]  # ADDED_OFF: an older config's key is kept
    assert config_key(tiny_config(evaluation__faithfulness=[]).to_dict()) == config_key(tiny_config().to_dict())
    assert "faithfulness" in tiny_config(evaluation__faithfulness=["deletion"]).to_dict()["evaluation"]
    run_dir = _copy(tiny_run, tmp_path / "run")
    files = ["ablation.json", "ablation.md", "ablation.csv", "accumulators.json"]
    before = {f: RunDir(run_dir).result("val", f).read_bytes() for f in files}
    Run(tiny_config(evaluation__faithfulness=[]), run_dir, show_progress=False).run()
    assert {f: RunDir(run_dir).result("val", f).read_bytes() for f in files} == before
    assert not RunDir(run_dir).faithfulness_records("val").exists()
    assert "faithfulness" not in (run_dir / "config.resolved.yaml").read_text()


# ---- on: values, intervals, and the same numbers as the functions called directly ----------------------------------

def test_every_row_gets_finite_values_and_intervals(faith_run: Path):
    abl = _ablation(faith_run)
    assert abl["faithfulness"]["judge"] == json.loads((faith_run / "budget.json").read_text())["baseline_model"]
    assert abl["faithfulness"]["columns"] == ["deletion", "avg_drop", "avg_increase"]
    rows = {r["method"]: r for r in abl["rows"]}
    base_records = rows["Grad-CAM"]["records"]
    paired = 0
    for name, r in rows.items():
        cells = r["faithfulness"]
        assert set(cells) == {"deletion", "avg_drop", "avg_increase"}
        assert all(np.isfinite(c["value"]) for c in cells.values()), name
        if name == "Grad-CAM":
            assert all(set(c) == {"value"} for c in cells.values())
        elif r["records"] == base_records:  # the same (image, class) records as Grad-CAM: a paired interval
            for c in cells.values():
                assert c["ci_low"] <= c["diff"] + 1e-12 and c["diff"] <= c["ci_high"] + 1e-12, name
            paired += 1
    assert paired >= len(rows) - 3
    md = RunDir(faith_run).result("val", "ablation.md").read_text()
    assert "### Faithfulness on val" in md and "deletion AUC (↓)" in md and "multi-class baseline model" in md


def _direct(run_dir: Path, kind: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The multi-class maps of ``kind`` scored by calling repcam.evaluation.faithfulness directly: image ids, per-record
    deletion AUC and Average Drop (%), records in (image, class) order."""
    ctx = RunContext(tiny_config(), run_dir, show_progress=False)
    ds, pre = ctx.eval_dataset("val"), ctx.preprocess
    paths = RunDir(run_dir)
    judge = ctx.new_model(ds.num_classes, pretrained=False).model
    judge.load_state_dict(paths.load_state_dict(paths / json.loads(paths.budget.read_text())["baseline_model"]))
    judge.eval()
    with np.load(paths.multiclass_maps("val")) as z:
        image, cls, maps = z["image"], z["cls"], z[kind].astype(np.float32)
    order = np.lexsort((cls, image))
    image, cls, maps = image[order], cls[order], maps[order]
    x = pre.normalize(torch.stack([pre.to_uint8(ds.image(int(i))) for i in image]))
    up = F.interpolate(torch.from_numpy(maps)[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    lo, hi = up.amin((1, 2), keepdim=True), up.amax((1, 2), keepdim=True)
    up = torch.where(hi > lo, (up - lo) / (hi - lo).clamp_min(1e-12), up.clamp(0, 1))
    target = torch.as_tensor(cls, dtype=torch.long)
    deletion = fm.deletion_auc(judge, x, up, target).double().numpy()
    drop, _ = fm.average_drop_increase(judge, x, up, target)
    return [ds.samples[int(i)].id for i in image], deletion, 100 * drop.double().numpy()


def test_row_values_equal_the_metric_functions_called_directly(faith_run: Path):
    rows = {r["method"]: r["faithfulness"] for r in _ablation(faith_run)["rows"]}
    ids, g_del, g_drop = _direct(faith_run, "last")  # the Grad-CAM row: the stored last-layer maps
    assert rows["Grad-CAM"]["deletion"]["value"] == pytest.approx(g_del.mean(), rel=1e-5)
    assert rows["Grad-CAM"]["avg_drop"]["value"] == pytest.approx(g_drop.mean(), rel=1e-5)
    _, l_del, _ = _direct(faith_run, "layercam")
    d, lo, hi = fm.paired_difference(l_del, g_del, ids, seed=0)
    cell = rows["LayerCAM"]["deletion"]
    assert (cell["value"], cell["diff"], cell["ci_low"], cell["ci_high"]) == pytest.approx((l_del.mean(), d, lo, hi), rel=1e-4, abs=1e-6)


def test_the_report_shows_the_table(faith_run: Path, tmp_path: Path):
    from repcam.reporting.report import write_report

    page = write_report(faith_run, figures=False, path=tmp_path / "r.html").read_text()
    assert "<h3>Faithfulness</h3>" in page and "Avg Drop % (↓)" in page


# ---- stored values: a rerun computes nothing -----------------------------------------------------------------------

def test_rerun_reuses_the_stored_values(faith_run: Path, monkeypatch):
    store = RunDir(faith_run).faithfulness_records("val")
    before = (RunDir(faith_run).ablation("val").read_bytes(), store.read_bytes())

    def boom(*a, **k):
        raise AssertionError("a stored value was computed again")

    monkeypatch.setattr(faith_ablation, "record_values", boom)
    Run(faith_config(), faith_run, show_progress=False).run()
    assert (RunDir(faith_run).ablation("val").read_bytes(), store.read_bytes()) == before


def test_store_round_trip_of_every_metric(faith_run: Path, tmp_path: Path, monkeypatch):
    """All five metrics (ROAD seeded per record, MaxBoxAccV2's packed correctness) stored and read back; a map scored
    again only when it changes."""
    ctx = RunContext(tiny_config(), faith_run, show_progress=False)
    ds = ctx.eval_dataset("val")
    from repcam.models.train import ImageCache

    cache = ImageCache(ds, ctx.preprocess, crop=False)
    images = cache.ok([0, 1])
    torch.manual_seed(0)
    model = ctx.new_model(ds.num_classes, pretrained=False).model.eval()
    rng = np.random.default_rng(0)
    maps = {(i, c): rng.random((8, 8), dtype=np.float32) for i in images for c in sorted(ds.samples[i].labels)}
    names = list(faith_ablation.METRIC_GROUPS)

    def collect(maps: dict) -> tuple[faith_ablation.FaithfulnessColumns, list[dict]]:
        cols = faith_ablation.FaithfulnessColumns(names, model, ds, cache, ctx.preprocess, "whole", torch.device("cpu"),
                                                  Artefact(tmp_path / "faith.npz", "k"), 0, 16)
        for (i, c), m in maps.items():
            cols.add("Grad-CAM", i, c, m)
            cols.add("Other", i, c, m[::-1].copy())
        rows = [{"method": "Grad-CAM"}, {"method": "Other"}]
        cols.attach(rows, n_boot=50)
        return cols, rows

    first, rows1 = collect(maps)
    assert first.computed == 2 * len(maps)
    assert set(rows1[1]["faithfulness"]) == set(faith_ablation.columns(names))
    monkeypatch.setattr(faith_ablation, "record_values", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    second, rows2 = collect(maps)
    assert second.computed == 0 and rows2 == rows1
    monkeypatch.undo()
    changed = dict(maps)
    changed[next(iter(maps))] = maps[next(iter(maps))] + 0.5
    third, _ = collect(changed)
    assert third.computed == 2  # that map in both rows


# ---- bad names ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,match", [
    (["delition"], r"'evaluation.faithfulness' has unknown metric 'delition'; choose from deletion, insertion, road, avg_drop, maxboxacc$"),
    (["road", "road"], r"'evaluation.faithfulness' lists 'road' twice$"),
    ("deletion", r"'evaluation.faithfulness' must be a list"),
])
def test_bad_metric_is_a_one_line_config_error(value, match):
    values = {**TINY, "evaluation": {**TINY["evaluation"], "faithfulness": value}}
    with pytest.raises(ConfigError, match=match) as err:
        from_dict(values, "t.yaml")
    assert "\n" not in str(err.value)


def test_cli_bad_metric_is_one_line(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("evaluation:\n  faithfulness: [deletion, iou]\n")
    res = cli("run", str(cfg), "--run-dir", str(tmp_path / "r"))
    assert_one_line_error(res, "c.yaml", "'evaluation.faithfulness' has unknown metric 'iou'", "choose from deletion")
