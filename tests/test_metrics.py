"""Metrics against hand-computed numbers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from repcam.evaluation.bootstrap import bootstrap_diff_ci, paired_bootstrap
from repcam.evaluation.irn import ConfusionAccumulator, irn_sweep, semantic_prediction
from repcam.evaluation.metrics import (
    DEFAULT_SWEEP,
    DEFAULT_THRESHOLD,
    IoUAccumulator,
    normalize_map,
    prepare_map,
    resize_map,
)
from repcam.evaluation.pxap import PixelAPAccumulator, pixel_average_precision

# Values are already in [0, 1] with min 0 and max 1, so normalisation leaves them unchanged.
CAM_4x4 = np.array(
    [
        [0.0, 0.1, 0.2, 0.3],
        [0.4, 0.5, 0.6, 0.7],
        [0.8, 0.9, 1.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],
    ]
)
# Class 0 (label 1) with two ignore pixels, (1, 2) and (2, 3).
MASK_4x4 = np.array(
    [
        [1, 1, 1, 0],
        [1, 1, 255, 0],
        [0, 0, 1, 255],
        [0, 0, 0, 0],
    ],
    dtype=np.uint8,
)


def test_constants():
    assert DEFAULT_THRESHOLD == 0.15
    assert len(DEFAULT_SWEEP) == 19
    assert DEFAULT_SWEEP[0] == 0.05 and DEFAULT_SWEEP[-1] == 0.95
    assert 0.15 in DEFAULT_SWEEP


def test_normalize_map():
    out = normalize_map(np.array([[2.0, 4.0], [6.0, 10.0]]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0.25], [0.5, 1.0]])
    with pytest.raises(ValueError):
        normalize_map(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        normalize_map(np.zeros(4))


def test_constant_map_is_zero_and_predicts_nothing():
    for value in (0.0, 5.0, -3.0):
        out = normalize_map(np.full((3, 5), value))
        assert not np.isnan(out).any()
        assert (out == 0).all()
    acc = IoUAccumulator(1)
    mask = np.ones((3, 5), dtype=np.uint8)  # all class 0
    assert acc.add("flat", 0, np.zeros((3, 5)), mask) == 0.0
    # Predicted nothing at every threshold, so the intersection is 0 and the union is the gt.
    assert (acc.intersection == 0).all()
    assert (acc.union == 15).all()


def test_hand_computed_4x4_with_ignore():
    acc = IoUAccumulator(1)
    # T=0.15: pred (valid) = (0,2),(0,3),(1,0),(1,1),(1,3),(2,0),(2,1),(2,2) -> 8 pixels;
    # gt = (0,0),(0,1),(0,2),(1,0),(1,1),(2,2) -> 6; inter = (0,2),(1,0),(1,1),(2,2) -> 4;
    # union = 6 + 8 - 4 = 10.
    iou = acc.add("img", 0, CAM_4x4, MASK_4x4)
    assert iou == pytest.approx(0.4)
    i = acc.thresholds.index(0.15)
    assert acc.intersection[i, 0] == 4 and acc.union[i, 0] == 10
    # T=0.5: pred (valid) = (1,1),(1,3),(2,0),(2,1),(2,2) -> 5; inter = (1,1),(2,2) -> 2;
    # union = 6 + 5 - 2 = 9.
    assert acc.per_class_iou(0.5)[0] == pytest.approx(2 / 9)
    assert acc.miou() == pytest.approx(0.4)
    assert acc.records == [("img", 0, pytest.approx(0.4))]
    # T=0.95: only the 1.0 pixel -> inter 1, union 6.
    assert acc.miou(0.95) == pytest.approx(1 / 6)


def test_threshold_is_inclusive():
    cam = np.array([[0.0, 0.15], [0.35, 1.0]])
    mask = np.ones((2, 2), dtype=np.uint8)
    acc = IoUAccumulator(1)
    # 0.15 >= 0.15, so 3 of the 4 gt pixels are predicted.
    assert acc.add("t", 0, cam, mask) == pytest.approx(3 / 4)
    # 0.35 is not exact in binary; it must still count at T=0.35.
    assert acc.per_class_iou(0.35)[0] == pytest.approx(2 / 4)
    assert acc.per_class_iou(0.4)[0] == pytest.approx(1 / 4)
    with pytest.raises(KeyError):
        acc.per_class_iou(0.123)


def test_empty_gt_and_empty_prediction():
    acc = IoUAccumulator(2)
    bg_mask = np.zeros((4, 4), dtype=np.uint8)
    # Flat map predicts nothing and the class is absent: IoU undefined.
    assert math.isnan(acc.add("empty", 0, np.zeros((4, 4)), bg_mask))
    assert math.isnan(acc.per_class_iou()[0])
    assert acc.add("img", 0, CAM_4x4, MASK_4x4) == pytest.approx(0.4)
    # Empty gt but a non-empty prediction is a real 0.
    assert acc.add("fp", 1, CAM_4x4, bg_mask) == 0.0
    assert len(acc.records) == 3
    assert math.isnan(acc.records[0][2])
    assert acc.per_image_miou() == pytest.approx((0.4 + 0.0) / 2)
    np.testing.assert_allclose(acc.per_class_iou(), [0.4, 0.0])


def test_add_validation_names_image():
    acc = IoUAccumulator(2)
    with pytest.raises(ValueError, match="bad_img"):
        acc.add("bad_img", 2, CAM_4x4, MASK_4x4)
    with pytest.raises(ValueError, match="bad_img"):
        acc.add("bad_img", -1, CAM_4x4, MASK_4x4)
    with pytest.raises(ValueError, match="bad_img"):
        acc.add("bad_img", 0, CAM_4x4[None], MASK_4x4)
    with pytest.raises(ValueError, match="bad_img"):
        acc.add("bad_img", 0, CAM_4x4, MASK_4x4[None])


# Bilinear (align_corners=False) 2x2 -> 4x4 of a single 1 in the corner: the 1-D weights are
# [0, 0.25, 0.75, 1] (source coordinates -0.25 clamped to 0, 0.25, 0.75, 1.25 clamped to 1).
RESIZED = np.outer([0, 0.25, 0.75, 1], [0, 0.25, 0.75, 1])


def test_resize_map_matches_hand_bilinear():
    out = resize_map(np.array([[0.0, 0.0], [0.0, 1.0]]), (4, 4))
    assert out.dtype == np.float32 and out.shape == (4, 4)
    np.testing.assert_allclose(out, RESIZED, atol=1e-6)
    assert resize_map(np.ones((3, 5)), (7, 2)).shape == (7, 2)
    np.testing.assert_allclose(prepare_map(np.array([[0.0, 0.0], [0.0, 2.0]]), (4, 4)), RESIZED, atol=1e-6)


def test_cam_resized_to_mask_size():
    acc = IoUAccumulator(1)
    mask = np.zeros((4, 4), dtype=np.uint8)
    mask[2:, 2:] = 1
    # At 0.15, every resized value except row 0, column 0 and the 0.0625 pixel is predicted: 8
    # pixels, containing the 4 gt pixels -> 4 / 8.
    assert acc.add("small", 0, np.array([[0.0, 0.0], [0.0, 1.0]]), mask) == pytest.approx(0.5)


def test_summed_iou_differs_from_mean_of_per_image_iou():
    acc = IoUAccumulator(3)
    # Image A: one gt pixel, predicted exactly -> inter 1, union 1.
    a_cam = np.array([[1.0, 0.0], [0.0, 0.0]])
    a_mask = np.array([[1, 0], [0, 0]], dtype=np.uint8)
    # Image B: pred rows 0-1 (8 px), gt rows 1-2 (8 px), overlap row 1 -> inter 4, union 12.
    b_cam = np.zeros((4, 4))
    b_cam[:2] = 1
    b_mask = np.zeros((4, 4), dtype=np.uint8)
    b_mask[1:3] = 1
    assert acc.add("A", 0, a_cam, a_mask) == 1.0
    assert acc.add("B", 0, b_cam, b_mask) == pytest.approx(1 / 3)
    # Class 1 from the 4x4 example (label 2): 0.4.
    assert acc.add("C", 1, CAM_4x4, np.where(MASK_4x4 == 1, 2, MASK_4x4).astype(np.uint8)) == pytest.approx(0.4)
    per_class = acc.per_class_iou()
    assert per_class[0] == pytest.approx(5 / 13)  # summed: (1 + 4) / (1 + 12)
    assert per_class[1] == pytest.approx(0.4)
    assert math.isnan(per_class[2])  # never added
    assert acc.miou() == pytest.approx((5 / 13 + 0.4) / 2)
    assert acc.per_image_miou() == pytest.approx((1 + 1 / 3 + 0.4) / 3)
    counts = acc.primary_counts()
    assert counts.image_ids == ["A", "B", "C"]
    assert counts.classes.tolist() == [0, 0, 1]
    assert counts.intersection.tolist() == [1, 4, 4]
    assert counts.union.tolist() == [1, 12, 10]


def test_sweep_and_best_threshold():
    acc = IoUAccumulator(1)
    acc.add("img", 0, CAM_4x4, MASK_4x4)
    sweep = acc.sweep()
    assert list(sweep) == list(DEFAULT_SWEEP)
    # Hand: T <= 0.1 predicts the 9 valid non-zero px (inter 5, union 10); T in (0.1, 0.2]
    # 8 px (4/10); (0.2, 0.3] 7 px (3/10). 0.05 and 0.10 tie at 1/2; ties go to the lower.
    assert sweep[0.05] == pytest.approx(1 / 2)
    assert sweep[0.10] == pytest.approx(1 / 2)
    assert sweep[0.20] == pytest.approx(4 / 10)
    assert sweep[0.25] == pytest.approx(3 / 10)
    assert acc.best_threshold() == (0.05, pytest.approx(1 / 2))


def _random_items(rng, n, num_classes):
    items = []
    for k in range(n):
        h, w = rng.integers(3, 9, size=2)
        mask = rng.integers(0, num_classes + 1, size=(h, w)).astype(np.uint8)
        mask[rng.random((h, w)) < 0.1] = 255
        cam = rng.random((rng.integers(2, 6), rng.integers(2, 6)))
        items.append((f"im{k}", int(rng.integers(num_classes)), cam, mask))
    return items


def test_state_dict_round_trip_and_merge():
    rng = np.random.default_rng(0)
    items = _random_items(rng, 20, 3)
    whole = IoUAccumulator(3)
    left, right = IoUAccumulator(3), IoUAccumulator(3)
    for k, it in enumerate(items):
        whole.add(*it)
        (left if k < 8 else right).add(*it)
    restored = IoUAccumulator.from_state_dict(json.loads(json.dumps(left.state_dict())))
    assert restored.state_dict() == left.state_dict()
    restored.merge(right)
    np.testing.assert_array_equal(restored.intersection, whole.intersection)
    np.testing.assert_array_equal(restored.union, whole.union)
    assert restored.state_dict() == whole.state_dict()
    for t in whole.thresholds:
        np.testing.assert_array_equal(restored.per_class_iou(t), whole.per_class_iou(t))
    assert restored.per_image_miou() == whole.per_image_miou()
    with pytest.raises(ValueError):
        restored.merge(IoUAccumulator(4))
    with pytest.raises(ValueError):
        restored.merge(IoUAccumulator(3, thresholds=(0.1, 0.2)))


def test_pxap_hand_example():
    # Ranked 0.9 (+), 0.8 (-), 0.7 (+), 0.6 (-): AP = 1 * 1/2 + 2/3 * 1/2 = 5/6.
    scores = [np.array([[0.9, 0.8]]), np.array([[0.7, 0.6]])]
    gts = [np.array([[True, False]]), np.array([[True, False]])]
    assert pixel_average_precision(scores, gts) == pytest.approx(5 / 6)
    # Dropping the 0.8 negative through `valids` makes the ranking perfect.
    valids = [np.array([[True, False]]), np.array([[True, True]])]
    assert pixel_average_precision(scores, gts, valids) == pytest.approx(1.0)
    assert math.isnan(pixel_average_precision(scores, [g & False for g in gts]))


def test_pxap_matches_sklearn_with_ties_and_bins():
    rng = np.random.default_rng(1)
    scores, gts, valids = [], [], []
    for _ in range(5):
        shape = tuple(rng.integers(4, 10, size=2))
        scores.append(np.round(rng.random(shape), 1))  # many ties
        gts.append(rng.random(shape) < 0.3)
        valids.append(rng.random(shape) > 0.1)
    s = np.concatenate([x[v] for x, v in zip(scores, valids)])
    g = np.concatenate([x[v] for x, v in zip(gts, valids)])
    assert pixel_average_precision(scores, gts, valids) == pytest.approx(average_precision_score(g, s))
    # Binned mode is the exact AP of floor(score * bins).
    q = np.minimum(np.floor(s * 4), 3)
    assert pixel_average_precision(scores, gts, valids, bins=4) == pytest.approx(average_precision_score(g, q))
    acc = PixelAPAccumulator(bins=4)
    with pytest.raises(ValueError):
        acc.add(np.array([[1.5]]), np.array([[True]]))


def test_iou_accumulator_tracks_per_class_pxap_like_the_pooled_computation():
    from repcam.evaluation.metrics import IGNORE_INDEX, prepare_map

    rng = np.random.default_rng(3)
    acc = IoUAccumulator(2, ap_bins=10)
    pooled: dict[int, tuple[list, list, list]] = {0: ([], [], []), 1: ([], [], [])}
    for k in range(6):
        mask = rng.integers(0, 3, size=(9, 11)).astype(np.uint8)
        mask[0, :3] = IGNORE_INDEX
        cam = rng.random((4, 5)).astype(np.float32)
        c = k % 2
        acc.add(f"im{k}", c, cam, mask)
        pooled[c][0].append(prepare_map(cam, mask.shape))
        pooled[c][1].append(mask == c + 1)
        pooled[c][2].append(mask != IGNORE_INDEX)
    expected = [pixel_average_precision(*pooled[c], bins=10) for c in (0, 1)]
    np.testing.assert_allclose(acc.per_class_pxap(), expected)
    assert acc.mpxap() == pytest.approx(np.mean(expected))
    restored = IoUAccumulator.from_state_dict(json.loads(json.dumps(acc.state_dict())))
    np.testing.assert_allclose(restored.per_class_pxap(), expected)
    assert math.isnan(IoUAccumulator(2).mpxap())


def test_semantic_prediction():
    maps = {
        0: np.array([[0.0, 1.0], [0.5, 0.2]]),
        2: np.array([[1.0, 0.0], [0.1, 0.6]]),
    }
    np.testing.assert_array_equal(semantic_prediction(maps, (2, 2), 0.3), [[3, 1], [1, 3]])
    # (1, 0)'s best class score is 0.5 < 0.55 -> background.
    np.testing.assert_array_equal(semantic_prediction(maps, (2, 2), 0.55), [[3, 1], [0, 3]])
    # A tie with the background plane goes to background.
    np.testing.assert_array_equal(semantic_prediction(maps, (2, 2), 0.5), [[3, 1], [0, 3]])
    out = semantic_prediction(maps, (4, 4), 0.3)
    assert out.shape == (4, 4) and out.dtype == np.uint8
    assert (semantic_prediction({}, (3, 2), 0.3) == 0).all()


def test_confusion_accumulator_hand_matrix():
    mask = np.array([[0, 0, 1], [1, 1, 2], [255, 2, 2]], dtype=np.uint8)
    pred = np.array([[0, 1, 1], [1, 0, 2], [2, 2, 1]], dtype=np.uint8)
    acc = ConfusionAccumulator(2)
    acc.add(pred, mask)
    np.testing.assert_array_equal(acc.matrix, [[1, 1, 0], [1, 2, 0], [0, 1, 2]])
    np.testing.assert_allclose(acc.iou(), [1 / 3, 2 / 5, 2 / 3])
    assert acc.miou() == pytest.approx(7 / 15)
    acc.add(pred, mask)
    np.testing.assert_array_equal(acc.matrix, 2 * np.array([[1, 1, 0], [1, 2, 0], [0, 1, 2]]))
    empty = ConfusionAccumulator(2)
    assert np.isnan(empty.iou()).all() and math.isnan(empty.miou())
    with pytest.raises(ValueError):
        acc.add(pred, mask[:2])
    with pytest.raises(ValueError):
        acc.add(np.full((3, 3), 3, dtype=np.uint8), mask)


def test_irn_sweep_best_threshold_depends_on_data():
    mask = np.array([[1, 1, 1, 1], [0, 0, 0, 0]], dtype=np.uint8)
    # Object scores 0.9, background 0.4: needs a threshold between them.
    high = np.array([[1.0, 0.9, 0.9, 0.9], [0.0, 0.4, 0.4, 0.4]])
    # Object scores 0.3, background 0: a low threshold is needed.
    low = np.array([[1.0, 0.3, 0.3, 0.3], [0.0, 0.0, 0.0, 0.0]])
    ts = [0.2, 0.5, 0.95]
    sweep_high = irn_sweep(((m, mask) for m in [{0: high}]), 1, ts)
    sweep_low = irn_sweep(iter([({0: low}, mask)]), 1, ts)
    # High, T=0.2: all but (1, 0) predicted object -> background 1/4, object 4/7.
    assert sweep_high[0.2] == pytest.approx((1 / 4 + 4 / 7) / 2)
    assert sweep_high[0.5] == pytest.approx(1.0)
    assert sweep_low[0.2] == pytest.approx(1.0)
    # Low, T=0.5: only (0, 0) is object -> background 4/7, object 1/4.
    assert sweep_low[0.5] == pytest.approx((4 / 7 + 1 / 4) / 2)
    assert max(sweep_high, key=sweep_high.get) == 0.5
    assert max(sweep_low, key=sweep_low.get) == 0.2


def _paired_counts(rng, n_img=40, n_cls=4, gain=0):
    img, cls, ia, ua = [], [], [], []
    for i in range(n_img):
        for c in rng.choice(n_cls, size=rng.integers(1, 3), replace=False):
            u = int(rng.integers(50, 200))
            img.append(f"im{i}")
            cls.append(int(c))
            ia.append(int(rng.integers(0, u // 2)))
            ua.append(u)
    ia, ua = np.array(ia), np.array(ua)
    return img, np.array(cls), ia, ua, ia + gain, ua


def test_bootstrap_identical_methods_zero_width():
    img, cls, ia, ua, _, _ = _paired_counts(np.random.default_rng(2))
    assert bootstrap_diff_ci(img, cls, ia, ua, ia, ua, n_boot=200) == (0.0, 0.0, 0.0)


def test_bootstrap_contains_point_and_is_deterministic():
    rng = np.random.default_rng(3)
    img, cls, ia, ua, _, _ = _paired_counts(rng)
    ib = np.maximum(ia + rng.integers(-20, 21, size=ia.shape), 0)
    point, low, high = bootstrap_diff_ci(img, cls, ia, ua, ib, ua, seed=7)
    assert low <= point <= high and low < high
    expected = np.nanmean(np.bincount(cls, ia) / np.bincount(cls, ua)) - np.nanmean(
        np.bincount(cls, ib) / np.bincount(cls, ua)
    )
    assert point == pytest.approx(expected)
    assert bootstrap_diff_ci(img, cls, ia, ua, ib, ua, seed=7) == (point, low, high)
    assert bootstrap_diff_ci(img, cls, ia, ua, ib, ua, seed=8) != (point, low, high)


def test_bootstrap_excludes_zero_when_one_method_always_better():
    img, cls, ia, ua, ib, ub = _paired_counts(np.random.default_rng(4), gain=10)
    point, low, high = bootstrap_diff_ci(img, cls, ib, ub, ia, ua, n_boot=500)
    assert 0 < low <= point <= high
    point, low, high = bootstrap_diff_ci(img, cls, ia, ua, ib, ub, n_boot=500)
    assert low <= point <= high < 0


def test_paired_bootstrap_from_accumulators():
    rng = np.random.default_rng(5)
    items = _random_items(rng, 30, 3)
    a, b = IoUAccumulator(3), IoUAccumulator(3)
    for im, c, cam, mask in items:
        a.add(im, c, cam, mask)
    # Method b: a blurrier map; added in reverse order to exercise matching by key.
    for im, c, cam, mask in reversed(items):
        b.add(im, c, np.sqrt(cam), mask)
    point, low, high = paired_bootstrap(a, b, n_boot=300)
    assert point == pytest.approx(a.miou() - b.miou())
    assert low <= point <= high
    assert paired_bootstrap(a, a, n_boot=50) == (0.0, 0.0, 0.0)
    c = IoUAccumulator(3)
    c.add(*items[0])
    with pytest.raises(ValueError):
        paired_bootstrap(a, c)


def test_per_class_bootstrap_intervals():
    rng = np.random.default_rng(0)
    ids, cls, ia, ua, ib, ub = [], [], [], [], [], []
    for k in range(30):
        for c in (0, 1):
            u = int(rng.integers(50, 100))
            i_b = int(rng.integers(0, 40))
            ids.append(f"im{k}"); cls.append(c); ua.append(u); ub.append(u); ib.append(i_b)
            ia.append(i_b if c == 0 else i_b + 10)  # equal on class 0, better on every image of class 1
    mean, (point, lo, hi) = bootstrap_diff_ci(ids, cls, ia, ua, ib, ub, num_classes=3, n_boot=300, per_class=True)
    assert mean == bootstrap_diff_ci(ids, cls, ia, ua, ib, ub, num_classes=3, n_boot=300)  # same replicates
    assert point.shape == lo.shape == hi.shape == (3,)
    assert point[0] == 0 and lo[0] == 0 and hi[0] == 0
    assert point[1] == pytest.approx(300 / sum(ua[1::2])) and lo[1] > 0
    assert np.isnan(point[2]) and np.isnan(lo[2])  # class never seen
    assert lo[1] <= point[1] <= hi[1]
