"""The CAM engine: parity with pytorch-grad-cam, the paper's fusion, cost and hygiene."""

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from repcam.engine.cam import CAMError, ContrastTarget, MultiLayerGradCAM, zhou_cam
from repcam.engine.fusion import normalize_maps
from repcam.engine.layers import LayerError, auto_layers
from repcam.models.backbones import build_classifier, gap_fc_parts
from repcam.models.tinycnn import TinyCNN

TARGETS = [1, 4, 7]


def _peer(model, layer, x, targets):
    return GradCAM(model=model, target_layers=[layer])(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])


def _check_parity(model, x):
    names = auto_layers(model)
    result = MultiLayerGradCAM(model, names)(x, TARGETS)
    named = dict(model.named_modules())
    for li, name in enumerate(names):
        single = MultiLayerGradCAM(model, [name])(x, TARGETS)
        ref = _peer(model, named[name], x, TARGETS)
        assert np.abs(single.last.numpy() - ref).max() <= 1e-4, name
        assert np.abs(result.layer_maps[:, li].numpy() - ref).max() <= 1e-4, name


@pytest.mark.parametrize("arch", ["resnet18", "tf_efficientnet_lite0"])
def test_parity_with_pytorch_grad_cam_random_weights(arch):
    torch.manual_seed(0)
    model = timm.create_model(arch, num_classes=10).eval()
    _check_parity(model, torch.randn(3, 3, 96, 96))


def test_parity_with_pytorch_grad_cam_pretrained_lite0():
    from PIL import Image
    from skimage import data

    bb = build_classifier("tf_efficientnet_lite0", 1000, weights="imagenet")
    x = torch.stack([bb.preprocess.to_tensor(Image.fromarray(getattr(data, n)())) for n in ("chelsea", "coffee", "astronaut")])
    _check_parity(bb.model.eval(), x)


def test_fused_map_is_the_papers_fusion_of_the_layer_maps():
    # A random net may give an all-zero map at some layer; use the first seed where every layer has signal.
    for seed in range(50):
        torch.manual_seed(seed)
        model = TinyCNN(5).eval()
        r = MultiLayerGradCAM(model)(torch.randn(2, 3, 64, 64), [0, 3])
        if (r.layer_maps.flatten(2).amax(-1) == 1).all():
            break
    else:
        pytest.fail("no seed gave signal at every layer")
    assert r.layer_names == ["layer1", "layer2", "layer3", "layer4"]
    assert r.layer_maps.shape == (2, 4, 64, 64) and r.fused.shape == (2, 64, 64)
    for b in range(2):
        maps = r.layer_maps[b]
        raw = maps.sum(0) * maps[-1]
        expected = (raw - raw.min()) / (raw.max() - raw.min())
        assert torch.allclose(r.fused[b], expected, atol=1e-6)
    assert r.layer_maps.min() >= 0 and r.layer_maps.max() <= 1


def test_batch_with_different_targets_equals_one_image_at_a_time():
    torch.manual_seed(2)
    model = TinyCNN(5).eval()
    x = torch.randn(3, 3, 32, 32)
    targets = [4, 0, lambda logits: logits[2] - logits[1]]
    cam = MultiLayerGradCAM(model)
    batch = cam(x, targets)
    for i in range(3):
        one = cam(x[i : i + 1], [targets[i]])
        assert torch.allclose(batch.fused[i], one.fused[0], atol=1e-5)
        assert torch.allclose(batch.layer_maps[i], one.layer_maps[0], atol=1e-5)


def test_no_parameter_gradients_and_flags_and_mode_restored():
    model = TinyCNN(5)
    model.train()
    model.layer1[0].weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    MultiLayerGradCAM(model)(torch.randn(2, 3, 32, 32), 1)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not model._forward_hooks and all(not m._forward_hooks for m in model.modules())


