"""Several seeds: per-seed run directories and the mean ± std table."""

import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from repcam.cli import app
from repcam.pipeline.seeds import summarize_seeds
from repcam.store.storage import read_json
from tiny_run import SMALL_DATA, TINY


def test_summary_by_hand():
    rows = {
        0: [{"method": "Grad-CAM", "miou": 0.2}, {"method": "S-1+A+F", "miou": 0.3, "diff": 0.1, "significant": True}],
        1: [{"method": "Grad-CAM", "miou": 0.4}, {"method": "S-1+A+F", "miou": 0.3, "diff": -0.1, "significant": True}],
        2: [{"method": "Grad-CAM", "miou": 0.3}, {"method": "S-1+A+F", "miou": 0.6, "diff": 0.3, "significant": False}],
    }
    by = {r["method"]: r for r in summarize_seeds(rows)}
    assert by["Grad-CAM"]["miou_mean"] == pytest.approx(0.3) and by["Grad-CAM"]["miou_std"] == pytest.approx(0.1)
    s = by["S-1+A+F"]
    assert s["miou_mean"] == pytest.approx(0.4) and s["miou_min"] == 0.3 and s["miou_max"] == 0.6
    assert s["diff_mean"] == pytest.approx(0.1) and (s["better"], s["worse"]) == (1, 1)
    assert math.isnan(summarize_seeds({0: rows[0]})[0]["miou_std"])  # one seed: no spread


def test_cli_seeds_runs_each_seed_and_tabulates(tmp_path: Path):
    cfg = tmp_path / "tiny.yaml"
    # tiny_run.small_tiny_config's six classes: the seeds' plumbing, not the method's quality, is under test.
    values = {**TINY, "data": {**TINY["data"], "options": SMALL_DATA}, "selection": {"methods": ["random", "s1"], "n": 2},
              "evaluation": {"map_size": 32, "variants": []}}
    cfg.write_text(yaml.safe_dump(values))
    run_dir = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(cfg), "--run-dir", str(run_dir), "--seeds", "2", "--no-progress", "--device", "cpu",
                                  "--no-report"])
    assert res.exit_code == 0, res.output
    per_seed = [{r["method"]: r["miou"] for r in read_json(run_dir / f"seed-{s}" / "results" / "val" / "ablation.json")["rows"]} for s in (0, 1)]
    assert per_seed[0] != per_seed[1]  # another seed: other data, other models
    summary = {r["method"]: r for r in read_json(run_dir / "results" / "val" / "seeds.json")["rows"]}
    for m in ("Grad-CAM", "Random+A+F", "S-1+A+F"):
        v = [p[m] for p in per_seed]
        assert summary[m]["miou_mean"] == pytest.approx(np.mean(v))
        assert summary[m]["miou_std"] == pytest.approx(np.std(v, ddof=1))
    assert "2 seeds (0, 1)" in (run_dir / "results" / "val" / "seeds.md").read_text()
    assert "S-1+A+F" in res.output
