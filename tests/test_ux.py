"""Issue 27's rough edges, each reproduced first: score reports skipped images and --strict fails on them, the
per-record CSV averages to the summary, method/model/class names are forgiving with suggestions, the engine's
``targets=None`` is the top class, ``overlay`` returns an image array, weights come from a pre-filled cache and
``--download`` is refused in one line offline, the flat API stays lazy, ``~`` is expanded, figures never collide,
a 1x1 image is explained, and an interruption prints one line."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from typer.testing import CliRunner

import repcam
from repcam.cli import app
from repcam.models.backbones import build_classifier

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repcam.cli", *args], cwd=cwd, env=env or ENV, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def folder_with_a_missing_mask(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-class folder data set of 4 images, one ("d") without a mask, and a 2-class tiny_cnn state dict."""
    root = tmp_path_factory.mktemp("ux")
    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    (data / "classes.txt").write_text("cat\ndog\n")
    rng = np.random.default_rng(0)
    for k, name in enumerate("abcd"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(data / "images" / f"{name}.png")
        if name == "d":
            continue
        mask = np.zeros((40, 48), np.uint8)
        mask[5:25, 5 + 4 * k : 30] = 1 + k % 2  # a or c: cat; b: dog
        if name == "a":
            mask[28:38, 30:46] = 2  # both classes in one image
        Image.fromarray(mask, "L").save(data / "masks" / f"{name}.png")
    torch.manual_seed(0)
    torch.save(build_classifier("tiny_cnn", 2, None).model.state_dict(), root / "tiny.pt")
    return data, root / "tiny.pt"


def test_score_reports_a_skipped_image_and_strict_fails(folder_with_a_missing_mask, tmp_path):
    data, weights = folder_with_a_missing_mask
    args = ["score", "--folder", str(data), "--model", "tiny_cnn", "--weights", str(weights), "--method", "gradcam",
            "--method", "LayerCAM", "--metric", "miou", "--metric", "pxap", "--metric", "deletion", "--steps", "4",
            "--no-progress", "--device", "cpu"]
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "t.json"), "--per-record", str(tmp_path / "r.csv")])
    assert res.exit_code == 0, res.output
    assert "warning: 1 image skipped (no mask: 1): d" in res.output  # on stderr
    assert "Not scored: 1 image skipped (no mask: 1): d." in res.stdout  # the table's footer
    table = json.loads((tmp_path / "t.json").read_text())
    assert table["skipped"] == {"no mask": 1} and table["skipped_ids"] == [["d", "no mask"]]

    # the per-record CSV, averaged the way the table averages, gives the table's numbers
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 2 * 4  # 2 methods x 4 records: a (cat, dog), b (dog), c (cat)
    summary = {(r["method"], r["metric"]): r["value"] for r in table["rows"]}
    for method in ("gradcam", "LayerCAM"):
        mine = [r for r in rows if r["method"] == method]
        inter, union = defaultdict(int), defaultdict(int)
        for r in mine:
            inter[r["class"]] += int(r["intersection"])
            union[r["class"]] += int(r["union"])
        miou = np.mean([inter[c] / union[c] for c in union if union[c] > 0])
        assert miou == pytest.approx(summary[(method, "miou")], abs=1e-9)
        assert np.mean([float(r["deletion"]) for r in mine]) == pytest.approx(summary[(method, "deletion")], abs=1e-9)
        ious = [float(r["miou"]) for r in mine if r["miou"]]
        assert ious == pytest.approx([int(r["intersection"]) / int(r["union"]) for r in mine if r["miou"]])
        assert all(0 <= float(r["pxap"]) <= 1 for r in mine)

    strict = _cli(*args, "--strict", cwd=tmp_path)
    assert strict.returncode == 2, strict.stderr
    assert strict.stderr.strip() == "error: --strict: 1 image skipped (no mask: 1): d (every image needs its mask; see the folder layout)"
    assert len(strict.stderr.strip().splitlines()) == 1 and "Traceback" not in strict.stderr and strict.stdout == ""


