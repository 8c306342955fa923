"""Which layers the multi-layer Grad-CAM hooks: the paper's rule, per architecture family."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn

from repcam.engine.modes import eval_mode
from repcam.errors import LayerError  # noqa: F401 - defined in repcam.errors, importable from here

LayerSpec = Union[str, nn.Module]
ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]
VIT_DEPTHS = 4  # how many evenly spaced ViT blocks "auto" hooks


def module_names(model: nn.Module) -> list[str]:
    """The dotted names of every submodule of ``model`` (the model itself, named "", left out)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_layers(model: nn.Module, layers: Sequence[LayerSpec] | str) -> list[tuple[str, nn.Module]]:
    """Turn ``"auto"``, dotted names or module objects into ``(name, module)`` pairs, in the given order."""
    if isinstance(layers, str):
        layers = auto_layers(model) if layers == "auto" else [layers]
    if len(layers) == 0:
        raise LayerError("target_layers is empty; pass 'auto' or at least one layer")
    by_module = {id(m): n for n, m in model.named_modules()}
    named = dict(model.named_modules())
    out = []
    for spec in layers:
        if isinstance(spec, nn.Module):
            if id(spec) not in by_module:
                raise LayerError(f"the module {type(spec).__name__} passed as a target layer is not part of the model")
            out.append((by_module[id(spec)] or "<model>", spec))
        elif isinstance(spec, str):
            if spec not in named or spec == "":
                valid = ", ".join(_layer_hint(model))
                raise LayerError(f"model has no layer named {spec!r}; valid names include: {valid}")
            out.append((spec, named[spec]))
        else:
            raise LayerError(f"a target layer must be a name or an nn.Module, got {type(spec).__name__}")
    return out


def _layer_hint(model: nn.Module, limit: int = 40) -> list[str]:
    """Top-level and second-level names: enough to orient a user without dumping hundreds of modules."""
    names = [n for n in module_names(model) if n.count(".") <= 1]
    return names[:limit] + (["..."] if len(names) > limit else [])


def auto_layers(model: nn.Module) -> list[str]:
    """The paper's layers (Sec. 4.3): ResNet's 4 stages, VGG's activations before each max-pool,
    and for MobileNet/EfficientNet-like networks the output after every downsampling."""
    children = dict(model.named_children())
    if all(f"layer{i}" in children for i in range(1, 5)):
        return [f"layer{i}" for i in range(1, 5)]
    features = children.get("features")
    if isinstance(features, nn.Sequential) and any(isinstance(m, nn.MaxPool2d) for m in features):
        mods = list(features.named_children())
        return [f"features.{mods[k - 1][0]}" for k, (_, m) in enumerate(mods) if isinstance(m, nn.MaxPool2d) and k > 0]
    info = getattr(model, "feature_info", None)
    if _is_vit(model):
        return vit_layers(model)
    if _is_swin(model):
        return [f"layers.{i}" for i in range(len(model.layers))]
    if info is not None:
        names = _from_timm_feature_info(model, info)
        if names:
            return names
    if isinstance(features, nn.Sequential):
        names = _last_block_per_resolution(model, "features", features)
        if names:
            return names
    raise LayerError(
        f"could not find convolutional stages in {type(model).__name__} (no ResNet stages, VGG max-pools, timm "
        "feature_info or `features` blocks); pass the layers explicitly, e.g. target_layers=['blocks.3', 'blocks.5'], "
        "each producing a (B, C, H, W) feature map (for a transformer also a reshape_transform= that makes one)"
    )


def _is_vit(model: nn.Module) -> bool:
    """timm's VisionTransformer family (ViT, DeiT, with or without register tokens): tokens in, a patch grid."""
    pe = getattr(model, "patch_embed", None)
    return (
        isinstance(getattr(model, "blocks", None), (nn.Sequential, nn.ModuleList))
        and isinstance(getattr(model, "num_prefix_tokens", None), int)
        and pe is not None
        and len(getattr(pe, "grid_size", ()) or ()) == 2
    )


