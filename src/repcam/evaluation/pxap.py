"""Pixel average precision (PxAP) over the pixels of a data set pooled across images, exact or streamed in bins.

The AP of one histogram pair (:func:`repcam.evaluation.metrics.ap_from_hists`) is shared with the per-class PxAP of
:class:`repcam.evaluation.metrics.IoUAccumulator`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from repcam.evaluation.metrics import ap_from_hists


class PixelAPAccumulator:
    """Streaming PxAP: scores in [0, 1] are binned into ``bins`` levels (``floor(s * bins)``).

    The result is the exact AP of the quantised scores; use it when pooling every pixel of a
    data set would not fit in memory (wsolevaluation bins the same way, at 0.01 by default).
    """

    def __init__(self, bins: int = 1000) -> None:
        if bins <= 0:
            raise ValueError(f"bins must be positive, got {bins}")
        self.bins = int(bins)
        self.pos = np.zeros(self.bins, dtype=np.int64)
        self.neg = np.zeros(self.bins, dtype=np.int64)

    def add(self, score: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add one image's prepared map, bool ground truth and optional bool valid mask."""
        s, g = _pixels(score, gt, valid)
        if s.size and (s.min() < 0 or s.max() > 1):
            raise ValueError("scores must lie in [0, 1] (use prepare_map)")
        idx = np.minimum((s * self.bins).astype(np.int64), self.bins - 1)
        self.pos += np.bincount(idx[g], minlength=self.bins)
        self.neg += np.bincount(idx[~g], minlength=self.bins)

    def value(self) -> float:
        """PxAP so far (NaN if no positive pixel was seen)."""
        return ap_from_hists(self.pos, self.neg)


def _pixels(score: np.ndarray, gt: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The scores and bool ground truth of the valid pixels, flattened (shapes checked)."""
    score = np.asarray(score)
    gt = np.asarray(gt)
    if gt.dtype != bool:
        raise ValueError("gt must be a bool mask (e.g. mask == cls + 1)")
    if score.shape != gt.shape or (valid is not None and np.shape(valid) != gt.shape):
        raise ValueError(f"score, gt and valid shapes differ: {score.shape}, {gt.shape}")
    if valid is None:
        return score.ravel(), gt.ravel()
    v = np.asarray(valid, dtype=bool)
    return score[v], gt[v]


def pixel_average_precision(
    scores: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    valids: Sequence[np.ndarray] | None = None,
    bins: int | None = None,
) -> float:
    """Pixel average precision (PxAP) over all valid pixels pooled across images.

    ``scores[i]`` is image i's prepared map, ``gts[i]`` its bool ground truth (same shape) and
    ``valids[i]`` (optional) a bool mask of the pixels to keep, e.g. ``mask != 255``.
    ``bins=None`` is exact (sklearn's ``average_precision_score`` on the pooled pixels, sorting
    them all); ``bins=n`` streams through :class:`PixelAPAccumulator`. NaN if no positive pixel.
    """
    if len(scores) != len(gts) or (valids is not None and len(valids) != len(gts)):
        raise ValueError("scores, gts and valids must have the same length")
    vs: Sequence[np.ndarray | None] = valids if valids is not None else [None] * len(gts)
    if bins is not None:
        acc = PixelAPAccumulator(bins)
        for s, g, v in zip(scores, gts, vs):
            acc.add(s, g, v)
        return acc.value()
    parts = [_pixels(s, g, v) for s, g, v in zip(scores, gts, vs)]
    if not parts:
        return float("nan")
    s = np.concatenate([p[0].astype(np.float64) for p in parts])
    g = np.concatenate([p[1] for p in parts])
    levels, inv = np.unique(s, return_inverse=True)
    pos = np.bincount(inv[g], minlength=len(levels))
    neg = np.bincount(inv[~g], minlength=len(levels))
    return ap_from_hists(pos, neg)
