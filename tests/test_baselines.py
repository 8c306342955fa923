"""ACoL and CBAM baselines: erasing, attention shapes, the fused ACoL map, and a tiny run with both."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import repcam.baselines as baselines_module
import repcam.stages.multiclass as multiclass_stage
import repcam.units as units_module
from repcam.baselines import (
    ACoLNet,
    AttendedStage,
    CBAM,
    ChannelAttention,
    SpatialAttention,
    acol_maps,
    acol_step,
    build_baseline,
    cbam_maps,
    erase_mask,
)
from repcam.config import ConfigError
from repcam.layers import auto_layers
from repcam.run import Run
from repcam.storage import read_json
from repcam.tinycnn import TinyCNN
from repcam.units import ModelSpec


def test_erasing_removes_exactly_the_cells_at_or_above_delta_times_the_max():
    maps = torch.zeros(1, 3, 3, 3)
    maps[0, 0] = torch.tensor([[0.0, 1, 2], [3, 4, 5], [6, 7, 10]])  # 0.6 * 10 = 6: cells 6, 7, 10 go
    maps[0, 1] = torch.tensor([[9.0, -1, 0], [0, 0, 0], [0, 0, 2]])  # 0.6 * 9 = 5.4: only the 9 goes
    maps[0, 2] = -torch.ones(3, 3)  # no positive evidence: erases nothing even when selected
    only0 = erase_mask(maps, torch.tensor([[1, 0, 1]]), 0.6)[0, 0]
    assert only0.tolist() == [[False, False, False], [False, False, False], [True, True, True]]
    both = erase_mask(maps, torch.tensor([[1, 1, 0]]), 0.6)[0, 0]  # multi-label: the union of the classes' regions
    assert both.tolist() == [[True, False, False], [False, False, False], [True, True, True]]
    assert not erase_mask(maps, torch.tensor([[0, 0, 1]]), 0.6).any()
    assert erase_mask(maps, torch.tensor([[1, 0, 0]]), 0.3)[0, 0].sum() == 6  # >= 3: 3, 4, 5, 6, 7, 10


def _identity_acol() -> ACoLNet:
    """An ACoL head whose class k map is feature channel k (branch A) or its double (branch B)."""
    net = ACoLNet(TinyCNN(2, widths=(4, 4, 4, 2)), num_classes=2, channels=2)
    with torch.no_grad():
        net.head_a.weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        net.head_a.bias.zero_()
        net.head_b.weight.copy_(2 * torch.eye(2).view(2, 2, 1, 1))
        net.head_b.bias.zero_()
    return net


def test_branch_b_sees_the_features_erased_by_branch_a():
    net = _identity_acol()
    f = torch.zeros(1, 2, 2, 2)
    f[0, 0] = torch.tensor([[1.0, 10], [5, 7]])  # class 0: 10 and 7 reach 6
    f[0, 1] = torch.tensor([[3.0, 1], [1, 1]])
    net.features = lambda x: f  # a hand-made feature map
    maps_a, maps_b = net.branches(torch.zeros(1, 3, 8, 8), torch.tensor([[1, 0]]))
    kept = torch.tensor([[1.0, 0], [1, 0]])
    assert torch.equal(maps_a, f)
    assert torch.equal(maps_b, 2 * f * kept)
    loss, logits = acol_step(net, torch.zeros(1, 3, 8, 8), torch.tensor([[1.0, 0.0]]))
    la, lb = f.mean((2, 3)), (2 * f * kept).mean((2, 3))
    y = torch.tensor([[1.0, 0.0]])
    expected = F.binary_cross_entropy_with_logits(la, y) + F.binary_cross_entropy_with_logits(lb, y)
    assert loss.item() == pytest.approx(expected.item())  # the sum of both branches' losses
    assert torch.allclose(logits, (la + lb) / 2)


def test_fused_acol_map_equals_a_hand_computation():
    torch.manual_seed(0)
    net = build_baseline("acol", ModelSpec("tiny_cnn", 3, None, 32), pretrained=False).model.eval()
    x = torch.randn(2, 3, 32, 32)
    f = torch.randn(2, 64, 4, 4)  # a random-init backbone's features are near constant: hand-made ones instead
    net.features = lambda _x: f
    targets = [2, 0]
    with torch.no_grad():
        a = F.conv2d(f, net.head_a.weight, net.head_a.bias)
        expected = []
        for b, c in enumerate(targets):
            ac = a[b, c].clamp_min(0)
            keep = (ac < 0.6 * ac.max()).float()
            bc = F.conv2d(f[b : b + 1] * keep, net.head_b.weight, net.head_b.bias)[0, c].clamp_min(0)
            ups = [F.interpolate(m[None, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0] for m in (ac, bc)]
            norm = [(u - u.min()) / (u.max() - u.min()) for u in ups]
            expected.append(torch.maximum(*norm))
    got = acol_maps(net, x, targets)
    assert got.shape == (2, 32, 32)
    assert torch.allclose(got, torch.stack(expected), atol=1e-6)
    assert not torch.allclose(got[0], acol_maps(net, x, [1, 0])[0])  # the map follows the target class


def test_attention_modules_shapes_and_gates():
    x = torch.randn(3, 64, 5, 7)
    ch = ChannelAttention(64)
    assert ch.mlp[0].out_features == 4  # reduction 16
    g = ch(x)
    assert g.shape == (3, 64, 1, 1) and ((g > 0) & (g < 1)).all()
    s = SpatialAttention(7)
    assert s.conv.kernel_size == (7, 7) and s(x).shape == (3, 1, 5, 7)
    cbam = CBAM(64)
    out = cbam(x)
    assert out.shape == x.shape
    # The CBAM design has no identity at initialisation: the sigmoid gates shrink every feature.
    assert not torch.allclose(out, x) and (out.abs() < x.abs() + 1e-6).all()
    assert ChannelAttention(8).mlp[0].out_features == 1  # never a zero-width MLP


def _calibrated(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """A random-init model in eval mode with the BatchNorm statistics of ``x`` (with the default running
    statistics a random network's maps are flat)."""
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.mark.parametrize("name", ["tiny_cnn", "torchvision/resnet18", "tf_efficientnet_lite0"])
def test_both_baselines_build_on_every_backbone_family(name):
    torch.manual_seed(0)
    spec = ModelSpec(name, 4, None, 64)
    x = torch.zeros(2, 3, 64, 64)  # a bright square in each image: structure a random network responds to
    x[0, :, 8:24, 8:24] = 3
    x[1, :, 36:60, 30:50] = 3
    cbam = _calibrated(build_baseline("cbam", spec, pretrained=False).model, x)
    stages = auto_layers(cbam)  # Grad-CAM's last layer is the attended stage: the wrapper's output
    assert stages and all(isinstance(cbam.get_submodule(n), AttendedStage) for n in stages)
    assert cbam(x).shape == (2, 4)
    maps = cbam_maps(cbam, x, [0, 3])
    assert maps.shape == (2, 64, 64) and maps.min() == 0 and maps.max() == 1
    acol = _calibrated(build_baseline("acol", spec, pretrained=False).model, x)
    assert acol(x).shape == (2, 4)
    maps = acol_maps(acol, x, [1, 2])
    assert maps.shape == (2, 64, 64) and maps.min() == 0 and maps.max() == 1
    assert not [k for k in acol.state_dict() if k.startswith(("backbone.fc.", "backbone.classifier."))]  # no dead head


def test_cbam_keeps_the_pretrained_backbone_weights(tmp_path: Path):
    torch.manual_seed(1)
    ref = TinyCNN(3)
    torch.save(ref.state_dict(), tmp_path / "w.pt")
    spec = ModelSpec("tiny_cnn", 3, str(tmp_path / "w.pt"), 32)
    model = build_baseline("cbam", spec).model
    sd = model.state_dict()
    for k, v in ref.state_dict().items():
        stage = k.split(".")[0]
        key = k.replace(f"{stage}.", f"{stage}.stage.", 1) if stage.startswith("layer") else k
        assert torch.equal(sd[key], v), k
    assert any(".cbam." in k for k in sd)
    acol = build_baseline("acol", spec).model
    assert torch.equal(acol.state_dict()["backbone.layer1.0.weight"], ref.state_dict()["layer1.0.weight"])


def _cfg_with(baselines: list[str]):
    """The tiny run of tests/tiny_run.py cut down further (4 classes, one random representative, no variants)."""
    from repcam.config import from_dict
    from tiny_run import TINY

    values = {**TINY, "baselines": baselines, "selection": {"n": 1, "methods": ["random"]},
              "evaluation": {**TINY["evaluation"], "variants": []}}
    values["data"] = {**TINY["data"], "options": {"num_images": 120, "image_size": 32, "n_groups": 2, "classes_per_group": 2},
                      "eval_options": {"val": {"num_images": 16}}}
    return from_dict(values, "test")


def test_unknown_baseline_is_a_one_line_config_error():
    with pytest.raises(ConfigError, match=r"^test: 'baselines' has unknown baseline 'gradcam'; choose from acol, cbam$"):
        _cfg_with(["gradcam"])


class CountingFit:
    def __init__(self):
        self.calls, self.real = 0, multiclass_stage.fit

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


def _count_fits(monkeypatch) -> CountingFit:
    fit = CountingFit()
    for module in (multiclass_stage, units_module, baselines_module):
        monkeypatch.setattr(module, "fit", fit)
    return fit


def _table(run_dir: Path) -> dict[str, dict]:
    return {r["method"]: r for r in read_json(run_dir / "results" / "val" / "ablation.json")["rows"]}


def test_tiny_run_with_both_baselines_adds_their_rows_and_resumes(tmp_path: Path, monkeypatch):
    Run(_cfg_with([]), tmp_path, show_progress=False).run()
    before = {m: r["miou"] for m, r in _table(tmp_path).items()}
    assert not {"ACoL", "CBAM (Grad-CAM)"} & set(before) and "baselines_image_epochs" not in read_json(tmp_path / "budget.json")
    fit = _count_fits(monkeypatch)
    Run(_cfg_with(["acol", "cbam"]), tmp_path, show_progress=False).run()
    assert fit.calls == 2  # switched on in a finished run: only the two baselines train, every other model is reused
    table = _table(tmp_path)
    for row in ("ACoL", "CBAM (Grad-CAM)"):
        r = table[row]
        assert 0 <= r["miou"] <= 1 and 0 <= r["pxap"] <= 1 and "best_threshold" in r and "irn_miou" in r
        assert r["ci_low"] <= r["diff"] <= r["ci_high"]
        assert r["diff"] == pytest.approx(r["miou"] - table["Grad-CAM"]["miou"])
        assert r["records"] == table["Grad-CAM"]["records"]  # every (image, class) the other rows have
    assert all(table[m]["miou"] == v for m, v in before.items())  # existing rows unchanged
    md = (tmp_path / "results" / "val" / "ablation.md").read_text()
    assert md.index("| LayerCAM") < md.index("| ACoL") < md.index("| CBAM (Grad-CAM)") < md.index("| Random+F")
    base = read_json(tmp_path / "multiclass" / "baseline.pt.meta.json")
    budget = read_json(tmp_path / "budget.json")
    for kind in ("acol", "cbam"):
        meta = read_json(tmp_path / "baselines" / f"{kind}.pt.meta.json")
        assert meta["images"] == base["images"] and meta["epochs"] == base["epochs"]  # the Grad-CAM baseline's budget
        assert budget["baselines_image_epochs"][kind] == budget["multiclass_image_epochs"]
        assert (tmp_path / "maps" / "val" / f"baseline__{kind}.npz").is_file()
    rows = {m: r["miou"] for m, r in table.items()}
    fit.calls = 0
    Run(_cfg_with(["acol", "cbam"]), tmp_path, show_progress=False).run()
    assert fit.calls == 0  # resumed: nothing retrained
    assert {m: r["miou"] for m, r in _table(tmp_path).items()} == rows
