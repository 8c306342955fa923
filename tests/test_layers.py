import pytest
import timm
import torchvision

from repcam.layers import LayerError, auto_layers, resolve_layers
from repcam.tinycnn import TinyCNN


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


def test_vit_gets_a_clear_error():
    with pytest.raises(LayerError, match="pass the layers explicitly"):
        auto_layers(timm.create_model("vit_tiny_patch16_224"))


def test_resolve_by_name_module_and_bad_name():
    m = TinyCNN(3)
    assert [n for n, _ in resolve_layers(m, ["layer2", m.layer4])] == ["layer2", "layer4"]
    with pytest.raises(LayerError, match="no layer named 'layer9'.*layer1"):
        resolve_layers(m, ["layer9"])
    with pytest.raises(LayerError, match="not part of the model"):
        resolve_layers(m, [TinyCNN(3).layer1])
