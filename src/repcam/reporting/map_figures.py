"""Map figures: the image with class activation maps over it and the ground truth, side by side (paper Fig. 1/5),
and the map of every layer with their fusion (Fig. 6)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib import cm, colors
from matplotlib.figure import Figure

from repcam.data.images import for_display
from repcam.reporting.figure_base import finish_figure, label_text, new_figure

IGNORE_INDEX = 255
MAP_CMAP = "jet"


def _as_image(image: Any) -> np.ndarray:
    """PIL image or array -> (H, W, 3) float in [0, 1]."""
    a = np.asarray(image)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.ndim != 3:
        raise ValueError(f"image must be (H, W) or (H, W, C), got shape {a.shape}")
    if a.shape[-1] == 4:
        a = a[..., :3]
    if a.shape[-1] != 3 and a.shape[0] == 3:  # (3, H, W) tensor layout
        a = np.moveaxis(a, 0, -1)
    a = a.astype(np.float32)
    if a.max(initial=0) > 1.0:
        a = a / 255.0
    return np.clip(a, 0, 1)


def _as_map(m: Any) -> np.ndarray | None:
    if m is None:
        return None
    if hasattr(m, "detach"):
        m = m.detach().cpu().numpy()
    a = np.asarray(m, dtype=np.float32)
    while a.ndim > 2 and a.shape[0] == 1:  # leading batch/channel axes only: a 1x1 map must stay (1, 1), not become ()
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"a map must be 2-D, got shape {a.shape}")
    return a


def _blank(ax, text: str = "n/a") -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _map_panels(
    image: Any,
    panels: Sequence[tuple[str, Any]],
    gt_mask: Any | None,
    ignore_mask: Any | None,
    title: str | None,
    alpha: float,
    cmap: str,
    shared_colorbar: bool = False,
) -> Figure:
    """Image | one overlay per panel (each with a colour bar, or one for all) | GT."""
    img = _as_image(for_display(image))  # a figure never needs more than DISPLAY_SIDE pixels; a photo costs GBs
    H, W = img.shape[:2]
    n = 1 + len(panels) + (gt_mask is not None)
    aspect = min(max(H / max(W, 1), 0.4), 2.0)
    fig = new_figure(figsize=(2.7 * n, 2.3 * aspect + (1.0 if title else 0.6)), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    extent = (-0.5, W - 0.5, H - 0.5, -0.5)  # maps of any resolution stretched over the image
    axes[0].imshow(img, extent=extent)
    axes[0].set_title("Image", fontsize=9)
    _no_ticks(axes[0])
    mappable = cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap=cmap)
    drawn = []
    for ax, (name, m) in zip(axes[1:], panels):
        ax.set_title(label_text(name, 24), fontsize=9)
        a = _as_map(m)
        if a is None or not np.isfinite(a).any():
            ax.imshow(img, extent=extent, alpha=0.3)
            _blank(ax)
            continue
        ax.imshow(img, extent=extent)
        ax.imshow(np.nan_to_num(a, nan=0.0), cmap=cmap, vmin=0, vmax=1, alpha=alpha, extent=extent, interpolation="bilinear")
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        _no_ticks(ax)
        drawn.append(ax)
        if not shared_colorbar:
            fig.colorbar(mappable, ax=ax, fraction=0.046, pad=0.02, shrink=0.8, ticks=[0, 0.5, 1])
    if gt_mask is not None:
        ax = axes[-1]
        gt = np.asarray(gt_mask).astype(bool)
        shown = np.where(gt, 1.0, 0.0)
        if ignore_mask is not None:
            shown = np.where(np.asarray(ignore_mask).astype(bool), 0.5, shown)
        ax.imshow(shown, cmap="gray", vmin=0, vmax=1, extent=(-0.5, gt.shape[1] - 0.5, gt.shape[0] - 0.5, -0.5), interpolation="nearest")
        ax.set_title("GT" + (" (grey: ignored)" if ignore_mask is not None and np.asarray(ignore_mask).any() else ""), fontsize=9)
        _no_ticks(ax)
    if shared_colorbar and drawn:
        fig.colorbar(mappable, ax=list(axes), fraction=0.015, pad=0.01, shrink=0.8, ticks=[0, 0.5, 1])
    if title:
        fig.suptitle(label_text(title, 40 * n // 2), fontsize=10)
    return fig


def overlay_grid(
    image: Any,
    maps: Mapping[str, Any],
    gt_mask: Any | None,
    path: str | Path | None,
    *,
    title: str | None = None,
    ignore_mask: Any | None = None,
    fmt: str | None = None,
    alpha: float = 0.5,
    cmap: str = MAP_CMAP,
    dpi: int = 110,
) -> Figure | Path:
    """The image, each map of ``maps`` (title -> 2-D map in [0, 1], any resolution) over the image with a colour
    bar, and the ground truth (``gt_mask``: bool, True on the class), side by side (paper Fig. 1/5).

    A map that is ``None`` or all NaN gets an "n/a" panel. ``ignore_mask`` (bool) shows ignored pixels grey.
    """
    fig = _map_panels(image, list(maps.items()), gt_mask, ignore_mask, title, alpha, cmap)
    return finish_figure(fig, path, fmt, dpi)


def layer_grid(
    image: Any,
    layer_maps: Any,
    names: Sequence[str],
    fused: Any,
    path: str | Path | None,
    *,
    extra: Mapping[str, Any] | None = None,
    gt_mask: Any | None = None,
    ignore_mask: Any | None = None,
    title: str | None = None,
    fused_title: str = "Fusion",
    fmt: str | None = None,
    alpha: float = 0.5,
    cmap: str = MAP_CMAP,
    shared_colorbar: bool = True,
    dpi: int = 110,
) -> Figure | Path:
    """The image, the map of every layer (``layer_maps``: (L, H, W), shallow to deep, titled by ``names``), their
    fusion, then ``extra`` maps (e.g. Grad-CAM for comparison) and the ground truth if given (paper Fig. 6).
    One colour bar serves all panels unless ``shared_colorbar=False``."""
    layers = [_as_map(m) for m in layer_maps]
    if len(layers) != len(names):
        raise ValueError(f"{len(layers)} layer maps but {len(names)} names")
    panels = list(zip(names, layers)) + [(fused_title, fused)] + list((extra or {}).items())
    fig = _map_panels(image, panels, gt_mask, ignore_mask, title, alpha, cmap, shared_colorbar)
    return finish_figure(fig, path, fmt, dpi)
