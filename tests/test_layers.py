import pytest
import timm
import torch
import torchvision

from repcam.engine.layers import LayerError, TokenGrid, auto_layers, auto_reshape, resolve_layers
from repcam.models.tinycnn import TinyCNN


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"])
def test_torchvision_resnets_use_four_stages(arch):
    assert auto_layers(getattr(torchvision.models, arch)(weights=None)) == ["layer1", "layer2", "layer3", "layer4"]


@pytest.mark.parametrize(
    "arch,expected",
    [
        ("vgg16", ["features.3", "features.8", "features.15", "features.22", "features.29"]),
        ("vgg19", ["features.3", "features.8", "features.17", "features.26", "features.35"]),
        ("vgg16_bn", ["features.5", "features.12", "features.22", "features.32", "features.42"]),
        ("vgg19_bn", ["features.5", "features.12", "features.25", "features.38", "features.51"]),
    ],
)
def test_vgg_uses_the_activation_before_each_maxpool(arch, expected):
    model = getattr(torchvision.models, arch)(weights=None)
    names = auto_layers(model)
    assert names == expected
    named = dict(model.named_modules())
    for n in names:  # the module right after each chosen one is a max-pool
        idx = int(n.split(".")[1])
        assert type(named[f"features.{idx + 1}"]).__name__ == "MaxPool2d"


@pytest.mark.parametrize("arch", ["mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"])
def test_torchvision_mobilenets_take_last_block_per_resolution(arch):
    names = auto_layers(getattr(torchvision.models, arch)(weights=None))
    assert len(names) == 5  # strides 2, 4, 8, 16, 32
    assert all(n.startswith("features.") for n in names)
    assert [int(n.split(".")[1]) for n in names] == sorted(int(n.split(".")[1]) for n in names)


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite0", "mobilenetv2_100", "resnet18", "convnext_atto"])
def test_timm_models_use_feature_info(arch):
    model = timm.create_model(arch)
    names = auto_layers(model)
    reductions = {i["module"]: i["reduction"] for i in model.feature_info}
    assert names and all(n in reductions for n in names)
    assert [reductions[n] for n in names] == sorted({reductions[n] for n in names})


def test_unsupported_transformer_gets_a_clear_error():
    # torchvision's ViT: no timm token layout to rely on, so "auto" refuses and names what to pass.
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=16, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8)
    with pytest.raises(LayerError, match="pass the layers explicitly.*reshape_transform="):
        auto_layers(vit)
    assert auto_reshape(vit) is None


@pytest.mark.parametrize(
    "arch,depth,expected",
    [
        ("vit_tiny_patch16_224", 12, ["blocks.2.norm1", "blocks.5.norm1", "blocks.8.norm1", "blocks.11.norm1"]),
        ("deit_tiny_distilled_patch16_224", 12, ["blocks.2.norm1", "blocks.5.norm1", "blocks.8.norm1", "blocks.11.norm1"]),
        ("vit_tiny_patch16_224", 3, ["blocks.0.norm1", "blocks.1.norm1", "blocks.2.norm1"]),
        ("vit_tiny_patch16_224", 6, ["blocks.0.norm1", "blocks.2.norm1", "blocks.3.norm1", "blocks.5.norm1"]),
    ],
)
def test_vit_auto_layers_are_evenly_spaced_blocks_ending_at_the_last(arch, depth, expected):
    assert auto_layers(timm.create_model(arch, img_size=32, depth=depth)) == expected


@pytest.mark.parametrize("arch,prefix", [("vit_tiny_patch16_224", 1), ("deit_tiny_distilled_patch16_224", 2)])
def test_token_grid_drops_the_prefix_tokens(arch, prefix):
    model = timm.create_model(arch, img_size=48, depth=1)
    reshape = auto_reshape(model)
    assert reshape == TokenGrid(prefix, (3, 3))
    tokens = torch.randn(2, prefix + 9, 5)
    grid = reshape(tokens)
    assert grid.shape == (2, 5, 3, 3)
    assert torch.equal(grid[1, :, 2, 0], tokens[1, prefix + 6])  # row 2, column 0 = patch 6 in row-major order
    conv_map = torch.randn(2, 5, 3, 3)
    assert reshape(conv_map) is conv_map  # 4-D maps (the patch embedding) pass unchanged
    with pytest.raises(LayerError, match=f"12 tokens minus {prefix} prefix tokens do not fill the 3x3 patch grid"):
        reshape(torch.randn(1, 12, 5))
    assert reshape(torch.randn(1, prefix + 16, 5)).shape == (1, 5, 4, 4)  # another input size: a square grid


def test_swin_auto_layers_are_its_stages_and_reshape_is_nhwc_to_nchw():
    model = timm.create_model("swin_tiny_patch4_window7_224", img_size=64, window_size=2)
    assert auto_layers(model) == ["layers.0", "layers.1", "layers.2", "layers.3"]
    t = torch.randn(2, 4, 5, 7)
    assert torch.equal(auto_reshape(model)(t), t.permute(0, 3, 1, 2))
    assert auto_reshape(TinyCNN(3)) is None


def test_resolve_by_name_module_and_bad_name():
    m = TinyCNN(3)
    assert [n for n, _ in resolve_layers(m, ["layer2", m.layer4])] == ["layer2", "layer4"]
    with pytest.raises(LayerError, match="no layer named 'layer9'.*layer1"):
        resolve_layers(m, ["layer9"])
    with pytest.raises(LayerError, match="not part of the model"):
        resolve_layers(m, [TinyCNN(3).layer1])
