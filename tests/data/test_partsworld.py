"""The built-in parts world: determinism, valid masks, planted groups that share parts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from repcam.data.base import IGNORE_INDEX, DataError, SegDataset
from repcam.data.partsworld import (
    PART_BODY,
    PART_HEAD,
    PART_LIMBS,
    PART_MARKER,
    PartsWorld,
    design_classes,
    max_groups,
)

N = 60


@pytest.fixture(scope="module")
def train() -> PartsWorld:
    return PartsWorld("train", num_images=N, seed=0)


@pytest.fixture(scope="module")
def val() -> PartsWorld:
    return PartsWorld("val", num_images=N, seed=0)


def _arrays(ds: PartsWorld) -> tuple[np.ndarray, np.ndarray]:
    return np.stack([np.asarray(ds.image(i)) for i in range(len(ds))]), np.stack([ds.mask(i) for i in range(len(ds))])


def test_is_a_seg_dataset(train: PartsWorld) -> None:
    assert isinstance(train, SegDataset)
    assert len(train) == N
    im = train.image(0)
    assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (64, 64)
    m = train.mask(0)
    assert m.dtype == np.uint8 and m.shape == (64, 64)
    assert len({s.id for s in train.samples}) == N


def test_default_design_has_12_classes_in_4_groups(train: PartsWorld) -> None:
    assert train.num_classes == 12 and len(set(train.class_names)) == 12
    assert train.groups == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert sorted(c for g in train.groups for c in g) == list(range(12))
    for g, members in enumerate(train.groups):
        assert [train.group_of(c) for c in members] == [g] * 3
        assert [train.marker_of(c) for c in members] == [0, 1, 2]


def test_configurable_groups() -> None:
    ds = PartsWorld("train", num_images=5, n_groups=5, classes_per_group=2)
    assert ds.num_classes == 10 and len(ds.groups) == 5 and all(len(g) == 2 for g in ds.groups)
    big = design_classes(n_groups=max_groups(), classes_per_group=2)
    assert len({d.slots for d in big[::2]}) == max_groups()  # every group its own set of parts
    with pytest.raises(DataError):
        PartsWorld("train", n_groups=max_groups() + 1)
    with pytest.raises(DataError):
        PartsWorld("train", classes_per_group=0)
    with pytest.raises(DataError):
        PartsWorld("test")
    with pytest.raises(DataError):
        PartsWorld("train", multi_object_fraction=1.5)


def test_deterministic_for_a_seed(train: PartsWorld) -> None:
    again = PartsWorld("train", num_images=N, seed=0)
    assert [s.labels for s in again.samples] == [s.labels for s in train.samples]
    for a, b in zip(_arrays(train), _arrays(again)):
        assert a.tobytes() == b.tobytes()
    # Image i does not depend on how many images there are, nor on the order of access.
    short = PartsWorld("train", num_images=5, seed=0)
    for i in (4, 2, 0):
        assert np.array_equal(np.asarray(short.image(i)), np.asarray(train.image(i)))
        assert np.array_equal(short.mask(i), train.mask(i))


def test_seeds_and_splits_differ(train: PartsWorld, val: PartsWorld) -> None:
    other = PartsWorld("train", num_images=N, seed=1)
    imgs, _ = _arrays(train)
    for ds in (other, val):
        imgs2, _ = _arrays(ds)
        assert not np.array_equal(imgs, imgs2)
        # Not one image is shared.
        seen = {im.tobytes() for im in imgs}
        assert not any(im.tobytes() in seen for im in imgs2)


def test_masks_valid_and_match_labels(train: PartsWorld, val: PartsWorld) -> None:
    for ds in (train, val):
        for i, s in enumerate(ds.samples):
            m = ds.mask(i)
            values = set(np.unique(m).tolist())
            assert values <= set(range(ds.num_classes + 1)) | {IGNORE_INDEX}
            assert values - {0, IGNORE_INDEX} == {c + 1 for c in s.labels}, f"image {i}"
            assert 1 <= len(s.labels) <= 3
            # The mask is exactly the union of the objects; parts lie inside objects.
            assert np.array_equal(m > 0, ds.instances(i) > 0)
            assert np.array_equal(ds.parts(i) > 0, m > 0)


def test_ignore_border() -> None:
    ds = PartsWorld("val", num_images=20, ignore_border=True)
    plain = PartsWorld("val", num_images=20)
    for i, s in enumerate(ds.samples):
        m, m0 = ds.mask(i), plain.mask(i)
        assert (m == IGNORE_INDEX).any()
        assert set(np.unique(m).tolist()) - {0, IGNORE_INDEX} == {c + 1 for c in s.labels}
        keep = m != IGNORE_INDEX
        assert np.array_equal(m[keep], m0[keep])  # only borders of objects changed
        assert (m0[~keep] > 0).all()


def test_single_and_multi_object_images() -> None:
    tr = PartsWorld("train", num_images=300)
    va = PartsWorld("val", num_images=300)
    single_tr = tr.single_label_indices()
    assert single_tr == [i for i, s in enumerate(tr.samples) if len(s.labels) == 1]
    frac_tr = 1 - len(single_tr) / len(tr)
    frac_va = 1 - len(va.single_label_indices()) / len(va)
    assert 0.1 < frac_tr < 0.3  # train: mostly single-object (default 20 % multi)
    assert frac_tr < frac_va < 0.55  # val: more multi-object images (default 40 %)
    multi = [i for i, s in enumerate(va.samples) if len(s.labels) > 1]
    assert any(len(va.samples[i].labels) == 3 for i in multi)
    for i in multi[:20]:
        assert len(va.objects(i)) == len(va.samples[i].labels)
    every = PartsWorld("val", num_images=30, multi_object_fraction=1.0)
    assert all(len(s.labels) >= 2 for s in every.samples)
    none = PartsWorld("val", num_images=30, multi_object_fraction=0.0)
    assert all(len(s.labels) == 1 for s in none.samples)


def test_all_classes_appear(train: PartsWorld) -> None:
    ds = PartsWorld("train", num_images=300)
    counts = np.bincount([c for s in ds.samples for c in s.labels], minlength=ds.num_classes)
    assert counts.min() >= 10


def test_body_is_large_marker_is_small() -> None:
    ds = PartsWorld("train", num_images=100)
    area = np.zeros(5)
    for i in ds.single_label_indices():
        area += np.bincount(ds.parts(i).ravel(), minlength=5)[:5]
    frac = area[1:] / area[1:].sum()
    assert frac[PART_BODY - 1] > 0.4
    assert frac[PART_MARKER - 1] < 0.15
    assert frac[PART_HEAD - 1] > 0.05 and frac[PART_LIMBS - 1] > 0.1


def test_classes_of_a_group_differ_only_by_the_marker(train: PartsWorld) -> None:
    within, across = [], []
    for seed in range(3):
        renders = [train.render_object(c, pose_seed=seed) for c in range(train.num_classes)]
        for c in range(train.num_classes):
            a_img, a_parts = renders[c]
            for e in range(train.num_classes):
                if e == c:
                    continue
                b_img, b_parts = renders[e]
                differ = (a_img != b_img).any(-1) | (a_parts != b_parts)
                marker = (a_parts == PART_MARKER) | (b_parts == PART_MARKER)
                if train.group_of(e) == train.group_of(c):
                    # Same group: the only difference is the marker.
                    assert differ.any() and (differ <= marker).all()
                    within.append(differ.sum())
                else:
                    # Other group: parts other than the marker differ.
                    assert (differ & ~marker).sum() >= 30
                    if train.marker_of(e) == train.marker_of(c):
                        assert not (differ & marker).any()
                    across.append(differ.sum())
    assert np.mean(across) > 2 * np.mean(within)


def test_groups_differ_in_parts_not_in_markers() -> None:
    designs = design_classes(4, 3)
    slots = [d.slots for d in designs]
    for c, d in enumerate(designs):
        for e, f in enumerate(designs):
            if c == e:
                continue
            assert (slots[c] == slots[e]) == (d.group == f.group)
    # Marker k is used by one class of every group, so markers alone do not tell groups apart.
    for k in range(3):
        assert sorted(d.group for d in designs if d.marker == k) == [0, 1, 2, 3]
    # Each group lacks a different part, so each pair of groups differs in two parts.
    for d in designs:
        for f in designs:
            if d.group != f.group:
                assert len(d.slots ^ f.slots) == 2


def test_hidden_markers() -> None:
    base = PartsWorld("train", num_images=40, seed=3)
    same = PartsWorld("train", num_images=40, seed=3, hidden_marker_fraction=0.0)
    assert all(np.array_equal(base.image_array(i), same.image_array(i)) for i in range(40))  # the default world is unchanged
    none = PartsWorld("train", num_images=40, seed=3, hidden_marker_fraction=1.0)
    for i in range(40):
        assert none.samples[i].labels == base.samples[i].labels
        assert not (none.parts(i) == PART_MARKER).any() and (base.parts(i) == PART_MARKER).any()
        assert set(np.unique(none.mask(i))) == set(np.unique(base.mask(i)))  # every object is still there
    some = PartsWorld("train", num_images=300, seed=3, hidden_marker_fraction=0.3)
    hidden = [
        not (some.parts(i)[some.instances(i) == j + 1] == PART_MARKER).any()
        for i in range(len(some)) for j in range(len(some.objects(i)))
    ]
    assert 0.22 < np.mean(hidden) < 0.38, np.mean(hidden)  # 0.3 of about 360 objects (a covered marker also counts)


def test_object_scale() -> None:
    def mean_area(ds: PartsWorld) -> float:
        return float(np.mean([(ds.mask(i) > 0).sum() for i in ds.single_label_indices()]))

    small, big = PartsWorld("val", num_images=60, object_scale=0.8), PartsWorld("val", num_images=60, object_scale=1.25)
    assert 2.0 < mean_area(big) / mean_area(small) < 2.9  # area grows with the square of the scale: (1.25 / 0.8)^2 = 2.4
    for bad in ({"object_scale": 3.0}, {"hidden_marker_fraction": -0.1}):
        with pytest.raises(DataError, match=next(iter(bad))):
            PartsWorld("val", num_images=2, **bad)
