"""Checks of the data before the first model trains: a missing split file, a bad mask or a COCO annotation that
cannot be decoded must be reported in the first seconds of a run, not after hours of training, and all of them at
once, not one per attempt."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from repcam.data.base import DataError, SegDataset
from repcam.data.common import image_size, raise_problems

def eval_split_problems(ds: SegDataset, split: str) -> list[str]:
    """Every problem (one line each, naming the split and the file) that would stop the evaluation of ``ds``.

    ``ds`` is the split as the evaluation will see it (eval options applied, cut to ``data.max_eval_images``). Masks
    stored as files (VOC, folder) and masks built from annotations (COCO: every segmentation decoded) are computed:
    present, the image's size, values of known classes. Procedural (parts world) masks cannot be wrong. An image that
    cannot be read is skipped and counted by the evaluation, so its mask is not checked here either.
    """
    if len(ds) == 0:
        return [f"evaluation split {split!r} has no images (with the chosen data.classes and data.eval_options)"]
    if not hasattr(ds, "image_path"):
        return []
    problems = []
    for i in range(len(ds)):
        try:
            image_size(ds.image_path(i))  # header only: cheap
        except DataError:
            continue
        try:
            ds.mask(i)
        except DataError as e:
            problems.append(f"evaluation split {split!r}: {e}")
    return problems


def check_eval_split(ds: SegDataset, split: str) -> None:
    """:class:`DataError` listing every problem of :func:`eval_split_problems` (none: returns)."""
    raise_problems(eval_split_problems(ds, split))


def _image_keys(ds: SegDataset) -> dict[str, str]:
    """Resolved image file -> sample id, for a data set whose images are files (others: empty)."""
    if not hasattr(ds, "image_path"):
        return {}
    out = {}
    for i in range(len(ds)):
        try:
            out[str(Path(ds.image_path(i)).resolve())] = ds.samples[i].id
        except (DataError, OSError):
            continue
    return out


def split_overlaps(train: SegDataset, train_split: str, evals: Mapping[str, SegDataset]) -> list[str]:
    """A note for every evaluation split that shares images (the same image file) with the training split under
    another name: its numbers are then not held-out. Evaluating the training split itself is deliberate and not noted."""
    train_keys = _image_keys(train)
    notes = []
    for split, ds in evals.items():
        if split == train_split or not train_keys:
            continue
        shared = sorted(sid for key, sid in _image_keys(ds).items() if key in train_keys)
        if shared:
            listed = ", ".join(shared[:5]) + (", ..." if len(shared) > 5 else "")
            notes.append(f"evaluation split {split!r} shares {len(shared)} of its {len(ds)} images with the training split "
                         f"{train_split!r} ({listed}): its numbers are not held-out")
    return notes
