"""The evaluation grid (repcam.pipeline.grid): config switch, top-k references, and a tiny run with the grid on and off."""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import repcam.pipeline.grid as grid_module
from repcam.config import ConfigError, demo_config, from_dict, load_config
from repcam.pipeline.grid import TopKContrastTarget, topk_references
from repcam.pipeline.run import Run
from repcam.store.storage import config_key, read_json
from tiny_run import TINY, tiny_config

GRID = {"weightings": ["gradcam", "layercam"], "fusions": ["last", "mean"]}


# ---- top-k references ---------------------------------------------------------------------------------------------

def test_topk_references_on_hand_made_logits():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.0, 2.0, 5.0])
    assert topk_references(logits, 5, 3) == (1, 3, 4)  # the target (the top class) is left out
    assert topk_references(logits, 1, 2) == (5, 3)  # the target's own rank does not matter
    assert topk_references(logits, 0, 3) == (5, 1, 3)  # tie 2.0 / 2.0: the lower index first
    assert topk_references(logits, 2, 10) == (5, 1, 3, 4, 0)  # k beyond the other classes: all of them


def test_topk_contrast_target_subtracts_the_mean_of_the_image_references():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.0, 2.5, 5.0], requires_grad=True)
    score = TopKContrastTarget(cls=2, k=2, gamma=0.5)(logits)
    assert score.item() == pytest.approx(-1.0 - 0.5 * (5.0 + 3.0) / 2)
    (grad,) = torch.autograd.grad(score, logits)
    assert grad.tolist() == pytest.approx([0, -0.25, 1, 0, 0, -0.25])


# ---- one forward pass for every map source ----------------------------------------------------------------------------

def _sources(seed: int, offset: int):
    """A random TinyCNN, five 32 px images, the (image, class) jobs of half the pairs and three sources' targets:
    the class itself, a contrast against another class (``offset`` on) and the image's own top-2 contrast."""
    from repcam.engine.cam import ContrastTarget
    from repcam.models.backbones import Preprocess
    from repcam.models.tinycnn import TinyCNN
    from repcam.pipeline.units import StackedImages

    torch.manual_seed(seed)
    model = TinyCNN(num_classes=4).eval()
    cache = StackedImages(range(5), torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8))
    pre = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    jobs = [(i, c, None) for i in range(5) for c in range(4) if (i + c) % 2]
    targets = {"mc": [c for _, c, _ in jobs], "contrast": [ContrastTarget(c, ((c + offset) % 4,)) for _, c, _ in jobs],
               "topk": [TopKContrastTarget(c, 2, 1.0) for _, c, _ in jobs]}
    return model, cache, pre, jobs, targets


