"""Partial fine-tuning (pairs.freeze_until) and the shared trunk feature cache."""

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from repcam.models.backbones import build_classifier
from repcam.models.featcache import FeatureCache, FreezeError, build_cache, freeze_points, split_model
from repcam.pipeline.units import ModelSpec, PairTraining, train_pair

SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models (conftest.one_thread)


def _images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _tiny(seed: int = 0, classes: int = 2):
    torch.manual_seed(seed)
    return build_classifier("tiny_cnn", classes, weights=None, input_size=SIZE)


def _reference_trunk(model, stage: str, x: torch.Tensor) -> torch.Tensor:
    """The stage's output in a plain forward pass of the whole network in eval mode, caught by a hook."""
    out = []
    h = model.get_submodule(stage).register_forward_hook(lambda m, i, o: out.append(o.detach().clone()))
    model.eval()
    with torch.no_grad():
        model(x)
    h.remove()
    return out[0]


def _build(tmp_path, bb, stage="layer2", ids=range(6), images=None, key=None, **kw) -> FeatureCache:
    images = _images(10) if images is None else images
    return build_cache(tmp_path / "f.npy", split_model(bb.model, stage, check_size=SIZE), bb.preprocess, list(ids),
                       lambda idx: images[list(idx)], key or {"data": "test"}, batch_size=4, **kw)


def test_cache_is_bit_identical_to_a_forward_pass_of_the_frozen_network(tmp_path):
    bb, imgs = _tiny(), _images(10)
    ids = [7, 2, 5, 0, 9, 3]  # not in order and more than one batch: rows follow ids
    fc = _build(tmp_path, bb, ids=ids, images=imgs)
    mm = np.load(fc.path, mmap_mode="r")
    assert mm.shape == (2, 6, 32, 8, 8) and mm.dtype == np.float32
    # The cache's own batches (4, then 2 images) through the plain network: the same bits.
    for rows in (slice(0, 4), slice(4, 6)):
        x = bb.preprocess.normalize(imgs[ids[rows]])
        assert np.array_equal(mm[0, rows], _reference_trunk(bb.model, "layer2", x).numpy())
        assert np.array_equal(mm[1, rows], _reference_trunk(bb.model, "layer2", bb.preprocess.normalize(imgs[ids[rows]].flip(-1))).numpy())
    # Another batching (one image at a time) may differ in the last bits only: the convolution's summation order.
    for r, i in enumerate(ids):
        ref = _reference_trunk(bb.model, "layer2", bb.preprocess.normalize(imgs[i : i + 1].flip(-1)))[0].numpy()
        assert np.allclose(mm[1, r], ref, rtol=1e-5, atol=1e-6)
    assert not np.array_equal(mm[0], mm[1])
    rows = fc.rows([5, 9]).inputs()(torch.tensor([1, 0]), torch.tensor([True, False]))
    assert torch.equal(rows[0], torch.from_numpy(np.array(mm[1, ids.index(9)])))  # unit row 1 = image 9, flipped
    assert torch.equal(rows[1], torch.from_numpy(np.array(mm[0, ids.index(5)])))


def _pair_spec(images, freeze, features=None, **over):
    labels = torch.tensor([0] * 5 + [1] * 5)  # 10 images: with features, ``images`` is empty
    init = {k: v for k, v in _tiny(seed=11).model.state_dict().items() if not k.startswith("fc.")}
    spec = dict(model=ModelSpec("tiny_cnn", 2, None, SIZE), images=images, labels=labels, init_seed=1, fit_seed=2, epochs=3,
                lr=3e-3, batch_size=4, target_accuracy=1.1, device="cpu", init_state=init, freeze_until=freeze, features=features)
    return PairTraining(**{**spec, **over})


def test_pair_model_trained_on_the_cache_equals_one_trained_on_images(tmp_path):
    imgs = _images(10)
    plain, _ = train_pair(_pair_spec(imgs, "layer2"))
    bb = _tiny(seed=11)  # the same trunk as the pair models' starting weights
    fc = _build(tmp_path, bb, ids=range(10), images=imgs)
    cached, res = train_pair(_pair_spec(imgs[:0], "layer2", fc.rows(list(range(10)))))
    assert res.epochs == 3
    for k in plain:
        assert torch.allclose(plain[k].float(), cached[k].float(), rtol=1e-4, atol=1e-5), k
    full, _ = train_pair(_pair_spec(imgs, None))  # and full fine-tuning is something else
    assert not torch.allclose(full["layer1.0.weight"], plain["layer1.0.weight"])


