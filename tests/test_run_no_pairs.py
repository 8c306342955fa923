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
