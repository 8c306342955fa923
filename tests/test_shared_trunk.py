"""Maps of models that share a frozen trunk (issue 28): one trunk forward per batch, the same maps as each whole model."""

import shutil

import numpy as np
import pytest
import torch

from repcam.engine.cam import MultiLayerGradCAM
from repcam.engine.layers import LayerError
from repcam.engine.shared_trunk import Head, SharedTrunkGradCAM
from repcam.models.backbones import build_classifier
from repcam.models.featcache import split_model
from repcam.store.records import RecordFile

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.one_thread)


def _models(name: str, stage: str, n: int = 3):
    """``n`` models of ``name`` with one trunk up to ``stage`` (the first's) and their own random rests."""
    models = []
    for seed in range(n):
        torch.manual_seed(seed)
        models.append(build_classifier(name, 2, weights=None, input_size=SIZE).model.eval())
    split = split_model(models[0], stage, check_size=SIZE)
    trunk = {k: v for m in split.frozen_modules() for k, v in m.state_dict().items()}
    for m in models[1:]:
        s = split.like(m)
        for fm, ref in zip(s.frozen_modules(), split.frozen_modules()):
            fm.load_state_dict(ref.state_dict())
        assert split.same_trunk(s)
    assert trunk
    return models, split


@pytest.mark.parametrize("name,stage,channels_last", [("tiny_cnn", "layer2", False), ("tf_efficientnet_lite0", "blocks.3", True)])
def test_shared_trunk_maps_equal_each_whole_models_maps(name, stage, channels_last):
    models, split = _models(name, stage)
    x = torch.randn(3, 3, SIZE, SIZE)
    if channels_last:
        models = [m.to(memory_format=torch.channels_last) for m in models]
        x = x.contiguous(memory_format=torch.channels_last)
    targets = [[0, 1, 0], [1, 1, 0], [0, 0, 1]]
    cam = SharedTrunkGradCAM(models[0], stage)
    got = {}
    cam.layer_maps_heads(x, [Head(m, split.like(m).rest, t) for m, t in zip(models, targets)], ["gradcam", "layercam"],
                         lambda k, maps: got.__setitem__(k, maps))
    assert sorted(got) == [0, 1, 2]
    for k, (m, t) in enumerate(zip(models, targets)):
        want, _ = MultiLayerGradCAM(m).layer_maps(x, t, ["gradcam", "layercam"])
        for w in ("gradcam", "layercam"):
            assert torch.equal(got[k][w], want[w]), (k, w)
    # the heads' rests differ, so their maps do: the trunk pass was not one model's maps copied
    assert not torch.equal(got[0]["gradcam"], got[1]["gradcam"])


def test_the_trunk_pass_runs_once_per_batch_and_settings_come_back():
    models, split = _models("tiny_cnn", "layer2")
    calls = []
    h = models[0].layer1.register_forward_hook(lambda *a: calls.append(1))
    flags = [p.requires_grad for m in models for p in m.parameters()]
    models[1].train()
    cam = SharedTrunkGradCAM(models[0], "layer2")
    cam.layer_maps_heads(torch.randn(2, 3, SIZE, SIZE), [Head(m, split.like(m).rest, 0) for m in models], ["gradcam"],
                         lambda k, maps: None)
    h.remove()
    assert calls == [1]  # one trunk forward for three heads
    assert [p.requires_grad for m in models for p in m.parameters()] == flags
    assert models[1].training and not models[0].training


def test_a_stage_that_is_not_a_module_is_a_one_line_error():
    models, _ = _models("tiny_cnn", "layer2", n=1)
    with pytest.raises(LayerError, match="no module named 'layer9'"):
        SharedTrunkGradCAM(models[0], "layer9")


def _pair_files(run_dir):
    return sorted((run_dir / "maps" / "val").glob("*__*.npz"))


def _pair_maps_without_the_shared_trunk(frozen_run, tmp_path, monkeypatch, reject=()):
    """The frozen run's maps made again; ``reject``: pairs whose trunk is taken for another (left to the units);
    everything, when ``reject`` is "all" (the shared trunk not used: the per-model units' files)."""
    from repcam.pipeline import trunk_maps
    from repcam.pipeline.run import Run
    from tiny_run import frozen_tiny_config

    run_dir = shutil.copytree(frozen_run, tmp_path / "run")
    shutil.rmtree(run_dir / "maps")
    shutil.rmtree(run_dir / "results")
    load = trunk_maps._TrunkPass.load
    rejected = []

    def fake_load(self, model, art):
        if reject == "all" or any(art.path.name == f"{a}__{b}.pt" for a, b in reject):
            rejected.append(art.path.name)
            load(self, model, art)
            return None
        return load(self, model, art)

    monkeypatch.setattr(trunk_maps._TrunkPass, "load", fake_load)
    Run(frozen_tiny_config(), run_dir, show_progress=False).run()
    return run_dir, rejected


