from pathlib import Path

import pytest
import torch
from PIL import Image

from repcam.backbones import Preprocess, WeightsError, build_classifier, gap_fc_parts


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
    with pytest.raises(WeightsError, match="never downloads.*weights=<path"):
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


def test_preprocess_scales_a_16_bit_image_instead_of_clipping_it_white():
    """Preprocess.to_uint8 (behind to_tensor, the README engine example) converts through repcam.data.images.to_rgb8."""
    import numpy as np
    from PIL import Image

    from repcam.backbones import build_classifier

    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 15).astype(np.uint16)  # 0 .. 61,425
    x = build_classifier("tiny_cnn", 3, weights=None, input_size=32).preprocess.to_uint8(Image.fromarray(ramp))
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    assert x.max() < 250 and len(torch.unique(x)) > 100  # Image.convert("RGB") gave 255 almost everywhere
