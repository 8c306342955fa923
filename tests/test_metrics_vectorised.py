"""The vectorised evaluation (one histogram per map for every threshold, the IRN sweep from one histogram, the bootstrap's
shared resampling weights) against straightforward reference implementations kept here: threshold by threshold,
pixel mask by pixel mask, replicate by replicate. Every count must be equal and every float equal within 1e-12."""

from __future__ import annotations

import numpy as np
import pytest

from repcam.evaluation.bootstrap import bootstrap_diff_ci
from repcam.evaluation.irn import ConfusionAccumulator, IRNSweep
from repcam.evaluation.metrics import (
    DEFAULT_SWEEP,
    IGNORE_INDEX,
    ClassMask,
    IoUAccumulator,
    count_at_most,
    prepare_map,
)

# ----------------------------------------------------------------------------------------- reference implementations


def ref_counts(cam, mask, cls, thresholds, bins):
    """Intersection and union at each threshold, and the PxAP histograms, one threshold at a time."""
    prob = prepare_map(cam, mask.shape)
    valid = mask != IGNORE_INDEX
    gt = (mask == cls + 1) & valid
    inter, union = [], []
    for t in thresholds:
        pred = (prob >= np.float32(t)) & valid
        inter.append(int((pred & gt).sum()))
        union.append(int((pred | gt).sum()))
    level = np.minimum((prob[valid] * bins).astype(np.int64), bins - 1)
    pos = np.bincount(level[gt[valid]], minlength=bins)
    neg = np.bincount(level[~gt[valid]], minlength=bins)
    return np.array(inter), np.array(union), pos, neg


def ref_irn(maps, mask, num_classes, thresholds):
    """Each threshold's confusion matrix from its own label map (argmax over [background plane, stacked maps])."""
    out = {}
    for t in thresholds:
        planes = [np.full(mask.shape, np.float32(t))] + [prepare_map(maps[c], mask.shape) for c in sorted(maps)]
        labels = np.array([0] + [c + 1 for c in sorted(maps)])[np.argmax(np.stack(planes), axis=0)]
        acc = ConfusionAccumulator(num_classes)
        acc.add(labels.astype(np.uint8), mask)
        out[float(t)] = acc.matrix
    return out


def ref_bootstrap(image_index, cls, ia, ua, ib, ub, n_cls, n_boot, seed, q=2.5):
    """Replicate by replicate: draw the images (the same draws as the library's, one chunk), sum their records."""
    ids = sorted(set(image_index))
    n_img = len(ids)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_img, size=(n_boot, n_img))  # one chunk while n_img * n_boot stays small
    per_image = {i: [k for k, x in enumerate(image_index) if x == ids[i]] for i in range(n_img)}

    def miou(inter, union):
        vals = [inter[c] / union[c] for c in range(n_cls) if union[c] > 0]
        return sum(vals) / len(vals) if vals else float("nan")

    diffs = []
    for row in draws:
        tot = [np.zeros(n_cls) for _ in range(4)]
        for i in row:
            for k in per_image[int(i)]:
                for t, arr in zip(tot, (ia, ua, ib, ub)):
                    t[cls[k]] += arr[k]
        diffs.append(miou(tot[0], tot[1]) - miou(tot[2], tot[3]))
    d = np.array(diffs)
    d = d[~np.isnan(d)]
    return tuple(np.percentile(d, [q, 100 - q]))


# ----------------------------------------------------------------------------------------- tests


def _case(rng, num_classes, quantised):
    h, w = (int(x) for x in rng.integers(15, 60, 2))
    mask = rng.integers(0, num_classes + 1, (h, w)).astype(np.uint8)
    mask[rng.random((h, w)) < 0.1] = IGNORE_INDEX
    cam = rng.random(tuple(int(x) for x in rng.integers(3, 25, 2))).astype(np.float16).astype(np.float32)
    if quantised:  # values landing exactly on thresholds (0.25, 0.5, ...) after normalisation
        cam = np.round(cam * 20) / 20
    return cam, mask


@pytest.mark.parametrize("thresholds", [DEFAULT_SWEEP, (0.0, 0.15, 0.3, 0.30000001, 0.9), (0.5,)])
def test_iou_counts_equal_a_threshold_by_threshold_reference(thresholds):
    rng = np.random.default_rng(len(thresholds))
    C = 4
    acc = IoUAccumulator(C, thresholds, primary=thresholds[0])
    want_i = np.zeros((len(acc.thresholds), C), np.int64)
    want_u = np.zeros_like(want_i)
    want_pos, want_neg = np.zeros((C, 100), np.int64), np.zeros((C, 100), np.int64)
    for n in range(25):
        cam, mask = _case(rng, C, quantised=n % 3 == 0)
        if n == 5:
            cam[:] = 0.7  # flat: predicts nothing
        c = int(rng.integers(0, C))
        got = acc.add(f"i{n}", c, cam, ClassMask(mask, c) if n % 2 else mask)
        i, u, pos, neg = ref_counts(cam, mask, c, acc.thresholds, 100)
        want_i[:, c] += i
        want_u[:, c] += u
        want_pos[c] += pos
        want_neg[c] += neg
        p = acc.thresholds.index(acc.primary)
        assert got == i[p] / u[p] if u[p] else np.isnan(got)
    assert np.array_equal(acc.intersection, want_i) and np.array_equal(acc.union, want_u)
    assert np.array_equal(acc.ap_pos, want_pos) and np.array_equal(acc.ap_neg, want_neg)


