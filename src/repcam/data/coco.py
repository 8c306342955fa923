"""COCO 2017 instance annotations turned into VOC-style semantic masks (via pycocotools).

Layout read (defaults; both paths can be given explicitly)::

    <root>/annotations/instances_<split>2017.json
    <root>/<split>2017/<file_name>

Decisions:

* ``class_names`` are the COCO category names in category-id order (or the chosen subset in the order given).
  Sample ids are the COCO image ids as strings; ``image_info(i)`` gives the json record.
* Image-level labels come from the non-crowd (``iscrowd=0``) annotations only; a category that appears only
  as a crowd region is not a label of the image.
* ``single_label_only=True`` keeps images with exactly one label among the data set's (chosen) classes, the
  paper's training set for COCO; with all 80 classes that means exactly one category in the image.
* ``mask(i)``: each category's pixels are the union of its non-crowd instance masks (``annToMask``) and get
  value k + 1. A pixel claimed by two different categories is ambiguous and becomes 255 (ignore); every
  crowd region becomes 255. The full-category mask is computed first and then mapped to the subset, so pixels
  of unchosen classes read 0 while ignore pixels (crowds, overlaps) stay 255 whatever the subset.
* An annotation without a segmentation (a ``bbox`` only, or an empty list) still makes its category a label of the
  image, and its box becomes 255 (ignored): the image stays usable, its uncertain pixels count for nothing. One
  with neither a segmentation nor a bbox is an error naming it.
* ``id_list``: a text file of image ids (one per line), to use only those images of the annotation file (a split of
  one file into train and held-out parts, as COCO-mini needs).
* Images without labels of the chosen classes are dropped and counted ("no annotations" when the image has
  no non-crowd annotation at all, "no chosen class" otherwise; "multi-label" with ``single_label_only``).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .base import IGNORE_INDEX, DataError, Sample
from .common import NO_CHOSEN_CLASS, SkipLog, ReportMixin, exif_hint, image_size, load_rgb, name_problem, select_classes, subset_lut


def _categories(coco: Any, ann_file: Path) -> tuple[list[int], tuple[str, ...]]:
    """(sorted category ids, their names); at least one and at most 254 categories (a uint8 mask), names unique."""
    cat_ids = sorted(coco.cats)
    if not cat_ids:
        raise DataError(f"{ann_file} has no categories")
    if len(cat_ids) > 254:
        raise DataError(f"{ann_file} has {len(cat_ids)} categories; at most 254 fit a uint8 mask")
    all_names = tuple(str(coco.cats[c]["name"]) for c in cat_ids)
    for c, name in zip(cat_ids, all_names):
        problem = name_problem(name)
        if problem:
            raise DataError(f"{ann_file}: category {c}: {problem}")
    dup = sorted({n for n in all_names if all_names.count(n) > 1})
    if dup:
        raise DataError(f"{ann_file} has several categories named {', '.join(dup)}")
    return cat_ids, all_names


def _read_id_list(path: Path, coco: Any, ann_file: Path) -> list[int]:
    """The image ids of an ``id_list`` file (one COCO image id per line, ``#`` comments), each one in ``ann_file``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read the id list {path}: {e.strerror or e}") from None
    ids: list[int] = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            img_id = int(text.removesuffix(".jpg"))
        except ValueError:
            raise DataError(f"{path}, line {n}: {text!r} is not a COCO image id") from None
        if img_id not in coco.imgs:
            raise DataError(f"{path}, line {n}: image id {img_id} is not in {ann_file}")
        ids.append(img_id)
    if len(set(ids)) != len(ids):
        raise DataError(f"{path} lists an image id twice")
    return sorted(ids)


def _check_annotations(coco: Any, cat_index: dict[int, int], ann_file: Path) -> None:
    """Every annotation's category and image must be among the file's categories and images."""
    for ann in coco.anns.values():
        if ann.get("category_id") not in cat_index:
            raise DataError(
                f"{ann_file}: annotation {ann.get('id')} has category_id {ann.get('category_id')!r}, "
                "which is not in 'categories'"
            )
        if ann.get("image_id") not in coco.imgs:
            raise DataError(
                f"{ann_file}: annotation {ann.get('id')} refers to image_id {ann.get('image_id')!r}, "
                "which is not in 'images'"
            )


def _box_region(ann: dict, size: tuple[int, int], ann_file: Path) -> np.ndarray:
    """The pixels of an annotation's ``bbox`` ([x, y, width, height]), for an annotation without a segmentation: they
    are ignored (255) by every metric, like a crowd region, instead of refusing the whole data set."""
    box = ann.get("bbox")
    try:
        x, y, bw, bh = (float(v) for v in box)
    except (TypeError, ValueError):
        raise DataError(f"{ann_file}: annotation {ann.get('id')} has neither a segmentation nor a valid bbox "
                        f"(got {box!r}); remove it or give it one") from None
    h, w = size
    out = np.zeros(size, dtype=bool)
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(w, int(np.ceil(x + bw))), min(h, int(np.ceil(y + bh)))
    out[y0:y1, x0:x1] = True
    return out


class COCOSegmentation(ReportMixin):
    """A COCO split with semantic masks built from the instance annotations."""

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        classes: Sequence[str] | None = None,
        single_label_only: bool = False,
        annotation_file: str | Path | None = None,
        image_dir: str | Path | None = None,
        id_list: str | Path | None = None,
    ) -> None:
        try:
            from pycocotools.coco import COCO
        except ImportError as e:  # pragma: no cover - pycocotools is a dependency
            raise DataError("COCO support needs pycocotools (pip install pycocotools)") from e

        root = Path(root).expanduser()
        self.root = root
        self.split = split
        self.single_label_only = single_label_only
        ann_file = Path(annotation_file) if annotation_file else root / "annotations" / f"instances_{split}2017.json"
        self.annotation_file = ann_file
        self.image_dir = Path(image_dir) if image_dir else root / f"{split}2017"
        if not ann_file.is_file():
            raise DataError(f"COCO annotation file not found: {ann_file}")
        if not self.image_dir.is_dir():
            raise DataError(f"COCO image folder not found: {self.image_dir}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                coco = COCO(str(ann_file))
        except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
            # json.JSONDecodeError is a ValueError; pycocotools asserts the top level is a dict
            raise DataError(f"cannot read COCO annotation file {ann_file}: {e}") from e
        self.coco = coco

        cat_ids, all_names = _categories(coco, ann_file)
        self._cat_ids = cat_ids
        self._cat_index = {c: k for k, c in enumerate(cat_ids)}
        self._all_class_names = all_names
        self._chosen = select_classes(all_names, classes, f"COCO categories of {ann_file}")
        self.class_names = tuple(all_names[k] for k in self._chosen)
        self._lut = subset_lut(self._chosen, len(all_names))
        old_to_new = {old: new for new, old in enumerate(self._chosen)}
        _check_annotations(coco, self._cat_index, ann_file)

        self._skips = SkipLog()
        img_ids = sorted(coco.imgs) if id_list is None else _read_id_list(Path(id_list), coco, ann_file)
        self._n_candidates = len(img_ids)
        self._title = f"COCO {split} ({ann_file})"
        self._img_by_sid: dict[str, int] = {}
        self.samples = self._samples(img_ids, old_to_new)

    def _samples(self, img_ids: list[int], old_to_new: dict[int, int]) -> list[Sample]:
        """The samples of the images with a chosen class (single-label ones only with ``single_label_only``); every
        other image is skipped with its reason."""
        coco = self.coco
        samples: list[Sample] = []
        for img_id in img_ids:
            sid = str(img_id)
            anns = coco.imgToAnns.get(img_id, [])
            full = {self._cat_index[a["category_id"]] for a in anns if not a.get("iscrowd", 0)}
            labels = frozenset(old_to_new[k] for k in full if k in old_to_new)
            if not full:
                self._skips.add(sid, "no annotations")
            elif not labels:
                self._skips.add(sid, NO_CHOSEN_CLASS)
            elif self.single_label_only and len(labels) != 1:
                self._skips.add(sid, "multi-label")
            else:
                samples.append(Sample(sid, labels))
                self._img_by_sid[sid] = img_id
        return samples

    def image_info(self, i: int) -> dict:
        """The COCO ``images`` entry of sample ``i`` (file_name, height, width, id)."""
        return self.coco.imgs[self._img_by_sid[self.samples[i].id]]

    def image_path(self, i: int) -> Path:
        """The file of sample ``i``: ``file_name`` under ``image_dir``; DataError if the entry has none."""
        info = self.image_info(i)
        if "file_name" not in info:
            raise DataError(f"{self.annotation_file}: image {info.get('id')} has no file_name")
        return self.image_dir / info["file_name"]

    def image(self, i: int) -> Image.Image:
        """The i-th image as 8-bit RGB."""
        return load_rgb(self.image_path(i))

    def full_mask(self, i: int) -> np.ndarray:
        """The mask over all categories of the annotation file (before the class subset is applied)."""
        info = self.image_info(i)
        try:
            h, w = int(info["height"]), int(info["width"])
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(f"{self.annotation_file}: image {info.get('id')} lacks a valid height/width") from e
        img_path = self.image_path(i)
        iw, ih = image_size(img_path)
        if (iw, ih) != (w, h):
            raise DataError(
                f"image {img_path} is {iw}x{ih} but {self.annotation_file} says {w}x{h} for image {info['id']}{exif_hint(img_path)}"
            )
        per_cat: dict[int, np.ndarray] = {}
        crowd = np.zeros((h, w), dtype=bool)
        for ann in self.coco.imgToAnns.get(info["id"], []):
            if not ann.get("segmentation"):  # bbox-only or empty: where the instance is exactly is unknown
                crowd |= _box_region(ann, (h, w), self.annotation_file)
                continue
            try:
                with warnings.catch_warnings():
                    # pycocotools' decode under numpy 2 warns about __array__(copy=...): harmless
                    warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
                    m = self.coco.annToMask(ann).astype(bool)
            except Exception as e:  # pycocotools raises assorted errors for malformed segmentations
                raise DataError(
                    f"{self.annotation_file}: cannot decode the segmentation of annotation {ann.get('id')}: {e}"
                ) from e
            if m.shape != (h, w):
                raise DataError(
                    f"{self.annotation_file}: annotation {ann.get('id')} decodes to {m.shape[1]}x{m.shape[0]}, "
                    f"image {info['id']} is {w}x{h}"
                )
            if ann.get("iscrowd", 0):
                crowd |= m
            else:
                k = self._cat_index[ann["category_id"]]
                if k in per_cat:
                    per_cat[k] |= m
                else:
                    per_cat[k] = m
        out = np.zeros((h, w), dtype=np.uint8)
        claims = np.zeros((h, w), dtype=np.uint8)
        for k, m in per_cat.items():
            out[m] = k + 1
            claims += m
        out[claims > 1] = IGNORE_INDEX
        out[crowd] = IGNORE_INDEX
        return out

    def mask(self, i: int) -> np.ndarray:
        """The i-th mask over the chosen classes only (:meth:`full_mask` through the subset table), uint8 (H, W)."""
        return self._lut[self.full_mask(i)]

    def unsegmented(self) -> int:
        """How many annotations of the kept images have no segmentation (their boxes are ignored, 255)."""
        return sum(1 for s in self.samples for a in self.coco.imgToAnns.get(self._img_by_sid[s.id], [])
                   if not a.get("segmentation"))

    def _extra_report(self) -> list[str]:
        lines = ["labels from non-crowd instance annotations; crowd regions and pixels of two categories -> 255"]
        n = self.unsegmented()
        if n:
            lines.append(f"{n} annotations have no segmentation (bbox only or empty): their boxes -> 255 (ignored)")
        if self.single_label_only:
            lines.append("single-label images only")
        return lines


__all__ = ["COCOSegmentation"]
