"""Test-time augmentation of any map method: horizontal flip and multi-scale averaging, as IRN's CAM inference.

Weakly supervised segmentation computes a class's map at several input scales (IRN: 1.0, 0.5, 1.5, 2.0), each with
its horizontal flip, resizes every map to the input size, flips the flipped ones back, sums them and normalises
the sum (by its maximum); pytorch-grad-cam's ``aug_smooth`` is the peer. :class:`TTA` wraps any
``maps_fn(x, targets) -> maps`` (maps: a (B, H, W) tensor, or a dict of them, e.g. one per stored map kind), so every
method (CAM, Grad-CAM, LayerCAM, contrast targets, the evaluation grid) gets it without a change to the engine.
One batched pass per scale: the image and its flip go through ``maps_fn`` together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar, Union

import torch
import torch.nn.functional as F

IRN_SCALES = (1.0, 0.5, 1.5, 2.0)
_EPS = 1e-5

Maps = TypeVar("Maps", torch.Tensor, dict)
MapsFn = Callable[[torch.Tensor, list], Union[torch.Tensor, dict]]


@dataclass(frozen=True)
class TTA:
    """Flip + multi-scale test-time augmentation; ``TTA()(maps_fn, x, targets)`` has the form ``maps_fn`` returns.

    With a single view (``scales=(1.0,), flip=False``) the result is ``maps_fn(x, targets)`` itself; with several,
    the views' sum divided by its per-map maximum (IRN), so maps stay in [0, 1]. A scale's side is rounded and at
    least ``min_side`` pixels (a backbone of stride 32 needs that much to give a map at all)."""

    scales: tuple[float, ...] = IRN_SCALES
    flip: bool = True
    min_side: int = 32

    def __post_init__(self) -> None:
        if not self.scales or any(not (s > 0) for s in self.scales):
            raise ValueError(f"TTA scales must be positive numbers, got {list(self.scales)}")

    @property
    def views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def describe(self) -> dict:
        """What changes the maps (part of a stored map's key)."""
        return {"scales": [float(s) for s in self.scales], "flip": self.flip}

    def __call__(self, maps_fn: MapsFn, x: torch.Tensor, targets: Sequence) -> Maps:
        size = tuple(x.shape[-2:])
        total = None
        for scale in self.scales:
            xs = x if scale == 1.0 else F.interpolate(x, size=self._side(size, scale), mode="bilinear", align_corners=False)
            batch, tgt = (torch.cat([xs, xs.flip(-1)]), list(targets) * 2) if self.flip else (xs, list(targets))
            out = maps_fn(batch, tgt)
            views = _apply(out, lambda m: self._back(m, size, len(x)))
            total = views if total is None else _apply2(total, views, torch.add)
        if self.views == 1:
            return total
        return _apply(total, _max_normalise)

    def _side(self, size: tuple[int, int], scale: float) -> tuple[int, int]:
        return tuple(max(self.min_side, int(round(s * scale))) for s in size)  # type: ignore[return-value]

    def _back(self, maps: torch.Tensor, size: tuple[int, int], n: int) -> torch.Tensor:
        """One scale's (n or 2n, h, w) maps -> (n, H, W): resized to the input size, flipped ones flipped back, summed."""
        maps = maps.float()
        if tuple(maps.shape[-2:]) != size:
            maps = F.interpolate(maps.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
        if self.flip:
            maps = maps[:n] + maps[n:].flip(-1)
        return maps


def _max_normalise(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.flatten(-2).max(-1).values[..., None, None]
    return torch.where(peak > _EPS, maps.clamp_min(0) / peak.clamp_min(_EPS), torch.zeros_like(maps))


def _apply(maps, fn):
    return {k: fn(v) for k, v in maps.items()} if isinstance(maps, dict) else fn(maps)


def _apply2(a, b, fn):
    return {k: fn(a[k], b[k]) for k in a} if isinstance(a, dict) else fn(a, b)


def parse_tta(value: bool | TTA | None) -> TTA | None:
    """``True`` -> IRN's TTA, ``False``/``None`` -> none, a :class:`TTA` as it is (the stock API's ``tta=``)."""
    if value is None or value is False:
        return None
    if value is True:
        return TTA()
    if isinstance(value, TTA):
        return value
    raise ValueError(f"tta must be True, False or a repcam.engine.tta.TTA, got {value!r}")
