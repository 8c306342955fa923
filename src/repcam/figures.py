"""Figures of a run: map overlays (paper Fig. 1/5), layer maps (Fig. 6), per-class bars (Fig. 8), B, pairwise
mIoU and threshold curves.

The plotting functions take plain arrays. With a ``path`` they save the figure (PNG unless the path's suffix or
``fmt`` says ``pdf`` or ``svg``) and return the saved path; with ``path=None`` they return the
:class:`matplotlib.figure.Figure`. They never touch pyplot's global state (no ``plt.figure``), so they are safe in
threads and in notebooks, and need no display.

:func:`run_figures` builds all of them for a finished run directory.
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib import cm, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from repcam.data.images import for_display
from repcam.layout import RunDir
from repcam.methods import Method
from repcam.records import RecordFile
from repcam.rundir import ClassFiles
from repcam.storage import ArtefactError, verify

log = logging.getLogger(__name__)

FORMATS = ("png", "pdf", "svg")
IGNORE_INDEX = 255
MAP_CMAP = "jet"


# ---------------------------------------------------------------------------------------------------- helpers


def _new_figure(**kwargs: Any) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend switch, no display needed."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _txt(s: Any, width: int | None = None) -> str:
    """Text for a matplotlib label: ``$`` escaped so user strings are never parsed as mathtext; optionally wrapped."""
    s = str(s)
    if width:
        s = "\n".join(textwrap.wrap(s, width, break_long_words=True, break_on_hyphens=False) or [""])
    return s.replace("$", r"\$")


def _out_path(path: str | Path, fmt: str | None) -> Path:
    p = Path(path)
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return p.with_suffix("." + fmt) if p.suffix.lower().lstrip(".") != fmt else p
    suffix = p.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return p
    return p.with_name(p.name + ".png")


def _finish(fig: Figure, path: str | Path | None, fmt: str | None, dpi: int) -> Figure | Path:
    if path is None:
        return fig
    out = _out_path(path, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    kind = out.suffix.lstrip(".").lower()
    meta = {"Software": None} if kind == "png" else ({"Date": None} if kind == "svg" else {"CreationDate": None})
    fig.savefig(out, format=kind, dpi=dpi, bbox_inches="tight", metadata=meta)
    return out


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
    a = np.squeeze(a)
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
    fig = _new_figure(figsize=(2.7 * n, 2.3 * aspect + (1.0 if title else 0.6)), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    extent = (-0.5, W - 0.5, H - 0.5, -0.5)  # maps of any resolution stretched over the image
    axes[0].imshow(img, extent=extent)
    axes[0].set_title("Image", fontsize=9)
    _no_ticks(axes[0])
    mappable = cm.ScalarMappable(norm=colors.Normalize(0, 1), cmap=cmap)
    drawn = []
    for ax, (name, m) in zip(axes[1:], panels):
        ax.set_title(_txt(name, 24), fontsize=9)
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
        fig.suptitle(_txt(title, 40 * n // 2), fontsize=10)
    return fig


# ---------------------------------------------------------------------------------------------------- plots


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
    return _finish(fig, path, fmt, dpi)


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
    return _finish(fig, path, fmt, dpi)


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
    width = min(max(6.0, C * (0.1 * M + 0.3) + 1.5), 30.0)
    fig = _new_figure(figsize=(width, 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(C)
    bw = 0.8 / M
    palette = matplotlib.colormaps["tab10" if M <= 10 else "tab20"]
    for k, m in enumerate(methods):
        v = np.asarray(per_class[m], dtype=float) * 100
        mean = np.nanmean(v) if np.isfinite(v).any() else float("nan")
        label = _txt(f"{m} (mean {mean:.1f})" if math.isfinite(mean) else f"{m} (no data)")
        ax.bar(x - 0.4 + bw * (k + 0.5), np.nan_to_num(v, nan=0.0), bw, label=label, color=palette(k % palette.N))
    tilt = C > 6 or max((len(str(c)) for c in classes), default=0) * C > 60
    ax.set_xticks(x, [_txt(c) for c in classes], rotation=45 if tilt else 0, ha="right" if tilt else "center",
                  rotation_mode="anchor" if tilt else "default", fontsize=8)
    ax.set_xlim(-0.6, C - 0.4)
    ax.set_ylabel("IoU (%)")
    top = max([float(np.nanmax(np.asarray(v, dtype=float))) * 100 for v in per_class.values() if np.isfinite(np.asarray(v, dtype=float)).any()] or [100.0])
    ax.set_ylim(0, min(100.0, 10 * math.ceil(top * 1.08 / 10)))
    ax.grid(axis="y", alpha=0.3)
    if methods:
        fig.legend(fontsize=8, ncols=min(M, 3), loc="outside lower center")
    if title:
        fig.suptitle(_txt(title), fontsize=10)
    return _finish(fig, path, fmt, dpi)


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
    fig = _new_figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    cmap = "viridis"
    im = ax.imshow(np.ma.masked_invalid(shown), cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_facecolor("0.85")
    labels = [_txt(classes[i]) for i in order]
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
        ax.set_title(_txt(title) + ("\nred borders: clusters" if blocks else ""), fontsize=10)
    return _finish(fig, path, fmt, dpi)


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
    fig = _new_figure(figsize=(side + 1.2, side), layout="constrained")
    ax = fig.subplots()
    finite = M[np.isfinite(M)]
    norm = colors.Normalize(0, max(float(finite.max()), 1.0) if finite.size else 100.0)
    im = ax.imshow(np.ma.masked_invalid(M), cmap="magma", norm=norm, interpolation="nearest")
    ax.set_facecolor("0.85")
    labels = [_txt(c) for c in classes]
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
        ax.set_title(_txt(title, 60), fontsize=10)
    return _finish(fig, path, fmt, dpi)


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
    fig = _new_figure(figsize=(8.5, 4.4), layout="constrained")
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
        ax.plot(t, v * 100, label=_txt(m), **style)
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
        ax.set_title(_txt(title), fontsize=10)
    return _finish(fig, path, fmt, dpi)


# ---------------------------------------------------------------------------------------------------- a run


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _is_row(name: str, layers: str) -> bool:
    """Whether ``name`` is a selection's paper row with ``layers`` ("A": its +A+F row, "last": its +F row)."""
    m = Method.try_parse(name)
    return m is not None and m.selection is not None and m == Method(m.selection, layers)  # type: ignore[arg-type]


