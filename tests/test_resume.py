"""Resume reuses stored results: a finished run rerun with the same config re-scores nothing, an added evaluation
split is the only one scored, and an added row is the only row scored (issue 28: results keyed per split and row)."""

import json
import shutil
from pathlib import Path

import repcam.pipeline.stages.evaluation as evaluation_stage
from repcam.config import from_dict
from repcam.pipeline.run import Run
from repcam.store.rundir import results_key
from tiny_run import TINY, tiny_config


class Counting:
    """Wraps a function and records the split of each call (``evaluate_split``'s dataset or ``compute_maps``' split)
    and what it returned."""

    def __init__(self, real, split_of):
        self.real, self.split_of, self.splits, self.results = real, split_of, [], []

    def __call__(self, *args, **kwargs):
        self.splits.append(self.split_of(args))
        self.results.append(self.real(*args, **kwargs))
        return self.results[-1]


def _count(monkeypatch) -> tuple[Counting, Counting]:
    scored = Counting(evaluation_stage.evaluate_split, lambda a: a[0].samples[0].id.split("_")[0])
    mapped = Counting(evaluation_stage.compute_maps, lambda a: a[1])
    monkeypatch.setattr(evaluation_stage, "evaluate_split", scored)
    monkeypatch.setattr(evaluation_stage, "compute_maps", mapped)
    return scored, mapped


def test_finished_run_resumed_with_the_same_config_scores_nothing(tiny_run: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p: p.stat().st_mtime_ns for p in (run / "results" / "val").iterdir()}
    scored, mapped = _count(monkeypatch)
    from repcam.models.train import ImageCache

    loaded: list[int] = []
    real_ok = ImageCache.ok
    monkeypatch.setattr(ImageCache, "ok", lambda self, idx: (loaded.extend(idx), real_ok(self, idx))[1])
    rows = Run(tiny_config(), run, show_progress=False).run()
    assert scored.splits == [] and mapped.splits == []  # no map loaded, no row scored
    assert loaded == []  # no image decoded either (B's key names the images, it does not load them)
    assert {p: p.stat().st_mtime_ns for p in (run / "results" / "val").iterdir()} == before
    assert [r["method"] for r in rows["val"]] == [r["method"] for r in Run(tiny_config(), tiny_run, show_progress=False).run()["val"]]


