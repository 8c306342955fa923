"""A run without pair models (pairs.train: false): only the multi-class model trains, its rows are still scored."""

from pathlib import Path

import pytest

import repcam.pipeline.stages.multiclass as multiclass_stage
import repcam.pipeline.units as units_module
from repcam.config import ConfigError
from repcam.pipeline.run import Run
from repcam.store.storage import read_json
from tiny_run import tiny_config


def test_no_pair_model_is_trained_and_the_multiclass_rows_are_scored(tmp_path: Path, monkeypatch):
    calls = {"multiclass": 0, "pairs": 0}
    real_mc, real_unit = multiclass_stage.fit, units_module.fit

    def mc_fit(*a, **k):
        calls["multiclass"] += 1
        return real_mc(*a, **k)

    def pair_fit(*a, **k):
        calls["pairs"] += 1
        return real_unit(*a, **k)

    monkeypatch.setattr(multiclass_stage, "fit", mc_fit)
    monkeypatch.setattr(units_module, "fit", pair_fit)
    Run(tiny_config(pairs__train=False, evaluation__variants=["contrast"]), tmp_path, show_progress=False).run()
    assert calls == {"multiclass": 1, "pairs": 0}
    assert not (tmp_path / "models" / "pairs").exists() or not any((tmp_path / "models" / "pairs").iterdir())
    rows = {r["method"]: r["miou"] for r in read_json(tmp_path / "results" / "val" / "ablation.json")["rows"]}
    for name in ("CAM", "Grad-CAM", "LayerCAM", "S-1 contrast", "Random contrast+A"):
        assert 0.0 <= rows[name] <= 1.0, name
    assert not any(n.endswith("+F") for n in rows)  # no pair row
    assert any("pairs.train is off" in n for n in read_json(tmp_path / "notes.json"))


def test_pairwise_without_pair_models_is_a_config_error():
    with pytest.raises(ConfigError, match="selection.pairwise"):
        tiny_config(pairs__train=False, selection__pairwise=True)


def test_held_out_ids_never_reach_a_training_loader_and_are_their_own_split(tmp_path: Path, monkeypatch):
    import numpy as np

    import repcam.pipeline.run as run_module
    from repcam.pipeline.context import RunContext

    held = [f"train_{i:05d}" for i in range(0, 240, 4)]  # every 4th parts-world training image
    (tmp_path / "held.txt").write_text("\n".join(held) + "\n")
    caches = []  # the training split every model of the run trains from (multi-class, pairs, baselines)
    real_cache = run_module.ImageCache
    monkeypatch.setattr(run_module, "ImageCache", lambda ds, *a, **k: caches.append(ds) or real_cache(ds, *a, **k))
    cfg = tiny_config(pairs__train=False, evaluation__variants=["contrast"])
    cfg.data.holdout = str(tmp_path / "held.txt")
    cfg.data.eval_splits = ["val", "heldout"]
    Run(cfg, tmp_path / "run", show_progress=False).run()
    train_ids = [s.id for s in caches[0].samples]
    assert len(train_ids) == 240 - len(held) and not set(train_ids) & set(held)
    rows = {r["method"]: r for r in read_json(tmp_path / "run" / "results" / "heldout" / "ablation.json")["rows"]}
    assert 0.0 <= rows["LayerCAM"]["miou"] <= 1.0 and rows["LayerCAM"]["records"] > 0
    ctx = RunContext(cfg, tmp_path / "run2")
    ds = ctx.load_split("heldout", for_eval=True)
    assert [s.id for s in ds.samples] == held
    # the parts world renders by position: the view must give the held-out image itself, not the k-th training image
    full = ctx._load_raw("train", None)
    assert np.array_equal(np.asarray(ds.image(1)), np.asarray(full.image(4)))
    assert any("held out of all training" in n for n in read_json(tmp_path / "run" / "notes.json"))


def test_heldout_split_without_holdout_is_a_config_error():
    with pytest.raises(ConfigError, match="data.holdout"):
        tiny_config(data__eval_splits=["val", "heldout"])


def test_tta_adds_a_twin_of_every_multiclass_row(tmp_path: Path):
    cfg = tiny_config(pairs__train=False, evaluation__variants=["contrast"], evaluation__tta=True,
                      evaluation__tta_scales=[1.0, 2.0], selection__methods=["random", "s1"],
                      evaluation__grid={"weightings": ["gradcam"], "fusions": ["last"], "sources": ["multiclass", "topk-contrast"]})
    Run(cfg, tmp_path, show_progress=False).run()
    rows = {r["method"]: r["miou"] for r in read_json(tmp_path / "results" / "val" / "ablation.json")["rows"]}
    for name in ("CAM", "Random contrast", "S-1 contrast+A"):
        assert 0.0 <= rows[name + " +TTA"] <= 1.0
        assert rows[name + " +TTA"] != rows[name]  # computed from other maps, not copied
    # the grid's multiclass source gives the augmented Grad-CAM / LayerCAM: not computed twice
    assert "Grad-CAM +TTA" not in rows and "LayerCAM +TTA" not in rows
    grid = {r["method"]: r for r in read_json(tmp_path / "results" / "val" / "grid.json")["rows"]}
    assert set(grid) == {"multiclass [gradcam, last]", "multiclass [gradcam, last] +TTA",
                         "top-4 contrast [gradcam, last]", "top-4 contrast [gradcam, last] +TTA"}
    assert grid["multiclass [gradcam, last] +TTA"]["tta"] is True
    # the grid's plain multi-class Grad-CAM is the ablation's Grad-CAM row
    assert grid["multiclass [gradcam, last]"]["miou"] == pytest.approx(rows["Grad-CAM"])
    assert grid["multiclass [gradcam, last] +TTA"]["miou"] != pytest.approx(rows["Grad-CAM"])


def test_tta_without_grid_twins_every_multiclass_row(tmp_path: Path):
    cfg = tiny_config(pairs__train=False, evaluation__variants=[], evaluation__tta=True, evaluation__tta_scales=[1.0, 2.0])
    Run(cfg, tmp_path, show_progress=False).run()
    rows = {r["method"]: r["miou"] for r in read_json(tmp_path / "results" / "val" / "ablation.json")["rows"]}
    for name in ("CAM", "Grad-CAM", "LayerCAM"):
        assert 0.0 <= rows[name + " +TTA"] <= 1.0 and rows[name + " +TTA"] != rows[name]
