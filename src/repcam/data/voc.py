"""PASCAL VOC segmentation (``VOCdevkit/VOC2012`` layout), with optional SBD "aug" masks.

Layout read::

    <root>/VOC2012/ImageSets/Segmentation/<split>.txt     one id per line
    <root>/VOC2012/JPEGImages/<id>.jpg
    <root>/VOC2012/SegmentationClass/<id>.png             palette (or 'L' index) PNG: 0 bg, 1..20, 255 ignore
    <root>/VOC2012/SegmentationClassAug/<id>.png          optional, used only with ``use_aug_masks=True``
    <root>/VOC2012/Annotations/<id>.xml                   optional; if present, image-level labels come from it
    <root>/manifest.csv                                   optional (VOCdevkit-mini): column ``original_voc_mask``

``root`` may be the VOCdevkit folder or the ``VOC2012`` folder itself.

Decisions:

* Mask choice with ``use_aug_masks``: the original ``SegmentationClass/<id>.png`` is preferred whenever it
  exists; ``SegmentationClassAug/<id>.png`` is used only for ids without an original mask.
  ``mask_source[id]`` names the folder actually used (``None``: no mask found).
* Image-level labels: from ``Annotations/<id>.xml`` (every ``<object><name>``, difficult and truncated
  objects included) when the Annotations folder exists and holds that id's file; otherwise from the mask
  (every value other than 0 and 255). ``label_source[id]`` is ``"xml"`` or ``"mask"``. Mask-derived labels
  are computed once at construction (and cached per file for the process).
* ``only_original_masks``: keep ids whose mask is an original VOC mask, taken from ``manifest.csv`` (next
  to the VOC2012 folder) when it exists, else "has a file in SegmentationClass".
* Class subsets: ``class_names`` are the chosen classes in the order given; a mask pixel of an unchosen class
  becomes 0, 255 stays 255 (the subset mask is always a lookup of the full 20-class mask).
* Samples without any chosen class are dropped and counted (``skipped``, ``skipped_ids``, ``report()``).
"""

from __future__ import annotations

import collections
import csv
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .base import DataError, Sample
from .common import SkipLog, ReportMixin, check_mask_size, load_rgb, mask_class_indices, read_id_list, read_index_png, select_classes, subset_lut

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle",
    "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person",
    "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip



def _list_names(folder: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(folder)}
    except (FileNotFoundError, NotADirectoryError):
        return set()


# --------------------------------------------------------------------------------------------------


def _parse_bool(value: str, where: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "y", "t"):
        return True
    if v in ("0", "false", "no", "n", "f", ""):
        return False
    raise DataError(f"{where}: cannot read {value!r} as a boolean")


def _voc_folder(root: Path, year: str) -> Path:
    """The VOC{year} folder: ``root`` itself or the one inside it (``root`` a VOCdevkit folder)."""
    if not root.is_dir():
        raise DataError(f"VOC root folder not found: {root}")
    if (root / f"VOC{year}").is_dir():
        return root / f"VOC{year}"
    if (root / "ImageSets").is_dir() or (root / "JPEGImages").is_dir():
        return root
    raise DataError(
        f"{root} is neither a VOCdevkit folder (with VOC{year}/ inside) nor a VOC{year} folder "
        "(with ImageSets/ and JPEGImages/ inside)"
    )


def _split_ids(voc: Path, split: str) -> list[str]:
    """The ids of ``ImageSets/Segmentation/<split>.txt``; a missing split file names the splits there are."""
    split_file = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not split_file.is_file():
        avail = sorted(p.stem for p in (voc / "ImageSets" / "Segmentation").glob("*.txt"))
        raise DataError(
            f"split file not found: {split_file}" + (f" (available splits: {', '.join(avail)})" if avail else "")
        )
    return read_id_list(split_file)


