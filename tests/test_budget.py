"""The baseline's training budget in image-epochs or FLOPs (multiclass.budget_unit, repcam.models.budget)."""

import math

import pytest
import torch
from torch import nn

from repcam.config import ConfigError, RunConfig, from_dict, multiclass_training
from repcam.models.budget import Costs, extra_epochs, forward_flops, step_flops
from repcam.store.layout import RunDir
from repcam.store.storage import config_key, read_json


def test_extra_epochs_reaches_the_target_and_no_further():
    assert extra_epochs(10, 10, 3) == 0 and extra_epochs(11, 10, 3) == 0
    assert extra_epochs(0, 10, 3) == 4  # 12 >= 10, 9 < 10
    assert extra_epochs(1, 10, 3) == 3  # exactly 10
    assert extra_epochs(0, 0.3 * 3, 0.3) == 3  # float products that land on a whole number are not rounded up
    with pytest.raises(ValueError):
        extra_epochs(0, 1, 0)


def test_costs_in_image_epochs_are_the_counts_themselves():
    c = Costs()
    assert c.pairs(120, cache_images=50) == 120  # no cache cost in image-epochs
    f = Costs("flops", multiclass=2.0, pair=0.5, cache_image=0.25)
    assert f.pairs(120, cache_images=40) == 120 * 0.5 + 40 * 0.25


def test_flops_of_a_linear_layer_match_a_hand_count():
    lin = nn.Linear(10, 4)
    x = torch.randn(3, 10)
    assert forward_flops(lin, x) == 2 * 10 * 4  # multiply and add per weight, per row
    assert step_flops(lin, x) == 3 * 2 * 10 * 4


def test_step_flops_leaves_the_model_untouched():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    conv = 2 * 3 * 9 * 8 * 6 * 6  # multiply-adds of the 3x3 convolution at 6x6, times two
    assert step_flops(model, torch.randn(2, 3, 6, 6)) == 3 * (conv + 2 * 8 * 2)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_the_budget_unit_is_a_checked_choice_left_out_of_old_keys():
    with pytest.raises(ConfigError, match="multiclass.budget_unit"):
        from_dict({"multiclass": {"budget_unit": "seconds"}}, "test")
    plain, flops = RunConfig(), from_dict({"multiclass": {"budget_unit": "flops"}}, "test")
    assert "budget_unit" not in plain.to_dict()["multiclass"]  # configs from before the option keep their key
    assert flops.to_dict()["multiclass"]["budget_unit"] == "flops"
    # The first multi-class model does not depend on how the baseline's budget is matched.
    assert config_key(multiclass_training(plain.multiclass)) == config_key(multiclass_training(flops.multiclass))


def test_a_frozen_run_matches_the_baseline_in_flops(frozen_run, tmp_path):
    import shutil

    from repcam.pipeline.run import Run
    from tiny_run import frozen_tiny_config

    # The shared frozen run (conftest.frozen_run) rerun with FLOPs: its multi-class model, pair models and feature cache
    # do not depend on the budget unit, so only the baseline trains again.
    run_dir = shutil.copytree(frozen_run, tmp_path / "run")
    Run(frozen_tiny_config(multiclass__budget_unit="flops"), run_dir, show_progress=False).run()
    budget = read_json(run_dir / "budget.json")
    first = read_json(run_dir / "multiclass" / "model.pt.meta.json")
    per = budget["flops_per_image_epoch"]
    assert budget["unit"] == "flops" and 0 < per["pair"] < per["multiclass"]  # the frozen stages are not trained
    cache = read_json(run_dir / "features" / "layer2.npy.meta.json")
    assert budget["pairs_flops"] == pytest.approx(budget["pairs_image_epochs"] * per["pair"] + len(cache["ids"]) * per["feature_cache_per_image"])
    # pairs.init: multiclass, so the method is the first model's training plus the pairs'
    method = first["images"] * first["epochs"] * per["multiclass"] + budget["pairs_flops"]
    assert budget["method_flops"] == pytest.approx(method)
    assert budget["multiclass_flops"] >= method and budget["ratio"] >= 1
    # ... and by no more than one epoch of the baseline's images
    base = read_json(RunDir.meta(run_dir / budget["baseline_model"]))
    assert budget["multiclass_flops"] - method < base["images"] * per["multiclass"] or math.isclose(budget["multiclass_flops"], method)
    notes = read_json(run_dir / "notes.json")
    assert any("in training FLOPs" in n for n in notes)
