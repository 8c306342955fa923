"""Data the user did not mean (issue 26, items 5 and 6, and "also seen"): EXIF orientation applied by one rule
everywhere (image and mask aligned as viewers show them; a mismatch names the tag), images shared by the training
and an evaluation split noted in notes and tables, COCO annotations without a segmentation handled per annotation,
and the preflight reporting every problem of every split at once, before any training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from repcam.config import from_dict
from repcam.data import DataError, load_dataset
from repcam.data.coco import COCOSegmentation
from repcam.data.images import read_image
from repcam.pipeline.run import Run


def _exif_jpeg(path: Path, stored: np.ndarray, orientation: int = 6) -> None:
    """A real JPEG whose stored pixels are ``stored`` and whose EXIF says to turn them (6: 90° clockwise)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=100, subsampling=0, exif=exif)


def _picture() -> tuple[np.ndarray, np.ndarray]:
    """(stored pixels 40 wide x 20 high, the mask of the displayed picture, 20 wide x 40 high)."""
    stored = np.full((20, 40, 3), 20, np.uint8)
    stored[2:10, 4:16] = 250  # a bright block near the stored top-left
    displayed = np.rot90(stored, k=-1)  # Orientation=6: a viewer turns the stored pixels 90° clockwise
    mask = (displayed[..., 0] > 128).astype(np.uint8)
    return stored, mask


def _folder(root: Path, mask: np.ndarray, n: int = 1) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("block\n")
    stored, _ = _picture()
    for k in range(n):
        _exif_jpeg(root / "images" / f"p{k}.jpg", stored)
        Image.fromarray(mask, mode="L").save(root / "masks" / f"p{k}.png")
    return root


def test_an_exif_rotated_photo_is_read_as_displayed_and_its_mask_drawn_on_it_is_aligned(tmp_path: Path):
    stored, mask = _picture()
    ds = load_dataset("folder", str(_folder(tmp_path / "d", mask)), None)
    img = np.asarray(ds.image(0))
    assert img.shape[:2] == (40, 20) == ds.mask(0).shape  # was (20, 40): the stored pixels
    bright = img[..., 0] > 128
    assert (bright == (ds.mask(0) == 1)).mean() > 0.97  # the mask covers the block as displayed
    # the same picture as `repcam explain` reads it (explain applied the tag before, the loaders did not)
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "d" / "images" / "p0.jpg")), img)


def test_a_mask_of_the_stored_pixels_is_refused_naming_the_exif_tag(tmp_path: Path):
    stored, _ = _picture()
    stored_mask = (stored[..., 0] > 128).astype(np.uint8)  # 40 x 20: aligned with the stored pixels
    ds = load_dataset("folder", str(_folder(tmp_path / "d", stored_mask)), None)
    with pytest.raises(DataError) as info:
        ds.mask(0)
    assert "EXIF Orientation=6" in str(info.value) and "displayed" in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------------- splits


def _split_folder(root: Path, train: list[str], val: list[str], bad_masks: dict[str, np.ndarray] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "splits").mkdir()
    (root / "classes.txt").write_text("a\nb\n")
    for i, sid in enumerate(sorted(set(train) | set(val))):
        mask = np.zeros((16, 16), np.uint8)
        mask[4:12, 4:12] = 1 + i % 2
        Image.fromarray(np.full((16, 16, 3), 60 + 20 * (i % 2), np.uint8)).save(root / "images" / f"{sid}.png")
        Image.fromarray((bad_masks or {}).get(sid, mask), mode="L").save(root / "masks" / f"{sid}.png")
    (root / "splits" / "train.txt").write_text("\n".join(train) + "\n")
    (root / "splits" / "val.txt").write_text("\n".join(val) + "\n")
    return root


def _run(root: Path, run_dir: Path, **data) -> Run:
    cfg = from_dict({"name": "t", "data": {"kind": "folder", "root": str(root), "eval_splits": ["val"], **data},
                     "backbone": {"name": "tiny_cnn", "input_size": 16}, "pairs": {"min_images": 1},
                     "selection": {"n": 1, "methods": ["random"]}}, "test")
    return Run(cfg, run_dir, show_progress=False)


