"""Map extraction computes nothing twice: one forward and backward per batch serves Grad-CAM (last, A, mean) and
LayerCAM, with the same maps as one pass per method."""

import numpy as np
import torch

from repcam.engine.cam import MultiLayerGradCAM, zhou_cam
from repcam.engine.fusion import fuse_layers
from repcam.models.backbones import Preprocess, gap_fc_parts
from repcam.models.tinycnn import TinyCNN
from repcam.pipeline.maps import MapRecords, extract, shrink_maps
from repcam.pipeline.units import StackedImages

KINDS = ["last", "fused", "mean", "layercam", "cam"]


def one_pass_per_method(model, x, targets, size) -> dict[str, np.ndarray]:
    """The reference: each method its own CAM object and its own pass (as extraction did before)."""
    res = MultiLayerGradCAM(model, "auto")(x, targets)
    lc = MultiLayerGradCAM(model, "auto", fusion="mean", weighting="layercam")(x, targets)
    feats, fc = gap_fc_parts(model)
    return {"last": shrink_maps(res.last, size), "fused": shrink_maps(res.fused, size),
            "mean": shrink_maps(fuse_layers(res.layer_maps, "mean"), size), "layercam": shrink_maps(lc.fused, size),
            "cam": shrink_maps(zhou_cam(feats, fc, model, x, targets), size)}


