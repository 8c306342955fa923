"""Gradient weightings of the CAM engine: how one layer's activations and gradients become a map.

Every weighting has the same signature, ``(activations, gradients) -> raw map``: (B, C, h, w) float32 tensors
from the engine's single forward and backward pass in, one (B, h, w) map per image out, before the engine's ReLU,
upsampling and min-max normalisation. They are registered by name (timm's ``register_model`` style), so adding one
is one decorated function here; :class:`repcam.engine.cam.MultiLayerGradCAM` looks them up in :data:`WEIGHTINGS`.

The definitions follow pytorch-grad-cam 1.5.7 (``pytorch_grad_cam/*.py``) exactly, constants included, and the
tests check parity with it.
"""

from __future__ import annotations

from typing import Callable

import torch

WeightingFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

WEIGHTINGS: dict[str, WeightingFn] = {}


def register_weighting(name: str) -> Callable[[WeightingFn], WeightingFn]:
    """Decorator: make ``fn(activations, gradients) -> (B, h, w)`` available as ``weighting=name``."""

    def deco(fn: WeightingFn) -> WeightingFn:
        if name in WEIGHTINGS:
            raise ValueError(f"weighting {name!r} is already registered")
        WEIGHTINGS[name] = fn
        return fn

    return deco


@register_weighting("gradcam")
def gradcam(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017): channel weights = spatial mean of the gradients."""
    return (grad.mean((2, 3), keepdim=True) * act).sum(1)


@register_weighting("layercam")
def layercam(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """LayerCAM (Jiang et al. 2021): element-wise positive gradients as weights."""
    return (grad.clamp_min(0) * act).sum(1)


@register_weighting("gradcampp")
def gradcampp(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, Eq. 19) as pytorch-grad-cam computes it: with exponential scores the
    higher derivatives are powers of the gradient, alpha = g^2 / (2 g^2 + sum(A) g^3 + 1e-6), zero where g = 0,
    channel weight = sum over positions of alpha * relu(g)."""
    g2 = grad.pow(2)
    g3 = g2 * grad
    alpha = g2 / (2 * g2 + act.sum((2, 3), keepdim=True) * g3 + 1e-6)
    alpha = torch.where(grad != 0, alpha, torch.zeros_like(alpha))
    weights = (grad.clamp_min(0) * alpha).sum((2, 3), keepdim=True)
    return (weights * act).sum(1)


@register_weighting("xgradcam")
def xgradcam(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM (Fu et al. 2020): channel weight = sum over positions of g * A / (sum(A) + 1e-7)."""
    weights = (grad * act / (act.sum((2, 3), keepdim=True) + 1e-7)).sum((2, 3), keepdim=True)
    return (weights * act).sum(1)


@register_weighting("hirescam")
def hirescam(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """HiResCAM (Draelos & Carin 2020): the element-wise product of gradients and activations, summed over
    channels (no averaging, so the map stays faithful to the score)."""
    return (grad * act).sum(1)


@register_weighting("eigengradcam")
def eigengradcam(act: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """EigenGrad-CAM (pytorch-grad-cam; Eigen-CAM of Muhammad & Yeasin 2020 on gradient * activation): the projection
    of each position's centred channel vector onto the first principal direction.

    The SVD's sign is arbitrary: pytorch-grad-cam leaves it to LAPACK, so its map comes out inverted for about half
    of the inputs. Here the sign is fixed so that the projection correlates non-negatively with the channel sum of
    gradient * activation (HiResCAM's map, the direction that raises the score); otherwise as pytorch-grad-cam.
    """
    prod = torch.nan_to_num(grad * act, nan=0.0)
    b, c, h, w = prod.shape
    flat = prod.reshape(b, c, h * w).transpose(1, 2)  # (B, HW, C): one row per position
    flat = flat - flat.mean(1, keepdim=True)
    # Only the first right-singular vector is needed; the reduced SVD gives the same one as a full one.
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    proj = (flat @ vh[:, 0, :].unsqueeze(-1)).squeeze(-1)  # (B, HW)
    return orient_projection(proj, prod.sum(1).reshape(b, h * w)).reshape(b, h, w)


def orient_projection(proj: torch.Tensor, evidence: torch.Tensor) -> torch.Tensor:
    """Flip each row of ``proj`` (B, N) whose centred dot product with ``evidence`` (B, N) is negative."""
    dot = (proj * (evidence - evidence.mean(-1, keepdim=True))).sum(-1, keepdim=True)
    return torch.where(dot < 0, -proj, proj)