def test_one_forward_and_backward_stops_at_the_lowest_hooked_layer():
    model = TinyCNN(5).eval()
    calls = {"forward": 0, "stem_backward": 0}
    model.register_forward_hook(lambda *a: calls.__setitem__("forward", calls["forward"] + 1))
    model.stem[0].register_full_backward_hook(lambda *a: calls.__setitem__("stem_backward", calls["stem_backward"] + 1))
    MultiLayerGradCAM(model, ["layer2", "layer4"])(torch.randn(4, 3, 32, 32), [0, 1, 2, 3])
    assert calls == {"forward": 1, "stem_backward": 0}


def test_hooks_removed_and_state_restored_after_an_exception():
    model = TinyCNN(5)
    model.train()
    cam = MultiLayerGradCAM(model)

    def bad_target(logits):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        cam(torch.randn(1, 3, 32, 32), [bad_target])
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert all(not m._forward_hooks for m in model.modules())


def test_no_state_leaks_between_calls():
    torch.manual_seed(3)
    model = TinyCNN(5).eval()
    cam = MultiLayerGradCAM(model)
    x = torch.randn(2, 3, 32, 32)
    first = cam(x, [1, 2]).fused.clone()
    cam(torch.randn(3, 3, 32, 32), [0, 0, 0])
    assert torch.equal(cam(x, [1, 2]).fused, first)


def test_all_zero_map_stays_zero():
    model = TinyCNN(3).eval()
    r = MultiLayerGradCAM(model)(torch.randn(1, 3, 32, 32), [lambda logits: logits.sum() * 0])
    assert torch.equal(r.fused, torch.zeros_like(r.fused))
    assert not torch.isnan(r.layer_maps).any()


@pytest.mark.parametrize(
    "x,targets,match",
    [
        (torch.randn(3, 32, 32), 0, r"\(B, C, H, W\) batch"),
        (torch.randn(1, 1, 32, 32), 0, "1 channels but the model's first convolution expects 3"),
        (torch.randn(2, 3, 32, 32), [0, 9], r"target 9 for image 1 is not a class index in \[0, 4\]"),
        (torch.randn(2, 3, 32, 32), [0], "got 1 targets for a batch of 2"),
    ],
)
def test_bad_input_gives_clear_errors(x, targets, match):
    with pytest.raises(CAMError, match=match):
        MultiLayerGradCAM(TinyCNN(5))(x, targets)


def test_unknown_layer_lists_valid_names_and_unused_layer_is_reported():
    with pytest.raises(LayerError, match="valid names include"):
        MultiLayerGradCAM(TinyCNN(5), ["layer7"])
    model = TinyCNN(5)
    model.unused = torch.nn.Conv2d(3, 3, 1)
    with pytest.raises(LayerError, match="not executed"):
        MultiLayerGradCAM(model, ["layer4", "unused"])(torch.randn(1, 3, 32, 32), 0)


def test_layercam_weighting_differs_and_is_normalised():
    torch.manual_seed(4)
    model = TinyCNN(5).eval()
    x = torch.randn(1, 3, 32, 32)
    a = MultiLayerGradCAM(model, weighting="gradcam")(x, 2)
    b = MultiLayerGradCAM(model, weighting="layercam")(x, 2)
    assert b.fused.max() == pytest.approx(1.0) and not torch.allclose(a.fused, b.fused)


