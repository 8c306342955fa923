"""repcam.store.layout.RunDir: its paths are the files a real (tiny) run writes, and its readers refuse damaged files in
one line naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from repcam.config import RESOLVED_CONFIG, load_config
from repcam.store.layout import RunDir
from repcam.store.rundir import LOCK_NAME, ClassFiles
from repcam.store.storage import ArtefactError, read_json, sha256


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != LOCK_NAME}


def _rel(paths: RunDir, items) -> set[str]:
    return {p.relative_to(paths.root).as_posix() for p in items}


def test_rundir_names_every_file_a_tiny_run_writes(tiny_run: Path):
    paths = RunDir(tiny_run)
    cfg = load_config(paths.config)
    assert paths.config == paths.resolved_config == tiny_run / RESOLVED_CONFIG
    classes = list(paths.read_similarity()["classes"])
    files = ClassFiles(classes)
    sels = paths.read_selections()
    if cfg.selection.pairwise:
        pairs = {(a, b) for i, a in enumerate(classes) for b in classes[i + 1:]}
    else:
        pairs = {tuple(sorted((c, s), key=classes.index)) for sel in sels.values() for c, reps in sel.items() for s in reps}
    budget = read_json(paths.budget)
    assert paths / budget["baseline_model"] in (paths.multiclass_model, paths.multiclass_baseline)

    artefacts = {paths.multiclass_model, paths / budget["baseline_model"]}
    artefacts |= {paths.pair_model(files, a, b) for a, b in pairs}
    artefacts |= {paths.baseline_model(k) for k in cfg.baselines}
    for split in cfg.data.eval_splits:
        artefacts |= {paths.multiclass_maps(split)} | {paths.pair_maps(split, files, a, b) for a, b in pairs}
        artefacts |= {paths.baseline_maps(split, k) for k in cfg.baselines}
        if "contrast" in cfg.evaluation.variants:
            artefacts |= {paths.contrast_maps(split, s) for s in sels}
    run_files = {paths.resolved_config, paths.similarity, paths.selections, paths.notes, paths.timings, paths.budget,
                 paths.environment, paths.train_skipped}
    expected = _rel(paths, run_files | artefacts | {RunDir.meta(p) for p in artefacts})

    actual = _files(tiny_run)
    results = {f for f in actual if f.startswith(paths.results_root.name + "/")}
    figures = {f for f in actual if f.startswith("figures/")}
    assert actual - results - figures == expected
    for split in cfg.data.eval_splits:
        for p in (paths.ablation(split), paths.accumulators(split), paths.pairwise(split)):
            assert p.relative_to(tiny_run).as_posix() in results
        rows = {r["method"]: r for r in paths.read_rows(split)}
        accs = paths.read_accumulators(split)
        assert rows["Grad-CAM"]["miou"] == pytest.approx(accs["Grad-CAM"].miou())  # the two readers agree
    # The readers load what the run stored: a state dict the multi-class model accepts.
    state = paths.load_state_dict(paths.multiclass_model)
    assert state and all(isinstance(v, torch.Tensor) for v in state.values())


def test_old_run_directories_fall_back_to_config_yaml(tmp_path: Path):
    paths = RunDir(tmp_path)
    assert paths.config == tmp_path / "config.yaml"  # runs from before config.resolved.yaml
    paths.resolved_config.write_text("name: x\n")
    assert paths.config == paths.resolved_config
    assert paths.seed(3).root == tmp_path / "seed-3"


class _NotAWeight:
    pass


def _one_error(exc: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


@pytest.mark.parametrize("reader, name, content", [
    ("read_selections", "selections.json", "{not json"),
    ("read_selections", "selections.json", json.dumps({"clusters": []})),  # no "selections"
    ("read_similarity", "similarity.json", json.dumps([1, 2])),
    ("read_rows", "results/val/ablation.json", "\x00\x01"),
    ("read_accumulators", "results/val/accumulators.json", json.dumps({"Grad-CAM": {"garbage": 1}})),
])
def test_readers_refuse_a_damaged_file_in_one_line(tmp_path: Path, reader: str, name: str, content: str):
    paths = RunDir(tmp_path)
    target = tmp_path / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    with pytest.raises(ArtefactError) as exc:
        getattr(paths, reader)(*(("val",) if reader in ("read_rows", "read_accumulators") else ()))
    _one_error(exc, target)


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(ArtefactError, match="is missing") as exc:
        RunDir(tmp_path).read_selections()
    _one_error(exc, tmp_path / "selections.json")


def test_stored_model_is_checked_before_loading(tiny_run: Path, tmp_path: Path):
    src = RunDir(tiny_run)
    paths = RunDir(tmp_path / "copy")
    paths.multiclass_model.parent.mkdir(parents=True)
    shutil.copy(src.multiclass_model, paths.multiclass_model)
    shutil.copy(RunDir.meta(src.multiclass_model), RunDir.meta(paths.multiclass_model))
    assert set(paths.load_state_dict(paths.multiclass_model)) == set(src.load_state_dict(src.multiclass_model))

    data = bytearray(paths.multiclass_model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    paths.multiclass_model.write_bytes(bytes(data))
    with pytest.raises(ArtefactError, match="checksum does not match") as exc:
        paths.load_state_dict(paths.multiclass_model)
    _one_error(exc, paths.multiclass_model)

    # A crafted file whose sidecar was forged to match: weights_only refuses the foreign object, in one line.
    torch.save({"w": _NotAWeight()}, paths.multiclass_model)
    meta = read_json(RunDir.meta(paths.multiclass_model))
    RunDir.meta(paths.multiclass_model).write_text(json.dumps({**meta, "sha256": sha256(paths.multiclass_model)}))
    with pytest.raises(ArtefactError, match="cannot load") as exc:
        paths.load_state_dict(paths.multiclass_model)
    _one_error(exc, paths.multiclass_model)
