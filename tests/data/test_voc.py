from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image, ImageFile

from repcam.data.base import IGNORE_INDEX, DataError, SegDataset
from repcam.data.voc import VOC_CLASSES, VOCSegmentation

CAT, DOG, PERSON, CHAIR = (VOC_CLASSES.index(n) for n in ("cat", "dog", "person", "chair"))


@pytest.fixture
def tiny_voc(tmp_path, kit):
    """a: cat + dog (255 border), b: person only, c: dog only; train = a b c, val = c."""
    masks = {
        "a": kit.mask_12x10((CAT + 1, 2, 6, 1, 5), (DOG + 1, 5, 9, 7, 11), border=True),
        "b": kit.mask_12x10((PERSON + 1, 0, 10, 3, 8)),
        "c": kit.mask_12x10((DOG + 1, 1, 4, 1, 4)),
    }
    kit.make_voc(tmp_path, masks, {"train": ["a", "b", "c"], "val": ["c"]})
    return tmp_path, masks


def test_voc_classes():
    assert len(VOC_CLASSES) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    assert VOC_CLASSES[7] == "cat" and VOC_CLASSES[11] == "dog" and VOC_CLASSES[14] == "person"


def test_labels_from_masks(tiny_voc):
    root, masks = tiny_voc
    ds = VOCSegmentation(root, "train")
    assert isinstance(ds, SegDataset)
    assert ds.class_names == VOC_CLASSES and ds.num_classes == 20
    assert [s.id for s in ds.samples] == ["a", "b", "c"]
    assert ds.samples[0].labels == {CAT, DOG}
    assert ds.samples[1].labels == {PERSON}
    assert ds.samples[2].labels == {DOG}
    assert ds.label_source == {"a": "mask", "b": "mask", "c": "mask"}
    assert ds.mask_source["a"] == "SegmentationClass"
    assert ds.skipped == {} and ds.skipped_ids == []
    m = ds.mask(0)
    assert m.dtype == np.uint8 and m.shape == (10, 12)
    np.testing.assert_array_equal(m, masks["a"])
    assert IGNORE_INDEX in m
    im = ds.image(0)
    assert im.mode == "RGB" and im.size == (12, 10)
    assert ds.indices_with(DOG) == [0, 2]
    assert "3 kept" in ds.report()


def test_root_may_be_the_voc2012_folder_and_l_masks(tmp_path, kit):
    kit.make_voc(tmp_path, {"a": kit.mask_12x10((CAT + 1, 0, 5, 0, 5))}, {"train": ["a"]}, mask_mode="L")
    ds = VOCSegmentation(tmp_path / "VOC2012", "train")
    assert ds.samples[0].labels == {CAT}
    assert ds.mask(0).max() == CAT + 1


def test_labels_from_xml(tmp_path, kit):
    masks = {
        "a": kit.mask_12x10((CAT + 1, 2, 6, 1, 5)),
        "b": kit.mask_12x10((PERSON + 1, 0, 10, 3, 8)),
    }
    # a's XML also lists a difficult chair that is not in the mask; b has no XML -> falls back to its mask
    kit.make_voc(tmp_path, masks, {"train": ["a", "b"]}, xml={"a": [("cat", 0), ("chair", 1)]})
    ds = VOCSegmentation(tmp_path, "train")
    assert ds.samples[0].labels == {CAT, CHAIR}
    assert ds.samples[1].labels == {PERSON}
    assert ds.label_source == {"a": "xml", "b": "mask"}


def test_xml_with_unknown_class(tmp_path, kit):
    kit.make_voc(tmp_path, {"a": kit.mask_12x10()}, {"train": ["a"]}, xml={"a": [("unicorn", 0)]})
    with pytest.raises(DataError, match=r"a\.xml.*unicorn"):
        VOCSegmentation(tmp_path, "train")


