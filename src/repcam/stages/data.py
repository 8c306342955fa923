"""Stage helpers for the training data that every other stage shares."""

from __future__ import annotations

from repcam.context import RunContext
from repcam.data import SegDataset
from repcam.storage import config_key, read_json, write_json
from repcam.train import ImageCache


def skipped_training_note(ctx: RunContext, train: SegDataset, cache: ImageCache) -> int:
    """Count the training images that could not be read, in the notes (hence every table and the report).

    A resumed run reads only the images of what it still trains, so the ids found by earlier runs of the same
    data are kept in ``train_skipped.json`` and merged: the count does not shrink because work was reused.
    Returns the count.
    """
    path = ctx.paths.train_skipped
    key = config_key({"data": ctx.data_key(), "train_split": ctx.cfg.data.train_split})
    try:
        old = read_json(path)
        known = dict(old["images"]) if isinstance(old, dict) and old.get("key") == key else {}
    except (OSError, ValueError, KeyError, TypeError):
        known = {}
    skipped = {**known, **{str(train.samples[i].id): reason for i, reason in cache.bad.items()}}
    write_json(path, {"key": key, "images": skipped})
    if skipped:
        first = ", ".join(sorted(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
        ctx.note(f"{len(skipped)} training images could not be read and were skipped ({first}; reasons in train_skipped.json)")
    return len(skipped)
