"""Evaluating class activation maps against segmentation ground truth.

The paper's protocol: normalise a class's map to [0, 1], threshold it at T = 0.15, take the
IoU with that class's ground-truth mask, and report the mean over classes (mIoU). Intersections
and unions are summed over the whole data set per class before dividing (the usual semantic
segmentation convention); the mean of per-image IoUs is kept as a secondary number.

Also here: a threshold-free pixel average precision (PxAP) per class; PxAP over pixels pooled across images is
:mod:`repcam.evaluation.pxap`. The weakly-supervised-segmentation
protocol of IRN (argmax against a constant background plane, (C + 1)-label mIoU) is :mod:`repcam.evaluation.irn`,
the paired bootstrap over images for the difference in mIoU between two methods :mod:`repcam.evaluation.bootstrap`.

Masks follow :mod:`repcam.data.base`: 0 background, ``k + 1`` class ``k``, 255 ignored.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from repcam.evaluation.metric_names import DEFAULT_THRESHOLD  # the paper's threshold on normalised maps; defined with the metric names

DEFAULT_SWEEP: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""0.05, 0.10, ..., 0.95."""

IGNORE_INDEX = 255
"""Mask value ignored by every metric (same as ``repcam.data.base.IGNORE_INDEX``)."""

# Thresholds closer than this are the same threshold when looked up.
_THRESHOLD_TOL = 1e-9


# --------------------------------------------------------------------------------------------
# Map preparation
# --------------------------------------------------------------------------------------------


def check_2d(a: np.ndarray, what: str) -> None:
    """Raise ``ValueError`` naming ``what`` unless ``a`` is 2-D."""
    if a.ndim != 2:
        raise ValueError(f"{what} must be 2-D (H, W), got shape {a.shape}")


