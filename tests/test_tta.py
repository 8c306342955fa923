"""Test-time augmentation (repcam.engine.tta): flip equivariance, the single view is the plain map, the pipeline's use."""

import numpy as np
import pytest
import torch

from repcam.engine.cam import MultiLayerGradCAM
from repcam.engine.tta import TTA, parse_tta
from repcam.models.backbones import Preprocess
from repcam.models.tinycnn import TinyCNN
from repcam.pipeline.maps import extract


def _model():
    torch.manual_seed(0)
    return TinyCNN(3).eval()


def _layercam(model):
    cam = MultiLayerGradCAM(model, "auto", fusion="mean", weighting="layercam")
    return lambda x, t: cam(x, t).fused


def test_flip_equivariance_and_symmetric_input_gives_a_symmetric_map():
    model = _model()
    fn = _layercam(model)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 48, 48)
    tta = TTA()
    a = tta(fn, x, [0, 2])
    b = tta(fn, x.flip(-1), [0, 2])
    assert torch.allclose(b, a.flip(-1), atol=1e-5)
    sym = torch.cat([x[..., :24], x[..., :24].flip(-1)], -1)  # a mirror-symmetric image
    m = tta(fn, sym, [0, 2])
    assert torch.allclose(m, m.flip(-1), atol=1e-5)
    assert not torch.allclose(fn(x, [0, 2]), fn(x, [0, 2]).flip(-1), atol=1e-3)  # the plain map of x is not symmetric
    assert float(m.amax()) == pytest.approx(1.0) and float(m.amin()) >= 0.0
    assert not torch.allclose(a, fn(x, [0, 2]), atol=1e-3)  # the augmentation changes the map


def test_one_scale_without_flip_is_the_plain_map_exactly_through_extract():
    model = _model()

    class Cache:  # the two methods extract uses
        def __init__(self):
            g = torch.Generator().manual_seed(2)
            self.images = torch.randint(0, 256, (4, 3, 40, 40), generator=g, dtype=torch.uint8)

        def stack(self, ids):
            return self.images[list(ids)]

    pre = Preprocess(40, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    jobs = [(0, 0, 0), (1, 1, 1), (2, 2, 2), (3, 0, 0)]
    kinds = ["last", "fused", "layercam", "cam"]
    plain = extract(model, Cache(), pre, jobs, torch.device("cpu"), 20, 3, kinds)
    single = extract(model, Cache(), pre, jobs, torch.device("cpu"), 20, 3, kinds, tta=TTA(scales=(1.0,), flip=False))
    full = extract(model, Cache(), pre, jobs, torch.device("cpu"), 20, 3, kinds, tta=TTA())
    for k in kinds:
        assert np.array_equal(plain[k], single[k]), k
        assert not np.array_equal(plain[k], full[k]), k
        assert full[k].shape == plain[k].shape and np.nanmax(full[k]) <= 1.0


def test_parse_tta_and_bad_scales():
    assert parse_tta(True) == TTA() and parse_tta(False) is None
    with pytest.raises(ValueError, match="scales"):
        TTA(scales=(1.0, 0.0))
    with pytest.raises(ValueError, match="tta must be"):
        parse_tta("yes")
