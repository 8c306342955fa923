"""Checks of the evaluation data before the first model trains: a missing split file or a bad mask must be
reported in the first seconds of a run, not after hours of training."""

from __future__ import annotations

from repcam.data.base import DataError, SegDataset
from repcam.data.common import image_size


def check_eval_split(ds: SegDataset, split: str) -> None:
    """Raise :class:`DataError` (one line, naming the split and the file) if ``ds`` cannot be evaluated.

    ``ds`` is the split as the evaluation will see it (eval options applied, cut to ``data.max_eval_images``).
    Masks stored as files (VOC, folder) are decoded: present, the image's size, values of known classes.
    Procedural (parts world) and annotation (COCO) masks have no file to check. An image that cannot be read is
    skipped and counted by the evaluation, so its mask is not checked here either.
    """
    if len(ds) == 0:
        raise DataError(f"evaluation split {split!r} has no images (with the chosen data.classes and data.eval_options)")
    if not hasattr(ds, "mask_path"):
        return
    for i in range(len(ds)):
        try:
            image_size(ds.image_path(i))  # header only: cheap
        except DataError:
            continue
        try:
            ds.mask(i)
        except DataError as e:
            raise DataError(f"evaluation split {split!r}: {e}") from None
