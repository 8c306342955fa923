from __future__ import annotations

import numpy as np
import pytest

from repcam.data.base import DataError, SegDataset
from repcam.data.folder import FolderSegmentation

CLASSES = ["cat", "dog", "person"]


@pytest.fixture
def folder(tmp_path, kit):
    """a.jpg: cat + dog (255 border), b.png: person, c.jpg: dog, d.jpg: no mask."""
    (tmp_path / "classes.txt").write_text("\n".join(CLASSES) + "\n\n")
    masks = {
        "a": kit.mask_12x10((1, 2, 6, 1, 5), (2, 5, 9, 7, 11), border=True),
        "b": kit.mask_12x10((3, 0, 10, 3, 8)),
        "c": kit.mask_12x10((2, 1, 4, 1, 4)),
    }
    for i, m in masks.items():
        kit.write_mask(tmp_path / "masks" / f"{i}.png", m)
    kit.write_image(tmp_path / "images" / "a.jpg", 12, 10)
    kit.write_image(tmp_path / "images" / "b.png", 12, 10)
    kit.write_image(tmp_path / "images" / "c.JPG", 12, 10)
    kit.write_image(tmp_path / "images" / "d.jpg", 12, 10)
    return tmp_path, masks


def test_layout_docstring():
    import repcam.data.folder as mod

    for part in ("classes.txt", "images/<id>", "masks/<id>.png", "splits/<split>.txt", "labels.csv", "255"):
        assert part in mod.__doc__


def test_all_images_with_masks(folder):
    root, masks = folder
    ds = FolderSegmentation(root)
    assert isinstance(ds, SegDataset)
    assert ds.class_names == tuple(CLASSES)
    assert [s.id for s in ds.samples] == ["a", "b", "c"]
    assert [s.labels for s in ds.samples] == [{0, 1}, {2}, {1}]
    assert ds.skipped == {"no mask": 1} and ds.skipped_ids == [("d", "no mask")]
    assert ds.label_source == {"a": "mask", "b": "mask", "c": "mask"}
    np.testing.assert_array_equal(ds.mask(0), masks["a"])
    assert ds.image(1).mode == "RGB" and ds.image(2).size == (12, 10)
    assert "no mask: 1" in ds.report()


def test_split_and_labels_csv(folder):
    root, _ = folder
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("a\nc\n")
    (root / "labels.csv").write_text("id,labels\na,cat;person\n")  # c not listed -> labels from its mask
    ds = FolderSegmentation(root, split="train")
    assert [s.id for s in ds.samples] == ["a", "c"]
    assert ds.samples[0].labels == {0, 2} and ds.samples[1].labels == {1}
    assert ds.label_source == {"a": "labels.csv", "c": "mask"}


def test_class_subset(folder):
    root, masks = folder
    ds = FolderSegmentation(root, classes=["person", "cat"])
    assert ds.class_names == ("person", "cat")
    assert [s.id for s in ds.samples] == ["a", "b"]
    assert ds.skipped == {"no mask": 1, "no chosen class": 1}
    expected = np.zeros_like(masks["a"])
    expected[masks["a"] == 1] = 2
    expected[masks["a"] == 255] = 255
    np.testing.assert_array_equal(ds.mask(0), expected)
    assert set(np.unique(ds.mask(1))) == {0, 1}
    assert "dog" in ds.report()


def test_unknown_class(folder):
    root, _ = folder
    with pytest.raises(DataError, match=r"'bird'.*cat, dog, person"):
        FolderSegmentation(root, classes=["bird"])
    (root / "labels.csv").write_text("a,cat;bird\n")
    with pytest.raises(DataError, match=r"labels\.csv.*'bird'"):
        FolderSegmentation(root)


def test_bad_class_list(tmp_path):
    with pytest.raises(DataError, match=r"classes\.txt"):
        FolderSegmentation(tmp_path)
    (tmp_path / "classes.txt").write_text("cat\n\ndog\n")
    with pytest.raises(DataError, match=r"classes\.txt line 2"):
        FolderSegmentation(tmp_path)
    (tmp_path / "classes.txt").write_text("cat\ncat\n")
    with pytest.raises(DataError, match="twice"):
        FolderSegmentation(tmp_path)


def test_split_file_errors(folder):
    root, _ = folder
    with pytest.raises(DataError, match=r"val\.txt"):
        FolderSegmentation(root, split="val")
    (root / "splits").mkdir()
    (root / "splits" / "val.txt").write_text("")
    with pytest.raises(DataError, match=r"empty.*val\.txt"):
        FolderSegmentation(root, split="val")


def test_truncated_and_missing_image(folder, kit):
    root, _ = folder
    kit.write_image(root / "images" / "a.jpg", 120, 100)
    kit.truncate(root / "images" / "a.jpg", 0.6)
    (root / "images" / "c.JPG").unlink()
    ds = FolderSegmentation(root, split=None)
    assert [s.id for s in ds.samples] == ["a", "b"]  # c lost its image: no longer listed
    assert ds.skipped == {"no mask": 1, "no image": 1}
    (root / "splits").mkdir()
    (root / "splits" / "all.txt").write_text("a\nb\nc\n")
    ds = FolderSegmentation(root, split="all")
    with pytest.raises(DataError, match=r"a\.jpg"):
        ds.image(0)
    with pytest.raises(DataError, match=r"images/c"):
        ds.image(2)
    bad = ds.validate()
    assert [i for i, _ in bad] == ["a", "c"]
    assert [s.id for s in ds.samples] == ["b"] and ds.skipped == {"invalid image": 2}


def test_missing_mask(folder):
    root, _ = folder
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("a\nd\n")
    with pytest.raises(DataError, match=r"d\.png"):
        FolderSegmentation(root, split="train")  # labels from masks
    (root / "labels.csv").write_text("a,cat\nd,dog\n")
    ds = FolderSegmentation(root, split="train")
    with pytest.raises(DataError, match=r"d\.png"):
        ds.mask(1)


def test_size_mismatch_and_bad_values(folder, kit):
    root, masks = folder
    kit.write_mask(root / "masks" / "c.png", masks["c"][:, :11])
    ds = FolderSegmentation(root)
    with pytest.raises(DataError, match=r"c\.png.*11x10.*c\.JPG.*12x10"):
        ds.mask(2)
    bad = masks["b"].copy()
    bad[0, 0] = 4  # only 3 classes: 4 is out of range
    kit.write_mask(root / "masks" / "b.png", bad, mode="L")
    with pytest.raises(DataError, match=r"b\.png.*outside 0\.\.3.*: 4"):
        FolderSegmentation(root)
