import pytest
import torch

import repcam.pipeline.units as U
from repcam.models.train import FitResult
from repcam.pipeline.units import ModelSpec, PairTraining, backbone_state, train_pair


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_cnn_s8", "resnet18"])
def test_backbone_state_drops_exactly_the_head(name):
    spec = ModelSpec(name, 5, None, 32)
    model = spec.build(pretrained=False).model
    state = backbone_state(spec, model.state_dict())
    head = {"tiny_cnn": "fc.", "tiny_cnn_s8": "fc.", "resnet18": "fc."}[name]
    assert {k for k in model.state_dict() if k not in state} == {head + "weight", head + "bias"}
    assert all(torch.equal(state[k], model.state_dict()[k]) for k in state)


def test_backbone_state_of_a_two_class_model_still_drops_the_head():
    spec = ModelSpec("tiny_cnn", 2, None, 32)
    state = backbone_state(spec, spec.build(pretrained=False).model.state_dict())
    assert "fc.weight" not in state and "stem.0.weight" in state


def test_pair_training_starts_from_the_given_weights(monkeypatch):
    # With training skipped, the returned state is the starting point: init weights everywhere but the new head.
    monkeypatch.setattr(U, "fit", lambda *a, **k: FitResult(0, 0.0, 0.0, 0.0, []))
    src = ModelSpec("tiny_cnn", 6, None, 32)
    torch.manual_seed(123)
    init = backbone_state(src, src.build(pretrained=False).model.state_dict())
    spec = PairTraining(ModelSpec("tiny_cnn", 2, None, 32), torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]),
                        init_seed=1, fit_seed=2, epochs=1, lr=1e-3, batch_size=2, target_accuracy=0.9, device="cpu", init_state=init)
    state, _ = train_pair(spec)
    assert all(torch.equal(state[k], v) for k, v in init.items())
    assert state["fc.weight"].shape == (2, 64)
    fresh, _ = train_pair(PairTraining(**{**spec.__dict__, "init_state": None}))
    assert not torch.equal(fresh["stem.0.weight"], init["stem.0.weight"])


def test_starting_weights_of_another_architecture_are_refused():
    other = ModelSpec("resnet18", 3, None, 32)
    init = backbone_state(other, other.build(pretrained=False).model.state_dict())
    spec = PairTraining(ModelSpec("tiny_cnn", 2, None, 32), torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 1]),
                        init_seed=1, fit_seed=2, epochs=1, lr=1e-3, batch_size=2, target_accuracy=0.9, device="cpu", init_state=init)
    with pytest.raises(ValueError, match="another architecture"):
        train_pair(spec)
