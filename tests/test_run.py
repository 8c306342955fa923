"""End-to-end runs on a tiny parts world: tables, resume after a kill, corrupted artefacts, bad input."""

import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

import repcam.pipeline.stages.maps as maps_stage
import repcam.pipeline.stages.multiclass as multiclass_stage
import repcam.pipeline.units as units_module
from repcam.cli import app
from repcam.pipeline.run import Run, RunError
from repcam.store.storage import read_json
from tiny_run import small_tiny_config, tiny_config

TABLE2 = ["Grad-CAM", "CAM", "Random+F", "Random+A+F", "Rank-a+F", "Rank-a+A+F", "Rank-b+F", "Rank-b+A+F"] + [
    f"S-{k}{s}" for k in range(1, 5) for s in ("+F", "+A+F")
]


class CountingFit:
    """Wraps the training loop: counts calls and can simulate a kill on the n-th call."""

    def __init__(self, kill_at: int | None = None):
        self.calls = 0
        self.kill_at = kill_at
        self.real = multiclass_stage.fit

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.kill_at is not None and self.calls == self.kill_at:
            raise KeyboardInterrupt("simulated kill")
        return self.real(*args, **kwargs)


def _patch_fit(monkeypatch, counting: CountingFit) -> None:
    """The multi-class model (and the baseline) trains in stages/multiclass.py, pair models in units.py: count both."""
    monkeypatch.setattr(multiclass_stage, "fit", counting)
    monkeypatch.setattr(units_module, "fit", counting)


def _rows(run_dir: Path) -> dict:
    return {r["method"]: r["miou"] for r in read_json(run_dir / "results" / "val" / "ablation.json")["rows"]}


@pytest.fixture
def reference_run(tiny_run: Path) -> Path:
    return tiny_run


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory) -> Path:
    """An uninterrupted run of tiny_run.small_tiny_config() (12 pair models): the reference of the tests that train
    every pair model again (a kill and resume, pair models starting from the multi-class model)."""
    run_dir = tmp_path_factory.mktemp("small_reference") / "run"
    Run(small_tiny_config(), run_dir, show_progress=False).run()
    return run_dir


def test_ablation_table_has_every_row_of_table_2(reference_run: Path):
    rows = _rows(reference_run)
    assert set(TABLE2) <= set(rows)
    assert all(0.0 <= v <= 1.0 for v in rows.values())
    for name in ("ablation.md", "ablation.csv", "per_class.csv", "sweep.csv", "pairwise.md"):
        assert (reference_run / "results" / "val" / name).stat().st_size > 0
    sel = read_json(reference_run / "selections.json")
    assert len(sel["clusters"]) == 4 and all(len(v) == 4 for v in sel["selections"]["S-1"].values())
    assert len(read_json(reference_run / "similarity.json")["B"]) == 12
    table = read_json(reference_run / "results" / "val" / "ablation.json")["rows"]
    mc = {r["method"]: r["miou"] for r in table if r["method"] in ("CAM", "Grad-CAM", "Grad-CAM (mean of layers)", "LayerCAM", "Grad-CAM+A")}
    strongest = max(mc, key=mc.get)
    assert all(r["strongest_baseline"] == strongest for r in table)
    for r in table:
        if r["method"] != strongest:
            assert r["diff_strongest"] == pytest.approx(r["miou"] - mc[strongest])
            assert r["ci_low_strongest"] <= r["diff_strongest"] <= r["ci_high_strongest"]
    import numpy as np

    from repcam.evaluation.metrics import IoUAccumulator

    accs = {m: IoUAccumulator.from_state_dict(v) for m, v in read_json(reference_run / "results" / "val" / "accumulators.json").items()}
    s1 = next(r for r in table if r["method"] == "S-1+A+F")
    points = [np.nan if p[0] is None else p[0] for p in s1["per_class_strongest"]]
    np.testing.assert_allclose(points, accs["S-1+A+F"].per_class_iou() - accs[strongest].per_class_iou())
    assert "S-1+A+F" in (reference_run / "results" / "val" / "per_class_delta.md").read_text()
    assert f"Δ vs {strongest}" in (reference_run / "results" / "val" / "ablation.md").read_text() or strongest == "Grad-CAM"
    budget = read_json(reference_run / "budget.json")
    first = read_json(reference_run / "multiclass" / "model.pt.meta.json")
    base = read_json(reference_run / "multiclass" / "baseline.pt.meta.json")  # the tiny run's first model saw fewer
    pairs = [read_json(p) for p in (reference_run / "pairs").glob("*.meta.json")]
    assert budget["baseline_model"] == "multiclass/baseline.pt" and base["images"] == first["images"]
    assert budget["multiclass_image_epochs"] == base["images"] * base["epochs"] == base["images"] * (first["epochs"] + base["extra_epochs"])
    assert budget["pairs_image_epochs"] == sum(sum(p["images"]) * p["epochs"] for p in pairs) and budget["pair_models"] == len(pairs)
    assert budget["ratio"] >= 1 > first["images"] * first["epochs"] / budget["pairs_image_epochs"]
    assert any("training budget" in n for n in read_json(reference_run / "results" / "val" / "ablation.json")["notes"])


