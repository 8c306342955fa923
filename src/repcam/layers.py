"""Which layers the multi-layer Grad-CAM hooks: the paper's rule, per architecture family."""

from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

LayerSpec = Union[str, nn.Module]


class LayerError(ValueError):
    """A target layer that cannot be found or used."""


def module_names(model: nn.Module) -> list[str]:
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
        "each producing a (B, C, H, W) feature map"
    )


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
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            p = next(model.parameters(), None)
            model(torch.zeros(1, 3, size, size, device=p.device if p is not None else "cpu"))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    last_at: dict[tuple[int, int], str] = {}
    for name, hw in shapes.items():
        if hw[0] < size:
            last_at[hw] = name
    order = sorted(last_at, key=lambda hw: -hw[0])
    return [f"{prefix}.{last_at[hw]}" for hw in order]
