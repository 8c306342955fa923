"""A map over its image as an RGB array (what pytorch-grad-cam's ``show_cam_on_image`` and torchcam's ``overlay_mask``
return), for notebooks and user figures; repcam's own figures are :mod:`repcam.reporting.figures`."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["overlay"]


def overlay(image, cam, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
    """``image`` with ``cam`` drawn over it: an (H, W, 3) uint8 RGB array at the image's size.

    ``image``: a path, PIL image or array ((H, W), (H, W, 3|4); uint8, or float in [0, 1]). ``cam``: a 2-D map of any
    size (a tensor or array), resized to the image (bilinear) and min-max normalised (a constant map is clipped to
    [0, 1]). ``alpha``: the weight of the coloured map (0: the image alone, 1: the map alone). ``colormap``: a
    matplotlib colormap name. A bad argument is a one-line ``ValueError`` naming it.
    """
    from repcam.stock.images import load_image

    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    rgb = load_image(image).astype(np.float32) / 255.0
    m = np.asarray(cam.detach().cpu() if hasattr(cam, "detach") else cam, dtype=np.float32)
    m = np.squeeze(m)
    if m.ndim != 2 or m.size == 0:
        raise ValueError(f"cam must be a 2-D map, got shape {np.shape(cam)}")
    if not np.isfinite(m).all():
        raise ValueError("cam holds NaN or inf")
    h, w = rgb.shape[:2]
    if m.shape != (h, w):
        m = np.asarray(Image.fromarray(m).resize((w, h), Image.Resampling.BILINEAR))
    lo, hi = float(m.min()), float(m.max())
    m = (m - lo) / (hi - lo) if hi > lo else np.clip(m, 0.0, 1.0)
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(f"unknown colormap {colormap!r} (a matplotlib colormap name, e.g. jet, viridis, inferno)") from None
    heat = cmap(m)[..., :3].astype(np.float32)
    out = (1.0 - alpha) * rgb + alpha * heat
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