def test_variant_rows_are_computed_from_the_stored_maps(reference_run: Path):
    """Every variant row, and one (image, class) recomputed by hand from the stored maps."""
    import numpy as np
    import torch

    from repcam.engine.fusion import fuse_classes
    from repcam.evaluation.metrics import IoUAccumulator

    rows = _rows(reference_run)
    for sel in ("Random", "Rank-a", "Rank-b", "S-1", "S-2", "S-3", "S-4"):
        for suffix in ("+A+F[max]", "+A+F[geomean]", " contrast", " contrast+A", "+A+F & Grad-CAM"):
            assert 0.0 <= rows[sel + suffix] <= 1.0
    table = read_json(reference_run / "results" / "val" / "ablation.json")["rows"]
    assert all(0.0 <= r["pxap"] <= 1.0 for r in table)
    accs = {m: IoUAccumulator.from_state_dict(v) for m, v in read_json(reference_run / "results" / "val" / "accumulators.json").items()}
    image_id, c, _ = accs["S-1+A+F[max]"].records[0]
    run = Run(tiny_config(), reference_run, show_progress=False)
    ds = run.load_split("val", for_eval=True)
    i = [s.id for s in ds.samples].index(image_id)
    names = ds.class_names
    reps = read_json(reference_run / "selections.json")["selections"]["S-1"][names[c]]
    maps = []
    for s_name in reps:
        a, b = sorted((names.index(s_name), c))
        z = np.load(reference_run / "maps" / "val" / f"{names[a]}__{names[b]}.npz")
        r = np.nonzero((z["image"] == i) & (z["cls"] == c))[0][0]
        maps.append(z["fused"][r].astype(np.float32))
    by_hand = fuse_classes(torch.from_numpy(np.stack(maps)), "max").numpy()
    expected = IoUAccumulator(len(names), thresholds=(0.15,)).add(image_id, c, by_hand, ds.mask(i))
    assert accs["S-1+A+F[max]"].records[0][2] == pytest.approx(expected, nan_ok=True)
    z = np.load(reference_run / "maps" / "val" / "contrast__S-1.npz")
    assert set(z.files) >= {"image", "cls", "last", "fused"} and len(z["image"]) == len(np.load(reference_run / "maps" / "val" / "multiclass.npz")["image"])


def test_variants_off_gives_only_the_papers_rows(reference_run: Path, tmp_path: Path):
    shutil.copytree(reference_run, tmp_path / "run")
    Run(tiny_config(evaluation__variants=[]), tmp_path / "run", show_progress=False).run()
    assert set(_rows(tmp_path / "run")) == set(TABLE2) | {"Grad-CAM (mean of layers)", "LayerCAM", "Grad-CAM+A"}


def test_rerun_retrains_nothing_and_gives_the_same_table(reference_run: Path, monkeypatch):
    fit = CountingFit()
    _patch_fit(monkeypatch, fit)
    before = _rows(reference_run)
    Run(tiny_config(), reference_run, show_progress=False).run()
    assert fit.calls == 0
    assert _rows(reference_run) == before


def test_kill_then_resume_redoes_no_finished_pair_and_matches_uninterrupted(small_reference: Path, tmp_path: Path, monkeypatch):
    n_pairs = len(list((small_reference / "pairs").glob("*.pt")))
    killer = CountingFit(kill_at=4)  # multi-class model + 2 pairs finish, the 3rd pair is killed mid-training
    _patch_fit(monkeypatch, killer)
    with pytest.raises(KeyboardInterrupt):
        Run(small_tiny_config(), tmp_path, show_progress=False).run()
    assert len(list((tmp_path / "pairs").glob("*.pt.meta.json"))) == 2
    assert not list(tmp_path.rglob("*.tmp"))  # nothing half-written left behind
    resumed = CountingFit()
    _patch_fit(monkeypatch, resumed)
    Run(small_tiny_config(), tmp_path, show_progress=False).run()
    assert resumed.calls == n_pairs - 2 + 1  # the unfinished pairs, then the baseline trained to match their budget
    assert _rows(tmp_path) == _rows(small_reference)  # seeds per pair: resuming changes nothing


