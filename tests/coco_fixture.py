"""Write any SegDataset as a COCO-format data set (PNG images, one RLE instance per class region, ignore pixels as a
crowd region): a cross-data-set evaluation of the same images must then give the same numbers as the original."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from repcam.data.base import IGNORE_INDEX, SegDataset


def _rle(region: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def write_coco(ds: SegDataset, root: Path, split: str = "val", rename: dict[str, str] | None = None,
               extra_categories: tuple[str, ...] = ()) -> Path:
    """root/annotations/instances_<split>2017.json and root/<split>2017/*.png from ``ds``; category names are the
    data set's (``rename``: its name -> the COCO name), ids with COCO-like gaps, plus ``extra_categories`` with no
    instance. Returns ``root``."""
    rename = rename or {}
    names = [rename.get(n, n) for n in ds.class_names] + list(extra_categories)
    cat_ids = [2 * k + 1 for k in range(len(names))]  # gaps, as COCO's 1..90
    images, anns = [], []
    (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    for i in range(len(ds)):
        img_id = 10 + i
        m = ds.mask(i)
        h, w = m.shape
        ds.image(i).save(root / f"{split}2017" / f"{img_id:012d}.png")
        images.append({"id": img_id, "file_name": f"{img_id:012d}.png", "height": h, "width": w})
        for v in sorted(set(np.unique(m).tolist()) - {0}):
            crowd = v == IGNORE_INDEX
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat_ids[0 if crowd else v - 1],
                         "segmentation": _rle(m == v), "iscrowd": int(crowd), "area": int((m == v).sum()),
                         "bbox": [0, 0, 1, 1]})
    cats = [{"id": c, "name": n, "supercategory": "x"} for c, n in zip(cat_ids, names)]
    (root / "annotations" / f"instances_{split}2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats[::-1]}))
    return root