def _is_swin(model: nn.Module) -> bool:
    """timm's Swin Transformer (v1 and v2): stages of NHWC feature maps in ``layers``."""
    layers = getattr(model, "layers", None)
    return type(model).__name__.startswith("SwinTransformer") and isinstance(layers, (nn.Sequential, nn.ModuleList))


def vit_layers(model: nn.Module, depths: int = VIT_DEPTHS) -> list[str]:
    """``blocks.k.norm1`` for ``depths`` evenly spaced blocks, the last block included.

    The input of a block's first norm, not a block's output: after the last block only the class token reaches the
    head, so the patch tokens of the last block's output get no gradient (the reason pytorch-grad-cam's ViT example
    hooks ``blocks[-1].norm1``).
    """
    n = len(model.blocks)
    k = min(depths, n)
    picks = sorted({(i + 1) * n // k - 1 for i in range(k)})  # the last block of each of k equal spans
    return [f"blocks.{k}.norm1" for k in picks]


@dataclass(frozen=True)
class TokenGrid:
    """(B, N, C) ViT tokens -> (B, C, h, w): drop the ``prefix`` tokens (class, distillation, registers) and lay the
    patch tokens out on the ``grid``. 4-D tensors (e.g. the patch embedding's convolution) pass unchanged."""

    prefix: int
    grid: tuple[int, int]

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if t.dim() != 3:
            return t
        b, n, c = t.shape
        h, w = self.grid
        if n - self.prefix != h * w:
            side = math.isqrt(n - self.prefix) if n > self.prefix else 0
            if side * side != n - self.prefix or side == 0:
                raise LayerError(f"{n} tokens minus {self.prefix} prefix tokens do not fill the {h}x{w} patch grid")
            h = w = side  # a ViT run at another input size (dynamic_img_size): a square grid
        return t[:, self.prefix :].reshape(b, h, w, c).permute(0, 3, 1, 2)


def nhwc_to_nchw(t: torch.Tensor) -> torch.Tensor:
    """Swin's (B, H, W, C) stage outputs -> (B, C, H, W)."""
    return t.permute(0, 3, 1, 2) if t.dim() == 4 else t


def auto_reshape(model: nn.Module) -> Optional[ReshapeTransform]:
    """The reshape a model's hooked outputs need to become (B, C, H, W) maps: token grid for timm ViT/DeiT,
    NHWC -> NCHW for timm Swin, none for CNNs."""
    if _is_vit(model):
        return TokenGrid(int(model.num_prefix_tokens), tuple(int(g) for g in model.patch_embed.grid_size))
    if _is_swin(model):
        return nhwc_to_nchw
    return None


def _from_timm_feature_info(model: nn.Module, info) -> list[str]:
    named = dict(model.named_modules())
    entries = list(info) if not hasattr(info, "get_dicts") else info.get_dicts()
    last_at: dict[int, str] = {}
    for e in entries:
        mod = named.get(e.get("module", ""))
        # Transformer blocks appear in timm's feature_info too; only convolutional stages give spatial maps.
        if e.get("reduction", 1) >= 2 and mod is not None and _has_conv(mod):
            last_at[e["reduction"]] = e["module"]  # later entries at the same reduction are deeper
    return [last_at[r] for r in sorted(last_at)]


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _last_block_per_resolution(model: nn.Module, prefix: str, blocks: nn.Sequential, size: int = 128) -> list[str]:
    """Dry-run the model once and keep the last block at each spatial resolution below the input's."""
    shapes: dict[str, tuple[int, int]] = {}
    handles = []
    for name, m in blocks.named_children():
        handles.append(m.register_forward_hook(lambda _m, _i, o, n=name: shapes.__setitem__(n, tuple(o.shape[-2:])) if torch.is_tensor(o) and o.dim() == 4 else None))
    try:
        with eval_mode(model), torch.no_grad():
            p = next(model.parameters(), None)
            model(torch.zeros(1, 3, size, size, device=p.device if p is not None else "cpu"))
    finally:
        for h in handles:
            h.remove()
    last_at: dict[tuple[int, int], str] = {}
    for name, hw in shapes.items():
        if hw[0] < size:
            last_at[hw] = name
    order = sorted(last_at, key=lambda hw: -hw[0])
    return [f"{prefix}.{last_at[hw]}" for hw in order]
