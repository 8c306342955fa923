"""A paired bootstrap over images for the difference in mIoU between two methods (mean and per class).

Images are resampled with replacement and each replicate's mIoU is computed from the resampled per-class
intersections and unions, as :meth:`repcam.evaluation.metrics.IoUAccumulator.miou` does on all images.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from repcam.evaluation.metrics import IoUAccumulator, nanmean, safe_div


def _miou_from_counts(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU along the last axis (classes), skipping classes with zero union."""
    return nanmean(safe_div(inter, union), axis=-1)


def bootstrap_diff_ci(
    image_index: Sequence[Hashable] | np.ndarray,
    classes: Sequence[int] | np.ndarray,
    inter_a: Sequence[int] | np.ndarray,
    union_a: Sequence[int] | np.ndarray,
    inter_b: Sequence[int] | np.ndarray,
    union_b: Sequence[int] | np.ndarray,
    *,
    num_classes: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    per_class: bool = False,
) -> tuple[Any, Any, Any]:
    """Percentile bootstrap CI over images of mIoU(a) - mIoU(b), both on the same records.

    All six arrays have one entry per (image, class) record, in the same order for a and b:
    the record's image (any hashable id, e.g. the image_id), its class, and the intersection
    and union of each method at the primary threshold (see ``IoUAccumulator.primary_counts``).
    Images are resampled with replacement; each replicate sums counts per class and takes the
    mIoU as in ``IoUAccumulator.miou``. Returns (point estimate on all images, low, high); with
    ``per_class=True``, that triple and the same three as (C,) arrays of per-class IoU differences (NaN where
    undefined), both from the same replicates.
    """
    cls = np.asarray(classes, dtype=np.int64)
    arrays = [np.asarray(x, dtype=np.float64) for x in (inter_a, union_a, inter_b, union_b)]
    n_rec = len(cls)
    if len(image_index) != n_rec or any(a.shape != (n_rec,) for a in arrays):
        raise ValueError("image_index, classes and the four count arrays must have the same length")
    if n_rec == 0:
        raise ValueError("no records to bootstrap")
    if not 0 < confidence < 1 or n_boot <= 0:
        raise ValueError("need 0 < confidence < 1 and n_boot > 0")
    n_cls = int(num_classes) if num_classes is not None else int(cls.max()) + 1
    if cls.min() < 0 or cls.max() >= n_cls:
        raise ValueError(f"classes must lie in [0, {n_cls})")
    ia, ua, ib, ub = _image_tables(image_index, cls, arrays, n_cls)
    point = float(_miou_from_counts(ia.sum(0), ua.sum(0)) - _miou_from_counts(ib.sum(0), ub.sum(0)))
    diffs, class_diffs = _replicate_diffs(ia, ua, ib, ub, n_boot, seed, per_class)
    q = 100.0 * (1.0 - confidence) / 2.0
    # A replicate where neither method has a class with non-zero union gives NaN; drop it.
    diffs = diffs[~np.isnan(diffs)]
    mean = (point, float("nan"), float("nan"))
    if diffs.size:
        low, high = np.percentile(diffs, [q, 100.0 - q])
        mean = (point, float(low), float(high))
    if class_diffs is None:
        return mean
    points = safe_div(ia.sum(0), ua.sum(0)) - safe_div(ib.sum(0), ub.sum(0))
    lows, highs = np.full(n_cls, np.nan), np.full(n_cls, np.nan)
    for c in range(n_cls):
        col = class_diffs[:, c][~np.isnan(class_diffs[:, c])]
        if col.size:
            lows[c], highs[c] = np.percentile(col, [q, 100.0 - q])
    return mean, (points, lows, highs)


