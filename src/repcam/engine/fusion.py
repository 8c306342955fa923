"""Pure map arithmetic: per-map normalisation, fusion across layers (A) and across representative classes (F)."""

from __future__ import annotations

from typing import Literal

import torch

LayerFusion = Literal["paper", "mean", "sum", "layercam"]
ClassFusion = Literal["mean", "max", "geomean"]

_EPS = 1e-7
LAYERCAM_GAMMA = 2.0  # LayerCAM's scaling factor (Jiang et al. 2021, Eq. 9 and its experiments)


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each (H, W) map of ``maps`` (any leading dims) to [0, 1].

    A constant map (e.g. all zero) becomes all zero rather than NaN.
    """
    flat = maps.flatten(-2)
    lo = flat.min(-1, keepdim=True).values
    span = flat.max(-1, keepdim=True).values - lo
    # Constant maps carry no localisation; map them to zero instead of dividing by ~0.
    out = torch.where(span > _EPS, (flat - lo) / span.clamp_min(_EPS), torch.zeros_like(flat))
    return out.view_as(maps)


def fuse_layers(layer_maps: torch.Tensor, mode: LayerFusion = "paper") -> torch.Tensor:
    """Fuse normalised per-layer maps (B, L, H, W), shallow to deep, into (B, H, W).

    ``paper``: (sum of the layer maps) * deepest layer map (Sec. 4.3 of the paper), re-normalised.
    ``mean``: the mean of the layer maps (pytorch-grad-cam's multi-layer aggregation), re-normalised.
    ``sum``: the plain sum ("Adding" in the paper's Fig. 7), re-normalised.
    ``layercam``: LayerCAM's combination, see :func:`layercam_fusion`.
    """
    if layer_maps.dim() != 4:
        raise ValueError(f"layer_maps must be (B, L, H, W), got shape {tuple(layer_maps.shape)}")
    if mode == "paper":
        fused = layer_maps.sum(1) * layer_maps[:, -1]
    elif mode == "mean":
        fused = layer_maps.mean(1)
    elif mode == "sum":
        fused = layer_maps.sum(1)
    elif mode == "layercam":
        fused = layercam_fusion(layer_maps)
    else:
        raise ValueError(f"unknown layer fusion {mode!r}; choose one of 'paper', 'mean', 'sum', 'layercam'")
    return normalize_maps(fused)


def layercam_fusion(layer_maps: torch.Tensor, gamma: float = LAYERCAM_GAMMA) -> torch.Tensor:
    """LayerCAM's multi-layer combination of (B, L, H, W) maps, shallow to deep, into (B, H, W), not re-normalised.

    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization", IEEE TIP 2021, Eq. 9:
    the maps of shallow layers have small values, so each is scaled as ``tanh(gamma * M / max(M))`` (gamma = 2);
    here that applies to every layer but the deepest, whose map is kept as it is. The layers are then combined by
    the element-wise maximum, as torchcam's ``LayerCAM.fuse_cams`` does. The maps are already min-max normalised
    (max 1, or all zero), so ``M / max(M)`` is ``M`` itself.
    """
    peak = layer_maps[:, :-1].flatten(2).amax(-1)[..., None, None].clamp_min(_EPS)
    shallow = torch.tanh(gamma * layer_maps[:, :-1] / peak)
    return torch.cat([shallow, layer_maps[:, -1:]], 1).amax(1)


def fuse_classes(maps: torch.Tensor, mode: ClassFusion = "mean") -> torch.Tensor:
    """Fuse the maps (N, H, W) of one image from N representative classes into one (H, W) map (step F)."""
    if maps.dim() != 3 or maps.shape[0] == 0:
        raise ValueError(f"maps must be (N, H, W) with N >= 1, got shape {tuple(maps.shape)}")
    if mode == "mean":
        fused = maps.mean(0)
    elif mode == "max":
        fused = maps.max(0).values
    elif mode == "geomean":
        fused = maps.float().clamp_min(0).add(_EPS).log().mean(0).exp()
    else:
        raise ValueError(f"unknown class fusion {mode!r}; choose one of 'mean', 'max', 'geomean'")
    return normalize_maps(fused)