def best_method(rows: Sequence[Mapping[str, Any]], suffix: str = "+A+F") -> str | None:
    """The method with the highest mIoU among the rows of a selection's +A+F (``suffix="+A+F"``) or +F
    (``suffix="+F"``: without A) map, the paper's rows (ties: first in order)."""
    layers = {"+A+F": "A", "+F": "last"}[suffix]
    best, best_v = None, -math.inf
    for r in rows:
        v = r.get("miou")
        name = str(r.get("method", ""))
        if _is_row(name, layers) and v is not None and math.isfinite(float(v)) and float(v) > best_v:
            best, best_v = str(r["method"]), float(v)
    return best


def pick_examples(method_records: Sequence[tuple[str, int, float]], base_records: Sequence[tuple[str, int, float]]) -> dict[str, dict[str, Any]]:
    """Best, median and worst (image, class) by IoU gain of a method over the baseline, from ``records``
    ((image_id, class, IoU) lists). Pairs with a NaN IoU on either side are left out; ties are broken by id, class."""
    base = {(str(i), int(c)): float(v) for i, c, v in base_records}
    gains = []
    for i, c, v in method_records:
        b = base.get((str(i), int(c)))
        if b is None or not (math.isfinite(v) and math.isfinite(b)):
            continue
        gains.append((v - b, str(i), int(c), float(v), b))
    gains.sort()
    if not gains:
        return {}
    picks = {"best": gains[-1], "median": gains[len(gains) // 2], "worst": gains[0]}
    out: dict[str, dict[str, Any]] = {}
    seen = set()
    for label, (g, i, c, v, b) in picks.items():
        if (i, c) in seen:
            continue
        seen.add((i, c))
        out[label] = {"image_id": i, "cls": c, "gain": g, "iou": v, "base_iou": b}
    return out


def _stored_map(path: Path, kind: str, image: int, cls: int) -> np.ndarray | None:
    """The stored ``kind`` map of (image, class) from a record file, or None; reads that one row only."""
    if not path.is_file():
        return None
    rec = RecordFile(verify(path))  # checksum, then the dtype allow-list, before a byte is mapped
    rows = np.flatnonzero((rec.image == image) & (rec.cls == cls))
    return rec.rows(kind, rows[:1])[0] if len(rows) and kind in rec else None


def _selection_for(sel_name: str, paths: RunDir, split: str, classes: Sequence[str]) -> dict[str, list[str]]:
    sels = _read_json(paths.selections).get("selections", {}) if paths.selections.is_file() else {}
    if sel_name in sels:
        return sels[sel_name]
    if sel_name.startswith("Top-") and paths.pairwise(split).is_file():
        from repcam.selection import topk_select

        pw = _read_json(paths.pairwise(split))
        M = np.array([[np.nan if v is None else v for v in row] for row in pw["miou"]], dtype=float)
        np.fill_diagonal(M, np.nan)
        k = int(sel_name.split("-", 1)[1])
        out = {}
        for c in range(len(classes)):
            row = np.full_like(M, np.nan)
            row[c] = M[c]
            if np.isfinite(M[c]).sum() >= k:
                out[classes[c]] = [classes[s] for s in topk_select(row, k)[c]]
        return out
    raise KeyError(f"selection {sel_name!r} is not in selections.json")


class _RunData:
    """Lazy access to what the example figures need from a run directory."""

    def __init__(self, run_dir: Path, split: str) -> None:
        from repcam.config import load_config

        self.dir = run_dir
        self.paths = RunDir(run_dir)
        self.split = split
        self.cfg = load_config(self.paths.config)
        self.cfg.device = "cpu"
        self._ds = None

    @property
    def ds(self):
        if self._ds is None:
            from repcam.run import Run

            ds = Run(self.cfg, self.dir, show_progress=False).load_split(self.split, for_eval=True)
            mx = self.cfg.data.max_eval_images
            if mx is not None and len(ds) > mx:
                ds.samples = ds.samples[:mx]
            self._ds = ds
        return self._ds

    @property
    def crop(self) -> bool:
        return self.cfg.evaluation.protocol == "crop"

    def image_and_mask(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from repcam.backbones import centre_crop_box

        img = self.ds.image(i).convert("RGB")
        mask = np.asarray(self.ds.mask(i))
        if self.crop:
            box = centre_crop_box(img.size)
            img = img.crop(box)
            mask = mask[box[1] : box[3], box[0] : box[2]]
        return np.asarray(img), mask

    def model(self, state_path: Path, num_classes: int):
        import torch

        from repcam.backbones import build_classifier

        b = self.cfg.backbone
        bb = build_classifier(b.name, num_classes, weights=None, input_size=b.input_size)
        bb.model.load_state_dict(torch.load(verify(state_path), map_location="cpu", weights_only=True))
        return bb.model.eval(), bb.preprocess

    def layer_maps(self, state_path: Path, num_classes: int, i: int, target: int):
        from repcam.cam import MultiLayerGradCAM

        model, pre = self.model(state_path, num_classes)
        x = pre.normalize(pre.to_uint8(self.ds.image(i), self.crop).unsqueeze(0))
        res = MultiLayerGradCAM(model, "auto")(x, [target])
        return res.layer_names, res.layer_maps[0].numpy(), res.fused[0].numpy(), res.last[0].numpy()


def run_figures(run_dir: str | Path, split: str, *, fmt: str = "png", examples: bool = True, layers: bool = True) -> dict[str, Path]:
    """All figures of one evaluated split of a finished run, into ``run_dir/figures/<split>/``.

    Returns {name: path}. Also writes ``index.json`` there: {"figures": {name: {"file", "caption"}},
    "skipped": {name: reason}} (a figure whose inputs are missing or fail is skipped, never fatal).
    Example figures pick the best, median and worst (image, class) by IoU gain of the best "+A+F" method over
    Grad-CAM; they need the data set (reloaded from ``config.yaml``) and the stored maps; the layer figures also
    load the pair model (the method's first representative class) and recompute its per-layer Grad-CAM.
    """
    from repcam.evaluate import BASELINE, MC_METHODS
    from repcam.metrics import IoUAccumulator
    from repcam.storage import write_json
    from repcam.tables import method_order

    run_dir = Path(run_dir)
    paths = RunDir(run_dir)
    out = paths.figures_dir(split)
    out.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    captions: dict[str, str] = {}
    skipped: dict[str, str] = {}
    warnings: list[str] = []

    def attempt(name: str, caption: str, make) -> Any:
        try:
            p = make(out / name)
        except ArtefactError:  # a damaged or foreign file in the run directory is not a missing figure: refuse
            raise
        except Exception as e:  # a figure is a convenience: report why it is missing, never fail the run
            log.warning("figure %s skipped: %s", name, e)
            skipped[name] = f"{type(e).__name__}: {e}"
            return None
        if p is not None:
            figs[name] = Path(p)
            captions[name] = caption
        return p

    sim = _read_json(paths.similarity) if paths.similarity.is_file() else None
    classes: list[str] = list(sim["classes"]) if sim else []
    clusters = None
    if paths.selections.is_file():
        clusters = _read_json(paths.selections).get("clusters")
    if sim:
        attempt("similarity", "Similarity matrix B, rows and columns grouped by cluster (red borders); diagonal masked, log colour scale.",
                lambda p: similarity_heatmap(sim["B"], classes, clusters, p, fmt=fmt))
    else:
        skipped["similarity"] = "similarity.json not found"

    accs: dict[str, IoUAccumulator] = {}
    if paths.accumulators(split).is_file():
        accs = {m: IoUAccumulator.from_state_dict(s) for m, s in _read_json(paths.accumulators(split)).items()}
    rows = _read_json(paths.ablation(split))["rows"] if paths.ablation(split).is_file() else []
    if not rows and accs:
        rows = [{"method": m, "miou": a.miou()} for m, a in accs.items()]
    best = best_method(rows)
    best_f = best_method(rows, "+F")
    if not classes and paths.pairwise(split).is_file():
        classes = list(_read_json(paths.pairwise(split))["classes"])

    if accs and classes:
        order = method_order(list(accs))
        chosen = [m for m in order if m in MC_METHODS] + [m for m in (best_f, best) if m and m in accs]
        attempt("per_class", "Per-class IoU at the run's threshold: the multi-class baselines and the best +F and +A+F methods (paper Fig. 8).",
                lambda p: per_class_bars({m: accs[m].per_class_iou().tolist() for m in chosen}, classes, p, fmt=fmt,
                                         title=f"Per-class IoU on {split}"))
        curves = [m for m in order if m in MC_METHODS or _is_row(m, "A") or m == best_f]
        primary = next(iter(accs.values())).primary
        attempt("thresholds", "mIoU against the threshold that binarises the maps (dots: each method's best threshold; dotted line: the run's threshold).",
                lambda p: threshold_curves({m: accs[m].sweep() for m in curves}, p, primary=primary, fmt=fmt,
                                           title=f"mIoU against the threshold on {split}"))
    else:
        skipped["per_class"] = skipped["thresholds"] = "accumulators.json not found"

    if paths.pairwise(split).is_file():
        pw = _read_json(paths.pairwise(split))
        if any(v is not None and math.isfinite(v) for row in pw["miou"] for v in row):
            attempt("pairwise", "Grad-CAM mIoU of each class (row) from its binary model against each other class (column); grey: no model.",
                    lambda p: pairwise_heatmap(pw["miou"], pw["classes"], p, fmt=fmt))
        else:
            skipped["pairwise"] = "no pair model scored"

    if examples:
        if not (best and BASELINE in accs and best in accs):
            skipped["examples"] = f"needs the {BASELINE} and a '+A+F' method in accumulators.json"
        else:
            picks = pick_examples(accs[best].records, accs[BASELINE].records)
            if not picks:
                skipped["examples"] = "no (image, class) with an IoU for both methods"
            data = _RunData(run_dir, split) if picks else None
            for label, pick in picks.items():
                pick["threshold"] = accs[BASELINE].primary
                n_warn = len(warnings)
                attempt(f"example_{label}", _example_caption(label, pick, best, classes),
                        lambda p, pick=pick, label=label: _example_figure(data, pick, label, best, classes, p, fmt, warnings))
                if len(warnings) > n_warn and f"example_{label}" in captions:
                    captions[f"example_{label}"] += " Warning: " + warnings[-1]
                if layers:
                    attempt(f"layers_{label}", f"Per-layer Grad-CAM maps and their fusion (paper Fig. 6) for the {label} example, "
                            f"from the binary model of the class against its first representative in {best}; Grad-CAM of the multi-class model for comparison.",
                            lambda p, pick=pick, label=label: _layer_figure(data, pick, label, best, classes, p, fmt))

    index = {"split": split, "figures": {n: {"file": figs[n].name, "caption": captions[n]} for n in figs}, "skipped": skipped,
             "warnings": warnings}
    write_json(paths.figure_index(split), index)
    return figs


def _example_caption(label: str, pick: Mapping[str, Any], method: str, classes: Sequence[str]) -> str:
    c = classes[pick["cls"]] if pick["cls"] < len(classes) else str(pick["cls"])
    return (f"{label.capitalize()} gain of {method} over Grad-CAM: image {pick['image_id']}, class {c}; "
            f"IoU {pick['iou']:.2f} vs {pick['base_iou']:.2f} ({pick['gain']:+.2f}). "
            f"Panels: the map from each representative class's binary model, their fusion, Grad-CAM, ground truth.")


def _pair_file(path_of: Callable[[ClassFiles, str, str], Path], names: Sequence[str], c: int, s: int) -> tuple[Path, int]:
    """Path of the (c, s) pair artefact (``path_of``: a RunDir method) and the target logit of class c in it."""
    a, b = sorted((c, s))
    return path_of(ClassFiles(names), names[a], names[b]), (0 if c == a else 1)


def _example_figure(data: _RunData, pick: Mapping[str, Any], label: str, method: str, classes: Sequence[str], path: Path, fmt: str,
                    warnings: list[str] | None = None) -> Path:
    from repcam.metrics import IoUAccumulator
    from repcam.representative import fuse_stored

    ds = data.ds
    names = list(ds.class_names)
    ids = {s.id: i for i, s in enumerate(ds.samples)}
    if pick["image_id"] not in ids:
        raise KeyError(f"image {pick['image_id']!r} is not in the reloaded {data.split} split")
    i, c = ids[pick["image_id"]], int(pick["cls"])
    gradcam = _stored_map(data.paths.multiclass_maps(data.split), "last", i, c)
    sel = _selection_for(Method.parse(method).selection, data.paths, data.split, names)
    reps = sel.get(names[c], [])
    panels: dict[str, Any] = {}
    avail = []
    for sname in reps:
        if sname not in names:
            continue
        f, _ = _pair_file(lambda files, a, b: data.paths.pair_maps(data.split, files, a, b), names, c, names.index(sname))
        m = _stored_map(f, "fused", i, c)
        panels[f"vs {sname}"] = m
        if m is not None:
            avail.append(m)
    fused = fuse_stored(avail) if avail else None  # the paper's F over the stored representative maps
    panels[f"{method} (IoU {pick['iou']:.2f})"] = fused
    panels[f"Grad-CAM (IoU {pick['base_iou']:.2f})"] = gradcam
    img, mask = data.image_and_mask(i)
    if gradcam is not None and warnings is not None and "threshold" in pick:
        # The data set is regenerated/reloaded now: check it is the one the maps were scored on.
        t = float(pick["threshold"])
        again = IoUAccumulator(len(names), thresholds=(t,), primary=t).add(pick["image_id"], c, gradcam.astype(np.float32), mask)
        if not (abs(again - pick["base_iou"]) < 1e-6 or (math.isnan(again) and math.isnan(pick["base_iou"]))):
            warnings.append(f"{data.split} image {pick['image_id']}: its reloaded mask gives Grad-CAM IoU {again:.4f}, the run recorded "
                            f"{pick['base_iou']:.4f}; the data set (or its generator) changed since the run, so images and GT "
                            "shown may not be those the maps were computed on.")
    title = f"{label}: image {pick['image_id']}, class {names[c]} (gain {pick['gain']:+.2f})"
    return overlay_grid(img, panels, mask == c + 1, path, title=title, ignore_mask=mask == IGNORE_INDEX, fmt=fmt)


def _layer_figure(data: _RunData, pick: Mapping[str, Any], label: str, method: str, classes: Sequence[str], path: Path, fmt: str) -> Path:
    ds = data.ds
    names = list(ds.class_names)
    i = {s.id: k for k, s in enumerate(ds.samples)}[pick["image_id"]]
    c = int(pick["cls"])
    sel = _selection_for(Method.parse(method).selection, data.paths, data.split, names)
    model_desc, state, n_out, target = None, None, 0, 0
    for sname in sel.get(names[c], []):
        if sname in names:
            f, t = _pair_file(data.paths.pair_model, names, c, names.index(sname))
            if f.is_file():
                model_desc, state, n_out, target = f"binary model {names[c]} vs {sname}", f, 2, t
                break
    if state is None:  # no pair model: the multi-class model's layers
        state, n_out, target, model_desc = data.paths.multiclass_model, len(names), c, "multi-class model"
    layer_names, layer_maps, fused, _ = data.layer_maps(state, n_out, i, target)
    gradcam = _stored_map(data.paths.multiclass_maps(data.split), "last", i, c)
    img, mask = data.image_and_mask(i)
    title = f"{label}: image {pick['image_id']}, class {names[c]}; layers of the {model_desc}"
    return layer_grid(img, layer_maps, layer_names, fused, path, extra={"Grad-CAM (multi-class)": gradcam},
                      gt_mask=mask == c + 1, ignore_mask=mask == IGNORE_INDEX, title=title, fused_title="Fusion (A)", fmt=fmt)
