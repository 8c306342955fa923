"""IRN's weakly-supervised-segmentation protocol: every class's map against a constant background plane, the
per-pixel argmax as a (C + 1)-label segmentation, and its mIoU swept over the background threshold.

Maps are prepared (resized to the mask, min-max normalised) by :func:`repcam.evaluation.metrics.prepare_map`; masks follow
:mod:`repcam.data.base`: 0 background, ``k + 1`` class ``k``, 255 ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from repcam.evaluation.metrics import IGNORE_INDEX, check_2d, count_at_most, nanmean, prepare_map, safe_div


def _class_keys(maps: Mapping[int, np.ndarray]) -> list[int]:
    """The class indices of ``maps``, sorted; ``ValueError`` unless each has a label (cls + 1) below 255."""
    keys = sorted(int(c) for c in maps)
    if keys[0] < 0 or keys[-1] + 1 >= IGNORE_INDEX:
        raise ValueError(f"class indices must lie in [0, {IGNORE_INDEX - 1}), got {keys}")
    return keys


def _best_class(maps: Mapping[int, np.ndarray], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the highest prepared map value and its label (cls + 1); (0, 0) if no maps."""
    h, w = int(size[0]), int(size[1])
    if not maps:
        return np.zeros((h, w), dtype=np.float32), np.zeros((h, w), dtype=np.uint8)
    keys = _class_keys(maps)
    # A running maximum, class by class: a later class takes a pixel only when strictly higher, so ties go to the
    # lowest class index (np.argmax over the stacked maps, without its slow strided reduction).
    best = prepare_map(maps[keys[0]], (h, w))
    labels = np.full((h, w), keys[0] + 1, dtype=np.uint8)
    for c in keys[1:]:
        m = prepare_map(maps[c], (h, w))
        higher = m > best
        labels[higher] = c + 1
        np.maximum(best, m, out=best)
    return best, labels


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
        # Every threshold as compared with the float32 maps, sorted: each pixel's bucket is how many lie below it.
        t32 = np.asarray(list(self.accs), dtype=np.float32)
        self._sorted = np.unique(t32)
        self._slot = np.searchsorted(self._sorted, t32)  # threshold i of self.accs -> its sorted position

    def add(self, maps: Mapping[int, np.ndarray], mask: np.ndarray) -> None:
        """Score one image: ``maps`` (class index -> map of each present class) against ``mask``, at every threshold."""
        self.add_confusions(self.confusions(maps, mask))

    def confusions(self, maps: Mapping[int, np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
        """One image's confusion matrix at every threshold (in ``self.accs`` order): the pixel work of :meth:`add`.
        Pure, so images may be scored on several threads at once (repcam.evaluation.pool)."""
        mask = np.asarray(mask)
        check_2d(mask, "mask")
        # Maps are prepared once per image; only the background comparison depends on t.
        best, labels = _best_class(maps, mask.shape)
        return self._confusions(best, labels, mask)

    def confusions_one(self, prepared: np.ndarray, cls: int, mask: np.ndarray) -> list[np.ndarray]:
        """:meth:`confusions` of an image with the map of one class only, ``cls``, already prepared at the mask's
        size (:func:`~repcam.evaluation.metrics.prepare_map`): the thresholded IoU's prepared map serves both."""
        mask = np.asarray(mask)
        check_2d(mask, "mask")
        prepared = np.asarray(prepared)
        if prepared.shape != mask.shape:
            raise ValueError(f"prepared map of shape {prepared.shape} for a mask of shape {mask.shape}")
        (c,) = _class_keys({cls: prepared})
        return self._confusions(prepared, np.full(mask.shape, c + 1, dtype=np.uint8), mask)

    def add_confusions(self, confusions: Sequence[np.ndarray]) -> None:
        """Add one image's :meth:`confusions` (integer counts: the order images are added in does not matter)."""
        for acc, conf in zip(self.accs.values(), confusions):
            acc.matrix += conf

    def _confusions(self, best: np.ndarray, labels: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
        """The image's confusion matrix at every threshold (in ``self.accs`` order) from ONE histogram of the pixels
        over (threshold bucket, mask label, predicted class label): the pixel is its class at the thresholds below
        its best value (the background wins ties) and background at the others, so each threshold's matrix is a sum
        of buckets, the same counts as :class:`ConfusionAccumulator` fed ``_label_at`` threshold by threshold."""
        n = next(iter(self.accs.values())).num_labels if self.accs else 1
        n_b = len(self._sorted) + 1
        n_p = max(n, int(labels.max(initial=0)) + 1)  # predicted labels beyond the classes are an error below
        dtype = np.int32 if n_b * 256 * n_p < 2**31 else np.int64
        key = count_at_most(best.ravel(), self._sorted, strict=True, scale=256 * n_p, dtype=dtype)
        key += mask.ravel().astype(dtype) * dtype(n_p)
        key += labels.ravel()
        h = np.bincount(key, minlength=n_b * 256 * n_p).reshape(n_b, 256, n_p)
        h = np.delete(h, IGNORE_INDEX, axis=1)  # ignored pixels
        # Errors as ConfusionAccumulator.add raises them at the first threshold: a mask label outside [0, n), or a
        # class label at a pixel where some threshold lets the class win.
        if self.accs and (h[:, n:].any() or h[1:, :, n:].any()):
            raise ValueError(f"labels must lie in [0, {n}) outside ignore pixels")
        h = h[:, :n]  # the scored pixels
        # Per mask label, every pixel whatever its prediction: a class label beyond the classes that never wins (an
        # error where it does, above) is background at every threshold, as ConfusionAccumulator counts it.
        total = h.sum(axis=(0, 2))
        above = np.cumsum(h[::-1, :, :n], axis=0)[::-1]  # [k]: pixels in buckets >= k
        out = []
        for j in self._slot.tolist():
            conf = above[j + 1].copy()  # the pixels above threshold j keep their class label...
            conf[:, 0] += total - above[j + 1].sum(axis=1)  # ...the others are background
            out.append(conf)
        return out

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