def normalize_map(cam: np.ndarray) -> np.ndarray:
    """Min-max normalise a 2-D map to [0, 1] as float32; a constant map becomes all zeros."""
    cam = np.asarray(cam)
    check_2d(cam, "cam")
    if cam.size == 0:
        raise ValueError("cam is empty")
    # min and max propagate NaN, and an inf is one of them: checking the two is checking every pixel.
    lo, hi = float(cam.min()), float(cam.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("cam contains NaN or inf")
    if hi <= lo:
        # A flat map carries no localisation; zeros means it predicts nothing at any T > 0.
        return np.zeros(cam.shape, dtype=np.float32)
    # Computed in float64 so that exact inputs (e.g. 0.15 of a [0, 1] map) stay exact; the subtraction casts to
    # float64 as it reads (no float64 copy of the map first), and the division works in place.
    x = np.subtract(cam, lo, dtype=np.float64)
    x /= hi - lo
    return x.astype(np.float32)


def resize_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinearly resize a 2-D map to ``size`` = (H, W) as float32 (torch, align_corners=False)."""
    cam = np.asarray(cam)
    check_2d(cam, "cam")
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive, got {size}")
    if cam.shape == (h, w):
        return cam.astype(np.float32, copy=True)
    # Same call as the CAM engine uses, so maps resized here and there agree.
    t = torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)
    return out[0, 0].numpy()


def prepare_map(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a map to the mask size, then normalise it to [0, 1] (float32)."""
    # Normalising after resizing makes the resized map span exactly [0, 1].
    return normalize_map(resize_map(cam, size))


# --------------------------------------------------------------------------------------------
# Thresholded IoU (the paper's metric)
# --------------------------------------------------------------------------------------------


def safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise in float64, NaN where ``den`` is not positive."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def nanmean(x: np.ndarray, axis: int | None = None) -> Any:
    """``np.nanmean`` without the all-NaN warning (all-NaN gives NaN)."""
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    n = ok.sum(axis=axis)
    s = np.where(ok, x, 0.0).sum(axis=axis)
    return safe_div(s, n) if axis is not None else (float(s / n) if n else float("nan"))


class PrimaryCounts(NamedTuple):
    """Per-(image, class) counts at an accumulator's primary threshold, in insertion order."""

    image_ids: list[str]
    classes: np.ndarray  # (R,) int64
    intersection: np.ndarray  # (R,) int64
    union: np.ndarray  # (R,) int64


class RecordCounts(NamedTuple):
    """One (image, class) record's pixel counts at every threshold of an :class:`IoUAccumulator`, and its PxAP
    histograms (positive and negative pixels per score level)."""

    intersection: np.ndarray  # (T,) int64
    union: np.ndarray  # (T,) int64
    ap_pos: np.ndarray  # (bins,) int64
    ap_neg: np.ndarray  # (bins,) int64


class ClassMask:
    """One image's mask as seen when scoring class ``cls``: per pixel (flattened) 0 for any other label, 1 for the
    class, 2 for ignored (255). Built once per (image, class) and shared by every map scored against it."""

    def __init__(self, mask: np.ndarray, cls: int) -> None:
        mask = np.asarray(mask)
        check_2d(mask, "mask")
        self.cls = int(cls)
        self.shape: tuple[int, int] = (int(mask.shape[0]), int(mask.shape[1]))
        flat = mask.ravel()
        state = (flat == self.cls + 1).astype(np.int16)
        state[flat == IGNORE_INDEX] = 2
        self.state = state  # int16: added to the histogram keys (int16 or int64) without widening them
        self.mask = mask  # the label mask itself (not copied): the IRN sweep of a one-class image reads it


def count_at_most(values: np.ndarray, thresholds: np.ndarray, strict: bool = False, scale: int = 1,
                  dtype: type = np.int64) -> np.ndarray:
    """Per value (float32, non-negative: a prepared map), how many of the sorted float32 ``thresholds`` are ``<= value``
    (``< value`` with ``strict``): the threshold bucket of every pixel in one pass, as ``np.searchsorted`` gives it.

    Non-negative float32 values order like their bit patterns read as integers, so the top 16 bits index a table of
    65,536 buckets that each hold at most one threshold: a table look-up and one comparison per pixel instead of a
    binary search (several times faster on maps of 10^5 pixels). Thresholds closer than a bucket fall back to
    the search; the counts are the same either way (int64)."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    t = np.asarray(thresholds, dtype=np.float32)
    key = (t.tobytes(), strict)
    table = _BUCKET_TABLES.get(key)
    if table is None:
        table = _BUCKET_TABLES[key] = _bucket_table(t, strict)
    bits = values.view(np.uint32)
    top = bits >> 16
    if table is False or (top.size and top.max() >= 0x8000):  # the sign bit set: negative values (or -0.0)
        return (np.searchsorted(t, values, side="left" if strict else "right") * scale).astype(dtype)
    base, edge = table
    scaled_key = (key, scale, np.dtype(dtype).str)
    scaled = _SCALED_BASES.get(scaled_key)
    if scaled is None:  # once per table, scale and dtype: scaling the 65,536 buckets per call cost 0.1 ms a map
        scaled = _SCALED_BASES[scaled_key] = (base * scale).astype(dtype)
    top = top.astype(np.intp)  # once: each fancy index would convert the index array again
    k = scaled.take(top)
    passed = (bits > edge.take(top)) if strict else (bits >= edge.take(top))
    k += passed * dtype(scale)
    return k


_BUCKET_TABLES: dict[tuple[bytes, bool], tuple[np.ndarray, np.ndarray] | bool] = {}
_SCALED_BASES: dict[tuple[tuple[bytes, bool], int, str], np.ndarray] = {}


def _bucket_table(t: np.ndarray, strict: bool) -> tuple[np.ndarray, np.ndarray] | bool:
    """(count of thresholds below each 16-bit bucket, the one threshold's bits inside it or a never-reached edge),
    or False when a bucket holds two thresholds or the thresholds are unsorted."""
    if t.size and (np.any(np.diff(t) < 0) or np.isnan(t).any()):
        return False
    # Thresholds a non-negative value always passes count in every bucket: t < 0, and t == 0 unless strict.
    always = int(np.sum(t < 0) + (0 if strict else np.sum(t == 0)))
    pos = t[(t > 0) | ((t == 0) & strict)]
    bits = np.abs(pos).view(np.uint32).astype(np.int64)  # abs: -0.0 as +0.0
    top = bits >> 16
    if np.any(np.diff(top) == 0):
        return False
    base = np.full(65536, always, dtype=np.int64)
    edge = np.full(65536, 0xFFFFFFFF, dtype=np.uint32)  # above every finite non-negative value
    for b, tb in zip(top.tolist(), bits.tolist()):
        base[b + 1 :] += 1  # buckets above the threshold's count it outright
        edge[b] = tb
    return base, edge


class IoUAccumulator:
    """Per-class intersection and union summed over a data set, at several thresholds at once.

    A pixel is predicted when its prepared map value is ``>= t``; the comparison is done in
    float32 (the map's dtype) so that a value equal to ``t`` counts as foreground. Pixels where
    the mask is 255 are dropped from both prediction and ground truth.
    """

    def __init__(
        self,
        num_classes: int,
        thresholds: Sequence[float] = DEFAULT_SWEEP,
        primary: float = DEFAULT_THRESHOLD,
        ap_bins: int = 100,
    ) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        ts = sorted({float(t) for t in thresholds} | {float(primary)})
        # Dedupe thresholds that differ only by float noise (e.g. 0.1 + 0.05 vs 0.15).
        uniq: list[float] = []
        for t in ts:
            if not uniq or t - uniq[-1] > _THRESHOLD_TOL:
                uniq.append(t)
        self.num_classes = int(num_classes)
        self.thresholds: tuple[float, ...] = tuple(uniq)
        self.primary = float(primary)
        self._t32 = np.asarray(self.thresholds, dtype=np.float32)
        self._pi = self._index(self.primary)
        n_t = len(self.thresholds)
        self.intersection = np.zeros((n_t, self.num_classes), dtype=np.int64)
        self.union = np.zeros((n_t, self.num_classes), dtype=np.int64)
        # Threshold-free companion: per-class PxAP histograms (positive / negative pixels per score level).
        self.ap_bins = int(ap_bins)
        self.ap_pos = np.zeros((self.num_classes, self.ap_bins), dtype=np.int64)
        self.ap_neg = np.zeros((self.num_classes, self.ap_bins), dtype=np.int64)
        # Per-record counts for the bootstrap, kept compact: C integers, and image ids interned so that the many
        # accumulators of one evaluation share one string per image (memory stays small at 16x the demo).
        self._ids: list[str] = []
        self._cls = array("q")
        self._inter = array("q")
        self._union = array("q")

    def _index(self, threshold: float | None) -> int:
        t = self.primary if threshold is None else float(threshold)
        hits = [i for i, u in enumerate(self.thresholds) if abs(u - t) <= _THRESHOLD_TOL]
        if not hits:
            raise KeyError(f"threshold {t} is not tracked; tracked: {self.thresholds}")
        return hits[0]

    def add(self, image_id: str, cls: int, cam: np.ndarray, mask: np.ndarray | ClassMask) -> float:
        """Add one (image, class) pair; returns its IoU at the primary threshold.

        ``cam`` may have any 2-D size (it is resized to the mask). ``mask`` is the image's mask, or its
        :class:`ClassMask` for ``cls`` when several maps are scored against it (built once, not per map). The
        per-image IoU is NaN when prediction and ground truth are both empty over valid pixels; NaNs are skipped in means.
        The same as :meth:`check`, :meth:`counts` and :meth:`add_counts` in turn.
        """
        cm = self.check(image_id, cls, cam, mask)
        return self.add_counts(image_id, int(cls), self.counts(cam, cm))

    def check(self, image_id: str, cls: int, cam: np.ndarray, mask: np.ndarray | ClassMask) -> ClassMask:
        """The :class:`ClassMask` ``cam`` is scored against, after checking the shapes and the class (``ValueError``
        naming ``image_id``): the cheap part of :meth:`add`, done where the record is submitted."""
        shape = mask.shape if isinstance(mask, ClassMask) else np.shape(mask)
        if np.ndim(cam) != 2 or len(shape) != 2:
            raise ValueError(f"{image_id}: cam and mask must be 2-D, got {np.shape(cam)} and {shape}")
        if not 0 <= int(cls) < self.num_classes:
            raise ValueError(f"{image_id}: class {cls} out of range [0, {self.num_classes})")
        cls = int(cls)
        if isinstance(mask, ClassMask) and mask.cls != cls:
            raise ValueError(f"{image_id}: mask prepared for class {mask.cls}, scored for class {cls}")
        return mask if isinstance(mask, ClassMask) else ClassMask(np.asarray(mask), cls)

    def counts(self, cam: np.ndarray, mask: ClassMask) -> RecordCounts:
        """One record's counts, the pixel work of :meth:`add`. Pure (reads only the thresholds and bins), so
        records may be counted on several threads at once and added in order after (repcam.evaluation.pool)."""
        return self.counts_prepared(prepare_map(np.asarray(cam), mask.shape), mask)

    def counts_prepared(self, prepared: np.ndarray, mask: ClassMask) -> RecordCounts:
        """:meth:`counts` of a map already prepared at the mask's size (:func:`prepare_map`), e.g. to share it."""
        if tuple(np.shape(prepared)) != mask.shape:
            raise ValueError(f"prepared map of shape {np.shape(prepared)} for a mask of shape {mask.shape}")
        prob = np.asarray(prepared).ravel()
        # One histogram over (threshold bucket, score level, pixel state) gives every threshold's counts and the
        # PxAP histograms: a pixel in bucket k is predicted at t_0..t_{k-1}; state 0 other, 1 the class, 2 ignored.
        n_t, bins = len(self.thresholds), self.ap_bins
        n_keys = (n_t + 1) * bins * 3
        dtype = np.int16 if n_keys < 2**15 else np.int64
        key = count_at_most(prob, self._t32, scale=bins * 3, dtype=dtype)
        level = (prob * bins).astype(dtype)  # the PxAP score level, floor(p * bins)
        np.minimum(level, bins - 1, out=level)
        level *= 3
        key += level
        key += mask.state
        h = np.bincount(key, minlength=n_keys).reshape(n_t + 1, bins, 3)
        hk, hl = h.sum(1), h.sum(0)
        above = np.cumsum(hk[::-1, :2], axis=0)[::-1][1:]  # [j]: pixels predicted at t_j, per state
        inter = above[:, 1]
        union = above[:, 0] + above[:, 1] + int(hk[:, 1].sum()) - inter
        return RecordCounts(inter, union, hl[:, 1], hl[:, 0])

    def add_counts(self, image_id: str, cls: int, counts: RecordCounts) -> float:
        """Add one record's :meth:`counts` (class ``cls`` already checked); returns its IoU at the primary threshold."""
        self.ap_pos[cls] += counts.ap_pos
        self.ap_neg[cls] += counts.ap_neg
        self.intersection[:, cls] += counts.intersection
        self.union[:, cls] += counts.union
        self._ids.append(sys.intern(str(image_id)))
        self._cls.append(int(cls))
        self._inter.append(int(counts.intersection[self._pi]))
        self._union.append(int(counts.union[self._pi]))
        return float(safe_div(counts.intersection[self._pi], counts.union[self._pi]))

    @property
    def records(self) -> list[tuple[str, int, float]]:
        """(image_id, class, IoU at the primary threshold) for every ``add``, in order."""
        ious = safe_div(self._counts_array(self._inter), self._counts_array(self._union))
        return [(i, c, float(v)) for i, c, v in zip(self._ids, self._cls, ious)]

    @staticmethod
    def _counts_array(a: array) -> np.ndarray:
        return np.array(a, dtype=np.int64)

    def primary_counts(self) -> PrimaryCounts:
        """Per-(image, class) intersection and union at the primary threshold (for bootstrapping)."""
        return PrimaryCounts(
            list(self._ids),
            self._counts_array(self._cls),
            self._counts_array(self._inter),
            self._counts_array(self._union),
        )

    def per_class_iou(self, threshold: float | None = None) -> np.ndarray:
        """(C,) summed-over-images IoU per class; NaN where the union is 0 (e.g. never added)."""
        i = self._index(threshold)
        return safe_div(self.intersection[i], self.union[i])

    def miou(self, threshold: float | None = None) -> float:
        """Mean of ``per_class_iou`` over the classes that have a non-zero union."""
        return nanmean(self.per_class_iou(threshold))

    def per_image_miou(self) -> float:
        """Mean of the per-(image, class) IoUs at the primary threshold, skipping NaNs."""
        return nanmean(safe_div(self._counts_array(self._inter), self._counts_array(self._union)))

    def per_class_pxap(self) -> np.ndarray:
        """(C,) pixel average precision per class over the images it was scored on (wsolevaluation's PxAP,
        scores quantised to ``ap_bins`` levels); NaN for a class without positive pixels."""
        return np.array([ap_from_hists(self.ap_pos[c], self.ap_neg[c]) for c in range(self.num_classes)])

    def mpxap(self) -> float:
        """Mean of ``per_class_pxap`` over classes with positive pixels (threshold free)."""
        return nanmean(self.per_class_pxap())

    def sweep(self) -> dict[float, float]:
        """Threshold -> mIoU for every tracked threshold."""
        return {t: self.miou(t) for t in self.thresholds}

    def best_threshold(self) -> tuple[float, float]:
        """(threshold, mIoU) with the highest mIoU; ties go to the lowest threshold."""
        items = [(t, m) for t, m in self.sweep().items() if not np.isnan(m)]
        if not items:
            return float("nan"), float("nan")
        best = max(m for _, m in items)
        return next((t, m) for t, m in items if m == best)

    def state_dict(self) -> dict[str, Any]:
        """Everything as plain lists and numbers (JSON serialisable)."""
        return {
            "num_classes": self.num_classes,
            "thresholds": list(self.thresholds),
            "primary": self.primary,
            "intersection": self.intersection.tolist(),
            "union": self.union.tolist(),
            "ap_bins": self.ap_bins,
            "ap_pos": self.ap_pos.tolist(),
            "ap_neg": self.ap_neg.tolist(),
            "records": [[i, c, a, u] for i, c, a, u in zip(self._ids, self._cls, self._inter, self._union)],
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> IoUAccumulator:
        """Inverse of :meth:`state_dict`."""
        acc = cls(int(state["num_classes"]), state["thresholds"], float(state["primary"]), int(state.get("ap_bins", 100)))
        if len(acc.thresholds) != len(state["thresholds"]):
            raise ValueError("state thresholds are not distinct")
        acc.intersection[...] = np.asarray(state["intersection"], dtype=np.int64)
        acc.union[...] = np.asarray(state["union"], dtype=np.int64)
        if "ap_pos" in state:  # absent in states written before PxAP was tracked
            acc.ap_pos[...] = np.asarray(state["ap_pos"], dtype=np.int64)
            acc.ap_neg[...] = np.asarray(state["ap_neg"], dtype=np.int64)
        for i, c, a, u in state["records"]:
            acc._ids.append(sys.intern(str(i)))
            acc._cls.append(int(c))
            acc._inter.append(int(a))
            acc._union.append(int(u))
        return acc

    def merge(self, other: IoUAccumulator) -> None:
        """Add another accumulator's counts and records (same classes and thresholds required)."""
        same_t = len(self.thresholds) == len(other.thresholds) and all(
            abs(a - b) <= _THRESHOLD_TOL for a, b in zip(self.thresholds, other.thresholds)
        )
        if other.num_classes != self.num_classes or not same_t or abs(other.primary - self.primary) > _THRESHOLD_TOL or other.ap_bins != self.ap_bins:
            raise ValueError("cannot merge accumulators with different classes or thresholds")
        self.intersection += other.intersection
        self.union += other.union
        self.ap_pos += other.ap_pos
        self.ap_neg += other.ap_neg
        self._ids += other._ids
        self._cls += other._cls
        self._inter += other._inter
        self._union += other._union


# --------------------------------------------------------------------------------------------
# Pixel average precision (threshold free)
# --------------------------------------------------------------------------------------------


def record_pxap(cam: np.ndarray, mask: np.ndarray, cls: int, ap_bins: int = 100) -> float:
    """One (image, class) record's own PxAP: :class:`IoUAccumulator`'s per-class PxAP as if the class had only this
    image (same resizing, quantisation and ignored pixels); NaN when the mask has no pixel of ``cls``."""
    mask = np.asarray(mask)
    prob = prepare_map(np.asarray(cam), mask.shape)
    valid = mask != IGNORE_INDEX
    level = np.minimum((prob[valid] * ap_bins).astype(np.int64), ap_bins - 1)
    g = (mask == int(cls) + 1)[valid]
    return ap_from_hists(np.bincount(level[g], minlength=ap_bins), np.bincount(level[~g], minlength=ap_bins))


def ap_from_hists(pos: np.ndarray, neg: np.ndarray) -> float:
    """AP from positive/negative pixel counts per score level (ascending levels).

    Same definition as sklearn's ``average_precision_score``: sum over thresholds, from the
    highest down, of (recall step) x precision, with tied scores forming one threshold.
    """
    n_pos = int(pos.sum())
    if n_pos == 0:
        return float("nan")
    tp = np.cumsum(pos[::-1].astype(np.float64))  # descending thresholds
    fp = np.cumsum(neg[::-1].astype(np.float64))
    recall = tp / n_pos
    # Empty levels (histogram mode) add no recall, so their precision value never matters.
    precision = safe_div(tp, tp + fp)
    steps = np.diff(recall, prepend=0.0)
    return float(np.sum(steps[steps > 0] * precision[steps > 0]))