def test_zhou_cam_equals_fc_weighted_features():
    torch.manual_seed(5)
    model = TinyCNN(4).eval()
    features, fc = gap_fc_parts(model)
    x = torch.randn(2, 3, 32, 32)
    cams = zhou_cam(features, fc, model, x, [1, 3])
    feats = model.forward_features(x)
    raw = torch.einsum("chw,c->hw", feats[0], fc.weight[1]).clamp_min(0)
    up = torch.nn.functional.interpolate(raw[None, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(cams[0], normalize_maps(up), atol=1e-6)
    with pytest.raises(CAMError, match="class index"):
        zhou_cam(features, fc, model, x, [1, 4])


def test_contrast_target_is_the_gradcam_of_the_logit_difference():
    torch.manual_seed(0)
    model = TinyCNN(num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    cam = MultiLayerGradCAM(model, "auto")
    t = ContrastTarget(1, (2, 4), gamma=0.5)
    logits = model(x)
    assert torch.allclose(t(logits[0]), logits[0, 1] - 0.5 * (logits[0, 2] + logits[0, 4]) / 2)
    by_hand = cam(x, [lambda z: z[1] - 0.5 * z[[2, 4]].mean()] * 2)
    torch.testing.assert_close(cam(x, [t, t]).layer_maps, by_hand.layer_maps)
    # gamma = 0 or no references: plain Grad-CAM of the class; a contrast changes the map.
    torch.testing.assert_close(cam(x, [ContrastTarget(1, (2,), 0.0)] * 2).fused, cam(x, [1, 1]).fused)
    torch.testing.assert_close(cam(x, [ContrastTarget(1, ())] * 2).fused, cam(x, [1, 1]).fused)
    assert not torch.allclose(cam(x, [t, t]).fused, cam(x, [1, 1]).fused)


@pytest.mark.parametrize("arch", ["resnet18", "tf_efficientnet_lite0"])
def test_mixed_precision_maps_stay_close_to_float32(arch):
    """amp=True (bfloat16 on CPU) changes maps by a mean absolute 0.002-0.014 here (docs/scale.md states the tolerance)."""
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=5).eval()
    x = torch.randn(2, 3, 128, 128)
    full = MultiLayerGradCAM(model, "auto")(x, [1, 3])
    half = MultiLayerGradCAM(model, "auto", amp=True)(x, [1, 3])
    assert half.fused.dtype == torch.float32 and half.logits.dtype == torch.float32
    assert (full.fused - half.fused).abs().mean() < 0.03
    assert (full.last - half.last).abs().mean() < 0.03
    assert not torch.equal(full.fused, half.fused)  # the option does change the arithmetic


# --------------------------------------------------------------------------------------------- transformers


def _vit_reshape(t, h=6, w=6):
    """pytorch-grad-cam's ViT tutorial reshape (class token dropped, 6x6 grid at 96 px), written independently."""
    return t[:, 1:, :].reshape(t.size(0), h, w, t.size(2)).transpose(2, 3).transpose(1, 2)


@pytest.mark.parametrize(
    "arch,kwargs,size,peer_reshape,expected_layers",
    [
        ("vit_tiny_patch16_224", {"img_size": 96}, 96, _vit_reshape, ["blocks.2.norm1", "blocks.5.norm1", "blocks.8.norm1", "blocks.11.norm1"]),
        ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 2}, 64, lambda t: t.permute(0, 3, 1, 2), ["layers.0", "layers.1", "layers.2", "layers.3"]),
    ],
)
def test_transformer_auto_layers_and_reshape_match_pytorch_grad_cam(arch, kwargs, size, peer_reshape, expected_layers):
    """float64, and the random head re-drawn with std 1 (timm draws it with std 0.02 or zero): otherwise a random
    Swin's deepest HiResCAM map is a channel sum of +-1e-6 terms, at float32 rounding and at pytorch-grad-cam's
    1e-7 normalisation epsilon, and the comparison measures rounding instead of the definitions."""
    from test_weightings import peer_maps

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=10, **kwargs).eval().double()
    torch.nn.init.normal_(model.get_classifier().weight, std=1.0)
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    assert auto_layers(model) == expected_layers
    named = dict(model.named_modules())
    for method in ("gradcam", "layercam", "gradcampp", "xgradcam", "hirescam"):
        result = MultiLayerGradCAM(model, "auto", weighting=method)(x, [1, 7])  # reshape_transform="auto"
        assert result.layer_names == expected_layers and result.fused.shape == (2, size, size)
        refs = peer_maps(method, model, [named[n] for n in expected_layers], x, [1, 7], reshape=peer_reshape)
        for li, (name, ref) in enumerate(zip(expected_layers, refs)):
            ours = result.layer_maps[:, li].numpy()
            assert ours.max() == pytest.approx(1.0)
            assert np.abs(ours - ref).max() <= 1e-4, (method, name)


