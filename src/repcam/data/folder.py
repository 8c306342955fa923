"""Your own data: a plain folder of images and index masks.

Layout::

    root/
      classes.txt            one class name per line (lines end in \\n or \\r\\n; names are printable text, no
                             control characters), in index order: line k (0-based) is class k,
                             stored as value k + 1 in the masks (at most 254 classes)
      images/<id>.<ext>      the images (.jpg, .jpeg, .png, .bmp, .tif, .tiff, .webp; any mode, read as RGB)
      masks/<id>.png         index masks, same size as the image as displayed (its EXIF orientation applied, as
                             every image repcam reads): palette ('P') or greyscale ('L') PNG whose
                             pixel values are 0 = background, k + 1 = class k, 255 = ignore
      splits/<split>.txt     optional: the ids of a split, one per line
      labels.csv             optional: image-level labels, rows "id,class1;class2" (header "id,labels" allowed)

- Without ``split`` (or ``split=None``) the data set is every image that has a mask; images without a mask
  and masks without an image are counted as skipped ("no mask", "no image").
- Image-level labels come from ``labels.csv`` when it lists the id, otherwise from the mask (every value
  other than 0 and 255). ``label_source[id]`` says which.
- With a class subset (``classes=[...]``) the data set's classes are the chosen ones in the order given,
  mask pixels of other classes read as 0 (255 stays 255), and images with none of the chosen classes are
  dropped and counted ("no chosen class") in ``skipped`` and ``report()``.
- Bad data raises ``DataError`` naming the file: a corrupt or truncated image, a missing mask, a mask whose
  size differs from its image, mask values outside 0..len(classes) and 255, an empty split file, an unknown
  class name. ``validate()`` loads everything and returns (id, error) for each bad sample instead.

Example::

    classes.txt:  cat\\ndog
    masks/a.png:  0 where background, 1 on the cat, 2 on the dog, 255 on uncertain borders
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from .base import DataError, Sample
from .common import (
    SkipLog,
    ReportMixin,
    check_mask_size,
    load_rgb,
    mask_class_indices,
    name_problem,
    raise_problems,
    read_id_list,
    read_index_png,
    select_classes,
    split_lines,
    subset_lut,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class FolderSegmentation(ReportMixin):
    """A data set in the plain folder layout described in this module's docstring."""

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataError(f"data folder not found: {root}")
        self.root = root
        self.split = split
        all_names = self._read_classes(root / "classes.txt")
        self._all_class_names = all_names
        self._chosen = select_classes(all_names, classes, f"{root / 'classes.txt'}")
        self.class_names = tuple(all_names[k] for k in self._chosen)
        self._lut = subset_lut(self._chosen, len(all_names))
        old_to_new = {old: new for new, old in enumerate(self._chosen)}

        img_dir, mask_dir = root / "images", root / "masks"
        if not img_dir.is_dir():
            raise DataError(f"image folder not found: {img_dir}")
        self._images: dict[str, Path] = {}
        for p in sorted(img_dir.iterdir()):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                if p.stem in self._images:
                    raise DataError(f"two images with the id {p.stem!r}: {self._images[p.stem]} and {p}")
                self._images[p.stem] = p
        masks = {p.stem for p in mask_dir.glob("*.png")} if mask_dir.is_dir() else set()

        self._skips = SkipLog()
        if split is None:
            ids = []
            for i in self._images:
                if i in masks:
                    ids.append(i)
                else:
                    self._skips.add(i, "no mask")
            for i in sorted(masks - set(self._images)):
                self._skips.add(i, "no image")
            if not ids:
                raise DataError(f"no image in {img_dir} has a mask in {mask_dir}")
            self._title = f"{root} (all images with masks)"
            self._n_candidates = len(set(self._images) | masks)
        else:
            ids = read_id_list(root / "splits" / f"{split}.txt")
            self._title = f"{root} split {split}"
            self._n_candidates = len(ids)

        csv_labels = self._read_labels_csv(root / "labels.csv", all_names)
        self.label_source: dict[str, str] = {}
        samples: list[Sample] = []
        problems: list[str] = []
        for i in ids:
            if i in csv_labels:
                full = csv_labels[i]
                self.label_source[i] = "labels.csv"
            else:
                try:
                    full = mask_class_indices(mask_dir / f"{i}.png", len(all_names))
                except DataError as e:  # every bad mask in one error, not the first one per attempt
                    problems.append(str(e))
                    continue
                self.label_source[i] = "mask"
            self._keep_chosen(samples, i, full, old_to_new)
        raise_problems(problems)
        self.samples = samples

    @staticmethod
    def _read_classes(path: Path) -> tuple[str, ...]:
        if not path.is_file():
            raise DataError(f"class list not found: {path} (one class name per line)")
        try:
            lines = split_lines(path.read_bytes().decode("utf-8-sig"))  # no newline translation: a lone \r is not a line end
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {path}: {e}") from e
        while lines and not lines[-1].strip():
            lines.pop()
        names = [line.strip() for line in lines]
        if not names:
            raise DataError(f"class list is empty: {path}")
        for n, name in enumerate(names):
            if not name:
                raise DataError(f"{path} line {n + 1} is blank; line k must name class k")
            problem = name_problem(name)
            if problem:
                raise DataError(f"{path} line {n + 1}: {problem}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataError(f"{path} lists class(es) twice: {', '.join(dup)}")
        if len(names) > 254:
            raise DataError(f"{path} has {len(names)} classes; at most 254 fit a uint8 mask with 255 = ignore")
        return tuple(names)

    @staticmethod
    def _read_labels_csv(path: Path, names: Sequence[str]) -> dict[str, frozenset[int]]:
        if not path.is_file():
            return {}
        index = {n: k for k, n in enumerate(names)}
        out: dict[str, frozenset[int]] = {}
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                for n, row in enumerate(csv.reader(f)):
                    if not row or not row[0].strip():
                        continue
                    if n == 0 and row[0].strip().lower() == "id":
                        continue
                    sid = row[0].strip()
                    field = ";".join(row[1:])  # tolerate "id,cat,dog" too
                    labels = set()
                    for name in (x.strip() for x in field.split(";")):
                        if not name:
                            continue
                        if name not in index:
                            raise DataError(
                                f"{path} line {n + 1}: unknown class {name!r}; valid names: {', '.join(names)}"
                            )
                        labels.add(index[name])
                    out[sid] = frozenset(labels)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise DataError(f"cannot read {path}: {e}") from e
        return out

    def image_path(self, i: int) -> Path:
        """The image file of sample ``i`` (``images/<id>.<ext>``); DataError if there is none."""
        sid = self.samples[i].id
        if sid not in self._images:
            exts = "|".join(e[1:] for e in IMAGE_EXTENSIONS)
            raise DataError(f"image file not found: {self.root / 'images' / sid}.<{exts}>")
        return self._images[sid]

    def mask_path(self, i: int) -> Path:
        """The mask file of sample ``i``: ``masks/<id>.png`` (not checked to exist)."""
        return self.root / "masks" / f"{self.samples[i].id}.png"

    def image(self, i: int) -> Image.Image:
        """The i-th image as 8-bit RGB."""
        return load_rgb(self.image_path(i))

    def mask(self, i: int) -> np.ndarray:
        """The i-th mask, values checked and mapped to the chosen classes, uint8 (H, W) of the image's size."""
        path = self.mask_path(i)
        arr = read_index_png(path, len(self._all_class_names))
        check_mask_size(arr, path, self.image_path(i))
        return self._lut[arr]

    def _extra_report(self) -> list[str]:
        kept = {s.id for s in self.samples}
        src: dict[str, int] = {}
        for i in kept:
            src[self.label_source[i]] = src.get(self.label_source[i], 0) + 1
        return ["labels from: " + ", ".join(f"{k} {v}" for k, v in src.items())]
