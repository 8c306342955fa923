"""The CAM engine: Grad-CAM at several layers from one forward and one backward pass."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Literal, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from repcam.engine.fusion import LayerFusion, fuse_layers, normalize_maps
from repcam.engine.modes import eval_mode
from repcam.engine.layers import LayerError, LayerSpec, ReshapeTransform, auto_reshape, resolve_layers
from repcam.engine.weightings import WEIGHTINGS, WeightingFn
from repcam.errors import CAMError  # noqa: F401 - defined in repcam.errors, importable from here

Target = Union[int, Callable[[torch.Tensor], torch.Tensor]]
Weighting = Literal["gradcam", "layercam", "gradcampp", "xgradcam", "hirescam", "eigengradcam"]
OutputFn = Callable[[object], torch.Tensor]


@dataclass
class CAMResult:
    """Maps of a batch, all at input resolution, each min-max normalised to [0, 1].

    ``layer_maps[b, l]`` is image b's map at layer ``layer_names[l]`` (shallow to deep),
    ``fused[b]`` their fusion, ``logits`` the model's output.
    """

    layer_names: list[str]
    layer_maps: torch.Tensor
    fused: torch.Tensor
    logits: torch.Tensor

    def __len__(self) -> int:
        return self.fused.shape[0]

    @property
    def last(self) -> torch.Tensor:
        """The deepest layer's map: plain single-layer Grad-CAM."""
        return self.layer_maps[:, -1]