def _image_tables(image_index: Any, cls: np.ndarray, arrays: list[np.ndarray], n_cls: int) -> list[np.ndarray]:
    """Per-image, per-class sums (images x classes) of each per-record count array; images in sorted id order."""
    _, img = np.unique(np.asarray(image_index), return_inverse=True)
    img = img.ravel()
    n_img = int(img.max()) + 1
    # Per-image, per-class counts: a replicate's totals are then image weights @ these tables.
    cell = img * n_cls + cls
    return [np.bincount(cell, weights=a, minlength=n_img * n_cls).reshape(n_img, n_cls) for a in arrays]


def _replicate_diffs(
    ia: np.ndarray, ua: np.ndarray, ib: np.ndarray, ub: np.ndarray, n_boot: int, seed: int, per_class: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """mIoU(a) - mIoU(b) of ``n_boot`` replicates that resample the images (rows of the count tables) with
    replacement, and with ``per_class`` the (n_boot, C) per-class IoU differences of the same replicates."""
    n_img, n_cls = ia.shape
    diffs = np.empty(n_boot)
    class_diffs = np.empty((n_boot, n_cls)) if per_class else None
    counts = np.hstack([ia, ua, ib, ub])
    start = 0
    for w in _replicate_weights(n_img, n_boot, seed):
        m = w.shape[0]
        # One product for the four tables; counts are whole numbers, so every order of summation gives the same sums.
        ria, rua, rib, rub = np.split(w @ counts, 4, axis=1)
        diffs[start : start + m] = _miou_from_counts(ria, rua) - _miou_from_counts(rib, rub)
        if class_diffs is not None:
            class_diffs[start : start + m] = safe_div(ria, rua) - safe_div(rib, rub)
        start += m
    return diffs, class_diffs


@functools.lru_cache(maxsize=2)
def _replicate_weights(n_img: int, n_boot: int, seed: int) -> tuple[np.ndarray, ...]:
    """The (replicates x images) resampling weights (how often each image is drawn), in chunks: the same for every
    pair of rows of a split (same images, replicates and seed), so drawn once and shared (read-only) by all of them."""
    rng = np.random.default_rng(seed)
    # Bounds each chunk (8 MB); up to 1,000 images the 1,000 replicates are one chunk, and chunking changes the
    # random draws, so this cap is part of the results' reproducibility.
    chunk = max(1, 1_000_000 // n_img)
    out = []
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        draws = rng.integers(0, n_img, size=(m, n_img))
        flat = (np.arange(m)[:, None] * n_img + draws).ravel()
        w = np.bincount(flat, minlength=m * n_img).reshape(m, n_img).astype(np.float64)
        w.flags.writeable = False
        out.append(w)
    return tuple(out)


def paired_bootstrap(
    acc_a: IoUAccumulator,
    acc_b: IoUAccumulator,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    per_class: bool = False,
) -> tuple[Any, Any, Any]:
    """:func:`bootstrap_diff_ci` for two accumulators that saw the same (image, class) pairs.

    Records are matched by (image_id, class), so the two need not have been filled in the same
    order; each pair must occur once in each.
    """
    if acc_a.num_classes != acc_b.num_classes:
        raise ValueError("accumulators have different numbers of classes")
    a, b = acc_a.primary_counts(), acc_b.primary_counts()
    keys_a = list(zip(a.image_ids, a.classes.tolist()))
    keys_b = list(zip(b.image_ids, b.classes.tolist()))
    if len(set(keys_a)) != len(keys_a) or len(set(keys_b)) != len(keys_b):
        raise ValueError("an (image_id, class) pair was added more than once")
    if set(keys_a) != set(keys_b):
        raise ValueError("the accumulators saw different (image_id, class) pairs")
    pos_b = {k: i for i, k in enumerate(keys_b)}
    order = np.asarray([pos_b[k] for k in keys_a], dtype=np.int64)
    return bootstrap_diff_ci(
        a.image_ids,
        a.classes,
        a.intersection,
        a.union,
        b.intersection[order],
        b.union[order],
        num_classes=acc_a.num_classes,
        n_boot=n_boot,
        seed=seed,
        confidence=confidence,
        per_class=per_class,
    )
