"""The CAM engine on hostile models (issue 26, items 3 and 8): a hooked output modified in place afterwards (VGG's
conv + ``ReLU(inplace=True)``, a wrapper's ``relu_()``) gives the map of the same model without the in-place op, and
every submodule's own ``training`` flag is as it was after a call (a frozen eval-mode backbone in a training wrapper)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from repcam.engine.cam import MultiLayerGradCAM, zhou_cam
from repcam.engine.layers import auto_layers
from repcam.engine.modes import eval_mode


def _vgg_like(inplace: bool) -> nn.Module:
    """A small VGG: conv + ReLU(inplace) blocks before max-pools (torchvision's vgg11 layout, 1000x fewer weights)."""
    torch.manual_seed(0)

    class VGG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=inplace), nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(inplace=inplace), nn.MaxPool2d(2),
                nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(inplace=inplace), nn.MaxPool2d(2),
            )
            self.classifier = nn.Linear(16, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.features(x).mean((2, 3)))

    return VGG().eval()


def _not_inplace(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return ref


@pytest.mark.parametrize("layers", [["features.3"], ["features.0", "features.3"], ["features.0", "features.3", "features.6"]])
@pytest.mark.parametrize("weighting", ["gradcam", "layercam"])
def test_a_conv_followed_by_an_inplace_relu_gives_the_non_inplace_map(layers, weighting):
    model = _vgg_like(inplace=True)
    x = torch.randn(2, 3, 32, 32)
    got = MultiLayerGradCAM(model, layers, weighting=weighting)(x, [1, 3])
    want = MultiLayerGradCAM(_not_inplace(model), layers, weighting=weighting)(x, [1, 3])
    torch.testing.assert_close(got.layer_maps, want.layer_maps)
    torch.testing.assert_close(got.logits, want.logits)
    assert auto_layers(model) == ["features.1", "features.4", "features.7"]  # the ReLUs themselves: in-place too
    got = MultiLayerGradCAM(model, "auto")(x, [1, 3])
    want = MultiLayerGradCAM(_not_inplace(model), "auto")(x, [1, 3])
    torch.testing.assert_close(got.fused, want.fused)


class _Wrapper(nn.Module):
    """Applies an in-place ReLU to the output of a hooked submodule (as hand-written models do)."""

    def __init__(self, inplace: bool) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.inplace = inplace
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stem(x)
        y = y.relu_() if self.inplace else y.relu()
        y = self.body(y)
        y = y.mul_(2).relu_() if self.inplace else y.mul(2).relu()
        return self.head(y.mean((2, 3)))


def test_a_wrapper_modifying_hooked_outputs_in_place_gives_the_non_inplace_map():
    model, ref = _Wrapper(True).eval(), _Wrapper(False).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 16, 16)
    for layers in (["stem"], ["body"], ["stem", "body"]):
        got = MultiLayerGradCAM(model, layers)(x, [0, 1, 2])
        want = MultiLayerGradCAM(ref, layers)(x, [0, 1, 2])
        torch.testing.assert_close(got.layer_maps, want.layer_maps)


class _Frozen(nn.Module):
    """A training wrapper (train mode) around a frozen backbone kept in eval mode: BatchNorm must stay in eval."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()))
        self.dropout = nn.Dropout(0.5)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.backbone(x).mean((2, 3))))


def _flags(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def test_every_submodules_mode_is_restored_not_just_the_roots():
    model = _Frozen().train()
    model.backbone.eval()
    before = _flags(model)
    stats = copy.deepcopy(model.backbone[1].state_dict())
    x = torch.randn(2, 3, 16, 16)
    MultiLayerGradCAM(model, ["backbone.0", "backbone.3"])(x, [0, 2])
    assert _flags(model) == before
    MultiLayerGradCAM(model, ["backbone.3"]).layer_maps(x, [0, 2], ["gradcam", "layercam"])
    assert _flags(model) == before
    zhou_cam(lambda t: model.backbone(t), model.fc, model, x, [0, 1])
    assert _flags(model) == before
    for k, v in stats.items():  # evaluated in eval mode: the BatchNorm statistics did not move
        torch.testing.assert_close(model.backbone[1].state_dict()[k], v)
    with pytest.raises(ValueError):  # an error inside the block restores the modes as well
        with eval_mode(model):
            assert not any(_flags(model).values())
            raise ValueError("boom")
    assert _flags(model) == before