def test_frozen_stages_get_no_gradient_and_keep_their_weights_and_statistics():
    bb = _tiny(seed=3)
    before = {k: v.clone() for k, v in bb.model.state_dict().items()}
    split = split_model(bb.model, "layer2", check_size=SIZE)
    frozen = {n for n, _ in bb.model.named_parameters() if n.split(".")[0] in ("stem", "layer1", "layer2")}
    from repcam.models.featcache import PartialModel
    from repcam.models.train import fit

    model = PartialModel(split, from_features=False)
    fit(model, _images(8), torch.tensor([0, 1] * 4), bb.preprocess, loss="ce", epochs=2, lr=1e-2, batch_size=4, seed=0,
        device=torch.device("cpu"))
    after = bb.model.state_dict()
    for n, p in bb.model.named_parameters():
        if n in frozen:
            assert p.grad is None and not p.requires_grad, n
    for k in before:
        frozen_key = k.split(".")[0] in ("stem", "layer1", "layer2")
        assert torch.equal(before[k], after[k]) == frozen_key, k  # BatchNorm statistics included
    model.train()
    assert not bb.model.layer1[1].training and bb.model.layer3[1].training


def test_cache_is_reused_and_rebuilt_when_its_key_changes(tmp_path):
    bb = _tiny()
    first = _build(tmp_path, bb)
    assert not first.reused and first.bytes == 2 * 6 * 32 * 8 * 8 * 4
    assert _build(tmp_path, bb).reused
    assert not _build(tmp_path, bb, ids=range(7)).reused  # other images
    assert not _build(tmp_path, bb, key={"data": "other"}).reused  # other data set
    assert not _build(tmp_path, _tiny(seed=5)).reused  # other backbone weights
    small = build_classifier("tiny_cnn", 2, weights=None, input_size=16)
    small.model.load_state_dict(_tiny().model.state_dict())
    fc = build_cache(tmp_path / "f.npy", split_model(small.model, "layer2", check_size=16), small.preprocess, list(range(6)),
                     lambda idx: torch.nn.functional.interpolate(_images(10)[list(idx)].float(), size=16).to(torch.uint8),
                     {"data": "other"})
    assert not fc.reused and fc.shape == (2, 6, 32, 4, 4)  # other input size
    assert not _build(tmp_path, bb, stage="layer1", key={"data": "other"}).reused  # other freeze point
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_cache_size_is_checked_against_free_disk_before_writing(tmp_path):
    with pytest.raises(FreezeError, match=r"needs 0 MiB .*6 images x 2 flips.* 1 MiB are free") as e:
        _build(tmp_path, _tiny(), free_bytes=lambda _: 2**20)
    assert "\n" not in str(e.value)
    assert list(tmp_path.glob("*.npy")) == []


KILLED_BUILD = textwrap.dedent("""
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    from test_featcache import _build, _images, _tiny
    from pathlib import Path
    imgs = _images(10)
    calls = []
    def images(idx):
        calls.append(1)
        if len(calls) == 3:  # mid-build: the probe, then one batch written
            os.kill(os.getpid(), signal.SIGKILL)
        return imgs[list(idx)]
    _build(Path({dir!r}), _tiny(), images=imgs, ids=range(10))  # a complete cache of other ids first
    from repcam.models.featcache import build_cache, split_model
    bb = _tiny()
    build_cache(Path({dir!r}) / "f.npy", split_model(bb.model, "layer2", check_size=32), bb.preprocess, list(range(6)),
                images, {{"data": "test"}}, batch_size=4)
""")


def test_a_killed_build_leaves_no_cache_and_the_next_build_cleans_up(tmp_path):
    script = KILLED_BUILD.format(tests=str(Path(__file__).parent), dir=str(tmp_path))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(list(tmp_path.glob(".f.npy.*.tmp"))) == 1  # the half-written file, never under the cache's name
    old = json.loads((tmp_path / "f.npy.meta.json").read_text()) if (tmp_path / "f.npy.meta.json").exists() else None
    assert old is None  # the earlier cache's sidecar was withdrawn before the new file was written
    fc = _build(tmp_path, _tiny())
    assert not fc.reused and list(tmp_path.glob(".f.npy.*.tmp")) == []
    assert _build(tmp_path, _tiny()).reused


