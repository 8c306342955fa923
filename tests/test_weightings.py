"""The engine's weightings: parity with pytorch-grad-cam's implementation of each method, and the registry."""

import numpy as np
import pytest
import pytorch_grad_cam
import pytorch_grad_cam.eigen_grad_cam as pgc_eigen
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from repcam.engine.cam import CAMError, MultiLayerGradCAM
from repcam.engine.fusion import normalize_maps
from repcam.engine.layers import auto_layers
from repcam.engine.weightings import WEIGHTINGS, eigengradcam, hirescam, orient_projection, register_weighting
from repcam.models.backbones import build_classifier
from repcam.models.tinycnn import TinyCNN

PEERS = {
    "gradcam": pytorch_grad_cam.GradCAM,
    "layercam": pytorch_grad_cam.LayerCAM,
    "gradcampp": pytorch_grad_cam.GradCAMPlusPlus,
    "xgradcam": pytorch_grad_cam.XGradCAM,
    "hirescam": pytorch_grad_cam.HiResCAM,
    "eigengradcam": pytorch_grad_cam.EigenGradCAM,
}


@pytest.fixture
def oriented_peer_eigen(monkeypatch):
    """pytorch-grad-cam's EigenGradCAM with repcam's sign rule applied to its SVD projection.

    Its projection's sign is whatever LAPACK returns (inverted for about half of the inputs); repcam fixes the
    sign. Patching only the sign keeps every other step of the peer's computation under test."""
    original = pgc_eigen.get_2d_projection

    def oriented(batch: np.ndarray) -> np.ndarray:
        proj = torch.from_numpy(original(batch))
        b = proj.shape[0]
        evidence = torch.from_numpy(np.nan_to_num(batch)).sum(1).reshape(b, -1).to(proj.dtype)
        return orient_projection(proj.reshape(b, -1), evidence).reshape(proj.shape).numpy()

    monkeypatch.setattr(pgc_eigen, "get_2d_projection", oriented)


def peer_maps(method: str, model, layers: list, x, targets, reshape=None) -> list[np.ndarray]:
    """pytorch-grad-cam's map of each layer (its per-layer maps, before it averages them), min-max normalised after
    upsampling as repcam's maps are. One forward and backward pass of the peer serves all layers."""
    peer_targets = [ClassifierOutputTarget(t) for t in targets]
    with PEERS[method](model, layers, reshape_transform=reshape) as cam:
        cam(x, peer_targets)
        per_layer = cam.compute_cam_per_layer(x, peer_targets, False)
    model.zero_grad(set_to_none=True)  # the peer leaves parameter gradients behind
    return [normalize_maps(torch.as_tensor(m[:, 0])).numpy() for m in per_layer]


def assert_parity(model, x, targets, methods, reshape=None, layers=None) -> None:
    """Every layer's map of one multi-layer repcam call equals the peer's map of that layer (<= 1e-4)."""
    layers = layers or auto_layers(model)
    named = dict(model.named_modules())
    for method in methods:
        result = MultiLayerGradCAM(model, layers, weighting=method)(x, targets)
        refs = peer_maps(method, model, [named[n] for n in layers], x, targets, reshape)
        for li, (name, ref) in enumerate(zip(layers, refs)):
            ours = result.layer_maps[:, li].numpy()
            assert ours.max() == pytest.approx(1.0), (method, name)  # a real map, not an all-zero one
            assert np.abs(ours - ref).max() <= 1e-4, (method, name)


def test_parity_on_a_random_resnet18(oriented_peer_eigen):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    assert_parity(model, torch.randn(2, 3, 96, 96), [1, 7], list(PEERS))


def test_parity_on_pretrained_lite0(oriented_peer_eigen):
    """In float64. Lite0's block outputs are signed (linear bottlenecks), so Grad-CAM++'s denominator
    2 g^2 + sum(A) g^3 (sum(A) up to 1e5) comes close to zero for some gradients, and float32 rounding moves the
    shallow blocks' maps by up to 3e-4 in either library (measured: pytorch-grad-cam float32 vs its own float64
    2.8e-4, repcam float32 vs it 1.3e-4). In float64 both compute the same map (diff 3e-16 on the same tensors)."""
    import dataclasses

    from PIL import Image
    from skimage import data

    bb = build_classifier("tf_efficientnet_lite0", 1000, weights="imagenet")
    # At 128 px instead of 224: the same weights and layers, 3x fewer pixels (a third of the test's time).
    x = dataclasses.replace(bb.preprocess, input_size=128).to_tensor(Image.fromarray(data.chelsea()))[None]
    # Grad-CAM's parity on this model is in test_cam.py.
    assert_parity(bb.model.eval().double(), x.double(), [281], [m for m in PEERS if m != "gradcam"])


def test_each_weighting_gives_its_own_map():
    torch.manual_seed(1)
    model = TinyCNN(5).eval()
    x = torch.randn(2, 3, 32, 32)
    maps = {w: MultiLayerGradCAM(model, ["layer3"], weighting=w)(x, [1, 2]).last for w in WEIGHTINGS}
    names = list(maps)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(maps[a], maps[b]), (a, b)


def test_unknown_weighting_lists_the_choices():
    with pytest.raises(CAMError, match=r"unknown weighting 'gradcam\+\+'; choose one of 'gradcam', 'layercam', 'gradcampp'"):
        MultiLayerGradCAM(TinyCNN(3), weighting="gradcam++")


def test_a_callable_weighting_is_used_as_given_and_names_are_unique():
    torch.manual_seed(2)
    model = TinyCNN(5).eval()
    x = torch.randn(1, 3, 32, 32)
    by_name = MultiLayerGradCAM(model, weighting="hirescam")(x, 3)
    by_fn = MultiLayerGradCAM(model, weighting=hirescam)(x, 3)
    assert torch.equal(by_name.layer_maps, by_fn.layer_maps)
    with pytest.raises(ValueError, match="already registered"):
        register_weighting("gradcam")(hirescam)


def test_eigengradcam_sign_follows_the_evidence():
    torch.manual_seed(3)
    act, grad = torch.randn(4, 16, 5, 5).relu(), torch.randn(4, 16, 5, 5)
    maps = eigengradcam(act, grad).flatten(1)
    evidence = (grad * act).sum(1).flatten(1)
    assert ((maps * (evidence - evidence.mean(1, keepdim=True))).sum(1) >= 0).all()
    # The rule undoes an arbitrary sign flip of the projection.
    assert torch.equal(orient_projection(-maps, evidence), orient_projection(maps, evidence))
    torch.testing.assert_close(eigengradcam(act, -grad), -eigengradcam(act, grad))


def test_layer_maps_of_several_weightings_equal_one_call_per_weighting():
    torch.manual_seed(0)
    model = TinyCNN(5).eval()
    x = torch.randn(3, 3, 32, 32)
    cam = MultiLayerGradCAM(model, "auto")
    names = list(WEIGHTINGS)
    maps, logits = cam.layer_maps(x, [0, 2, 4], names)
    assert list(maps) == names and logits.shape == (3, 5)
    for w in names:
        alone = MultiLayerGradCAM(model, "auto", weighting=w)(x, [0, 2, 4]).layer_maps
        assert torch.equal(maps[w], alone), w
    with pytest.raises(CAMError, match="unknown weighting 'nope'"):
        cam.layer_maps(x, [0, 1, 2], ["gradcam", "nope"])