def test_an_added_evaluation_split_is_the_only_one_scored(tiny_run: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    val_before = {p.name: p.read_bytes() for p in (run / "results" / "val").iterdir()}
    scored, mapped = _count(monkeypatch)
    cfg = tiny_config(data__eval_splits=["val", "train"],
                      data__eval_options={**TINY["data"]["eval_options"], "train": {"num_images": 12}})
    Run(cfg, run, show_progress=False).run()
    assert scored.splits == ["train"] and mapped.splits == ["train"]
    assert {p.name: p.read_bytes() for p in (run / "results" / "val").iterdir()} == val_before
    assert (run / "results" / "train" / "ablation.json").is_file()
    scored.splits.clear()
    Run(cfg, run, show_progress=False).run()  # and now both are stored
    assert scored.splits == []


def test_a_changed_setting_rescores(tiny_run: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    scored, _ = _count(monkeypatch)
    Run(tiny_config(evaluation__threshold=0.3), run, show_progress=False).run()
    assert scored.splits == ["val"]
    assert scored.results[0].reused == []  # the threshold is in every row's key: nothing stored can be reused


# ---- results keyed per row ---------------------------------------------------------------------------------------------
def _grid(**grid):
    base = {"weightings": ["gradcam"], "fusions": ["paper"], "sources": ["multiclass"]}
    return from_dict({**TINY, "evaluation": {**TINY["evaluation"], "grid": {**base, **grid}}}, "test")


RESULT_FILES = ["ablation.json", "accumulators.json", "grid_accumulators.json", "per_class.csv", "sweep.csv", "pairwise.json"]


def _results(run: Path) -> dict[str, object]:
    """The split's result files (byte for byte), the grid's rows, and every row group's rows and IRN sweep (their keys
    name map files by checksum, and a map file written twice differs in its zip timestamps)."""
    res = run / "results" / "val"
    out: dict[str, object] = {name: (res / name).read_bytes() for name in RESULT_FILES}
    out["grid rows"] = json.loads((res / "grid.json").read_text())["rows"]
    groups = json.loads((res / "row_groups.json").read_text())
    out["groups"] = {g: v["rows"] for g, v in groups["groups"].items()}
    out["irn"] = groups["irn"]
    return out


def test_an_added_grid_row_is_the_only_row_scored_and_the_results_equal_a_fresh_evaluation(tiny_run: Path, tmp_path: Path,
                                                                                            monkeypatch):
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    shutil.copytree(tiny_run, run)
    shutil.copytree(tiny_run, fresh)
    shutil.rmtree(fresh / "results")  # the same models and maps, nothing scored
    scored, _ = _count(monkeypatch)
    ablation_rows = [r["method"] for r in json.loads((tiny_run / "results" / "val" / "ablation.json").read_text())["rows"]]

    Run(_grid(), run, show_progress=False).run()
    result = scored.results[-1]
    assert [n for n in result.accs if n not in result.reused] == ["multiclass [gradcam, paper]"]
    assert result.reused == ablation_rows  # every row of the ablation, in its order
    Run(_grid(), fresh, show_progress=False).run()
    assert scored.results[-1].reused == []
    assert _results(run) == _results(fresh)  # byte for byte: the reused rows are exactly what scoring them gives

    # One more weighting: its file is new, so only its row is scored; the earlier grid row is reused with the ablation.
    Run(_grid(weightings=["gradcam", "layercam"]), run, show_progress=False).run()
    result = scored.results[-1]
    assert [n for n in result.accs if n not in result.reused] == ["multiclass [layercam, paper]"]
    Run(_grid(weightings=["gradcam", "layercam"]), fresh, show_progress=False).run()
    assert _results(run) == _results(fresh)


def test_stored_rows_are_not_reused_when_their_record_is_damaged_or_their_maps_changed(tiny_run: Path, tmp_path: Path,
                                                                                       monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    scored, _ = _count(monkeypatch)
    groups = run / "results" / "val" / "row_groups.json"
    stored = json.loads(groups.read_text())
    assert "multiclass" in stored["groups"] and stored["irn"]
    groups.write_text("{not json")  # damaged: every row is scored again, and the file rewritten
    Run(_grid(), run, show_progress=False).run()
    assert scored.results[-1].reused == []
    assert json.loads(groups.read_text())["groups"]["multiclass"] == stored["groups"]["multiclass"]

    # A group stored under another key (as when its map file changed) is scored; the others are reused.
    data = json.loads(groups.read_text())
    data["groups"]["multiclass"]["key"] = "maps of another model"
    groups.write_text(json.dumps(data))
    (run / "results" / "val" / "inputs.json").unlink()  # else the whole split is reused as it is
    Run(_grid(), run, show_progress=False).run()
    result = scored.results[-1]
    assert set(result.accs) - set(result.reused) == set(stored["groups"]["multiclass"]["rows"])


def test_a_damaged_results_folder_is_rescored(tiny_run: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "results" / "val" / "accumulators.json").unlink()
    scored, _ = _count(monkeypatch)
    Run(tiny_config(), run, show_progress=False).run()
    assert scored.splits == ["val"] and (run / "results" / "val" / "accumulators.json").is_file()


def test_results_key_ignores_other_splits_options():
    base = tiny_config().to_dict()
    more = tiny_config(data__eval_splits=["val", "train"],
                       data__eval_options={**TINY["data"]["eval_options"], "train": {"num_images": 12}}).to_dict()
    assert results_key(base, "val") == results_key(more, "val")
    changed = tiny_config(data__eval_options={"val": {"num_images": 31}}).to_dict()
    assert results_key(base, "val") != results_key(changed, "val")


def test_a_resumed_run_reuses_b_and_recomputes_it_when_its_key_differs(tiny_run: Path, tmp_path: Path):
    """B is a forward pass over every training image (minutes at 224 px on a CPU): a resume reuses similarity.json
    when it was computed from the same model, images and mode, and recomputes it otherwise, to the same matrix."""
    import json

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    stored = (run / "similarity.json").read_bytes()
    Run(tiny_config(), run, show_progress=False).run()
    assert "similarity" not in json.loads((run / "timings.json").read_text())  # not computed again
    assert (run / "similarity.json").read_bytes() == stored
    sim = json.loads(stored)
    (run / "similarity.json").write_text(json.dumps({**sim, "key": "from another model"}))
    Run(tiny_config(), run, show_progress=False).run()
    assert "similarity" in json.loads((run / "timings.json").read_text())
    assert json.loads((run / "similarity.json").read_text())["B"] == sim["B"]