def test_extract_runs_one_gradient_pass_for_gradcam_and_layercam_with_the_same_maps():
    torch.manual_seed(0)
    model = TinyCNN(num_classes=3).eval()
    images = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    cache = StackedImages(range(5), images)
    pre = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    jobs = [(i, c, c) for i in range(5) for c in range(3) if (i + c) % 2]
    forwards = []
    handle = model.register_forward_hook(lambda m, i, o: forwards.append(torch.is_grad_enabled()))
    try:
        got: MapRecords = extract(model, cache, pre, jobs, torch.device("cpu"), 16, 4, KINDS)
    finally:
        handle.remove()
    batches = -(-len(jobs) // 4)
    assert forwards.count(True) == batches  # one gradient pass a batch, whatever the kinds (was two with LayerCAM)
    for b in range(batches):
        chunk = jobs[4 * b : 4 * b + 4]
        x = pre.normalize(images[[j[0] for j in chunk]])
        want = one_pass_per_method(model, x, [j[2] for j in chunk], 16)
        for k in KINDS:
            np.testing.assert_array_equal(got[k][4 * b : 4 * b + len(chunk)], want[k], err_msg=k)


def test_target_sets_share_one_forward_and_give_each_sets_own_maps_exactly():
    """A run's multi-class maps and its contrast maps per selection come from one forward pass per batch
    (extract_sets): each set's stored maps equal those of its own extract call bit for bit."""
    import pytest

    from repcam.engine.cam import ContrastTarget
    from repcam.pipeline.maps import MapSet, extract_sets

    torch.manual_seed(1)
    model = TinyCNN(num_classes=4).eval()
    images = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)
    cache = StackedImages(range(6), images)
    pre = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    cpu = torch.device("cpu")
    jobs = [(i, c, c) for i in range(6) for c in range(4) if (i + c) % 3]
    sets = {"mc": (KINDS, [j[2] for j in jobs]),
            "a": (["last", "fused"], [ContrastTarget(c, (0, 3) if c else (1,)) for _, c, _ in jobs]),
            "b": (["last", "fused"], [ContrastTarget(c, ((c + 1) % 4,), 0.5) for _, c, _ in jobs])}
    got: dict[str, dict[str, list]] = {n: {k: [] for k in kinds} for n, (kinds, _) in sets.items()}
    forwards = []
    handle = model.register_forward_hook(lambda m, i, o: forwards.append(torch.is_grad_enabled()))
    try:
        extract_sets(model, cache, pre, jobs, [MapSet(kinds, t, lambda k, m, n=n: got[n][k].append(m)) for n, (kinds, t) in sets.items()],
                     cpu, 16, 5)
    finally:
        handle.remove()
    assert forwards.count(True) == -(-len(jobs) // 5)  # one gradient pass a batch for all three sets
    for n, (kinds, targets) in sets.items():
        alone = extract(model, cache, pre, [(i, c, t) for (i, c, _), t in zip(jobs, targets)], cpu, 16, 5, kinds)
        for k in kinds:
            np.testing.assert_array_equal(np.concatenate(got[n][k]), alone[k], err_msg=f"{n} {k}")
    with pytest.raises(ValueError, match="one target per job"):
        extract_sets(model, cache, pre, jobs, [MapSet(["last"], [0], lambda k, m: None)], cpu, 16, 5)


def test_layer_maps_sets_match_one_call_per_set_and_check_every_set():
    import pytest

    from repcam.engine.cam import CAMError, ContrastTarget

    torch.manual_seed(2)
    model = TinyCNN(num_classes=5).eval()
    x = torch.randn(3, 3, 32, 32)
    cam = MultiLayerGradCAM(model, "auto")
    target_sets = [[0, 4, 2], None, [ContrastTarget(1, (2, 3))] * 3]
    per_set, logits = cam.layer_maps_sets(x, target_sets, ["gradcam", "layercam"])
    for targets, maps in zip(target_sets, per_set):
        alone, alone_logits = cam.layer_maps(x, targets, ["gradcam", "layercam"])
        for w in ("gradcam", "layercam"):
            assert torch.equal(maps[w], alone[w]), w
        assert torch.equal(logits, alone_logits)
    with pytest.raises(CAMError, match="no target sets"):
        cam.layer_maps_sets(x, [], ["gradcam"])
    with pytest.raises(CAMError, match="target 7 for image 0"):
        cam.layer_maps_sets(x, [[0, 1, 2], [7, 0, 0]], ["gradcam"])


def test_sets_with_equal_targets_share_one_backward_and_each_gets_the_maps(monkeypatch):
    """Two selections that chose the same representatives (Rank-a and Rank-b after scaling, S-3 and S-4 on VOC) give
    equal contrast targets: one backward serves both, and each set's maps are still those of its own call."""
    from repcam.engine.cam import ContrastTarget
    from repcam.pipeline.maps import MapSet, extract_sets

    torch.manual_seed(2)
    model = TinyCNN(num_classes=4).eval()
    images = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8)
    cache, pre, cpu = StackedImages(range(5), images), Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)), torch.device("cpu")
    jobs = [(i, c, c) for i in range(5) for c in range(4) if (i + c) % 2]
    same = [ContrastTarget(c, ((c + 1) % 4, (c + 2) % 4)) for _, c, _ in jobs]
    sets = {"mc": [j[2] for j in jobs], "a": same, "other": [ContrastTarget(c, ((c + 3) % 4,)) for _, c, _ in jobs],
            "b": list(same), "mc2": [j[2] for j in jobs]}
    got = {n: [] for n in sets}
    calls = []
    real = MultiLayerGradCAM.layer_maps_sets
    monkeypatch.setattr(MultiLayerGradCAM, "layer_maps_sets", lambda self, x, ts, w: (calls.append(len(ts)), real(self, x, ts, w))[1])
    extract_sets(model, cache, pre, jobs, [MapSet(["fused"], t, lambda k, m, n=n: got[n].append(m)) for n, t in sets.items()], cpu, 16, 4)
    assert calls == [3] * -(-len(jobs) // 4)  # three distinct target lists of five sets: three backwards a batch
    monkeypatch.setattr(MultiLayerGradCAM, "layer_maps_sets", real)
    for n, targets in sets.items():
        alone = extract(model, cache, pre, [(i, c, t) for (i, c, _), t in zip(jobs, targets)], cpu, 16, 4, ["fused"])
        np.testing.assert_array_equal(np.concatenate(got[n]), alone["fused"], err_msg=n)