def test_sources_share_one_forward_and_each_gets_its_own_maps_exactly():
    model, cache, pre, jobs, targets = _sources(3, 2)
    weightings, fusions = ["gradcam", "layercam"], ["last", "paper", "mean"]

    def sinks(store):
        return {w: (lambda f, m, w=w: store.setdefault((w, f), []).append(m)) for w in weightings}

    shared = {n: {} for n in targets}
    forwards = []
    handle = model.register_forward_hook(lambda m, i, o: forwards.append(torch.is_grad_enabled()))
    try:
        grid_module.extract_grid(model, cache, pre, jobs, torch.device("cpu"), 16, 4, weightings, fusions,
                                 [(t, sinks(shared[n])) for n, t in targets.items()])
    finally:
        handle.remove()
    assert forwards.count(True) == -(-len(jobs) // 4)  # one gradient pass a batch for all three sources
    _each_source_alone_gives(shared, model, cache, pre, jobs, targets, weightings, fusions)


def _each_source_alone_gives(got, model, cache, pre, jobs, targets, weightings, fusions):
    """Every source's maps in ``got`` ({source: {(weighting, fusion): chunks}}) equal its own extract_grid pass's."""
    import numpy as np

    for n, t in targets.items():
        alone = {}
        sinks = {w: (lambda f, m, w=w: alone.setdefault((w, f), []).append(m)) for w in weightings}
        grid_module.extract_grid(model, cache, pre, jobs, torch.device("cpu"), 16, 4, weightings, fusions, [(t, sinks)])
        assert alone.keys() == got[n].keys() and len(alone) == len(weightings) * len(fusions)
        for key in alone:
            np.testing.assert_array_equal(np.concatenate(got[n][key]), np.concatenate(alone[key]), err_msg=f"{n} {key}")


def test_grid_riders_share_the_ablation_pass_and_get_the_maps_of_their_own_pass():
    """The grid's files ride on the ablation's shared pass (MapSet.rider): one gradient pass a batch for the ablation's
    files and every grid source, and each gets exactly the maps of its own pass (extract / extract_grid alone)."""
    import numpy as np

    from repcam.pipeline.maps import MapSet, extract, extract_sets

    model, cache, pre, jobs, targets = _sources(4, 1)
    weightings, fusions, kinds = ["gradcam", "xgradcam"], ["last", "paper"], ["last", "fused", "layercam"]

    def sinks(store):
        return {w: (lambda f, m, w=w: store.setdefault((w, f), []).append(m)) for w in weightings}

    def rider(store):
        return lambda by_w: grid_module.emit_cells(sinks(store), grid_module.cell_maps({w: by_w[w] for w in weightings}, fusions), 16)

    ablation = {n: {} for n in ("mc", "contrast")}
    grid = {n: {} for n in targets}
    sets = [MapSet(kinds, targets[n], lambda k, m, n=n: ablation[n].setdefault(k, []).append(m), rider(grid[n]), weightings)
            for n in ablation]
    sets.append(MapSet([], targets["topk"], lambda k, m: pytest.fail("no kind was asked for"), rider(grid["topk"]), weightings))
    forwards = []
    handle = model.register_forward_hook(lambda m, i, o: forwards.append(torch.is_grad_enabled()))
    try:
        extract_sets(model, cache, pre, jobs, sets, torch.device("cpu"), 16, 4)
    finally:
        handle.remove()
    assert forwards.count(True) == -(-len(jobs) // 4)  # one gradient pass a batch for the ablation and the grid
    _each_source_alone_gives(grid, model, cache, pre, jobs, targets, weightings, fusions)
    for n in ablation:
        own = extract(model, cache, pre, [(i, c, t) for (i, c, _), t in zip(jobs, targets[n])], torch.device("cpu"), 16, 4, kinds)
        for k in kinds:
            np.testing.assert_array_equal(np.concatenate(ablation[n][k]), own[k], err_msg=f"{n} {k}")


# ---- config switch ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,key", [
    # Computed with main before the grid, the baselines and freeze_until existed (61a735f), as test_config_hardening
    # pins; the demo's since its pair models moved to partial fine-tuning (issue 28).
    ("demo", "bae300f4ef614459"),
    ("benchmarks/configs/voc_mini_lite0.yaml", "d03c153aeb037b72"),
])
def test_grid_off_keeps_the_config_keys(name, key):
    cfg = demo_config() if name == "demo" else load_config(Path(__file__).parents[1] / name)
    assert cfg.evaluation.grid is None and "grid" not in cfg.to_dict()["evaluation"]
    assert config_key(cfg.to_dict()) == key


def test_grid_on_round_trips_through_the_resolved_config(tmp_path: Path):
    import yaml

    cfg = from_dict({**TINY, "evaluation": {**TINY["evaluation"], "grid": {}}}, "test")
    assert cfg.evaluation.grid.sources == ["multiclass", "contrast", "topk-contrast"]  # {} = the default grid
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert load_config(path).to_dict() == cfg.to_dict()
    assert config_key(cfg.to_dict()) != config_key(tiny_config().to_dict())


@pytest.mark.parametrize("grid,match", [
    ({"weightings": ["gradcam", "scorecam"]}, r"'evaluation\.grid\.weightings' has unknown weighting 'scorecam'"),
    ({"fusions": []}, r"'evaluation\.grid\.fusions' must not be empty"),
    ({"sources": ["pair-models"]}, r"'evaluation\.grid\.sources' has unknown source 'pair-models'"),
    ({"fusions": ["last", "last"]}, r"'evaluation\.grid\.fusions' lists 'last' twice"),
    ({"colour": 1}, r"unknown key 'evaluation\.grid\.colour'"),
    ([1], r"'evaluation\.grid' must be a mapping"),
])
def test_bad_grid_is_one_error_naming_the_key(grid, match):
    with pytest.raises(ConfigError, match=match) as e:
        from_dict({**TINY, "evaluation": {**TINY["evaluation"], "grid": grid}}, "test.yaml")
    assert "\n" not in str(e.value) and "test.yaml" in str(e.value)


# ---- a tiny run -------------------------------------------------------------------------------------------------------

def _ablation_rows(run_dir: Path) -> str:
    return json.dumps(read_json(run_dir / "results" / "val" / "ablation.json")["rows"], sort_keys=True)


