"""The paper's method as one object (repcam.representative): live maps and stored maps fuse the same way."""

import numpy as np
import torch

from repcam.cam import MultiLayerGradCAM
from repcam.fusion import fuse_classes
from repcam.representative import RepresentativeCAM, fuse_stored
from repcam.units import ModelSpec


def test_fuse_stored_is_fuse_classes_in_float32():
    rng = np.random.default_rng(0)
    maps = [rng.random((6, 5)).astype(np.float16) for _ in range(3)]
    for mode in ("mean", "max", "geomean"):
        want = fuse_classes(torch.from_numpy(np.stack(maps).astype(np.float32)), mode).numpy()
        got = fuse_stored(maps, mode)
        assert got.dtype == np.float32 and np.array_equal(got, want)
        assert np.array_equal(fuse_stored(np.stack(maps), mode), want)  # a stacked array is the same input


def test_representative_cam_fuses_the_pair_maps_and_skips_missing_pairs():
    torch.manual_seed(0)
    models = {("a", "b"): ModelSpec("tiny_cnn", 2, None, 32).build(pretrained=False).model.eval(),
              ("a", "c"): ModelSpec("tiny_cnn", 2, None, 32).build(pretrained=False).model.eval()}

    def pair_for(c, s):
        key = tuple(sorted((c, s)))
        return (models[key], 0 if c == key[0] else 1) if key in models else None

    x = torch.rand(1, 3, 32, 32)
    out = RepresentativeCAM(pair_for, {"a": ["b", "c", "d"]})(x, "a")
    assert list(out.maps) == ["b", "c"]  # no pair model for (a, d): left out of F
    for s, key in (("b", ("a", "b")), ("c", ("a", "c"))):
        assert torch.equal(out.maps[s], MultiLayerGradCAM(models[key], "auto")(x, [0]).fused[0])
    assert torch.equal(out.fused, fuse_classes(torch.stack([out.maps["b"], out.maps["c"]]), "mean"))
    assert RepresentativeCAM(pair_for, {"a": ["d"]})(x, "a").fused is None
