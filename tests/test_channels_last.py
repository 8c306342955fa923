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


def test_extract_in_channels_last_gives_the_default_formats_maps_and_hands_the_model_back():
    from repcam.pipeline.maps import extract
    from repcam.pipeline.units import StackedImages

    torch.manual_seed(0)
    model = TinyCNN(num_classes=3).eval()
    images = StackedImages(range(4), torch.randint(0, 255, (4, 3, 32, 32), dtype=torch.uint8))
    jobs, pre = [(i, i % 3, i % 3) for i in range(4)], Preprocess(32, (0.5,) * 3, (0.5,) * 3)
    args = (model, images, pre, jobs, torch.device("cpu"), 16, 2, ["last", "fused", "layercam"])
    default = extract(*args)
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        fast = extract(*args, channels_last=True)
    finally:
        handle.remove()
    assert seen and all(seen)
    assert all(p.is_contiguous() for p in model.parameters())
    for kind in ("last", "fused", "layercam"):  # float16 maps in [0, 1]: equal up to a few of its steps near 1
        assert default[kind].shape == fast[kind].shape == (4, 16, 16)
        assert abs(default[kind].astype("f4") - fast[kind].astype("f4")).max() < 2e-3, kind


def test_predict_in_channels_last_gives_the_default_formats_logits_and_hands_the_model_back():
    from repcam.models.train import predict

    torch.manual_seed(1)
    model = TinyCNN(num_classes=3).eval()
    images, pre = torch.randint(0, 255, (5, 3, 32, 32), dtype=torch.uint8), Preprocess(32, (0.5,) * 3, (0.5,) * 3)
    default = predict(model, images, pre, torch.device("cpu"), batch_size=2)
    seen = []
    handle = model.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    try:
        fast = predict(model, images, pre, torch.device("cpu"), batch_size=2, channels_last=True)
    finally:
        handle.remove()
    assert len(seen) == 3 and all(seen)
    assert all(p.is_contiguous() for p in model.parameters())
    assert default.shape == fast.shape == (5, 3) and torch.allclose(default, fast, atol=1e-5)


def test_execution_channels_last_reaches_every_training_and_map_step_and_is_recorded(tmp_path, monkeypatch):
    """A frozen-trunk run (multi-class model, B, feature cache, pair models, baseline top-up, maps in process and
    through the shared trunk) with execution.channels_last: every step is asked for it, and environment.json says so."""
    import repcam.pipeline.stages.maps as maps_stage
    import repcam.pipeline.stages.multiclass as mc_stage
    import repcam.pipeline.stages.pairs as pairs_stage
    import repcam.pipeline.units as units
    from repcam.engine.shared_trunk import SharedTrunkGradCAM
    from repcam.pipeline.run import Run
    from repcam.store.storage import read_json
    from tiny_run import frozen_tiny_config

    asked: list[tuple[str, bool]] = []

    def spy(module, name):
        real = getattr(module, name)

        def wrapped(*a, **kw):
            asked.append((name, kw.get("channels_last", False)))
            return real(*a, **kw)

        monkeypatch.setattr(module, name, wrapped)

    for module, name in ((mc_stage, "fit"), (units, "fit"), (pairs_stage, "build_cache"), (maps_stage, "extract_sets"),
                         (units, "extract"), (mc_stage, "predict")):
        spy(module, name)
    heads = SharedTrunkGradCAM.layer_maps_heads
    monkeypatch.setattr(SharedTrunkGradCAM, "layer_maps_heads", lambda self, x, *a: (
        asked.append(("trunk pass", x.is_contiguous(memory_format=torch.channels_last))), heads(self, x, *a))[1])
    run_dir = tmp_path / "run"
    Run(frozen_tiny_config(execution__channels_last=True), run_dir, show_progress=False).run()
    steps = {name for name, _ in asked}
    # extract_sets: the in-process pass of the multi-class and contrast maps; trunk pass: the pair models' maps through
    # their shared frozen trunk (repcam.pipeline.trunk_maps), so no per-model unit (extract) runs; predict: B's pass
    assert steps == {"fit", "build_cache", "extract_sets", "trunk pass", "predict"}, asked
    assert sum(name == "fit" for name, _ in asked) >= 3  # the multi-class model, its baseline top-up, a pair model
    assert all(flag for _, flag in asked), asked
    assert read_json(run_dir / "environment.json")["channels_last"] is True
    assert read_json(run_dir / "results" / "val" / "ablation.json")["rows"]
