"""Trainable localisation baselines of the paper's Table 5: ACoL (Zhang et al. 2018) and CBAM (Woo et al. 2018).

Both are built on any backbone :func:`repcam.models.backbones.build_classifier` makes, trained by
:func:`repcam.models.train.fit` on the multi-class model's images for the baseline's image-epochs, stored as keyed
:class:`~repcam.store.storage.Artefact` files and evaluated as rows ``ACoL`` and ``CBAM (Grad-CAM)`` of every
ablation table (config switch ``baselines: [acol, cbam]``).

- **ACoL**: two classifier branches (1x1-conv class-map heads, GAP for the logits) on the backbone's last
  feature map. Branch B sees the features with the region where branch A's class map is ``>= delta * max``
  erased (set to 0): the ground-truth classes' maps during training, the target class's at inference. The loss
  is the sum of both branches' losses; the map is the element-wise max of both branches' min-max normalised maps.
- **CBAM**: channel attention (average- and max-pooled descriptors through a shared MLP, reduction 16) then
  spatial attention (7x7 convolution over the channel-wise max and mean) after each stage of the backbone (the
  "auto" target layers); the backbone keeps its pretrained weights, the attention modules are new. Maps are
  Grad-CAM at the last (attended) stage. The design has no identity at initialisation: the sigmoid gates scale
  every feature by a factor in (0, 1), about 0.25 at init, which training has to adapt to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from repcam.config import multiclass_training
from repcam.engine.modes import eval_mode
from repcam.engine.cam import MultiLayerGradCAM
from repcam.engine.fusion import normalize_maps
from repcam.engine.layers import auto_layers, resolve_layers
from repcam.evaluation.evaluate import BASELINE_ROWS
from repcam.models.backbones import Backbone, Preprocess
from repcam.models.train import ImageCache, fit
from repcam.pipeline.maps import shrink_maps
from repcam.store.layout import RunDir
from repcam.store.records import RecordFile, RecordWriter
from repcam.store.storage import Artefact, config_key, read_json
from repcam.errors import BaselineError  # noqa: F401 - defined in repcam.errors, importable from here

if TYPE_CHECKING:  # the run's stages import this module
    from repcam.data import SegDataset
    from repcam.pipeline.context import RunContext
    from repcam.pipeline.stages.multiclass import MultiClassStage
    from repcam.pipeline.units import ModelSpec

ACOL_DELTA = 0.6  # ACoL's erasing threshold, a fraction of the class map's maximum (the paper's default)
CBAM_REDUCTION = 16  # CBAM's channel-MLP reduction ratio
CBAM_KERNEL = 7  # CBAM's spatial-attention kernel size


# ---- ACoL ----------------------------------------------------------------------------------------


def erase_mask(class_maps: torch.Tensor, erase_by: torch.Tensor, delta: float = ACOL_DELTA) -> torch.Tensor:
    """(B, 1, h, w) bool: where any selected class's map reaches ``delta`` times its maximum.

    ``class_maps`` (B, K, h, w) are branch A's maps, taken after a ReLU (a CAM's negative evidence is no region);
    ``erase_by`` (B, K) marks the classes whose regions are erased. A map without a positive value erases nothing.
    """
    maps = class_maps.detach().clamp_min(0)
    peak = maps.amax((2, 3), keepdim=True)
    hit = (maps >= delta * peak) & (peak > 0) & erase_by.bool()[:, :, None, None]
    return hit.any(1, keepdim=True)


def _drop_head(model: nn.Module) -> None:
    """Remove the classification head: ACoL classifies with its own 1x1-conv branches."""
    if hasattr(model, "reset_classifier"):  # timm
        model.reset_classifier(0)
        return
    for attr in ("fc", "classifier", "head"):
        if isinstance(getattr(model, attr, None), (nn.Linear, nn.Sequential)):
            setattr(model, attr, nn.Identity())


def _feature_mode(model: nn.Module) -> str:
    """How to get the last feature map: ``forward_features`` (timm, the tiny CNNs), the children before
    ``avgpool`` (torchvision ResNets) or the ``features`` block (torchvision VGG, MobileNet, EfficientNet)."""
    if hasattr(model, "forward_features"):
        return "forward_features"
    if hasattr(model, "layer4") and hasattr(model, "avgpool"):
        return "children"
    if isinstance(getattr(model, "features", None), nn.Module):
        return "features"
    raise BaselineError(f"ACoL needs the last feature map of {type(model).__name__}: it has no forward_features, "
                        "ResNet stages or features block")


def _last_features(model: nn.Module, mode: str, x: torch.Tensor) -> torch.Tensor:
    """The backbone's last (B, C, h, w) feature map, the way ``mode`` (see :func:`_feature_mode`) says."""
    if mode == "forward_features":
        return model.forward_features(x)
    if mode == "features":
        return model.features(x)
    for name, child in model.named_children():
        if name == "avgpool":
            break
        x = child(x)
    return x