def _grid_config(**grid):
    return from_dict({**TINY, "evaluation": {**TINY["evaluation"], "grid": {**GRID, **grid}}}, "test")


@pytest.fixture(scope="module")
def grid_run(tiny_run: Path, tmp_path_factory) -> Path:
    """The shared tiny run, copied, then run again with the grid on (models reused: only grid maps are new)."""
    run_dir = tmp_path_factory.mktemp("grid") / "run"
    shutil.copytree(tiny_run, run_dir)
    Run(_grid_config(), run_dir, show_progress=False).run()
    return run_dir


def test_grid_rows_have_every_cell_with_finite_values_and_intervals(grid_run: Path):
    data = read_json(grid_run / "results" / "val" / "grid.json")
    rows = {r["method"]: r for r in data["rows"]}
    selections = read_json(grid_run / "selections.json")["selections"]
    labels = ["multiclass"] + [f"contrast {s}" for s in selections] + ["top-4 contrast"]
    expected = {f"{lab} [{w}, {f}]" for lab in labels for w in GRID["weightings"] for f in GRID["fusions"]}
    assert set(rows) == expected
    ablation = {r["method"]: r for r in read_json(grid_run / "results" / "val" / "ablation.json")["rows"]}
    strongest = next(iter(ablation.values()))["strongest_baseline"]
    for r in rows.values():
        assert 0 <= r["miou"] <= 1 and 0 <= r["pxap"] <= 1 and 0 < r["best_threshold"] < 1
        assert r["ci_low"] <= r["diff"] <= r["ci_high"] and math.isfinite(r["ci_low"]) and math.isfinite(r["ci_high"])
        assert r["strongest_baseline"] == strongest
        assert r["diff"] == pytest.approx(r["miou"] - ablation["Grad-CAM"]["miou"])
        assert r["diff_strongest"] == pytest.approx(r["miou"] - ablation[strongest]["miou"])
    # Cells that the ablation also has: the same engine on the same model gives the same maps, so the same numbers.
    for cell, row in [("multiclass [gradcam, last]", "Grad-CAM"), ("multiclass [gradcam, mean]", "Grad-CAM (mean of layers)"),
                      ("multiclass [layercam, mean]", "LayerCAM"), ("contrast S-1 [gradcam, last]", "S-1 contrast")]:
        assert rows[cell]["miou"] == ablation[row]["miou"] and rows[cell]["pxap"] == ablation[row]["pxap"], cell
    # The image-level references give other maps than the selection's (else the source would test nothing).
    assert rows["top-4 contrast [gradcam, last]"]["miou"] != rows["contrast S-1 [gradcam, last]"]["miou"]
    csv_lines = (grid_run / "results" / "val" / "grid.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(expected)
    md = (grid_run / "results" / "val" / "grid.md").read_text()
    assert md.count("\n| ") == 1 + 3 * 2  # header + one row per family: 3 sources x 2 weightings
    assert not set(rows) & set(ablation)


def test_a_fresh_run_makes_the_grid_in_the_ablations_pass_with_the_same_rows(tiny_run: Path, grid_run: Path, tmp_path: Path,
                                                                              monkeypatch):
    """From scratch the grid's files ride on the ablation's shared pass (no pass of the grid's own); its rows equal
    those of grid_run, whose grid was made after the ablation's maps were stored, and the ablation's those of tiny_run."""
    monkeypatch.setattr(grid_module, "extract_grid", lambda *a, **k: pytest.fail("the grid ran a pass of its own"))
    run_dir = tmp_path / "run"
    Run(_grid_config(), run_dir, show_progress=False).run()
    data = read_json(run_dir / "results" / "val" / "grid.json")
    assert data["map_files_shared_pass"] == data["map_files"] == 9 * 2 and data["map_files_reused"] == 0
    assert data["rows"] == read_json(grid_run / "results" / "val" / "grid.json")["rows"]
    assert _ablation_rows(run_dir) == _ablation_rows(tiny_run)


def test_grid_leaves_the_ablation_rows_byte_identical(tiny_run: Path, grid_run: Path):
    assert _ablation_rows(grid_run) == _ablation_rows(tiny_run)
    assert (grid_run / "results" / "val" / "per_class.csv").read_bytes() == (tiny_run / "results" / "val" / "per_class.csv").read_bytes()


def test_rerun_reuses_every_grid_map_a_new_fusion_recomputes_and_grid_off_restores_the_ablation(grid_run: Path, tmp_path: Path,
                                                                                                  monkeypatch):
    run_dir = tmp_path / "run"
    shutil.copytree(grid_run, run_dir)
    files = sorted((run_dir / "maps" / "val").glob("grid__*.npz"))
    assert len(files) == 9 * 2  # (multiclass, 7 selections, top-k) x 2 weightings
    stamps = {f: f.stat().st_mtime_ns for f in files}
    real = grid_module.extract_grid

    def refuse(*args, **kwargs):
        raise AssertionError("a grid map was recomputed")

    monkeypatch.setattr(grid_module, "extract_grid", refuse)
    Run(_grid_config(fusions=["mean"]), run_dir, show_progress=False).run()  # a subset of the stored fusions: reused too
    data = read_json(run_dir / "results" / "val" / "grid.json")
    assert data["map_files_reused"] == data["map_files"] == len(files)
    assert {f: f.stat().st_mtime_ns for f in files} == stamps
    assert {r["fusion"] for r in data["rows"]} == {"mean"}

    monkeypatch.setattr(grid_module, "extract_grid", real)  # a fusion the file lacks: that file is computed again
    Run(_grid_config(weightings=["gradcam"], fusions=["paper"], sources=["multiclass"]), run_dir, show_progress=False).run()
    data = read_json(run_dir / "results" / "val" / "grid.json")
    assert data["map_files"] == 1 and data["map_files_reused"] == 0
    ablation = {r["method"]: r for r in read_json(run_dir / "results" / "val" / "ablation.json")["rows"]}
    assert [r["method"] for r in data["rows"]] == ["multiclass [gradcam, paper]"]
    assert data["rows"][0]["miou"] == ablation["Grad-CAM+A"]["miou"]  # the paper's fusion of Grad-CAM, as stored

    before = _ablation_rows(run_dir)
    Run(tiny_config(), run_dir, show_progress=False).run()  # grid off again
    assert _ablation_rows(run_dir) == before


# ---- the pair-model source (repcam.pipeline.grid_pairs) ----------------------------------------------------------------------

def test_pair_source_reproduces_the_ablation_rows_and_is_reused(tiny_run: Path, tmp_path: Path, monkeypatch):
    """``pairs <S> [gradcam, paper]`` is the ablation's S+A+F and ``[gradcam, last]`` its S+F (same pair models, same
    fusion over representatives; the grid's fused maps are stored as float16, hence approx); other cells exist."""
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    cfg = _grid_config(sources=["pairs"], weightings=["gradcam", "layercam"], fusions=["last", "paper"])
    Run(cfg, run_dir, show_progress=False).run()
    assert _ablation_rows(run_dir) == _ablation_rows(tiny_run)  # the grid leaves the ablation as it was
    ablation = {r["method"]: r for r in read_json(run_dir / "results" / "val" / "ablation.json")["rows"]}
    rows = {r["method"]: r for r in read_json(run_dir / "results" / "val" / "grid.json")["rows"]}
    selections = read_json(run_dir / "selections.json")["selections"]
    assert len(rows) == len(selections) * 2 * 2
    for s in selections:
        assert rows[f"pairs {s} [gradcam, paper]"]["miou"] == pytest.approx(ablation[f"{s}+A+F"]["miou"], abs=0.005)
        assert rows[f"pairs {s} [gradcam, last]"]["miou"] == pytest.approx(ablation[f"{s}+F"]["miou"], abs=0.005)
        r = rows[f"pairs {s} [layercam, paper]"]
        assert r["source"] == "pairs" and r["selection"] == s and r["weighting"] == "layercam" and 0 <= r["miou"] <= 1
    maps = sorted(p.name for p in (run_dir / "maps" / "val").glob("grid__pair*.npz"))
    assert len([m for m in maps if m.startswith("grid__pairs__")]) == len(selections)
    assert len([m for m in maps if m.startswith("grid__pair__")]) == len(list((run_dir / "pairs").glob("*.pt")))
    stamps = {m: (run_dir / "maps" / "val" / m).stat().st_mtime_ns for m in maps}
    import repcam.pipeline.grid_pairs as grid_pairs_module

    for module in (grid_module, grid_pairs_module):
        monkeypatch.setattr(module, "extract_grid", lambda *a, **k: pytest.fail("a stored grid map was recomputed"))
    Run(cfg, run_dir, show_progress=False).run()
    assert stamps == {m: (run_dir / "maps" / "val" / m).stat().st_mtime_ns for m in maps}