def _same_maps(a, b):
    fa, fb = RecordFile(a), RecordFile(b)
    assert fa.kinds == fb.kinds == ["last", "fused"]
    assert np.array_equal(fa.image, fb.image) and np.array_equal(fa.cls, fb.cls)
    for k in fa.kinds:
        assert np.array_equal(fa.rows(k), fb.rows(k)), (a.name, k)


def test_a_runs_pair_maps_through_the_shared_trunk_equal_the_per_model_units(frozen_run, tmp_path, monkeypatch):
    units_dir, rejected = _pair_maps_without_the_shared_trunk(frozen_run, tmp_path / "units", monkeypatch, reject="all")
    files = _pair_files(frozen_run)
    assert len(files) >= 2 and len(rejected) == len(files)  # every pair model went back to the units
    for f in files:  # the frozen run made its pair maps through the shared trunk
        _same_maps(f, units_dir / "maps" / "val" / f.name)
    assert (units_dir / "results" / "val" / "ablation.json").read_bytes() == (frozen_run / "results" / "val" / "ablation.json").read_bytes()


def test_a_pair_model_with_another_trunk_goes_to_the_units(frozen_run, tmp_path, monkeypatch):
    first = _pair_files(frozen_run)[0].stem
    a, b = first.split("__")
    run_dir, rejected = _pair_maps_without_the_shared_trunk(frozen_run, tmp_path, monkeypatch, reject=[(a, b)])
    assert rejected == [f"{first}.pt"]  # found at its first class; its second class no longer loads it
    for f in _pair_files(frozen_run):
        _same_maps(f, run_dir / "maps" / "val" / f.name)


def test_an_error_in_the_shared_pass_names_the_class_and_pairs_and_keeps_finished_files_only(frozen_run, tmp_path, monkeypatch):
    from repcam.engine.cam import CAMError
    from repcam.pipeline.context import RunError
    from repcam.pipeline.run import Run
    from tiny_run import frozen_tiny_config

    run_dir = shutil.copytree(frozen_run, tmp_path / "run")
    shutil.rmtree(run_dir / "maps")
    shutil.rmtree(run_dir / "results")
    calls = []
    real = SharedTrunkGradCAM.layer_maps_heads

    def failing(self, x, heads, weightings, emit):
        calls.append(len(heads))
        if len(calls) > 2:
            raise CAMError("the model's output (logits) contains NaN or Inf for this input")
        return real(self, x, heads, weightings, emit)

    monkeypatch.setattr(SharedTrunkGradCAM, "layer_maps_heads", failing)
    with pytest.raises(RunError, match=r"maps of class \w+ through the shared trunk \(pair models \w+__\w+.*\): the model's output"):
        Run(frozen_tiny_config(), run_dir, show_progress=False).run()
    val = run_dir / "maps" / "val"
    assert not list(val.glob(".records-*"))  # no scratch left behind
    for f in val.glob("*__*.npz"):  # what was committed before the error is whole (and reused by the next run)
        _same_maps(f, frozen_run / "maps" / "val" / f.name)


def test_a_kill_in_the_shared_pass_keeps_finished_classes_and_the_rerun_passes_only_the_rest(frozen_run, tmp_path, monkeypatch):
    """Each class's maps of a pair go to a part file as soon as the class is done: a run killed in the pass keeps them,
    and the next run passes only the classes left, then merges the parts into files equal to an uninterrupted run's."""
    from repcam.pipeline import trunk_maps
    from repcam.pipeline.run import Run
    from tiny_run import frozen_tiny_config

    run_dir = shutil.copytree(frozen_run, tmp_path / "run")
    shutil.rmtree(run_dir / "maps")
    shutil.rmtree(run_dir / "results")
    real = trunk_maps._TrunkPass.run
    passed = []

    def killed_at_the_second_class(self, c, images, heads, weightings, cache, put):
        if passed:
            raise KeyboardInterrupt
        passed.append((c, sorted(p for p, _, _ in heads)))
        return real(self, c, images, heads, weightings, cache, put)

    monkeypatch.setattr(trunk_maps._TrunkPass, "run", killed_at_the_second_class)
    with pytest.raises(KeyboardInterrupt):
        Run(frozen_tiny_config(), run_dir, show_progress=False).run()
    val = run_dir / "maps" / "val"
    (first, first_pairs), = passed
    kept = sorted(p.name for p in (val / trunk_maps.PARTS).glob("*.npz"))
    assert kept and all(name.endswith(f".class{first}.npz") for name in kept)  # the first class's parts only
    assert len(kept) == len(first_pairs) and not list((val / trunk_maps.PARTS).glob(".records-*"))

    rerun = []
    monkeypatch.setattr(trunk_maps._TrunkPass, "run",
                        lambda self, c, images, heads, *rest: (rerun.append(c), real(self, c, images, heads, *rest))[1])
    Run(frozen_tiny_config(), run_dir, show_progress=False).run()
    assert rerun and first not in rerun  # the kept class was not passed again
    assert not (val / trunk_maps.PARTS).exists()  # merged and removed
    for f in _pair_files(frozen_run):
        _same_maps(f, val / f.name)  # every row and map equal (the zip's member dates are the files' own)
    assert (run_dir / "results" / "val" / "ablation.json").read_bytes() == (frozen_run / "results" / "val" / "ablation.json").read_bytes()