def test_corrupted_pair_model_is_detected_and_retrained(reference_run: Path, tmp_path: Path, monkeypatch):
    shutil.copytree(reference_run, tmp_path / "run")
    victim = sorted((tmp_path / "run" / "pairs").glob("*.pt"))[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated, as by a crash of another tool
    fit = CountingFit()
    _patch_fit(monkeypatch, fit)
    Run(tiny_config(), tmp_path / "run", show_progress=False).run()
    assert fit.calls == 1
    assert _rows(tmp_path / "run") == _rows(reference_run)


def test_changed_settings_invalidate_only_what_depends_on_them(reference_run: Path, tmp_path: Path, monkeypatch):
    shutil.copytree(reference_run, tmp_path / "run")
    fit = CountingFit()
    _patch_fit(monkeypatch, fit)
    extracted = []
    monkeypatch.setattr(maps_stage, "extract_sets", lambda *a, **k: extracted.append(1))
    monkeypatch.setattr(units_module, "extract", lambda *a, **k: extracted.append(1))
    Run(tiny_config(evaluation__threshold=0.3), tmp_path / "run", show_progress=False).run()
    assert fit.calls == 0  # evaluation settings never retrain a model
    assert not extracted  # nor recompute a stored map


def test_pairs_starting_from_the_multiclass_model_retrain_pairs_and_baseline_only(small_reference: Path, tmp_path: Path, monkeypatch):
    shutil.copytree(small_reference, tmp_path / "run")
    n_pairs = len(list((tmp_path / "run" / "pairs").glob("*.pt")))
    fit = CountingFit()
    _patch_fit(monkeypatch, fit)
    Run(small_tiny_config(pairs__init="multiclass"), tmp_path / "run", show_progress=False).run()
    assert fit.calls == n_pairs + 1  # every pair model (new key) and the baseline (new budget); not the first model
    budget = read_json(tmp_path / "run" / "budget.json")
    first = read_json(tmp_path / "run" / "multiclass" / "model.pt.meta.json")
    assert budget["pairs_start_from_multiclass"] and budget["pair_models"] == n_pairs
    assert budget["method_image_epochs"] == first["images"] * first["epochs"] + budget["pairs_image_epochs"]
    assert budget["multiclass_image_epochs"] >= budget["method_image_epochs"] and budget["ratio"] >= 1
    assert not read_json(small_reference / "budget.json")["pairs_start_from_multiclass"]
    fit.calls = 0
    Run(small_tiny_config(pairs__init="multiclass"), tmp_path / "run", show_progress=False).run()
    assert fit.calls == 0  # and a rerun reuses them


@pytest.mark.parametrize(
    "over,match",
    [
        ({"selection__n": 12}, "selection.n=12 .* only 11 other classes"),
        ({"pairs__min_images": 10_000}, r"fewer than pairs.min_images=10000 training images .*\(\d+ images\)"),
    ],
)
def test_impossible_requests_fail_before_any_training(tmp_path: Path, over, match, monkeypatch):
    fit = CountingFit()
    _patch_fit(monkeypatch, fit)
    with pytest.raises(RunError, match=match):
        Run(tiny_config(**over), tmp_path, show_progress=False).run()
    assert fit.calls == 0


def test_unwritable_run_dir_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="is not writable"):
        Run(tiny_config(), blocker / "run", show_progress=False)


def test_cli_reports_config_errors_in_one_line(tmp_path: Path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("pairs:\n  epoch: 3\n")
    result = CliRunner().invoke(app, ["run", str(cfg), "--run-dir", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "unknown key 'pairs.epoch'" in result.output and "Traceback" not in result.output


def test_no_report_writes_the_results_only_and_says_how_to_get_the_report(tiny_run: Path, tmp_path: Path):
    """``--no-report`` (seeds, sweeps, clusters): the run's results, no report.html or figures, and one line saying
    how to get it; when an earlier run's report.html is there, that line says it may not show these results."""
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config().to_dict(), sort_keys=False))
    args = ["run", str(cfg), "--run-dir", str(run), "--no-progress", "--device", "cpu", "--no-report"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "S-1+A+F" in result.output  # the table is printed as always
    assert f"report: not written (--no-report); `repcam report {run}` writes it" in result.output
    assert not (run / "report.html").exists() and not (run / "figures").exists()
    (run / "report.html").write_text("<html>an earlier run's</html>")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"{run / 'report.html'} is from an earlier run and may not show these results" in result.output
    assert (run / "report.html").read_text() == "<html>an earlier run's</html>"  # never touched without the report
    result = CliRunner().invoke(app, ["report", str(run), "--no-figures"])
    assert result.exit_code == 0, result.output
    assert "S-1+A+F" in (run / "report.html").read_text()
