"""Matrix figures: the similarity matrix B ordered and boxed by cluster, and the pairwise mIoU matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from repcam.reporting.figure_base import finish_figure, label_text, new_figure


def cluster_order(classes: Sequence[str], clusters: Sequence[Sequence[Any]] | None) -> tuple[list[int], list[tuple[int, int]]]:
    """Class indices ordered cluster by cluster (members in class order), then classes in no cluster; and the
    (start, size) block of each cluster in that order. Cluster members are class names or indices."""
    index = {c: i for i, c in enumerate(classes)}
    order: list[int] = []
    blocks: list[tuple[int, int]] = []
    for group in clusters or []:
        members = sorted({m if isinstance(m, (int, np.integer)) and not isinstance(m, bool) else index[m] for m in group} - set(order))
        if members:
            blocks.append((len(order), len(members)))
            order += [int(m) for m in members]
    order += [i for i in range(len(classes)) if i not in set(order)]
    return order, blocks


def _annotate(ax, values: np.ndarray, fmt: str, norm, cmap) -> None:
    n = values.shape[0]
    size = 7 if n <= 12 else 6
    for r in range(values.shape[0]):
        for c in range(values.shape[1]):
            v = values[r, c]
            if not np.isfinite(v):
                continue
            rgba = matplotlib.colormaps[cmap](norm(v))
            lum = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2]
            ax.text(c, r, format(v, fmt), ha="center", va="center", fontsize=size, color="black" if lum > 0.55 else "white")


def similarity_heatmap(
    B: Any,
    classes: Sequence[str],
    clusters: Sequence[Sequence[Any]] | None,
    path: str | Path | None,
    *,
    log_scale: bool = True,
    mask_diagonal: bool = True,
    annotate: bool | None = None,
    title: str | None = "Similarity B (row: class, column: compared class)",
    fmt: str | None = None,
    dpi: int = 110,
) -> Figure | Path:
    """The similarity matrix B with rows and columns ordered cluster by cluster and a border around each cluster.

    B's diagonal (a class against itself) dwarfs the rest and is masked by default; values span decades, so the
    colour scale is logarithmic by default.
    """
    B = np.asarray(B, dtype=float)
    C = len(classes)
    if B.shape != (C, C):
        raise ValueError(f"B must be {C}x{C} for {C} classes, got {B.shape}")
    order, blocks = cluster_order(classes, clusters)
    M = B[np.ix_(order, order)].copy()
    if mask_diagonal:
        np.fill_diagonal(M, np.nan)
    finite = M[np.isfinite(M)]
    pos = finite[finite > 0]
    if log_scale and pos.size:
        vmax = float(pos.max())
        vmin = max(float(pos.min()), vmax * 1e-4)
        norm = colors.LogNorm(vmin=vmin, vmax=vmax if vmax > vmin else vmin * 10, clip=True)
        shown = np.where(np.isfinite(M), np.maximum(M, vmin), np.nan)
    else:
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        norm = colors.Normalize(lo, hi if hi > lo else lo + 1)
        shown = M
    side = min(max(4.5, 0.42 * C + 2.0), 24.0)
    fig = new_figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    cmap = "viridis"
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_facecolor("0.85")
    labels = [label_text(classes[i]) for i in order]
    ax.set_xticks(range(C), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(C), labels, fontsize=8)
    for start, size in blocks:
        ax.add_patch(Rectangle((start - 0.5, start - 0.5), size, size, fill=False, edgecolor="red", linewidth=2))
    if annotate is None:
        annotate = C <= 14
    if annotate:
        _annotate(ax, M, ".2g", norm, cmap)
    fig.colorbar(im, ax=ax, shrink=0.8, label="B (log scale)" if log_scale and pos.size else "B")
    if title:
        ax.set_title(label_text(title) + ("\nred borders: clusters" if blocks else ""), fontsize=10)
    return finish_figure(fig, path, fmt, dpi)


def pairwise_heatmap(
    matrix: Any,
    classes: Sequence[str],
    path: str | Path | None,
    *,
    annotate: bool | None = None,
    title: str | None = "Grad-CAM mIoU (%) of the row class from its binary model against the column class",
    fmt: str | None = None,
    dpi: int = 110,
) -> Figure | Path:
    """Pairwise mIoU matrix (values in [0, 1]; NaN or None = no model), shown in %; missing cells grey."""
    M = np.array([[np.nan if v is None else v for v in row] for row in np.asarray(matrix, dtype=object)], dtype=float) * 100
    C = len(classes)
    if M.shape != (C, C):
        raise ValueError(f"matrix must be {C}x{C} for {C} classes, got {M.shape}")
    side = min(max(4.5, 0.42 * C + 2.0), 24.0)
    fig = new_figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    finite = M[np.isfinite(M)]
    norm = colors.Normalize(0, max(float(finite.max()), 1.0) if finite.size else 100.0)
    im = ax.imshow(np.ma.masked_invalid(M), cmap="magma", norm=norm, interpolation="nearest")
    ax.set_facecolor("0.85")
    labels = [label_text(c) for c in classes]
    ax.set_xticks(range(C), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(C), labels, fontsize=8)
    ax.set_xlabel("against (binary model's other class)")
    ax.set_ylabel("class whose maps are scored")
    if annotate is None:
        annotate = C <= 14
    if annotate:
        _annotate(ax, M, ".0f", norm, "magma")
    fig.colorbar(im, ax=ax, shrink=0.8, label="mIoU (%)")
    if title:
        ax.set_title(label_text(title, 60), fontsize=10)
    return finish_figure(fig, path, fmt, dpi)