def test_score_values_are_per_record_and_pxap_matches_for_one_record_per_class(folder_with_a_missing_mask):
    """ScoreResult.values has mIoU and PxAP per record; where each class has one record, their pooled numbers agree."""
    data, weights = folder_with_a_missing_mask
    model = build_classifier("tiny_cnn", 2, weights).model.eval()
    result = repcam.score({"gradcam": "gradcam", "mine": lambda x, c: x.mean(1)}, folder=data, model=model,
                          metrics=["miou", "pxap"], max_images=2)  # a: cat, dog; b: dog
    assert result.skipped == {"no mask": 1}
    for m in ("gradcam", "mine"):
        assert result.values[m]["miou"].shape == (3,) and result.values[m]["pxap"].shape == (3,)
    one_each = repcam.score("gradcam", folder=data, model=model, metrics=["pxap"], max_images=1)  # a: one record per class
    assert np.nanmean(one_each.values["gradcam"]["pxap"]) == pytest.approx(one_each.summary["gradcam"]["pxap"])
    with pytest.raises(repcam.ScoreError, match=r"strict=True: 1 image skipped \(no mask: 1\): d"):
        repcam.score("gradcam", folder=data, model=model, metrics=["miou"], strict=True)


def test_names_are_case_insensitive_with_suggestions():
    from repcam.stock.methods import resolve_method

    assert [resolve_method(n) for n in ("GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM", "LayerCAM", "EigenGradCAM",
                                         "LAYERCAM", "contrast_layercam", "gradcam++")] == \
        ["gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "eigengradcam", "layercam", "contrast-layercam", "gradcampp"]
    with pytest.raises(repcam.StockError, match=r"unknown method 'layrcam' \(did you mean 'layercam'\?\); choose one of"):
        resolve_method("layrcam")
    with pytest.raises(ValueError, match=r"unknown backbone 'resnt18' \(did you mean 'resnet18'\?\)"):
        build_classifier("resnt18", 2, None)
    from repcam.stock_model import as_stock_model

    sm = as_stock_model(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(1000)))
    with pytest.raises(repcam.StockError, match=r"unknown class 'tabbby' .*\(did you mean 'tabby'\?\)"):
        sm.class_index("tabbby")
    assert sm.class_index("281") == 281  # an ImageNet class by index (also a line of a folder's classes.txt)


def test_explain_method_alias_on_the_command_line(tmp_path):
    res = CliRunner().invoke(app, ["explain", "x.png", "--model", "tiny_cnn", "--method", "GradCAMPlusPluss"])
    assert res.exit_code == 2
    assert "unknown --method 'GradCAMPlusPluss' (did you mean 'GradCAMPlusPlus'?)" in res.output


def test_targets_none_is_each_images_top_class():
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", 5, None).model.eval()
    x = torch.randn(3, 3, 64, 64)
    cam = repcam.MultiLayerGradCAM(model, "auto")
    top = model(x).argmax(1).tolist()
    default, explicit = cam(x), cam(x, top)
    assert torch.equal(default.fused, explicit.fused)
    other = [(t + 1) % 5 for t in top]
    assert not torch.allclose(default.fused, cam(x, other).fused)


def test_overlay_shape_range_and_blend():
    image = np.zeros((30, 40, 3), np.uint8)
    image[:, :20] = 255
    cam = np.zeros((7, 9), np.float32)
    cam[:, 5:] = 3.0  # any range: min-max normalised
    out = repcam.overlay(image, cam, alpha=0.5)
    assert out.shape == (30, 40, 3) and out.dtype == np.uint8
    assert repcam.overlay(image, cam, alpha=0.0).tolist() == image.tolist()
    hot = repcam.overlay(image, cam, alpha=1.0)
    assert hot[15, 39, 0] > 120 and hot[15, 0, 2] > 120  # jet: high -> red, low -> blue
    assert repcam.overlay(Image.fromarray(image), torch.from_numpy(cam)[None], colormap="viridis").shape == (30, 40, 3)
    with pytest.raises(ValueError, match="unknown colormap 'nope'"):
        repcam.overlay(image, cam, colormap="nope")
    with pytest.raises(ValueError, match="alpha must be in"):
        repcam.overlay(image, cam, alpha=2)