class ACoLNet(nn.Module):
    """ACoL: a backbone trunk and two 1x1-conv classifier branches; see the module docstring."""

    def __init__(self, backbone: nn.Module, num_classes: int, channels: int, delta: float = ACOL_DELTA) -> None:
        super().__init__()
        self.mode = _feature_mode(backbone)
        _drop_head(backbone)
        self.backbone = backbone
        self.head_a = nn.Conv2d(channels, num_classes, 1)
        self.head_b = nn.Conv2d(channels, num_classes, 1)
        self.delta = delta

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last (B, C, h, w) feature map."""
        return _last_features(self.backbone, self.mode, x)

    def branches(self, x: torch.Tensor, erase_by: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class maps (B, K, h, w) of branch A, and of branch B on the features erased by ``erase_by`` (B, K)."""
        f = self.features(x)
        maps_a = self.head_a(f)
        keep = (~erase_mask(maps_a, erase_by, self.delta)).to(f.dtype)
        return maps_a, self.head_b(f * keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (the mean of both branches'), branch B erased by branch A's top class."""
        f = self.features(x)
        maps_a = self.head_a(f)
        top = F.one_hot(maps_a.mean((2, 3)).argmax(1), maps_a.shape[1])
        maps_b = self.head_b(f * (~erase_mask(maps_a, top, self.delta)).to(f.dtype))
        return (maps_a.mean((2, 3)) + maps_b.mean((2, 3))) / 2


def acol_step(model: ACoLNet, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One training step's (loss, logits) for :func:`repcam.models.train.fit`: branch B erased by the ground-truth classes,
    loss = branch A's + branch B's (cross-entropy for class indices ``y``, BCE for multi-label rows)."""
    single = y.dim() == 1
    maps_a, maps_b = model.branches(x, F.one_hot(y, model.head_a.out_channels) if single else y > 0.5)
    logits_a, logits_b = maps_a.mean((2, 3)), maps_b.mean((2, 3))
    if single:
        loss = F.cross_entropy(logits_a, y) + F.cross_entropy(logits_b, y)
    else:
        loss = F.binary_cross_entropy_with_logits(logits_a, y.float()) + F.binary_cross_entropy_with_logits(logits_b, y.float())
    return loss, (logits_a + logits_b) / 2


@torch.no_grad()
def acol_maps(model: ACoLNet, x: torch.Tensor, targets: Sequence[int]) -> torch.Tensor:
    """(B, H, W) ACoL maps in [0, 1] at input resolution: for each image's target class, the element-wise max of
    branch A's and branch B's class maps (B erased by A's map of that class), each ReLU'd, upsampled and min-max
    normalised like :func:`repcam.engine.cam.zhou_cam`."""
    with eval_mode(model):
        idx = torch.as_tensor(list(targets), device=x.device, dtype=torch.long)
        maps_a, maps_b = model.branches(x, F.one_hot(idx, model.head_a.out_channels))
    rows = torch.arange(len(idx), device=x.device)
    pair = torch.stack([maps_a[rows, idx], maps_b[rows, idx]], 1).float().clamp_min(0)
    pair = F.interpolate(pair, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return normalize_maps(pair).amax(1)


# ---- CBAM ----------------------------------------------------------------------------------------


class ChannelAttention(nn.Module):
    """(B, C, 1, 1) gates: sigmoid(MLP(avg-pool) + MLP(max-pool)), the MLP shared, hidden width C // reduction."""

    def __init__(self, channels: int, reduction: int = CBAM_REDUCTION) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) features -> (B, C, 1, 1) channel gates in (0, 1)."""
        gate = self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3)))
        return torch.sigmoid(gate)[:, :, None, None]


class SpatialAttention(nn.Module):
    """(B, 1, H, W) gates: sigmoid(BN(conv k x k over the channel-wise max and mean))."""

    def __init__(self, kernel_size: int = CBAM_KERNEL) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) features -> (B, 1, H, W) spatial gates in (0, 1)."""
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], 1)
        return torch.sigmoid(self.bn(self.conv(pooled)))


