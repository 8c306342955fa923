import pytest
import torch

from repcam.engine.fusion import fuse_classes, fuse_layers, layercam_fusion, normalize_maps


def test_normalize_maps_min_max_per_map_and_zero_stays_zero():
    maps = torch.stack([torch.tensor([[1.0, 3.0], [2.0, 5.0]]), torch.zeros(2, 2), torch.full((2, 2), 7.0)])
    out = normalize_maps(maps)
    assert torch.allclose(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(out[1], torch.zeros(2, 2))
    assert torch.equal(out[2], torch.zeros(2, 2))  # constant map: no NaN, no signal
    assert not torch.isnan(out).any()


def test_fuse_layers_paper_is_sum_times_last_renormalised():
    a = torch.tensor([[0.0, 1.0], [0.5, 0.2]])
    b = torch.tensor([[1.0, 0.0], [0.5, 0.8]])
    fused = fuse_layers(torch.stack([a, b])[None], "paper")[0]
    raw = (a + b) * b
    assert torch.allclose(fused, (raw - raw.min()) / (raw.max() - raw.min()))


def test_fuse_layers_mean_and_errors():
    maps = torch.rand(2, 3, 4, 4)
    assert torch.allclose(fuse_layers(maps, "mean"), normalize_maps(maps.mean(1)))
    with pytest.raises(ValueError, match="unknown layer fusion"):
        fuse_layers(maps, "median")
    with pytest.raises(ValueError, match=r"\(B, L, H, W\)"):
        fuse_layers(maps[0], "paper")


def test_fuse_classes_modes():
    maps = torch.tensor([[[0.0, 1.0]], [[1.0, 1.0]]])
    assert torch.allclose(fuse_classes(maps, "mean"), torch.tensor([[0.0, 1.0]]))
    assert torch.allclose(fuse_classes(maps, "max"), torch.tensor([[0.0, 0.0]]))  # constant -> zero
    geo = fuse_classes(torch.tensor([[[0.25, 1.0, 0.5]], [[1.0, 1.0, 0.5]]]), "geomean")
    assert torch.allclose(geo, torch.tensor([[0.0, 1.0, 0.0]]), atol=1e-5)


def test_fuse_layers_layercam_scales_shallow_maps_by_tanh_and_takes_the_max():
    shallow = torch.tensor([[0.0, 0.2], [0.5, 1.0]])
    deep = torch.tensor([[1.0, 0.9], [0.0, 0.3]])
    fused = fuse_layers(torch.stack([shallow, deep])[None], "layercam")[0]
    raw = torch.maximum(torch.tanh(2 * shallow), deep)  # LayerCAM Eq. 9 with gamma = 2 (max = 1), then max
    assert torch.allclose(fused, (raw - raw.min()) / (raw.max() - raw.min()))
    # The deepest map is not scaled: with a single layer the fusion is that map.
    assert torch.allclose(fuse_layers(deep[None, None], "layercam")[0], normalize_maps(deep))
    # tanh lifts weak shallow evidence (0.2 -> 0.38): not the mean of the layers.
    assert not torch.allclose(fused, fuse_layers(torch.stack([shallow, deep])[None], "mean")[0])


def test_fuse_layers_layercam_divides_by_each_shallow_maps_max_and_keeps_zero_maps_zero():
    a = torch.tensor([[0.0, 0.25], [0.5, 0.1]])  # max 0.5, as a map that was not min-max normalised
    deep = torch.zeros(2, 2)
    out = layercam_fusion(torch.stack([a, torch.zeros(2, 2), deep])[None])[0]
    assert torch.allclose(out, torch.tanh(2 * a / 0.5))
    assert torch.equal(fuse_layers(torch.zeros(1, 3, 2, 2), "layercam"), torch.zeros(1, 2, 2))
