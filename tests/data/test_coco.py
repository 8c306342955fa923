"""COCOSegmentation against a small COCO-format json built in tmp_path.

The instance masks come from real VOCdevkit-mini masks when that folder exists (each class region becomes
two instances, RLE-compressed / uncompressed RLE; the VOC 255 borders become an iscrowd annotation), and
from synthetic masks otherwise. Either way the loader goes through pycocotools' real decoding path.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from repcam.data.base import DataError, SegDataset
from repcam.data.coco import COCOSegmentation
from repcam.data.voc import VOC_CLASSES

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# category ids are not 1..20 and the json lists them shuffled: class_names must follow the id order
CAT_IDS = [3 * k + 2 for k in range(20)]


def _sources(tmp_path: Path, voc_mini: Path | None, kit) -> list[tuple[str, Path, np.ndarray]]:
    """(name, jpeg path, VOC-style mask) for 3 multi-class images and 1 single-class image."""
    if voc_mini is not None:
        with (voc_mini / "manifest.csv").open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["split"] == "val"]
        multi = [r["id"] for r in rows if len(r["classes"].split()) >= 2][:3]
        single = [r["id"] for r in rows if len(r["classes"].split()) == 1][:1]
        out = []
        for i in multi + single:
            m = np.array(Image.open(voc_mini / "VOC2012" / "SegmentationClass" / f"{i}.png"))
            out.append((i, voc_mini / "VOC2012" / "JPEGImages" / f"{i}.jpg", m))
        return out
    # synthetic fallback: 40x30 masks with rectangles and a 255 border
    specs = [
        [(8, 2, 15, 3, 20), (12, 10, 28, 18, 38)],
        [(15, 0, 30, 0, 12), (13, 5, 25, 15, 35)],
        [(17, 3, 12, 3, 12), (9, 15, 28, 20, 39), (20, 0, 5, 30, 40)],
        [(10, 5, 25, 5, 35)],
    ]
    out = []
    for n, spec in enumerate(specs):
        m = np.zeros((30, 40), np.uint8)
        for v, y0, y1, x0, x1 in spec:
            m[y0:y1, x0:x1] = v
            m[y0, x0:x1] = 255
        path = kit.write_image(tmp_path / "synthetic" / f"s{n}.jpg", 40, 30, seed=n)
        out.append((f"s{n}", path, m))
    return out


def _rle(region: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _uncompressed_rle(region: np.ndarray) -> dict:
    flat = region.flatten(order="F").astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": list(region.shape), "counts": [int(c) for c in counts]}


@pytest.fixture(params=["real", "synthetic"])
def coco_root(request, tmp_path, kit, voc_mini_optional):
    """root/annotations/instances_val2017.json + root/val2017/*.jpg; returns (root, expected full masks, info).

    "real" uses VOCdevkit-mini masks (skipped where it is absent), "synthetic" always runs.
    """
    if request.param == "real" and voc_mini_optional is None:
        pytest.skip("VOCdevkit-mini not found: the synthetic variant of this test covers the same code path")
    sources = _sources(tmp_path, voc_mini_optional if request.param == "real" else None, kit)
    root = tmp_path / "coco"
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    present = set().union(*(set(np.unique(m)) - {0, 255} for _, _, m in sources))
    absent = [k for k in range(20) if k + 1 not in present]
    poly_cls, crowd_cls = absent[0], absent[1]
    images, anns, expected, labels = [], [], {}, {}
    ann_id = 100
    for n, (name, src, m) in enumerate(sources):
        img_id = 1000 - n  # ids descending relative to the list order: the loader sorts by id
        h, w = m.shape
        shutil.copy(src, root / "val2017" / f"{name}.jpg")
        images.append({"id": img_id, "file_name": f"{name}.jpg", "height": h, "width": w})
        exp = m.copy()
        labels[str(img_id)] = {int(v) - 1 for v in np.unique(m) if 0 < v < 255}
        for v in sorted(set(np.unique(m)) - {0, 255}):
            region = m == v
            cols = np.flatnonzero(region.any(axis=0))
            cut = cols[len(cols) // 2]
            parts = [region.copy(), region.copy()]
            parts[0][:, cut:] = False  # two instances: left and right part of the class region
            parts[1][:, :cut] = False
            for p_i, part in enumerate(parts):
                if part.any():
                    seg = _uncompressed_rle(part) if (n == 1 and p_i == 1) else _rle(part)
                    anns.append({"id": ann_id, "image_id": img_id, "category_id": CAT_IDS[int(v) - 1],
                                 "segmentation": seg, "iscrowd": 0, "area": int(part.sum()), "bbox": [0, 0, 1, 1]})
                    ann_id += 1
        border = m == 255
        if border.any():  # the VOC "ignore" border becomes a crowd region of a class absent from the image
            anns.append({"id": ann_id, "image_id": img_id, "category_id": CAT_IDS[crowd_cls],
                         "segmentation": _rle(border), "iscrowd": 1, "area": int(border.sum()), "bbox": [0, 0, 1, 1]})
            ann_id += 1
        if n == 0:  # a polygon instance of a class absent from the image, overlapping the others
            poly = [w * 0.2, h * 0.2, w * 0.9, h * 0.4, w * 0.5, h * 0.95]
            pm = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], h, w))).astype(bool)
            assert pm.any()
            anns.append({"id": ann_id, "image_id": img_id, "category_id": CAT_IDS[poly_cls],
                         "segmentation": [poly], "iscrowd": 0, "area": int(pm.sum()), "bbox": [0, 0, 1, 1]})
            ann_id += 1
            overlap = pm & (m > 0) & (m < 255)
            assert overlap.any()
            exp[pm & (m == 0)] = poly_cls + 1
            exp[overlap] = 255
            labels[str(img_id)].add(poly_cls)
        expected[str(img_id)] = exp
    # an image without annotations
    shutil.copy(sources[0][1], root / "val2017" / "empty.jpg")
    h, w = sources[0][2].shape
    images.append({"id": 5, "file_name": "empty.jpg", "height": h, "width": w})
    cats = [{"id": CAT_IDS[k], "name": VOC_CLASSES[k], "supercategory": "x"} for k in range(20)]
    rng = np.random.default_rng(0)
    cats = [cats[k] for k in rng.permutation(20)]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    info = {"poly_cls": poly_cls, "crowd_cls": crowd_cls, "labels": labels, "n_images": len(sources),
            "single": str(1000 - (len(sources) - 1))}
    return root, expected, info


def test_masks_equal_union_of_instances(coco_root):
    root, expected, info = coco_root
    ds = COCOSegmentation(root, "val")
    assert isinstance(ds, SegDataset)
    assert ds.class_names == VOC_CLASSES  # category-id order, not the json's order
    assert [s.id for s in ds.samples] == sorted(expected, key=int)
    assert ds.skipped == {"no annotations": 1} and ds.skipped_ids == [("5", "no annotations")]
    for i, s in enumerate(ds.samples):
        m = ds.mask(i)
        assert m.dtype == np.uint8
        np.testing.assert_array_equal(m, expected[s.id], err_msg=s.id)
        # crowd-only category is not a label; the polygon category is
        assert s.labels == info["labels"][s.id]
        assert info["crowd_cls"] not in s.labels
        im = ds.image(i)
        assert im.mode == "RGB" and im.size == (m.shape[1], m.shape[0])
    assert (np.stack([(ds.mask(i) == 255).any() for i in range(len(ds))])).all()
    assert "no annotations: 1" in ds.report()


def test_class_subset_and_single_label(coco_root):
    root, expected, info = coco_root
    first = min(expected, key=lambda k: -int(k))  # the polygon image (id 1000)
    present = sorted(info["labels"][first])
    chosen = [VOC_CLASSES[present[1]], VOC_CLASSES[present[0]]]
    ds = COCOSegmentation(root, "val", classes=chosen)
    assert ds.class_names == tuple(chosen)
    i = [s.id for s in ds.samples].index(first)
    full = expected[first]
    exp = np.zeros_like(full)
    exp[full == present[1] + 1] = 1
    exp[full == present[0] + 1] = 2
    exp[full == 255] = 255
    np.testing.assert_array_equal(ds.mask(i), exp)
    assert sum(ds.skipped.values()) + len(ds) == info["n_images"] + 1

    single = COCOSegmentation(root, "val", single_label_only=True)
    assert [s.id for s in single.samples] == [info["single"]]
    assert single.skipped["multi-label"] == info["n_images"] - 1
    assert len(next(iter(single.samples)).labels) == 1


def test_overlap_of_two_categories_is_ignored(tmp_path, kit):
    root = tmp_path
    kit.write_image(root / "val2017" / "x.jpg", 12, 10)
    a = np.zeros((10, 12), bool)
    a[0:6, 0:6] = True
    b = np.zeros((10, 12), bool)
    b[3:9, 3:9] = True
    c = np.zeros((10, 12), bool)
    c[8:10, 10:12] = True
    data = {
        "images": [{"id": 1, "file_name": "x.jpg", "height": 10, "width": 12}],
        "categories": [{"id": 7, "name": "dog"}, {"id": 1, "name": "cat"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "segmentation": _rle(a), "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "segmentation": _rle(b), "iscrowd": 0},
            {"id": 3, "image_id": 1, "category_id": 1, "segmentation": _rle(c), "iscrowd": 1},
        ],
    }
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps(data))
    ds = COCOSegmentation(tmp_path, annotation_file=ann, image_dir=root / "val2017")
    assert ds.class_names == ("cat", "dog")
    m = ds.mask(0)
    assert (m[a & ~b] == 1).all() and (m[b & ~a & ~c] == 2).all()
    assert (m[a & b] == 255).all() and (m[c] == 255).all()
    assert (m[~(a | b | c)] == 0).all()
    # with only "dog" chosen the ambiguous pixels stay 255, cat pixels become 0
    dog = COCOSegmentation(tmp_path, classes=["dog"], annotation_file=ann, image_dir=root / "val2017")
    md = dog.mask(0)
    assert (md[a & b] == 255).all() and (md[a & ~b] == 0).all() and (md[b & ~a & ~c] == 1).all()


# ------------------------------------------------------------------------------------------- bad data


def test_missing_paths_and_bad_json(coco_root, tmp_path):
    root, _, _ = coco_root
    with pytest.raises(DataError, match=r"instances_train2017\.json"):
        COCOSegmentation(root, "train")
    with pytest.raises(DataError, match=r"nope"):
        COCOSegmentation(root, "val", image_dir=tmp_path / "nope")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json"):
        COCOSegmentation(root, annotation_file=bad, image_dir=root / "val2017")


def test_unknown_class(coco_root):
    root, _, _ = coco_root
    with pytest.raises(DataError, match=r"'zebra'.*aeroplane"):
        COCOSegmentation(root, classes=["cat", "zebra"])


def test_annotation_with_unknown_category(coco_root):
    root, _, _ = coco_root
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 999
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"instances_val2017\.json.*999"):
        COCOSegmentation(root)


def test_image_errors(coco_root, kit):
    root, _, _ = coco_root
    path = root / "annotations" / "instances_val2017.json"
    data = json.loads(path.read_text())
    data["images"][0]["height"] += 1  # json size disagrees with the file
    path.write_text(json.dumps(data))
    ds = COCOSegmentation(root)
    idx = [s.id for s in ds.samples].index(str(data["images"][0]["id"]))
    name = data["images"][0]["file_name"]
    with pytest.raises(DataError, match=rf"{name}.*instances_val2017\.json"):
        ds.mask(idx)
    other = data["images"][1]["file_name"]
    kit.truncate(root / "val2017" / other, 0.5)
    jdx = [s.id for s in ds.samples].index(str(data["images"][1]["id"]))
    with pytest.raises(DataError, match=other):
        ds.image(jdx)
    (root / "val2017" / other).unlink()
    with pytest.raises(DataError, match=other):
        ds.image(jdx)
    bad = ds.validate()
    assert {i for i, _ in bad} == {str(data["images"][0]["id"]), str(data["images"][1]["id"])}