def test_transformer_layer_without_reshape_is_a_clear_error():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=3).eval()
    with pytest.raises(LayerError, match=r"outputs \(1, 5, 192\); Grad-CAM needs a \(B, C, H, W\) feature map: pass reshape_transform="):
        MultiLayerGradCAM(model, ["blocks.0.norm1"], reshape_transform=None)(torch.randn(1, 3, 32, 32), 0)
    with pytest.raises(CAMError, match="reshape_transform must be 'auto', None or a callable"):
        MultiLayerGradCAM(model, ["blocks.0.norm1"], reshape_transform="vit")


# --------------------------------------------------------------------------------------------- outputs that are not logits


class _Wrapped(torch.nn.Module):
    """A model whose output is not a logits tensor (as Hugging Face's or a multi-head model's)."""

    def __init__(self, inner, kind):
        super().__init__()
        self.inner, self.kind = inner, kind

    def forward(self, x):
        z = self.inner(x)
        if self.kind == "dict":
            return {"logits": z, "aux": z.detach()}
        if self.kind == "tuple":
            return (z, x.mean())

        class Out:
            logits = z

        return Out()


@pytest.mark.parametrize(
    "kind,output_fn,type_name",
    [("dict", lambda o: o["logits"], "dict"), ("tuple", lambda o: o[0], "tuple"), ("object", lambda o: o.logits, "Out")],
)
def test_output_fn_picks_the_logits_and_its_absence_is_a_clear_error(kind, output_fn, type_name):
    torch.manual_seed(6)
    inner = TinyCNN(5).eval()
    model = _Wrapped(inner, kind)
    x = torch.randn(2, 3, 32, 32)
    layers = ["inner.layer2", "inner.layer4"]
    with pytest.raises(CAMError, match=f"the model returned a {type_name}, not a logits tensor; pass output_fn="):
        MultiLayerGradCAM(model, layers)(x, [0, 1])
    got = MultiLayerGradCAM(model, layers, output_fn=output_fn)(x, [0, 1])
    plain = MultiLayerGradCAM(inner, ["layer2", "layer4"])(x, [0, 1])
    torch.testing.assert_close(got.layer_maps, plain.layer_maps)
    torch.testing.assert_close(got.logits, plain.logits)


# --------------------------------------------------------------------------------------------- hostile inputs (issue 13)


def _nan_model():
    model = TinyCNN(5).eval()
    with torch.no_grad():
        model.layer4[0].weight[0, 0, 0, 0] = float("nan")
    return model


@pytest.mark.parametrize(
    "x,targets,match",
    [
        (torch.randn(0, 3, 32, 32), [], r"empty batch \(0 images\)"),
        (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), 0, "input has dtype uint8; convert it to float"),
        (torch.randint(0, 255, (1, 3, 32, 32)), 0, "input has dtype int64"),
        (torch.randn(1, 3, 32, 32).index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), 0, "input contains 3072 NaN or Inf values"),
        (torch.randn(2, 3, 32, 32).index_put_((torch.tensor([1]), torch.tensor([0]), torch.tensor([5])), torch.tensor(float("inf"))), [0, 1], "input contains 32 NaN or Inf values"),
        (torch.randn(1, 3, 32, 32), [lambda z: torch.tensor(1.0)], "target callable for image 0 returns a score that does not depend on the logits"),
        (torch.randn(1, 3, 32, 32), [lambda z: z.detach()[1]], "does not depend on the logits"),
        (torch.randn(1, 3, 32, 32), [lambda z: z[1] * 1e30 * 1e30], r"the gradient at layer 'layer\d' contains NaN or Inf"),
    ],
)
def test_hostile_inputs_give_one_line_cam_errors(x, targets, match):
    model = TinyCNN(5)
    model.train()
    with pytest.raises(CAMError, match=match) as err:
        MultiLayerGradCAM(model)(x, targets)
    assert "\n" not in str(err.value)
    assert model.training and all(not m._forward_hooks for m in model.modules())  # state restored after the error


def test_nan_logits_from_the_model_are_an_error():
    with pytest.raises(CAMError, match=r"the model's output \(logits\) contains NaN or Inf"):
        MultiLayerGradCAM(_nan_model())(torch.randn(1, 3, 32, 32), 0)