class MultiLayerGradCAM:
    """Grad-CAM at every target layer, fused as in the paper (sum of layer maps times the deepest map).

    One forward and one backward pass serve all layers and all images; gradients are taken only with
    respect to the hooked activations, so no parameter gradients are computed or stored.

    ``weighting`` names a function of :data:`repcam.engine.weightings.WEIGHTINGS` (Grad-CAM, LayerCAM, Grad-CAM++,
    XGrad-CAM, HiResCAM, EigenGrad-CAM) or is such a function itself. ``reshape_transform`` turns each hooked
    output (and its gradient) into (B, C, H, W): ``"auto"`` picks the token grid of a timm ViT/DeiT or NHWC -> NCHW
    for Swin (nothing for CNNs), ``None`` uses outputs as they are. ``output_fn`` picks the logits from a model
    output that is not a tensor (e.g. ``lambda out: out.logits`` for Hugging Face, ``lambda out: out[0]``).

    >>> cam = MultiLayerGradCAM(model, "auto")
    >>> result = cam(images, targets=[3, 7])   # one class index (or callable on the logits) per image
    >>> result.fused.shape                      # (B, H, W)
    """

    def __init__(
        self,
        model: nn.Module,
        target_layers: Sequence[LayerSpec] | str = "auto",
        fusion: LayerFusion = "paper",
        weighting: Weighting | str | WeightingFn = "gradcam",
        amp: bool = False,
        reshape_transform: ReshapeTransform | Literal["auto"] | None = "auto",
        output_fn: OutputFn | None = None,
    ) -> None:
        if callable(weighting):
            self.weight_fn = weighting
        elif weighting in WEIGHTINGS:
            self.weight_fn = WEIGHTINGS[weighting]
        else:
            raise CAMError(f"unknown weighting {weighting!r}; choose one of {', '.join(map(repr, WEIGHTINGS))}")
        if reshape_transform == "auto":
            reshape_transform = auto_reshape(model)
        elif reshape_transform is not None and not callable(reshape_transform):
            raise CAMError(f"reshape_transform must be 'auto', None or a callable, got {reshape_transform!r}")
        if output_fn is not None and not callable(output_fn):
            raise CAMError(f"output_fn must be a callable (model output -> logits), got {type(output_fn).__name__}")
        self.model = model
        self.layers = resolve_layers(model, target_layers)
        self.fusion = fusion
        self.weighting = weighting
        self.reshape = reshape_transform
        self.output_fn = output_fn
        self.amp = amp  # mixed-precision forward (float16 on CUDA, bfloat16 on CPU); maps are computed in float32

    @property
    def layer_names(self) -> list[str]:
        """The names of the hooked layers, shallow to deep (the order of the layer maps)."""
        return [n for n, _ in self.layers]

    def __call__(self, x: torch.Tensor, targets: Target | Sequence[Target] | torch.Tensor | None = None) -> CAMResult:
        """Maps of ``x`` (B, 3, H, W) for ``targets``: one class index, callable or :class:`ContrastTarget` per image
        (or one for all); ``None``: each image's top class (the highest logit of this same forward pass)."""
        _check_input(self.model, x)
        (acts,), logits = self._forward_backward(x, [targets])
        maps = torch.stack([self._layer_map(a, g, x.shape[-2:]) for a, g in acts], dim=1)
        return CAMResult(self.layer_names, maps, fuse_layers(maps, self.fusion), logits.detach().float())

    def layer_maps(self, x: torch.Tensor, targets: Target | Sequence[Target] | torch.Tensor | None,
                   weightings: Sequence[str]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-layer maps of several weightings from ONE forward and backward pass: ``{weighting: (B, L, H, W)}``
        and the logits. Each equals ``MultiLayerGradCAM(model, layers, weighting=w)(x, targets).layer_maps``: the
        weightings differ only in the arithmetic on the same activations and gradients, so an evaluation grid over
        weightings costs one backward per batch instead of one per weighting."""
        per_set, logits = self.layer_maps_sets(x, [targets], weightings)
        return next(per_set), logits

    def layer_maps_sets(self, x: torch.Tensor, target_sets: Sequence[Target | Sequence[Target] | torch.Tensor | None],
                        weightings: Sequence[str]) -> tuple[Iterator[dict[str, torch.Tensor]], torch.Tensor]:
        """:meth:`layer_maps` for several target sets of the same images from ONE forward pass and one backward per
        set: an iterator of ``{weighting: (B, L, H, W)}``, one per set in order, and the logits. Each set's maps
        equal those of its own :meth:`layer_maps` call exactly (the same forward graph, the same backward), so a
        run's multi-class maps and its contrast maps per selection cost one forward per batch instead of one each.
        The passes run at the call; each set's maps (input-sized, per layer and weighting) are made as the iterator
        reaches it, so one set's are in memory at a time, as with one call per set."""
        _check_weightings(weightings)
        if not target_sets:
            raise CAMError("no target sets given")
        _check_input(self.model, x)
        per_set, logits = self._forward_backward(x, target_sets)
        size = x.shape[-2:]

        def maps() -> Iterator[dict[str, torch.Tensor]]:
            while per_set:  # a set's gradients are dropped once its maps are made
                acts = per_set.pop(0)
                yield {w: torch.stack([self._layer_map(a, g, size, WEIGHTINGS[w]) for a, g in acts], dim=1) for w in weightings}

        return maps(), logits.detach().float()

    def _layer_map(self, act: torch.Tensor, grad: torch.Tensor, size, weight_fn: WeightingFn | None = None) -> torch.Tensor:
        # Half precision (amp) is lifted to float32 for the map arithmetic; a float64 model keeps float64.
        dtype = torch.float64 if act.dtype == torch.float64 else torch.float32
        cam = (weight_fn or self.weight_fn)(act.to(dtype), grad.to(dtype))
        cam = F.interpolate(cam.clamp_min(0).unsqueeze(1), size=tuple(size), mode="bilinear", align_corners=False)
        return normalize_maps(cam.squeeze(1))

    def _capture_hook(self, idx: int, name: str, captured: dict[int, torch.Tensor]):
        """The forward hook of layer ``idx`` (``name``): checks that its output is a (B, C, H, W) feature map (after
        the reshape transform) and puts the tensor to differentiate in ``captured[idx]``."""
        reshape = self.reshape or (lambda t: t)

        def hook(_module, _inputs, output):
            shaped = reshape(output.detach()) if torch.is_tensor(output) else None
            if not torch.is_tensor(shaped) or shaped.dim() != 4:
                shape = tuple(output.shape) if torch.is_tensor(output) else type(output).__name__
                after = f" ({tuple(shaped.shape)} after reshape_transform)" if torch.is_tensor(shaped) and self.reshape else ""
                raise LayerError(
                    f"layer {name!r} outputs {shape}{after}; Grad-CAM needs a (B, C, H, W) feature map"
                    + ("" if self.reshape else ": pass reshape_transform= (a callable returning one)")
                )
            if not output.requires_grad:
                # Parameters are frozen during the call, so the lowest hooked activation becomes a leaf:
                # backward stops there instead of running through the stem.
                output = output.detach().requires_grad_(True)
            captured[idx] = output
            # The model goes on with a copy: a later in-place op (VGG's ReLU(inplace=True), a wrapper's relu_())
            # would otherwise change the captured activation and what its gradient means (silently: a wrong map),
            # or fail on the leaf ("a leaf Variable that requires grad is being used in an in-place operation").
            return output.clone()

        return hook

    def _forward_backward(self, x: torch.Tensor, target_sets: Sequence) -> tuple[list[list[tuple[torch.Tensor, torch.Tensor]]], torch.Tensor]:
        """One forward pass, then one backward per target set: per set, the (activation, gradient) of every layer."""
        model = self.model
        captured: dict[int, torch.Tensor] = {}
        reshape = self.reshape or (lambda t: t)
        handles = [m.register_forward_hook(self._capture_hook(i, n, captured)) for i, (n, m) in enumerate(self.layers)]
        try:
            with cam_pass(x.device.type, self.amp, model):
                logits = _logits(model(x), self.output_fn)
                missing = [self.layers[i][0] for i in range(len(self.layers)) if i not in captured]
                if missing:
                    raise LayerError(f"layers {missing} were not executed in the model's forward pass")
                _check_logits(logits)
                tensors = [captured[i] for i in range(len(self.layers))]
                grad_sets = []
                for k, targets in enumerate(target_sets):
                    # The graph is kept for the next set's backward: the forward pass is shared, not repeated.
                    grad_sets.append(_layer_grads(logits, targets, tensors, retain_graph=k < len(target_sets) - 1))
        finally:
            for h in handles:
                h.remove()
        acts = [reshape(a.detach()) for a in tensors]
        out = []
        for grads in grad_sets:
            _check_grads(self.layer_names, grads)
            out.append([(a, reshape(g)) for a, g in zip(acts, grads)])
        return out, logits


@contextmanager
def cam_pass(device_type: str, amp: bool, *models: nn.Module) -> Iterator[None]:
    """The setting of a CAM pass: ``models`` in eval mode with their parameters frozen (gradients are taken only with
    respect to the hooked activations, so none are computed for weights), autograd on, and autocast when ``amp``;
    every module's mode and every parameter's ``requires_grad`` come back afterwards."""
    params = [p for m in models for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    amp_dtype = torch.float16 if device_type == "cuda" else torch.bfloat16
    try:
        with eval_mode(*models):  # every submodule's own mode comes back afterwards
            for p in params:
                p.requires_grad_(False)
            with torch.enable_grad(), torch.autocast(device_type, dtype=amp_dtype, enabled=amp):
                yield
    finally:
        for p, f in zip(params, flags):
            p.requires_grad_(f)


def _check_weightings(weightings: Sequence[str]) -> None:
    unknown = [w for w in weightings if w not in WEIGHTINGS]
    if unknown:
        raise CAMError(f"unknown weighting {unknown[0]!r}; choose one of {', '.join(map(repr, WEIGHTINGS))}")


def _check_logits(logits: torch.Tensor) -> None:
    if not torch.isfinite(logits).all():
        raise CAMError("the model's output (logits) contains NaN or Inf for this input")


def _layer_grads(logits: torch.Tensor, targets, tensors: list[torch.Tensor], retain_graph: bool) -> tuple:
    """The gradient of the summed target scores at every hooked activation in ``tensors`` (None where unused)."""
    score = _target_scores(logits.float(), targets).sum()
    if not score.requires_grad:
        raise CAMError("the model's output does not depend on the hooked layers (was it detached?)")
    return torch.autograd.grad(score, tensors, allow_unused=True, retain_graph=retain_graph)


def _check_grads(names: Sequence[str], grads: Sequence[torch.Tensor | None]) -> None:
    """Every hooked layer got a finite gradient: a one-line error naming the first that did not."""
    for name, g in zip(names, grads):
        if g is None:
            raise LayerError(f"the target score does not depend on layer {name!r}")
        if not torch.isfinite(g).all():
            raise CAMError(f"the gradient at layer {name!r} contains NaN or Inf (the target score overflows or the model is unstable)")


def _logits(output: object, output_fn: OutputFn | None) -> torch.Tensor:
    """The (B, num_classes) logits from a model's output, through ``output_fn`` when one is given."""
    if output_fn is not None:
        output = output_fn(output)
    if not torch.is_tensor(output):
        hint = "" if output_fn is not None else "; pass output_fn= to pick the logits (e.g. lambda out: out.logits, or out[0])"
        raise CAMError(f"the model returned a {type(output).__name__}, not a logits tensor{hint}")
    if output.dim() != 2:
        raise CAMError(f"the model must return (B, num_classes) logits, got shape {tuple(output.shape)}")
    return output


@dataclass(frozen=True)
class ContrastTarget:
    """Target ``y_c - gamma * mean(y_s for s in references)``: the evidence for ``cls`` that its reference classes
    do not share (FinerCAM's contrast; with the paper's representative classes as references it needs no pair
    model). A picklable callable on one image's logits, usable wherever a target is."""

    cls: int
    references: tuple[int, ...]
    gamma: float = 1.0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.references:
            return logits[self.cls]
        return logits[self.cls] - self.gamma * logits[list(self.references)].mean()


def _target_scores(logits: torch.Tensor, targets) -> torch.Tensor:
    """One scalar per image: the logit of its class index (None: its top class), or its callable applied to its logits row."""
    b, k = logits.shape
    if targets is None:  # each image's top class, as pytorch-grad-cam and torchcam default to
        targets = logits.detach().argmax(1).tolist()
    if torch.is_tensor(targets):
        targets = targets.tolist() if targets.dim() else [int(targets)] * b
    elif isinstance(targets, int) or callable(targets):
        targets = [targets] * b
    targets = list(targets)
    if len(targets) != b:
        raise CAMError(f"got {len(targets)} targets for a batch of {b} images")
    scores = []
    for i, t in enumerate(targets):
        if callable(t):
            s = t(logits[i])
            if not torch.is_tensor(s) or s.numel() != 1:
                raise CAMError(f"target callable for image {i} must return a scalar tensor")
            if not s.requires_grad:
                raise CAMError(f"target callable for image {i} returns a score that does not depend on the logits (no gradient)")
            scores.append(s.reshape(()))
        else:
            if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < k:
                raise CAMError(f"target {t!r} for image {i} is not a class index in [0, {k - 1}]")
            scores.append(logits[i, t])
    return torch.stack(scores)


def _check_input(model: nn.Module, x: torch.Tensor) -> None:
    if not torch.is_tensor(x):
        raise CAMError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise CAMError(f"input must be a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise CAMError("input is an empty batch (0 images)")
    if not x.is_floating_point():
        raise CAMError(f"input has dtype {str(x.dtype).replace('torch.', '')}; convert it to float and normalise it as the model expects")
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise CAMError(f"input contains {bad} NaN or Inf values")
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is not None and x.shape[1] != conv.in_channels:
        raise CAMError(f"input has {x.shape[1]} channels but the model's first convolution expects {conv.in_channels}")


def zhou_cam(
    features: Callable[[torch.Tensor], torch.Tensor], fc: nn.Linear, model: nn.Module, x: torch.Tensor, targets: Sequence[int]
) -> torch.Tensor:
    """CAM of Zhou et al. (2016): the last feature map weighted by the FC weights of each image's target class.

    ``features`` maps the input to the (B, C, h, w) map that the model global-average-pools into ``fc``
    (see :func:`repcam.models.backbones.gap_fc_parts`). Returns (B, H, W) maps in [0, 1] at input resolution.
    """
    _check_input(model, x)
    idx = torch.as_tensor(list(targets), device=x.device, dtype=torch.long)
    if idx.numel() != x.shape[0] or (idx < 0).any() or (idx >= fc.out_features).any():
        raise CAMError(f"targets {list(targets)} must hold one class index in [0, {fc.out_features - 1}] per image")
    with eval_mode(model), torch.no_grad():
        feats = features(x)
    if feats.dim() != 4 or feats.shape[1] != fc.in_features:
        raise CAMError(f"features of shape {tuple(feats.shape)} do not feed a classifier with {fc.in_features} inputs")
    cam = torch.einsum("bchw,bc->bhw", feats, fc.weight.detach()[idx])
    cam = F.interpolate(cam.clamp_min(0).unsqueeze(1), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return normalize_maps(cam.squeeze(1))
