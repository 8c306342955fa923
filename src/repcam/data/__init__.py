"""Data sets: the built-in parts world, PASCAL VOC, COCO and a plain folder format, behind one interface."""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from repcam.data.base import IGNORE_INDEX, DataError, Sample, SegDataset

__all__ = ["IGNORE_INDEX", "DataError", "Sample", "SegDataset", "load_dataset"]


def load_dataset(kind: str, root: str | None, split: str, classes: Sequence[str] | None = None, **options: Any) -> SegDataset:
    """One split of a data set by kind (``partsworld``, ``voc``, ``coco``, ``folder``)."""
    if kind == "partsworld":
        from repcam.data.partsworld import PartsWorld as cls

        if classes:
            raise DataError("the parts world has a fixed class set; remove data.classes (or use n_groups/classes_per_group options)")
        args: dict[str, Any] = {"split": split}
    elif kind == "voc":
        from repcam.data.voc import VOCSegmentation as cls

        args = {"root": root, "split": split, "classes": classes}
    elif kind == "coco":
        from repcam.data.coco import COCOSegmentation as cls

        args = {"root": root, "split": split, "classes": classes}
    elif kind == "folder":
        from repcam.data.folder import FolderSegmentation as cls

        args = {"root": root, "split": split, "classes": classes}
    else:
        raise DataError(f"unknown data kind {kind!r}; choose partsworld, voc, coco or folder")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise DataError(f"data option {unknown[0]!r} is not understood by the {kind} loader; it accepts {', '.join(sorted(accepted - set(args)))}")
    return cls(**args, **options)