@pytest.mark.parametrize("strict", [False, True])
def test_count_at_most_is_a_binary_search(strict):
    rng = np.random.default_rng(0)
    for t in [np.asarray(DEFAULT_SWEEP, np.float32), np.float32([0.0, 0.2, 0.2000001, 1.0]), np.float32([-0.5, 0.0, 0.5]),
              np.float32([])]:
        v = np.concatenate([rng.random(5000).astype(np.float32), t[t >= 0], np.float32([0.0, 1.0])])
        want = np.searchsorted(t, v, side="left" if strict else "right")
        assert np.array_equal(count_at_most(v, t, strict=strict), want)
        assert np.array_equal(count_at_most(v, t, strict=strict, scale=7, dtype=np.int16), (want * 7).astype(np.int16))
    # negative values (outside a prepared map's range) take the binary search too
    t = np.float32([0.1, 0.5])
    v = np.float32([-1.0, -0.0, 0.3, 0.7])
    assert np.array_equal(count_at_most(v, t), np.searchsorted(t, v, side="right"))


def test_irn_sweep_equals_one_label_map_per_threshold():
    rng = np.random.default_rng(3)
    C = 5
    thresholds = (0.5, 0.05, 0.25, 0.0, 0.95)  # unsorted on purpose: results keep their keys
    sweep = IRNSweep(C, thresholds)
    want = {float(t): np.zeros((C + 1, C + 1), np.int64) for t in thresholds}
    for n in range(12):
        _, mask = _case(rng, C, quantised=False)
        classes = rng.choice(C, size=int(rng.integers(0, 4)), replace=False)
        maps = {int(c): _case(rng, C, quantised=n % 2 == 0)[0] for c in classes}
        if n == 3 and len(maps) > 1:  # identical maps: ties go to the lowest class
            first = next(iter(maps.values()))
            maps = {c: first for c in maps}
        sweep.add(maps, mask)
        for t, m in ref_irn(maps, mask, C, thresholds).items():
            want[t] += m
    for t in thresholds:
        assert np.array_equal(sweep.accs[float(t)].matrix, want[float(t)]), t


def test_irn_sweep_ignores_a_class_beyond_the_data_set_where_the_mask_is_ignored():
    # a class index the data set lacks is an error only where it wins a scored pixel, as ConfusionAccumulator says
    sweep = IRNSweep(2, DEFAULT_SWEEP)
    mask = np.full((4, 4), IGNORE_INDEX, np.uint8)
    mask[:, :2] = 0
    cam = np.zeros((4, 4), np.float32)
    cam[:, 2:] = 1.0  # class 4 wins only the ignored half
    sweep.add({4: cam}, mask)
    want = ConfusionAccumulator(2)
    want.add(np.where(mask == IGNORE_INDEX, 5, 0).astype(np.uint8), mask)  # the scored half: background, predicted so
    assert np.array_equal(sweep.accs[0.15].matrix, want.matrix) and want.matrix[0, 0] == 8
    with pytest.raises(ValueError, match="labels must lie in"):
        sweep.add({4: cam}, np.zeros((4, 4), np.uint8))


def test_irn_sweep_rejects_labels_outside_the_classes():
    sweep = IRNSweep(2, DEFAULT_SWEEP)
    mask = np.zeros((8, 8), np.uint8)
    mask[0, 0] = 7  # not a class of a 2-class data set, and not 255
    with pytest.raises(ValueError, match="labels must lie in"):
        sweep.add({0: np.ones((4, 4), np.float32)}, mask)
    with pytest.raises(ValueError, match="labels must lie in"):
        sweep.add({4: np.eye(4, dtype=np.float32)}, np.zeros((8, 8), np.uint8))  # class 4 wins some pixels


def test_class_mask_must_match_the_scored_class():
    acc = IoUAccumulator(3)
    with pytest.raises(ValueError, match="prepared for class 1"):
        acc.add("img", 2, np.ones((4, 4), np.float32), ClassMask(np.zeros((8, 8), np.uint8), 1))


@pytest.mark.parametrize("seed", [0, 7])
def test_bootstrap_equals_a_replicate_by_replicate_reference(seed):
    rng = np.random.default_rng(seed)
    C, n_img, n_boot = 3, 9, 200
    image_index = [f"img{i}" for i in range(n_img) for _ in range(2)]
    cls = np.array([c for _ in range(n_img) for c in rng.choice(C, 2, replace=False)])
    ia, ib = rng.integers(0, 50, len(cls)), rng.integers(0, 50, len(cls))
    ua, ub = ia + rng.integers(0, 50, len(cls)), ib + rng.integers(0, 50, len(cls))
    for _ in range(2):  # the second call reuses the shared resampling weights: same numbers
        point, low, high = bootstrap_diff_ci(image_index, cls, ia, ua, ib, ub, num_classes=C, n_boot=n_boot, seed=seed)
        want_low, want_high = ref_bootstrap(image_index, cls, ia, ua, ib, ub, C, n_boot, seed)
        assert abs(low - want_low) <= 1e-12 and abs(high - want_high) <= 1e-12
    swapped = bootstrap_diff_ci(image_index, cls, ib, ub, ia, ua, num_classes=C, n_boot=n_boot, seed=seed)
    assert abs(swapped[1] + high) <= 1e-12 and abs(swapped[2] + low) <= 1e-12