class VOCSegmentation(ReportMixin):
    """A PASCAL VOC segmentation split (see the module docstring for the layout and decisions)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        classes: Sequence[str] | None = None,
        year: str | int = "2012",  # YAML reads 2012 as an int
        use_aug_masks: bool = False,
        only_original_masks: bool = False,
    ) -> None:
        root = Path(root).expanduser()
        year = str(year)
        voc = _voc_folder(root, year)
        self.root = voc
        self.split = split
        self.year = year
        self.use_aug_masks = use_aug_masks
        self.only_original_masks = only_original_masks
        self._all_class_names = VOC_CLASSES
        self._chosen = select_classes(VOC_CLASSES, classes, f"PASCAL VOC (root {root})")
        self.class_names = tuple(VOC_CLASSES[k] for k in self._chosen)
        self._lut = subset_lut(self._chosen, len(VOC_CLASSES))
        old_to_new = {old: new for new, old in enumerate(self._chosen)}

        ids = _split_ids(voc, split)
        self._n_candidates = len(ids)
        self._title = f"VOC{year} {split} ({voc})"

        orig_dir, aug_dir, ann_dir = voc / "SegmentationClass", voc / "SegmentationClassAug", voc / "Annotations"
        orig_names = _list_names(orig_dir)
        aug_names = _list_names(aug_dir) if use_aug_masks else set()
        self.mask_source: dict[str, str | None] = {}
        for i in ids:
            if f"{i}.png" in orig_names:
                self.mask_source[i] = "SegmentationClass"
            elif f"{i}.png" in aug_names:
                self.mask_source[i] = "SegmentationClassAug"
            else:
                self.mask_source[i] = None

        self._skips = SkipLog()
        if only_original_masks:
            ids = self._original_only(ids, voc.parent / "manifest.csv", orig_dir, orig_names)

        ann_names = _list_names(ann_dir)
        self.label_source: dict[str, str] = {}
        samples: list[Sample] = []
        for i in ids:
            if f"{i}.xml" in ann_names:
                full = self._labels_from_xml(ann_dir / f"{i}.xml")
                self.label_source[i] = "xml"
            else:
                full = mask_class_indices(self._mask_path(i), len(VOC_CLASSES))
                self.label_source[i] = "mask"
            self._keep_chosen(samples, i, full, old_to_new)
        self.samples = samples

    def _original_only(self, ids: list[str], manifest: Path, orig_dir: Path, orig_names: set[str]) -> list[str]:
        """The ids whose mask is an original VOC mask (by ``manifest.csv`` where it exists, else by a file in
        ``SegmentationClass``); every other id is skipped with its reason."""
        self.original_source = str(manifest) if manifest.is_file() else str(orig_dir)
        if manifest.is_file():
            original = self._read_manifest(manifest)
            keep_ids = []
            for i in ids:
                if i not in original:
                    self._skips.add(i, "not in manifest.csv")
                elif not original[i]:
                    self._skips.add(i, "not an original VOC mask")
                else:
                    keep_ids.append(i)
        else:
            keep_ids = []
            for i in ids:
                if f"{i}.png" in orig_names:
                    keep_ids.append(i)
                else:
                    self._skips.add(i, "not an original VOC mask")
        return keep_ids

    # ---------------------------------------------------------------------------------------------

    @staticmethod
    def _read_manifest(path: Path) -> dict[str, bool]:
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or []
                if "id" not in fields or "original_voc_mask" not in fields:
                    raise DataError(f"{path} needs the columns 'id' and 'original_voc_mask' (has {fields})")
                return {
                    row["id"].strip(): _parse_bool(row["original_voc_mask"] or "", f"{path} line {n + 2}")
                    for n, row in enumerate(reader)
                }
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"cannot read {path}: {e}") from e

    @staticmethod
    def _labels_from_xml(path: Path) -> frozenset[int]:
        try:
            tree = ET.parse(path)
        except (ET.ParseError, OSError) as e:
            raise DataError(f"cannot parse annotation {path}: {e}") from e
        index = {n: k for k, n in enumerate(VOC_CLASSES)}
        labels = set()
        for obj in tree.getroot().iter("object"):
            name = (obj.findtext("name") or "").strip()
            if name not in index:
                raise DataError(f"annotation {path} names unknown class {name!r}; valid: {', '.join(VOC_CLASSES)}")
            labels.add(index[name])
        return frozenset(labels)

    def _mask_path(self, sample_id: str) -> Path:
        src = self.mask_source.get(sample_id)
        if src is None:
            where = "SegmentationClass" + (" or SegmentationClassAug" if self.use_aug_masks else "")
            raise DataError(f"mask file not found: {self.root / 'SegmentationClass' / (sample_id + '.png')} "
                            f"(looked in {where})")
        return self.root / src / f"{sample_id}.png"

    def image_path(self, i: int) -> Path:
        """The image file of sample ``i``: ``JPEGImages/<id>.jpg``."""
        return self.root / "JPEGImages" / f"{self.samples[i].id}.jpg"

    def mask_path(self, i: int) -> Path:
        """The mask file of sample ``i``, from the folder ``mask_source`` records; DataError if none was found."""
        return self._mask_path(self.samples[i].id)

    def image(self, i: int) -> Image.Image:
        """The i-th image as 8-bit RGB."""
        return load_rgb(self.image_path(i))

    def mask(self, i: int) -> np.ndarray:
        """The i-th mask, values checked and mapped to the chosen classes, uint8 (H, W) of the image's size."""
        path = self.mask_path(i)
        arr = read_index_png(path, len(VOC_CLASSES))
        check_mask_size(arr, path, self.image_path(i))
        return self._lut[arr]

    def _extra_report(self) -> list[str]:
        kept = {s.id for s in self.samples}
        src = collections.Counter(self.mask_source[i] for i in kept)
        lab = collections.Counter(self.label_source[i] for i in kept)
        lines = ["masks from: " + ", ".join(f"{k} {v}" for k, v in src.items()),
                 "labels from: " + ", ".join(f"{'Annotations xml' if k == 'xml' else k} {v}" for k, v in lab.items())]
        if self.only_original_masks:
            lines.append(f"only original VOC masks (from {self.original_source})")
        return lines
