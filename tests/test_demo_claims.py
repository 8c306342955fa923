"""The method's claims, measured on the built-in demo data over several seeds (not assumed).

Each seed regenerates the parts world and retrains every model with the demo's settings (only the Random and
S-1 selections and no variants, to keep the suite short): about 2 minutes per seed on 2 cores. The baseline is
the demo's fair one: the multi-class model trained on for as many image-epochs as the multi-class model the pair
models start from plus all pair models together.
"""

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from repcam.config import demo_config
from repcam.pipeline.run import Run
from repcam.store.storage import read_json

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory) -> dict[int, Path]:
    runs = {}
    for seed in SEEDS:
        cfg = demo_config()
        cfg.seed = seed
        cfg.selection.methods = ["random", "s1"]
        cfg.evaluation.variants = []
        runs[seed] = tmp_path_factory.mktemp(f"demo{seed}")
        Run(cfg, runs[seed], show_progress=False).run()
    return runs


def _rows(run_dir: Path) -> dict[str, dict]:
    return {r["method"]: r for r in read_json(run_dir / "results" / "val" / "ablation.json")["rows"]}


def test_multilayer_step_improves_over_last_layer_maps(demo_runs):
    for seed, run_dir in demo_runs.items():
        rows = _rows(run_dir)
        for sel in ("Random", "S-1"):
            gain = rows[f"{sel}+A+F"]["miou"] - rows[f"{sel}+F"]["miou"]
            assert gain > 0.02, f"seed {seed}: {sel}+A+F only {100 * gain:+.2f} points over {sel}+F"


def test_method_beats_gradcam_with_intervals_above_zero(demo_runs):
    for seed, run_dir in demo_runs.items():
        row = _rows(run_dir)["S-1+A+F"]
        assert row["ci_low"] > 0, f"seed {seed}: S-1+A+F vs Grad-CAM {100 * row['diff']:+.2f} [{100 * row['ci_low']:+.2f}, {100 * row['ci_high']:+.2f}]"


def test_method_beats_gradcam_threshold_free(demo_runs):
    for seed, run_dir in demo_runs.items():
        rows = _rows(run_dir)
        gain = rows["S-1+A+F"]["pxap"] - rows["Grad-CAM"]["pxap"]
        assert gain > 0.05, f"seed {seed}: S-1+A+F PxAP only {100 * gain:+.2f} points over Grad-CAM"


def test_clusters_of_b_recover_the_planted_groups(demo_runs):
    # Measured beyond these seeds: adjusted Rand index 1.0 in seeds 0-3 and 5, 0.59 in seed 4 (two groups mixed).
    for run_dir in demo_runs.values():
        classes = read_json(run_dir / "similarity.json")["classes"]
        clusters = read_json(run_dir / "selections.json")["clusters"]
        found = {c: g for g, members in enumerate(clusters) for c in members}
        planted = [c.split("_")[0] for c in classes]  # the demo's class names are <group>_<marker>
        assert adjusted_rand_score(planted, [found[c] for c in classes]) >= 0.8


def test_pair_models_do_not_beat_the_multiclass_multilayer_map(demo_runs):
    """Recorded so the statement of docs/results.md stays true: on the demo, Grad-CAM+A (no pair model) beats S-1+A+F."""
    diffs = [_rows(r)["Grad-CAM+A"]["miou"] - _rows(r)["S-1+A+F"]["miou"] for r in demo_runs.values()]
    assert np.mean(diffs) > 0
