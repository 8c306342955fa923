"""`repcam explain` and the Explainer API on the shared tiny run: maps recomputed from the run's models."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from repcam.cli import app
from repcam.engine.cam import MultiLayerGradCAM
from repcam.explain import Explainer, ExplainError
from repcam.pipeline.run import Run
from repcam.store.storage import read_json
from tiny_run import tiny_config


@pytest.fixture(scope="module")
def val_image(tiny_run: Path, tmp_path_factory) -> tuple[Path, str, int]:
    """A val image of the tiny run, saved as a non-square JPEG (any size and format must work)."""
    ds = Run(tiny_config(), tiny_run, show_progress=False).load_split("val", for_eval=True)
    i = next(k for k, s in enumerate(ds.samples) if len(s.labels) == 1)
    path = tmp_path_factory.mktemp("img") / "photo.jpg"
    ds.image(i).convert("RGB").resize((57, 41)).save(path, quality=95)
    return path, ds.class_names[next(iter(ds.samples[i].labels))], i


def test_explanation_maps_are_the_pair_models_multilayer_maps(tiny_run, val_image):
    path, cls, _ = val_image
    explainer = Explainer.from_run(tiny_run, method="S-1", device="cpu")
    (ex,) = explainer.explain(path, cls)
    reps = read_json(tiny_run / "selections.json")["selections"]["S-1"][cls]
    assert list(ex.representative_maps) == reps and ex.method == "S-1+A+F"
    # Recompute one representative map by hand from the stored pair model.
    s = reps[0]
    model, target = explainer._pair(cls, s)
    x = explainer.preprocess.to_tensor(Image.open(path).convert("RGB")).unsqueeze(0)
    expected = MultiLayerGradCAM(model, "auto")(x, [target]).fused[0].numpy()
    np.testing.assert_allclose(ex.representative_maps[s], expected, atol=1e-6)
    mean = np.mean(list(ex.representative_maps.values()), axis=0)
    np.testing.assert_allclose(ex.fused, (mean - mean.min()) / (mean.max() - mean.min()), atol=1e-5)  # F: mean, re-normalised
    mc = MultiLayerGradCAM(explainer.mc_model, "auto")(x, [explainer.classes.index(cls)]).last[0].numpy()
    np.testing.assert_allclose(ex.gradcam, mc, atol=1e-6)
    assert ex.image.shape == (41, 57, 3)
    assert 0 <= ex.score <= 1


def test_without_class_explains_the_predicted_classes(tiny_run, val_image):
    path, _, _ = val_image
    explainer = Explainer.from_run(tiny_run, device="cpu")
    scores = explainer.scores(path)
    assert set(scores) == set(explainer.classes)
    expected = sorted(c for c, p in scores.items() if p >= 0.2) or [max(scores, key=scores.get)]
    assert sorted(e.cls for e in explainer.explain(path, min_score=0.2)) == expected
    # Default method: the best +A+F row of the run's table.
    rows = read_json(tiny_run / "results" / "val" / "ablation.json")["rows"]
    best = max((r for r in rows if r["method"].endswith("+A+F")), key=lambda r: r["miou"])["method"]
    assert explainer.selection + "+A+F" == best


def test_cli_writes_one_figure_per_class(tiny_run, val_image, tmp_path):
    path, cls, _ = val_image
    res = CliRunner().invoke(app, ["explain", str(path), "--run", str(tiny_run), "--class", cls, "--out", str(tmp_path), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    (png,) = tmp_path.glob("*.png")
    from repcam.stock.images import figure_stem  # the image's stem and a digest: two photos never share a figure

    assert png.name == f"{figure_stem(path)}_{cls}.png" and png.name.startswith("photo-") and str(png) in res.output
    with Image.open(png) as im:
        assert im.width > 4 * im.height  # image + N representative maps + fused + Grad-CAM in one row


@pytest.mark.parametrize(
    "case, match",
    [("not_image", "is not an image PIL can read"), ("missing", "does not exist"), ("bad_class", "unknown class 'nope'"),
     ("no_models", "has no trained multi-class model"), ("bad_method", "method 'S-9' is not in this run")],
)
def test_bad_input_is_a_one_line_error(tiny_run, val_image, tmp_path, case, match):
    path, _, _ = val_image
    run, args = tiny_run, []
    if case == "not_image":
        path = tmp_path / "notes.jpg"
        path.write_text("not a picture")
    elif case == "missing":
        path = tmp_path / "nowhere.png"
    elif case == "bad_class":
        args = ["--class", "nope"]
    elif case == "no_models":
        run = tmp_path / "run"
        shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("*.pt"))
    elif case == "bad_method":
        args = ["--method", "S-9"]
    res = CliRunner().invoke(app, ["explain", str(path), "--run", str(run), "--device", "cpu", "--out", str(tmp_path / "o"), *args])
    assert res.exit_code == 2
    assert match in " ".join(res.output.split())
    assert "Traceback" not in res.output
    with pytest.raises(ExplainError):
        Explainer.from_run(run, args[1] if case == "bad_method" else None, "cpu").explain(path, args[1] if case == "bad_class" else None)


def test_pil_image_input_gives_the_same_maps_as_the_file(tiny_run, val_image):
    path, cls, _ = val_image
    explainer = Explainer.from_run(tiny_run, device="cpu")
    a = explainer.explain(path, cls)[0]
    b = explainer.explain(Image.open(path), [cls])[0]
    assert torch.equal(torch.from_numpy(a.fused), torch.from_numpy(b.fused))
