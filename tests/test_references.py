"""References that need no B (issue 24): head-least from the head's rows, and the stock API's --references / --tta."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import repcam
from repcam.cli import app
from repcam.engine.cam import ContrastTarget, MultiLayerGradCAM
from repcam.engine.layers import resolve_layers
from repcam.method.methods import NO_B_SELECTIONS, SELECTIONS, SelectionInput
from repcam.method.selections.head import head_cosine, least_by_head
from repcam.models.tinycnn import TinyCNN
from repcam.stock import StockError, StockExplainer


def test_head_least_picks_the_rows_of_smallest_cosine_least_first():
    head = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    cos = head_cosine(head)
    assert cos[0, 3] == pytest.approx(-1.0) and cos[0, 2] == pytest.approx(0.0)
    sel = least_by_head(head, 2)
    assert sel[0] == [3, 2] and sel[3] == [0, 1] and sel[2] == [0, 3]  # a tie (cosine 0) goes to the smaller index
    inp = SelectionInput(None, 2, 1, lambda p: 0, head=head)
    assert SELECTIONS["head-least"].select(inp) == sel
    with pytest.raises(ValueError, match="linear layer"):
        SELECTIONS["head-least"].select(SelectionInput(np.eye(4), 2, 1, lambda p: 0))
    for key in NO_B_SELECTIONS:  # every reference choice without B runs on the head alone
        chosen = SELECTIONS[key].select(SelectionInput(None, 2, 1, lambda p: 0, head=head))
        assert all(c not in reps and reps for c, reps in chosen.items())


def _image():
    rng = np.random.default_rng(0)
    return (rng.random((64, 64, 3)) * 255).astype(np.uint8)


def test_stock_contrast_with_fixed_references_is_the_engine_on_those_references():
    torch.manual_seed(0)
    model = TinyCNN(5).eval()
    names = ["a", "b", "c", "d", "e"]
    ex = repcam.explain_image(model, _image(), classes=["a"], method="contrast", class_names=names, device="cpu",
                              references="head-least", rivals=2)
    refs = least_by_head(model.fc.weight.detach().numpy(), 2)[0]
    ex_all = repcam.explain_image(model, _image(), classes=["a"], method="contrast", class_names=names, device="cpu",
                                  references="all", rivals=2)
    # the same map by hand: Grad-CAM of y_a - mean(y_r) on the deepest layer
    explainer = StockExplainer(model, "contrast", class_names=names, device="cpu")
    x = explainer.stock.transform(__import__("PIL.Image", fromlist=["Image"]).fromarray(_image())).unsqueeze(0)
    cam = MultiLayerGradCAM(model, [resolve_layers(model, "auto")[-1][1]], fusion="mean")
    by_hand = cam(x, [ContrastTarget(0, tuple(refs))]).fused
    by_hand = torch.nn.functional.interpolate(by_hand.unsqueeze(1), size=(64, 64), mode="bilinear").squeeze(1)
    np.testing.assert_allclose(ex.maps, by_hand.numpy(), atol=1e-4)
    assert not np.allclose(ex.maps, ex_all.maps, atol=1e-3)  # other references, another map


def test_stock_tta_changes_the_map_and_bad_references_are_one_line_errors(tmp_path):
    torch.manual_seed(0)
    model = TinyCNN(3).eval()
    plain = repcam.explain_image(model, _image(), classes=[0], method="layercam", class_names=["a", "b", "c"], device="cpu")
    aug = repcam.explain_image(model, _image(), classes=[0], method="layercam", class_names=["a", "b", "c"], device="cpu", tta=True)
    assert aug.maps.shape == plain.maps.shape and not np.allclose(aug.maps, plain.maps, atol=1e-3)
    with pytest.raises(StockError, match="contrast methods"):
        StockExplainer(model, "layercam", class_names=["a", "b", "c"], device="cpu", references="random")
    with pytest.raises(StockError, match="unknown references"):
        StockExplainer(model, "contrast", class_names=["a", "b", "c"], device="cpu", references="s1")
    res = CliRunner().invoke(app, ["explain", str(tmp_path / "x.png"), "--run", str(tmp_path), "--tta"])
    assert res.exit_code == 2 and "--tta" in res.output
