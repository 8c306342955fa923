"""Training on the CPU in channels_last (opt-in, faster: benchmarks/results/channels_last.md) hands the model back
in the default format, so later CAM passes compute exactly as on a model loaded from disk."""

import torch

from repcam.models.backbones import Preprocess
from repcam.models.tinycnn import TinyCNN
from repcam.models.train import fit


def test_fit_trains_channels_last_and_returns_a_contiguous_model():
    torch.manual_seed(0)
    model = TinyCNN(num_classes=2)
    seen = []
    handle = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    images = torch.randint(0, 255, (6, 3, 32, 32), dtype=torch.uint8)
    try:
        fit(model, images, torch.tensor([0, 1, 0, 1, 0, 1]), Preprocess(32, (0.5,) * 3, (0.5,) * 3), loss="ce", epochs=1,
            lr=1e-3, batch_size=3, seed=0, device=torch.device("cpu"), channels_last=True)
    finally:
        handle.remove()
    assert seen and all(seen)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous() for p in convs)
