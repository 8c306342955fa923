"""Held-out confirmation images (``data.holdout``): training images kept out of ALL training and evaluated as their
own split, ``heldout``.

A map chosen on val is confirmed on images that neither the choice nor the classifier has seen (issue 24): with
``data.holdout`` set, the held-out ids are removed from the training split before any model (multi-class, pair,
trained baseline) sees it, and ``evaluation``'s split ``heldout`` is exactly those images. ``data.holdout`` is

* ``original_masks``: the training images whose mask is an original VOC mask (VOC: ``manifest.csv``'s
  ``original_voc_mask`` column, else a file in ``SegmentationClass``; the loader option ``only_original_masks``);
* any other string: the path of an id list file (one id per line, as a split file), for any data set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .base import DataError, SegDataset
from .common import read_id_list

HELDOUT_SPLIT = "heldout"
"""The evaluation split of the held-out images (``data.eval_splits: [val, heldout]``)."""

ORIGINAL_MASKS = "original_masks"


class SubsetView(SegDataset):
    """Some samples of a data set, by position, with every per-image accessor mapped to the parent's index (data sets
    such as the parts world render image ``i`` from its position, so samples cannot simply be dropped from a list)."""

    _INDEXED = ("image_path", "mask_path", "image_array", "image_info")

    def __init__(self, parent: SegDataset, indices: Sequence[int]) -> None:
        self.parent = parent
        self.indices = list(indices)
        self.class_names = parent.class_names
        self.samples = [parent.samples[i] for i in self.indices]

    def image(self, i: int) -> Image.Image:
        return self.parent.image(self.indices[i])

    def mask(self, i: int) -> np.ndarray:
        return self.parent.mask(self.indices[i])

    def __getattr__(self, name: str) -> Any:
        if name in ("parent", "indices"):  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        value = getattr(self.parent, name)
        if name in self._INDEXED and callable(value):
            return lambda i, *a, **k: value(self.indices[i], *a, **k)
        return value


def holdout_ids(spec: str, load: Callable[..., SegDataset], kind: str) -> set[str]:
    """The ids ``data.holdout`` names; ``load(**extra_options)`` loads the training split (with extra loader options)."""
    if spec == ORIGINAL_MASKS:
        if kind != "voc":
            raise DataError(f"data.holdout: {ORIGINAL_MASKS} needs data.kind voc (original VOC masks), not {kind!r}; "
                            "give an id list file instead")
        return {s.id for s in load(only_original_masks=True).samples}
    return set(read_id_list(Path(spec).expanduser(), "data.holdout id list"))


def split_holdout(ds: SegDataset, held: set[str]) -> tuple[SubsetView, SubsetView]:
    """(the samples not held out, the held-out samples) of ``ds``, each in the data set's order."""
    keep = [i for i, s in enumerate(ds.samples) if s.id not in held]
    out = [i for i, s in enumerate(ds.samples) if s.id in held]
    return SubsetView(ds, keep), SubsetView(ds, out)