class CBAM(nn.Module):
    """Channel attention, then spatial attention, each multiplied onto the features (no residual: see the module doc)."""

    def __init__(self, channels: int, reduction: int = CBAM_REDUCTION, kernel_size: int = CBAM_KERNEL) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the same shape, gated by channel then spatial attention."""
        x = x * self.channel(x)
        return x * self.spatial(x)


class AttendedStage(nn.Module):
    """A backbone stage followed by CBAM; it replaces the stage under the same name, so "auto" layers still find it."""

    def __init__(self, stage: nn.Module, channels: int) -> None:
        super().__init__()
        self.stage = stage
        self.cbam = CBAM(channels)

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The stage's output, passed through CBAM."""
        return self.cbam(self.stage(*args, **kwargs))


def add_cbam(model: nn.Module, input_size: int) -> list[str]:
    """Put CBAM after each stage (the "auto" target layers) of ``model``, in place; returns the stages' names.

    The channel counts come from one dry run at ``input_size``; the existing weights are kept.
    """
    names = auto_layers(model)
    channels: dict[str, int] = {}
    handles = [m.register_forward_hook(lambda _m, _i, o, n=n: channels.__setitem__(n, o.shape[1]))
               for n, m in resolve_layers(model, names)]
    try:
        with eval_mode(model), torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, 3, input_size, input_size, device=p.device))
    finally:
        for h in handles:
            h.remove()
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent) if parent else model
        setattr(owner, child, AttendedStage(owner.get_submodule(child), channels[name]))
    return names


def cbam_maps(model: nn.Module, x: torch.Tensor, targets: Sequence[int], amp: bool = False) -> torch.Tensor:
    """(B, H, W) Grad-CAM maps at the last attended stage of a CBAM network."""
    last = resolve_layers(model, "auto")[-1][1]
    return MultiLayerGradCAM(model, [last], amp=amp)(x, [int(t) for t in targets]).last


# ---- building ------------------------------------------------------------------------------------


def build_baseline(kind: str, spec: "ModelSpec", pretrained: bool = True) -> Backbone:
    """An ACoL or CBAM network on ``spec``'s backbone; ``pretrained=False`` when a stored state is loaded next."""
    if kind not in BASELINE_ROWS:
        raise BaselineError(f"unknown baseline {kind!r}; choose from {', '.join(BASELINE_ROWS)}")
    bb = spec.build(pretrained)
    size = bb.preprocess.input_size
    if kind == "cbam":
        add_cbam(bb.model, size)
        return bb
    with eval_mode(bb.model), torch.no_grad():  # one dry run for the channel count of the last feature map
        channels = _last_features(bb.model, _feature_mode(bb.model), torch.zeros(1, 3, size, size)).shape[1]
    return Backbone(bb.name, ACoLNet(bb.model, spec.num_classes, channels), bb.preprocess, bb.weights_source)


MapFn = Callable[[nn.Module, torch.Tensor, Sequence[int]], torch.Tensor]


def map_fn(kind: str, amp: bool = False) -> MapFn:
    """The function that turns (model, normalised batch, target classes) into a kind's (B, H, W) maps."""
    if kind == "acol":
        return acol_maps
    return lambda model, x, targets: cbam_maps(model, x, targets, amp)


def extract_baseline_maps(model: nn.Module, fn: MapFn, cache: ImageCache, pre: Preprocess, jobs: Sequence[tuple[int, int, Any]],
                          device: torch.device, map_size: int, batch_size: int, sink: Callable[[str, torch.Tensor], None]) -> None:
    """Maps of ``jobs`` = (image, class, target class), chunk by chunk into ``sink("map", float16 maps)``."""
    model.to(device).eval()
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b : b + batch_size]
        x = pre.normalize(cache.stack([j[0] for j in chunk]).to(device))
        sink("map", shrink_maps(fn(model, x, [int(j[2]) for j in chunk]), map_size))