def test_class_subset(tiny_voc):
    root, masks = tiny_voc
    ds = VOCSegmentation(root, "train", classes=["dog", "cat"])
    assert ds.class_names == ("dog", "cat")
    assert [s.id for s in ds.samples] == ["a", "c"]
    assert ds.samples[0].labels == {0, 1} and ds.samples[1].labels == {0}
    assert ds.skipped == {"no chosen class": 1}
    assert ds.skipped_ids == [("b", "no chosen class")]
    m = ds.mask(0)
    expected = np.zeros_like(masks["a"])
    expected[masks["a"] == DOG + 1] = 1
    expected[masks["a"] == CAT + 1] = 2
    expected[masks["a"] == 255] = 255
    np.testing.assert_array_equal(m, expected)
    rep = ds.report()
    assert "no chosen class: 1" in rep and "not chosen" in rep and "person" in rep
    # a pixel of an unchosen class is background
    ds2 = VOCSegmentation(root, "train", classes=["cat"])
    assert set(np.unique(ds2.mask(0))) == {0, 1, 255}


def test_unknown_class_lists_valid_names(tiny_voc):
    root, _ = tiny_voc
    with pytest.raises(DataError, match=r"'kitten'.*aeroplane.*tvmonitor"):
        VOCSegmentation(root, "train", classes=["cat", "kitten"])
    with pytest.raises(DataError, match="string"):
        VOCSegmentation(root, "train", classes="cat")
    with pytest.raises(DataError, match="twice"):
        VOCSegmentation(root, "train", classes=["cat", "cat"])


def test_aug_masks_prefer_original(tmp_path, kit):
    orig = {"a": kit.mask_12x10((CAT + 1, 0, 5, 0, 5), border=True)}
    aug = {
        "a": kit.mask_12x10((DOG + 1, 0, 5, 0, 5)),  # differs: must NOT be used, the original exists
        "b": kit.mask_12x10((PERSON + 1, 0, 5, 0, 5)),
    }
    kit.make_voc(tmp_path, orig, {"train_aug": ["a", "b"]}, aug_masks=aug)
    ds = VOCSegmentation(tmp_path, "train_aug", use_aug_masks=True)
    assert ds.mask_source == {"a": "SegmentationClass", "b": "SegmentationClassAug"}
    assert ds.samples[0].labels == {CAT} and ds.samples[1].labels == {PERSON}
    np.testing.assert_array_equal(ds.mask(0), orig["a"])
    np.testing.assert_array_equal(ds.mask(1), aug["b"])
    # without a manifest, "original" means present in SegmentationClass
    only = VOCSegmentation(tmp_path, "train_aug", use_aug_masks=True, only_original_masks=True)
    assert [s.id for s in only.samples] == ["a"]
    assert only.skipped == {"not an original VOC mask": 1}
    # without use_aug_masks b has no mask: labels come from masks -> error naming the file
    with pytest.raises(DataError, match=r"b\.png"):
        VOCSegmentation(tmp_path, "train_aug")


def test_only_original_masks_from_manifest(tiny_voc, kit):
    root, _ = tiny_voc
    kit.make_voc(root, {}, {}, manifest={"a": 1, "b": 0})  # c is not in the manifest
    ds = VOCSegmentation(root, "train", only_original_masks=True)
    assert [s.id for s in ds.samples] == ["a"]
    assert ds.skipped == {"not an original VOC mask": 1, "not in manifest.csv": 1}
    assert "manifest.csv" in ds.report()
    # the manifest is only read when asked for
    assert len(VOCSegmentation(root, "train")) == 3


# ------------------------------------------------------------------------------------------- bad data


