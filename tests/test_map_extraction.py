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