# ---- in a run ------------------------------------------------------------------------------------


def _model_art(run: "RunContext", kind: str, epochs: int) -> Artefact:
    """The artefact of a trained baseline, keyed by what it depends on: data, backbone, multi-class settings, epochs."""
    mc = multiclass_training(run.cfg.multiclass)
    design = {"delta": ACOL_DELTA} if kind == "acol" else {"reduction": CBAM_REDUCTION, "kernel": CBAM_KERNEL}
    key = config_key({"model": run.model_key(), "multiclass": mc, "baseline": kind, "design": design, "epochs": epochs})
    return Artefact(run.paths.baseline_model(kind), key)


def train_baselines(run: "RunContext", multiclass: "MultiClassStage", train: "SegDataset", cache: ImageCache,
                    base_path: str) -> dict[str, Artefact]:
    """Each of ``run.cfg.baselines`` not already on disk, trained from the backbone's pretrained weights on the
    multi-class model's images with its loss, learning rate, batch size and schedule, for as many epochs as the
    multi-class baseline at ``base_path`` saw in total (the same image-epochs: budget matched like Grad-CAM's)."""
    mc = run.cfg.multiclass
    epochs = int(read_json(RunDir.meta(run.paths / base_path))["epochs"])
    arts = {kind: _model_art(run, kind, epochs) for kind in run.cfg.baselines}
    for kind, art in arts.items():
        if art.done():
            run.say(f"{BASELINE_ROWS[kind]} baseline: reused")
            continue
        idx, x, y, loss = multiclass.data(train, cache)
        torch.manual_seed(run.seed("baseline-init", kind))
        bb = build_baseline(kind, run.model_spec(train.num_classes))
        with run.timed(f"train {kind}"), run.progress(f"{BASELINE_ROWS[kind]} baseline ({len(idx)} images)", epochs) as adv:
            res = fit(bb.model, x, y, bb.preprocess, loss=loss, epochs=epochs, lr=mc.lr, batch_size=mc.batch_size,
                      seed=run.seed("baseline-fit", kind), device=run.device, plateau=(mc.factor, mc.patience),
                      progress=lambda d, t: adv(), step=acol_step if kind == "acol" else None, channels_last=run.channels_last)
        art.save_torch({k: v.cpu() for k, v in bb.model.state_dict().items()}, images=len(idx), mode=mc.mode, epochs=res.epochs,
                       budget_of=base_path, train_accuracy=res.train_accuracy, seconds=res.seconds, history=res.history)
    if arts:  # only then, so that budget.json of runs without baselines stays as it was
        run.budget["baselines_image_epochs"] = {kind: int(a.meta()["images"]) * int(a.meta()["epochs"]) for kind, a in arts.items()}
    return arts


def baseline_records(run: "RunContext", num_classes: int, cache: ImageCache, jobs: list, split: str, maps_key: dict,
                     models: dict[str, Artefact]) -> dict[str, RecordFile]:
    """{row name: stored maps (kind "map")} of every trained baseline on one split, extracting what is missing."""
    ev = run.cfg.evaluation
    out = {}
    for kind, model_art in models.items():
        art = Artefact(run.paths.baseline_maps(split, kind), config_key({"baseline": kind, "model": model_art.meta()["sha256"], **maps_key}))
        if not art.done():
            bb = build_baseline(kind, run.model_spec(num_classes), pretrained=False)
            bb.model.load_state_dict(model_art.load_torch())
            writer = RecordWriter(art, [j[0] for j in jobs], [j[1] for j in jobs], ["map"], ev.map_size)
            try:
                extract_baseline_maps(bb.model, map_fn(kind, ev.amp), cache, run.preprocess, jobs, run.device, ev.map_size,
                                      ev.batch_size, writer)
            except BaseException:
                writer.discard()
                raise
            writer.commit()
        out[BASELINE_ROWS[kind]] = RecordFile(art.path)
    return out