def test_missing_root_and_split(tmp_path, tiny_voc):
    root, _ = tiny_voc
    with pytest.raises(DataError, match="nowhere"):
        VOCSegmentation(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"test\.txt.*available splits: train, val"):
        VOCSegmentation(root, "test")
    (root / "VOC2012" / "ImageSets" / "Segmentation" / "empty.txt").write_text("\n  \n")
    with pytest.raises(DataError, match=r"empty.*empty\.txt"):
        VOCSegmentation(root, "empty")
    (tmp_path / "other").mkdir()
    with pytest.raises(DataError, match="other"):
        VOCSegmentation(tmp_path / "other")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_bad_jpeg(tiny_voc, kit, damage):
    root, _ = tiny_voc
    jpg = root / "VOC2012" / "JPEGImages" / "b.jpg"
    # a larger image so that a truncated file still has a complete header
    kit.write_image(jpg, 120, 100)
    if damage == "truncate":
        kit.truncate(jpg, 0.6)
    elif damage == "garbage":
        jpg.write_bytes(b"this is not a jpeg at all")
    else:
        jpg.unlink()
    ds = VOCSegmentation(root, "train")
    assert ds.image(0).size == (12, 10)
    with pytest.raises(DataError, match=r"b\.jpg"):
        ds.image(1)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_mask_with_xml_labels(tiny_voc, kit):
    root, _ = tiny_voc
    kit.make_voc(root, {}, {}, xml={"a": [("cat", 0)], "b": [("person", 0)], "c": [("dog", 0)]})
    (root / "VOC2012" / "SegmentationClass" / "b.png").unlink()
    ds = VOCSegmentation(root, "train")  # labels from XML: construction does not need b's mask
    assert ds.mask_source["b"] is None
    with pytest.raises(DataError, match=r"b\.png"):
        ds.mask(1)
    bad = ds.validate()
    assert [i for i, _ in bad] == ["b"] and "b.png" in bad[0][1]
    assert [s.id for s in ds.samples] == ["a", "c"]
    assert ds.skipped == {"invalid mask": 1}


def test_missing_mask_with_mask_labels(tiny_voc):
    root, _ = tiny_voc
    (root / "VOC2012" / "SegmentationClass" / "c.png").unlink()
    with pytest.raises(DataError, match=r"c\.png"):
        VOCSegmentation(root, "train")


def test_mask_size_mismatch(tiny_voc, kit):
    root, masks = tiny_voc
    kit.write_mask(root / "VOC2012" / "SegmentationClass" / "c.png", np.pad(masks["c"], ((0, 1), (0, 0))))
    ds = VOCSegmentation(root, "train")
    with pytest.raises(DataError, match=r"c\.png.*12x11.*c\.jpg.*12x10"):
        ds.mask(2)


def test_mask_values_out_of_range(tiny_voc, kit):
    root, masks = tiny_voc
    bad = masks["c"].copy()
    bad[0, 0] = 21
    bad[0, 1] = 77
    kit.write_mask(root / "VOC2012" / "SegmentationClass" / "c.png", bad)
    # labels come from the masks, so construction reads it and fails
    with pytest.raises(DataError, match=r"c\.png.*21, 77"):
        VOCSegmentation(root, "train")
    # with XML labels the error comes from mask(i)
    kit.make_voc(root, {}, {}, xml={"a": [("cat", 0)], "b": [("person", 0)], "c": [("dog", 0)]})
    ds = VOCSegmentation(root, "train")
    with pytest.raises(DataError, match=r"c\.png.*21, 77"):
        ds.mask(2)


def test_rgb_mask_rejected(tiny_voc, kit):
    root, masks = tiny_voc
    kit.write_mask(root / "VOC2012" / "SegmentationClass" / "a.png", masks["a"], mode="RGB")
    with pytest.raises(DataError, match=r"a\.png.*'RGB'"):
        VOCSegmentation(root, "train")


# ------------------------------------------------------------------------------------ real VOC subset