def test_public_api_is_flat_and_lazy():
    code = ("import sys, repcam\n"
            "names = dir(repcam)\n"
            "assert {'MultiLayerGradCAM', 'CAMResult', 'explain_image', 'StockExplainer', 'score_maps', 'score', 'overlay',"
            " 'register_weighting', '__version__'} <= set(names) and set(repcam.__all__) <= set(names), names\n"
            "assert 'torch' not in sys.modules\n"
            "from repcam import MultiLayerGradCAM\n"
            "from repcam.engine.cam import MultiLayerGradCAM as deep\n"
            "assert MultiLayerGradCAM is deep\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert done.returncode == 0, done.stderr[-2000:]


def _fake_hf_cache(cache: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    from safetensors.torch import save_file

    folder = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))
    return snap / "model.safetensors"


def test_weights_found_in_a_prefilled_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hfc

    name = "test_resnet.r160_in1k"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hfc, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(repcam.WeightsError, match=r"no offline ImageNet weights for .*run: python -c \"import timm; "
                       r"timm.create_model\('test_resnet.r160_in1k', pretrained=True\)\""):
        build_classifier(name, 1000, "imagenet")
    torch.manual_seed(3)
    state = timm.create_model(name, pretrained=False).state_dict()
    path = _fake_hf_cache(tmp_path / "hf", "timm/test_resnet.r160_in1k", state)
    bb = build_classifier(name, 1000, "imagenet")
    assert bb.weights_source == str(path)
    assert all(torch.equal(bb.model.state_dict()[k], v) for k, v in state.items())


def test_torchvision_download_uses_the_weight_enum_with_its_checksum(tmp_path, monkeypatch):
    import torchvision

    calls = []
    fresh = torchvision.models.get_model("resnet18", weights=None).state_dict()

    def fake(self, progress=True, check_hash=False):
        calls.append((self.url, check_hash))
        return fresh

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fake)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    notes = []
    sm = repcam.load_stock_model("torchvision/resnet18", "download", note=notes.append)
    assert calls == [(torchvision.models.ResNet18_Weights.DEFAULT.url, True)]
    assert notes == [f"ImageNet weights of torchvision/resnet18: {tmp_path / 'hub' / 'checkpoints' / Path(calls[0][0]).name}"]
    assert sm.weights_source.endswith(Path(calls[0][0]).name)


def test_download_is_refused_cleanly_offline(tmp_path):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "x.png")
    env = {**ENV, "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    res = _cli("explain", "x.png", "--model", "test_resnet.r160_in1k", "--download", "--no-progress", cwd=tmp_path, env=env)
    assert res.returncode == 2
    assert res.stderr.startswith("error: cannot download the ImageNet weights of 'test_resnet.r160_in1k': ")
    assert "HF_HUB_OFFLINE" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_tilde_is_expanded_in_path_options(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["tables", "~/nosuchrun", "--table", "4"])
    assert res.exit_code == 2
    assert str(tmp_path / "nosuchrun") in res.output and "~" not in res.output


def test_save_names_figures_by_image_and_never_overwrites(tmp_path):
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", 3, None).model.eval()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    rng = np.random.default_rng(1)
    for d in (a, b):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(d / "cat.png")
    out = tmp_path / "out"
    first = repcam.explain_image(model, a / "cat.png", classes=[0], device="cpu").save(out)
    second = repcam.explain_image(model, b / "cat.png", classes=[0], device="cpu").save(out)
    again = repcam.explain_image(model, a / "cat.png", classes=[0], device="cpu").save(out)
    assert first[0].name.startswith("cat") and first != second and again == first
    arr = repcam.explain_image(model, np.zeros((1, 1, 3), np.uint8), classes=[0], device="cpu")  # issue 26 item 4
    assert arr.maps.shape == (1, 1, 1)
    (png,) = arr.save(out)
    assert png.is_file() and png.name.startswith("image-")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_interruption_prints_one_line(tmp_path, sig, code):
    """Ctrl-C / SIGTERM during a real run: the exit status as before (130; killed by SIGTERM, 143 in a shell) and one
    line saying the work is kept (issue 26)."""
    proc = subprocess.Popen([sys.executable, "-m", "repcam.cli", "demo", "--run-dir", "r", "--no-progress"], cwd=tmp_path,
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "r").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)  # the run has started (its directory exists): the handlers are installed
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == "interrupted; rerun the same command to resume"
    assert "Traceback" not in err