def test_images_in_both_train_and_val_are_noted_for_notes_json_and_the_tables(tmp_path: Path):
    ids = [f"i{k}" for k in range(8)]
    root = _split_folder(tmp_path / "d", train=ids[:6], val=ids[4:])
    run = _run(root, tmp_path / "run")
    run._load_training()  # everything up to the first training
    overlap = [n for n in run.notes if "shares" in n]
    assert len(overlap) == 1 and "'val' shares 2 of its 4 images with the training split 'train'" in overlap[0]
    assert "i4, i5" in overlap[0] and "not held-out" in overlap[0]
    # the notes go into notes.json and every table (write_tables is given ctx.notes)
    from repcam.reporting.tables import write_tables  # noqa: F401 - the path notes take; see test_run for the end-to-end
    disjoint = _run(_split_folder(tmp_path / "e", train=ids[:4], val=ids[4:]), tmp_path / "run2")
    disjoint._load_training()
    assert not [n for n in disjoint.notes if "shares" in n]


@pytest.mark.parametrize("bad", [{"i5": np.full((16, 16), 9, np.uint8), "i7": np.full((16, 16), 7, np.uint8)},  # values
                                 {"i5": np.ones((8, 8), np.uint8), "i7": np.ones((16, 12), np.uint8)}])  # sizes
def test_preflight_reports_every_bad_mask_of_the_evaluation_at_once_before_training(tmp_path: Path, monkeypatch, bad):
    ids = [f"i{k}" for k in range(8)]
    root = _split_folder(tmp_path / "d", train=ids[:4], val=ids[4:], bad_masks=bad)
    import repcam.pipeline.stages.multiclass as mc

    monkeypatch.setattr(mc, "fit", lambda *a, **k: pytest.fail("trained before the data was checked"))
    with pytest.raises(DataError) as info:
        _run(root, tmp_path / "run").run()
    msg = str(info.value)
    assert "2 data problems" in msg and "i5.png" in msg and "i7.png" in msg and "\n" not in msg


# ---------------------------------------------------------------------------------------------------- COCO


def _coco(root: Path, anns: list[dict]) -> Path:
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    for k in (1, 2):
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "val2017" / f"{k}.png")
    ann = {"images": [{"id": k, "file_name": f"{k}.png", "width": 10, "height": 10} for k in (1, 2)],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}], "annotations": anns}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(ann))
    return root


def _poly(aid: int, img: int, cat: int, x0: int, x1: int) -> dict:
    return {"id": aid, "image_id": img, "category_id": cat, "iscrowd": 0, "area": 1, "bbox": [x0, 1, x1 - x0, 4],
            "segmentation": [[x0, 1, x1, 1, x1, 5, x0, 5]]}


def test_a_coco_annotation_without_segmentation_ignores_its_box_instead_of_refusing_the_data_set(tmp_path: Path):
    anns = [_poly(1, 1, 1, 1, 4), {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0, "bbox": [6, 6, 3, 3]},
            {**_poly(3, 2, 2, 1, 4), "segmentation": []}, _poly(4, 2, 1, 5, 9)]
    ds = COCOSegmentation(_coco(tmp_path / "c", anns), "val")
    m1, m2 = ds.mask(0), ds.mask(1)
    assert (m1[6:9, 6:9] == 255).all() and (m1 == 1).sum() > 0  # the box only: ignored, the rest as before
    assert (m2 == 2).sum() == 0 and (m2 == 255).sum() >= 12 and (m2 == 1).sum() > 0
    assert ds.samples[0].labels == frozenset({0, 1})  # still a label of its image
    assert "2 annotations have no segmentation" in ds.report()
    bad = [_poly(1, 1, 1, 1, 4), {"id": 2, "image_id": 1, "category_id": 2, "iscrowd": 0}]
    with pytest.raises(DataError, match="annotation 2 has neither a segmentation nor a valid bbox"):
        COCOSegmentation(_coco(tmp_path / "d", bad), "val").mask(0)