@pytest.mark.parametrize("name,stage,msg", [
    ("tiny_cnn", "layer4", "freezes every stage of TinyCNN; choose one of: layer1, layer2, layer3"),
    ("tiny_cnn", "layer9", "'layer9' is not a stage of TinyCNN; choose one of: layer1, layer2, layer3"),
    ("resnet18", "blocks.2", "not a stage of ResNet; choose one of: layer1, layer2, layer3"),
    ("tf_efficientnet_lite0", "blocks.6", "freezes every stage of EfficientNet; choose one of: blocks.0, blocks.1, blocks.2, blocks.3, blocks.4, blocks.5"),
])
def test_bad_freeze_points_are_one_line_errors(name, stage, msg):
    model = build_classifier(name, 2, weights=None, input_size=SIZE).model
    with pytest.raises(FreezeError) as e:
        split_model(model, stage, check_size=SIZE)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_efficientnet_splits_into_trunk_and_rest_that_give_its_logits():
    bb = build_classifier("tf_efficientnet_lite0", 2, weights=None, input_size=SIZE)
    assert freeze_points(bb.model) == [f"blocks.{i}" for i in range(6)]
    split = split_model(bb.model, "blocks.2", check_size=SIZE)
    assert not any(p.requires_grad for p in bb.model.blocks[2].parameters())
    assert all(p.requires_grad for p in bb.model.blocks[3].parameters()) and bb.model.conv_head.weight.requires_grad
    x = torch.randn(2, 3, SIZE, SIZE)
    bb.model.eval()
    with torch.no_grad():
        assert torch.allclose(split.rest(split.trunk(x)), bb.model(x), atol=1e-5)


def test_a_unit_refuses_a_cache_of_another_trunk(tmp_path):
    imgs = _images(10)
    fc = _build(tmp_path, _tiny(seed=99), ids=range(10), images=imgs)  # not the pair models' starting trunk
    with pytest.raises(FreezeError, match="differs from the one the feature cache"):
        train_pair(_pair_spec(imgs[:0], "layer2", fc.rows(list(range(10)))))


def _frozen_run_config(**over):
    from tiny_run import frozen_tiny_config

    return frozen_tiny_config(**over)


def test_a_run_trains_pairs_on_one_shared_cache_and_reuses_it(frozen_run, tmp_path, monkeypatch):
    import shutil

    import repcam.pipeline.units as units_module
    from repcam.pipeline.run import Run
    from repcam.store.storage import read_json

    run_dir = shutil.copytree(frozen_run, tmp_path / "run")  # the shared session run (conftest.frozen_run), rerun below
    meta = read_json(run_dir / "features" / "layer2.npy.meta.json")
    mm = np.load(run_dir / "features" / "layer2.npy", mmap_mode="r")
    assert mm.shape == tuple(meta["shape"]) == (2, len(meta["ids"]), 32, 8, 8) and meta["bytes"] == mm.nbytes
    first = torch.load(run_dir / "multiclass" / "model.pt", weights_only=True)
    pairs = sorted((run_dir / "pairs").glob("*.pt"))
    assert len(pairs) >= 2
    for p in pairs:  # every pair model kept the multi-class trunk and trained the rest
        state = torch.load(p, weights_only=True)
        for k, v in state.items():
            if k.split(".")[0] in ("stem", "layer1", "layer2"):
                assert torch.equal(v, first[k]), (p.name, k)
        assert not torch.equal(state["layer3.0.weight"], first["layer3.0.weight"])
    assert any("pairs.freeze_until" in n for n in read_json(run_dir / "notes.json"))
    calls = []
    monkeypatch.setattr(units_module, "train_pair", lambda spec: calls.append(spec))
    stamp = (run_dir / "features" / "layer2.npy").stat().st_mtime_ns
    Run(_frozen_run_config(), run_dir, show_progress=False).run()
    assert calls == [] and (run_dir / "features" / "layer2.npy").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("over,match", [
    ({"pairs__freeze_until": "layer4"}, "pairs.freeze_until='layer4' freezes every stage of TinyCNN; choose one of: layer1, layer2, layer3"),
    ({"pairs__freeze_until": "blocks.2"}, "'blocks.2' is not a stage of TinyCNN"),
    ({"pairs__init": "pretrained"}, "would freeze a random trunk"),
])
def test_bad_freeze_settings_fail_before_any_training(tmp_path, over, match):
    from repcam.pipeline.run import Run, RunError

    with pytest.raises(RunError, match=match) as e:
        Run(_frozen_run_config(**over), tmp_path, show_progress=False).run()
    assert "\n" not in str(e.value) and not (tmp_path / "multiclass").exists()