README_COUNTS = {  # from shared/data/README.md: images per class, (train, val)
    "aeroplane": (6, 2), "bicycle": (9, 1), "bird": (17, 2), "boat": (7, 4), "bottle": (46, 4),
    "bus": (4, 0), "car": (69, 2), "cat": (605, 59), "chair": (105, 13), "cow": (262, 43),
    "diningtable": (20, 4), "dog": (796, 56), "horse": (444, 37), "motorbike": (9, 1), "person": (596, 48),
    "pottedplant": (59, 6), "sheep": (299, 31), "sofa": (91, 11), "train": (2, 2), "tvmonitor": (40, 1),
}  # fmt: skip
BENCHMARK = ["bottle", "car", "cat", "chair", "cow", "dog", "horse", "person", "pottedplant", "sheep", "sofa",
             "tvmonitor"]  # fmt: skip


@pytest.fixture(scope="module")
def mini_train(voc_mini):
    return VOCSegmentation(voc_mini, "train")


@pytest.fixture(scope="module")
def manifest(voc_mini):
    with (voc_mini / "manifest.csv").open(newline="") as f:
        return {r["id"]: r for r in csv.DictReader(f)}


def test_real_subset_counts(voc_mini, mini_train):
    val = VOCSegmentation(voc_mini / "VOC2012", "val")
    assert len(mini_train) == 2378 and len(val) == 237
    assert mini_train.skipped == {} and val.skipped == {}
    for name, (n_train, n_val) in README_COUNTS.items():
        assert mini_train.class_counts()[name] == n_train, name
        assert val.class_counts()[name] == n_val, name
    assert mini_train.class_counts()["cat"] == 605 and val.class_counts()["dog"] == 56


def test_real_subset_labels_match_manifest(mini_train, manifest):
    for s in mini_train.samples:
        assert {VOC_CLASSES[k] for k in s.labels} == set(manifest[s.id]["classes"].split()), s.id


def test_real_benchmark_subset(voc_mini, mini_train, manifest):
    ds = VOCSegmentation(voc_mini, "train", classes=BENCHMARK)
    assert ds.class_names == tuple(BENCHMARK)
    expected = [s.id for s in mini_train.samples if set(manifest[s.id]["classes"].split()) & set(BENCHMARK)]
    assert [s.id for s in ds.samples] == expected
    assert ds.skipped == {"no chosen class": 2378 - len(expected)}
    for name in BENCHMARK:
        assert ds.class_counts()[name] == README_COUNTS[name][0]
    i = ds.indices_with(BENCHMARK.index("dog"))[0]
    m = ds.mask(i)
    assert set(np.unique(m)) <= set(range(13)) | {255}
    assert ds.image(i).size == (m.shape[1], m.shape[0])


def test_real_only_original_masks(voc_mini):
    ds = VOCSegmentation(voc_mini, "train", only_original_masks=True)
    assert len(ds) == 371
    assert ds.skipped == {"not an original VOC mask": 2007}
    assert len(VOCSegmentation(voc_mini, "val", only_original_masks=True)) == 237


def test_real_copy_with_corrupt_jpeg(voc_mini, tmp_path, kit):
    """A copy of a few real images, one truncated: validate() reports it instead of crashing."""
    ids = (voc_mini / "VOC2012/ImageSets/Segmentation/val.txt").read_text().split()[:3]
    for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClass", "png")):
        (tmp_path / "VOC2012" / sub).mkdir(parents=True)
        for i in ids:
            shutil.copy(voc_mini / "VOC2012" / sub / f"{i}.{ext}", tmp_path / "VOC2012" / sub)
    (tmp_path / "VOC2012/ImageSets/Segmentation").mkdir(parents=True)
    (tmp_path / "VOC2012/ImageSets/Segmentation/val.txt").write_text("\n".join(ids))
    kit.truncate(tmp_path / "VOC2012/JPEGImages" / f"{ids[1]}.jpg", 0.5)
    ds = VOCSegmentation(tmp_path, "val")
    assert isinstance(ds.image(0), Image.Image)
    bad = ds.validate()
    assert [i for i, _ in bad] == [ids[1]] and f"{ids[1]}.jpg" in bad[0][1]
    assert len(ds) == 2 and ds.skipped == {"invalid image": 1}
