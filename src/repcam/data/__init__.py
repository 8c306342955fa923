"""Data sets: the built-in parts world, PASCAL VOC, COCO and a plain folder format, behind one interface."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Sequence

from repcam.data.base import IGNORE_INDEX, DataError, Sample, SegDataset

__all__ = ["IGNORE_INDEX", "DataError", "Sample", "SegDataset", "load_dataset", "loader_options"]


def _loader(kind: str) -> type[SegDataset]:
    if kind == "partsworld":
        from repcam.data.partsworld import PartsWorld as cls
    elif kind == "voc":
        from repcam.data.voc import VOCSegmentation as cls
    elif kind == "coco":
        from repcam.data.coco import COCOSegmentation as cls
    elif kind == "folder":
        from repcam.data.folder import FolderSegmentation as cls
    else:
        raise DataError(f"unknown data kind {kind!r}; choose partsworld, voc, coco or folder")
    return cls


_NOT_OPTIONS = ("self", "root", "split", "classes")  # given by load_dataset itself


def loader_options(kind: str) -> dict[str, Any]:
    """The options the loader of ``kind`` accepts (keyword arguments besides root, split and classes) and their types."""
    init = _loader(kind).__init__
    hints = typing.get_type_hints(init)
    return {n: hints.get(n, Any) for n in inspect.signature(init).parameters if n not in _NOT_OPTIONS}


def load_dataset(kind: str, root: str | None, split: str, classes: Sequence[str] | None = None, **options: Any) -> SegDataset:
    """One split of a data set by kind (``partsworld``, ``voc``, ``coco``, ``folder``)."""
    cls = _loader(kind)
    if kind == "partsworld":
        if classes:
            raise DataError("the parts world has a fixed class set; remove data.classes (or use n_groups/classes_per_group options)")
        args: dict[str, Any] = {"split": split}
    else:
        args = {"root": root, "split": split, "classes": classes}
    accepted = loader_options(kind)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        takes = f"it accepts {', '.join(sorted(accepted))}" if accepted else "it takes no options"
        raise DataError(f"data option {unknown[0]!r} is not understood by the {kind} loader; {takes}")
    return cls(**args, **options)
