"""Chart figures: per-class IoU bars (paper Fig. 8) and mIoU against the binarisation threshold."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from repcam.reporting.figure_base import finish_figure, label_text, new_figure


MAX_PER_ROW = 27  # classes per panel of per_class_bars (80 classes: 3 panels)


def per_class_bars(
    per_class: Mapping[str, Sequence[float]],
    classes: Sequence[str],
    path: str | Path | None,
    *,
    title: str | None = None,
    fmt: str | None = None,
    dpi: int = 110,
) -> Figure | Path:
    """Grouped bars of each method's per-class IoU (values in [0, 1], NaN = no data), as in the paper's Fig. 8.
    The legend gives each method's mean over the classes with data."""
    methods = list(per_class)
    C, M = len(classes), max(len(methods), 1)
    for m in methods:
        if len(per_class[m]) != C:
            raise ValueError(f"method {m!r} has {len(per_class[m])} values for {C} classes")
    # Many classes (COCO's 80) wrap onto stacked panels of at most MAX_PER_ROW classes: one 30-inch strip scaled to a
    # page's width leaves its class names unreadable.
    rows = math.ceil(C / MAX_PER_ROW) if C > MAX_PER_ROW else 1
    per = math.ceil(C / rows) if C else 0
    width = min(max(6.0, per * (0.1 * M + 0.3) + 1.5), 30.0)
    fig = new_figure(figsize=(width, 3.4 * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, 1, squeeze=False)[:, 0])
    bw = 0.8 / M
    palette = matplotlib.colormaps["tab10" if M <= 10 else "tab20"]
    top = max([float(np.nanmax(np.asarray(v, dtype=float))) * 100 for v in per_class.values() if np.isfinite(np.asarray(v, dtype=float)).any()] or [100.0])
    for r, ax in enumerate(axes):
        lo, hi = r * per, min(C, (r + 1) * per)
        x = np.arange(hi - lo)
        for k, m in enumerate(methods):
            v = np.asarray(per_class[m], dtype=float) * 100
            mean = np.nanmean(v) if np.isfinite(v).any() else float("nan")
            label = label_text(f"{m} (mean {mean:.1f})" if math.isfinite(mean) else f"{m} (no data)")
            ax.bar(x - 0.4 + bw * (k + 0.5), np.nan_to_num(v[lo:hi], nan=0.0), bw, label=label if r == 0 else None,
                   color=palette(k % palette.N))
        names = classes[lo:hi]
        tilt = len(names) > 6 or max((len(str(c)) for c in names), default=0) * len(names) > 60
        ax.set_xticks(x, [label_text(c) for c in names], rotation=45 if tilt else 0, ha="right" if tilt else "center",
                      rotation_mode="anchor" if tilt else "default", fontsize=8)
        ax.set_xlim(-0.6, per - 0.4)
        ax.set_ylabel("IoU (%)")
        ax.set_ylim(0, min(100.0, 10 * math.ceil(top * 1.08 / 10)))
        ax.grid(axis="y", alpha=0.3)
    if methods:
        fig.legend(fontsize=8, ncols=min(M, 3), loc="outside lower center")
    if title:
        fig.suptitle(label_text(title), fontsize=10)
    return finish_figure(fig, path, fmt, dpi)


def threshold_curves(
    sweep: Mapping[str, Mapping[float, float]],
    path: str | Path | None,
    *,
    primary: float | None = None,
    baseline: str | None = "Grad-CAM",
    title: str | None = "mIoU against the binarisation threshold",
    fmt: str | None = None,
    dpi: int = 110,
) -> Figure | Path:
    """One curve per method (threshold -> mIoU in [0, 1], shown in %); the best threshold of each is marked and
    ``primary`` (the run's threshold) drawn as a dashed line; ``baseline`` is drawn thick and black."""
    fig = new_figure(figsize=(8.5, 4.4), layout="constrained")
    ax = fig.subplots()
    methods = list(sweep)
    palette = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    k = 0
    for m in methods:
        pts = sorted((float(t), float(v)) for t, v in sweep[m].items() if v is not None and math.isfinite(float(v)))
        if not pts:
            continue
        t, v = np.array(pts).T
        if m == baseline:
            style = {"color": "black", "linewidth": 2.5, "zorder": 3}
        else:
            style = {"color": palette(k % palette.N), "linewidth": 1.4, "linestyle": "-" if "+A" in m or "+F" in m else "--"}
            k += 1
        ax.plot(t, v * 100, label=label_text(m), **style)
        b = int(np.argmax(v))
        ax.plot(t[b], v[b] * 100, "o", color=style["color"], markersize=4)
    if primary is not None:
        ax.axvline(primary, color="0.4", linestyle=":", linewidth=1)
        ax.text(primary, 0.99, f" T={primary:g}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="0.3")
    ax.set_xlabel("threshold")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    if methods:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    if title:
        ax.set_title(label_text(title), fontsize=10)
    return finish_figure(fig, path, fmt, dpi)
