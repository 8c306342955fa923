"""IRN's weakly-supervised-segmentation protocol: every class's map against a constant background plane, the
per-pixel argmax as a (C + 1)-label segmentation, and its mIoU swept over the background threshold.

Maps are prepared (resized to the mask, min-max normalised) by :func:`repcam.evaluation.metrics.prepare_map`; masks follow
:mod:`repcam.data.base`: 0 background, ``k + 1`` class ``k``, 255 ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from repcam.evaluation.metrics import IGNORE_INDEX, check_2d, nanmean, prepare_map, safe_div


def _best_class(maps: Mapping[int, np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the highest prepared map value and its label (cls + 1); (0, 0) if no maps."""
    h, w = int(size[0]), int(size[1])
    if not maps:
        return np.zeros((h, w), dtype=np.float32), np.zeros((h, w), dtype=np.uint8)
    keys = sorted(int(c) for c in maps)
    if keys[0] < 0 or keys[-1] + 1 >= IGNORE_INDEX:
        raise ValueError(f"class indices must lie in [0, {IGNORE_INDEX - 1}), got {keys}")
    stack = np.stack([prepare_map(maps[c], (h, w)) for c in keys])
    # argmax takes the first maximum, so ties go to the lowest class index.
    arg = np.argmax(stack, axis=0)
    labels = (np.asarray(keys, dtype=np.int64) + 1)[arg].astype(np.uint8)
    return np.take_along_axis(stack, arg[None], axis=0)[0], labels


def _label_at(best: np.ndarray, labels: np.ndarray, bg_threshold: float) -> np.ndarray:
    # The background plane comes first in the argmax, so it wins ties (value == threshold).
    return np.where(best > np.float32(bg_threshold), labels, np.uint8(0)).astype(np.uint8)


def semantic_prediction(maps: Mapping[int, np.ndarray], size: tuple[int, int], bg_threshold: float) -> np.ndarray:
    """IRN-style label map: argmax over [constant ``bg_threshold`` plane, prepared maps].

    ``maps`` holds the CAM of each class present in the image (0-based index -> 2-D map).
    Returns uint8 (H, W): 0 background, ``cls + 1`` otherwise. Background wins ties.
    """
    best, labels = _best_class(maps, size)
    return _label_at(best, labels, bg_threshold)


class ConfusionAccumulator:
    """Confusion matrix over ``num_classes + 1`` labels (background first); rows gt, cols pred."""

    def __init__(self, num_classes: int) -> None:
        if num_classes <= 0:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_labels = int(num_classes) + 1
        self.matrix = np.zeros((self.num_labels, self.num_labels), dtype=np.int64)

    def add(self, pred: np.ndarray, mask: np.ndarray) -> None:
        """Add one image's label map; mask pixels equal to 255 are ignored."""
        pred = np.asarray(pred)
        mask = np.asarray(mask)
        if pred.shape != mask.shape:
            raise ValueError(f"pred shape {pred.shape} != mask shape {mask.shape}")
        valid = mask != IGNORE_INDEX
        g = mask[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        n = self.num_labels
        if g.size and (g.min() < 0 or g.max() >= n or p.min() < 0 or p.max() >= n):
            raise ValueError(f"labels must lie in [0, {n}) outside ignore pixels")
        self.matrix += np.bincount(g * n + p, minlength=n * n).reshape(n, n)

    def iou(self) -> np.ndarray:
        """Per-label IoU, background first; NaN where the union is 0."""
        tp = np.diag(self.matrix)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        return safe_div(tp, union)

    def miou(self) -> float:
        """Mean IoU over labels with a non-zero union (background included)."""
        return nanmean(self.iou())

    def merge(self, other: ConfusionAccumulator) -> None:
        """Add another accumulator's counts."""
        if other.num_labels != self.num_labels:
            raise ValueError("cannot merge confusion matrices of different sizes")
        self.matrix += other.matrix


class IRNSweep:
    """Streaming form of :func:`irn_sweep`: one confusion matrix per background threshold, fed image by image."""

    def __init__(self, num_classes: int, thresholds: Sequence[float]) -> None:
        self.accs = {float(t): ConfusionAccumulator(num_classes) for t in thresholds}

    def add(self, maps: Mapping[int, np.ndarray], mask: np.ndarray) -> None:
        """Score one image: ``maps`` (class index -> map of each present class) against ``mask``, at every threshold."""
        mask = np.asarray(mask)
        check_2d(mask, "mask")
        # Maps are prepared once per image; only the background comparison depends on t.
        best, labels = _best_class(maps, mask.shape)
        for t, acc in self.accs.items():
            acc.add(_label_at(best, labels, t), mask)

    def result(self) -> dict[float, float]:
        """Background threshold -> (C + 1)-label mIoU over the images added so far."""
        return {t: acc.miou() for t, acc in self.accs.items()}


def irn_sweep(
    items: Iterable[tuple[Mapping[int, np.ndarray], np.ndarray]],
    num_classes: int,
    thresholds: Sequence[float],
) -> dict[float, float]:
    """Background threshold -> (C + 1)-label mIoU over the data set (one pass over ``items``).

    Each item is (maps of the present classes, mask); the caller picks the best threshold.
    """
    sweep = IRNSweep(num_classes, thresholds)
    for maps, mask in items:
        sweep.add(maps, mask)
    return sweep.result()