def test_a_part_of_other_images_or_another_file_is_not_merged(tmp_path):
    """A part's key holds its pair file's key, its class and its images: any of them changed, the part is not current."""
    from repcam.pipeline.trunk_maps import part_artefact
    from repcam.store.storage import Artefact

    art = Artefact(tmp_path / "a__b.npz", "k1")
    base = part_artefact(art, 0, [1, 2, 3])
    assert base.path == tmp_path / ".parts" / "a__b.class0.npz"
    assert base.key == part_artefact(art, 0, [1, 2, 3]).key
    others = [part_artefact(art, 1, [1, 2, 3]), part_artefact(art, 0, [1, 2]), part_artefact(art, 0, [2, 1, 3]),
              part_artefact(Artefact(tmp_path / "a__b.npz", "k2"), 0, [1, 2, 3])]
    assert len({base.key, *(o.key for o in others)}) == 5


def test_the_grids_pair_files_share_the_ablation_files_backward_in_the_trunk_pass(frozen_run, tmp_path, monkeypatch):
    """With the grid's pairs source, a pair model's grid file comes from the trunk pass's backward, with its ablation
    file, not from a whole pass of its own: its [gradcam, paper] and [gradcam, last] maps are the ablation file's
    fused and last maps bit for bit. A resume that adds the grid makes only the grid files, the same ones."""
    import repcam.pipeline.grid_pairs as grid_pairs
    from repcam.pipeline.run import Run
    from tiny_run import frozen_tiny_config

    monkeypatch.setattr(grid_pairs, "extract_grid", lambda *a, **k: pytest.fail("a pair grid file took a pass of its own"))
    cfg = frozen_tiny_config(evaluation__grid={"sources": ["pairs"], "weightings": ["gradcam", "layercam"], "fusions": ["last", "paper"]})
    fresh = shutil.copytree(frozen_run, tmp_path / "fresh")
    shutil.rmtree(fresh / "maps")
    shutil.rmtree(fresh / "results")
    Run(cfg, fresh, show_progress=False).run()
    added = shutil.copytree(frozen_run, tmp_path / "added")  # the finished run, resumed with the grid added
    stamps = {f.name: (added / "maps" / "val" / f.name).stat().st_mtime_ns for f in _pair_files(frozen_run)}
    Run(cfg, added, show_progress=False).run()
    for f in _pair_files(frozen_run):
        assert (added / "maps" / "val" / f.name).stat().st_mtime_ns == stamps[f.name]  # not made again
        _same_maps(f, fresh / "maps" / "val" / f.name)  # the ablation's files as without the grid
        ablation = RecordFile(f)
        for run_dir in (fresh, added):
            grid = RecordFile(run_dir / "maps" / "val" / f"grid__pair__{f.name}")
            assert sorted(grid.kinds) == ["gradcam__last", "gradcam__paper", "layercam__last", "layercam__paper"]
            assert np.array_equal(grid.image, ablation.image) and np.array_equal(grid.cls, ablation.cls)
            assert np.array_equal(grid.rows("gradcam__paper"), ablation.rows("fused"))
            assert np.array_equal(grid.rows("gradcam__last"), ablation.rows("last"))
            assert not (run_dir / "maps" / "val" / ".parts").exists()
    rows = {r["method"]: r for r in _read(fresh / "results" / "val" / "grid.json")["rows"]}
    ablation_rows = {r["method"]: r for r in _read(fresh / "results" / "val" / "ablation.json")["rows"]}
    assert rows["pairs Random [gradcam, paper]"]["miou"] == pytest.approx(ablation_rows["Random+A+F"]["miou"], abs=0.005)
    assert rows == {r["method"]: r for r in _read(added / "results" / "val" / "grid.json")["rows"]}


def _read(path):
    from repcam.store.storage import read_json

    return read_json(path)
