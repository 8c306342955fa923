"""The method's claims, measured on the built-in demo data over several seeds (not assumed).

Each seed regenerates the parts world and retrains every model with the demo's settings (only the Random and
S-1 selections and no variants, to keep the suite short) on 2 torch threads, the thread count the claims were
measured with: training numbers depend on it (on one thread seed 0's S-1+A+F vs Grad-CAM was -0.25 [-1.02, +0.67],
against an interval above zero on two). So ``make test`` runs this module (marker ``claims``) on its own after the
parallel part, one seed after the other, never on a one-core xdist worker. The baseline is
the demo's fair one: the multi-class model trained on until it has had the training FLOPs of the multi-class model
the pair models start from plus all pair models together (their trained last stage and the shared layer3 feature
cache). The demo's settings were chosen on seeds 3-5, not on these (benchmarks/results/demo_freeze.md).
"""

from pathlib import Path

import pytest
from sklearn.metrics import adjusted_rand_score

from repcam.config import demo_config
from repcam.pipeline.run import Run
from repcam.store.storage import read_json

pytestmark = pytest.mark.claims

CLAIM_THREADS = 2  # the claims hold at this thread count; other counts give other numbers (see the docstring)


@pytest.fixture(scope="class")
def demo_run(request, tmp_path_factory) -> tuple[int, Path]:
    """The class's seed's demo run (the demo's settings, selections Random and S-1, no variants), built once per class."""
    seed = request.cls.SEED
    cfg = demo_config()
    cfg.seed = seed
    cfg.selection.methods = ["random", "s1"]
    cfg.evaluation.variants = []
    cfg.execution.threads = CLAIM_THREADS
    run_dir = tmp_path_factory.mktemp(f"demo{seed}")
    Run(cfg, run_dir, show_progress=False).run()
    return seed, run_dir


def _rows(run_dir: Path) -> dict[str, dict]:
    return {r["method"]: r for r in read_json(run_dir / "results" / "val" / "ablation.json")["rows"]}


class DemoClaims:
    """The claims, checked on one seed's run; one subclass per seed, so a failure names its seed."""

    SEED: int

    def test_multilayer_step_improves_over_last_layer_maps(self, demo_run):
        seed, run_dir = demo_run
        rows = _rows(run_dir)
        for sel in ("Random", "S-1"):
            gain = rows[f"{sel}+A+F"]["miou"] - rows[f"{sel}+F"]["miou"]
            assert gain > 0.02, f"seed {seed}: {sel}+A+F only {100 * gain:+.2f} points over {sel}+F"

    def test_method_beats_gradcam_with_intervals_above_zero(self, demo_run):
        seed, run_dir = demo_run
        row = _rows(run_dir)["S-1+A+F"]
        assert row["ci_low"] > 0, f"seed {seed}: S-1+A+F vs Grad-CAM {100 * row['diff']:+.2f} [{100 * row['ci_low']:+.2f}, {100 * row['ci_high']:+.2f}]"

    def test_method_beats_gradcam_threshold_free(self, demo_run):
        seed, run_dir = demo_run
        rows = _rows(run_dir)
        gain = rows["S-1+A+F"]["pxap"] - rows["Grad-CAM"]["pxap"]
        assert gain > 0.05, f"seed {seed}: S-1+A+F PxAP only {100 * gain:+.2f} points over Grad-CAM"

    def test_clusters_of_b_recover_the_planted_groups(self, demo_run):
        # Measured beyond these seeds: adjusted Rand index 1.0 in seeds 0-3 and 5, 0.59 in seed 4 (two groups mixed).
        _, run_dir = demo_run
        classes = read_json(run_dir / "similarity.json")["classes"]
        clusters = read_json(run_dir / "selections.json")["clusters"]
        found = {c: g for g, members in enumerate(clusters) for c in members}
        planted = [c.split("_")[0] for c in classes]  # the demo's class names are <group>_<marker>
        assert adjusted_rand_score(planted, [found[c] for c in classes]) >= 0.8

    def test_pair_models_do_not_beat_the_multiclass_multilayer_map(self, demo_run):
        """Recorded so the statement of docs/results.md stays true: on the demo, Grad-CAM+A (no pair model) beats
        S-1+A+F, in every seed."""
        seed, run_dir = demo_run
        rows = _rows(run_dir)
        diff = rows["Grad-CAM+A"]["miou"] - rows["S-1+A+F"]["miou"]
        assert diff > 0, f"seed {seed}: S-1+A+F {100 * -diff:+.2f} points over Grad-CAM+A"


class TestSeed0(DemoClaims):
    SEED = 0


class TestSeed1(DemoClaims):
    SEED = 1


class TestSeed2(DemoClaims):
    SEED = 2
