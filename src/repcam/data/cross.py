"""Another data set seen through a run's classes: cross-data-set evaluation (``cross_eval`` in a run config).

A run trained on one data set (say VOC) scores its stored models on another one's images and masks (say COCO) as one
more evaluation split. A spec names the other data set and how its class names map onto the run's::

    kind: coco                       # any loader kind (repcam.data.load_dataset)
    root: ../shared/data/COCO-mini
    split: train                     # the other data set's split
    options: {}                      # its loader options
    class_map:                       # other name -> the run's name; equal names need no entry
      couch: sofa
      tv: tvmonitor
      potted plant: pottedplant

Decisions:

* The run's class indices are kept (the pair models and selections are indexed by them): :class:`CrossDataset` has
  the run's ``class_names``, image labels and mask values renumbered to the run's indices.
* A class of the other data set without a counterpart among the run's classes is left out: its pixels read 0
  (background), as with a loader's class subset, and it is listed in :attr:`CrossDataset.left_out`. A run class
  without a counterpart in the other data set has no image and no IoU; it is listed in :attr:`CrossDataset.missing`.
* Ignore pixels (255: crowds, VOC borders) stay ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from PIL import Image

from repcam.data.base import IGNORE_INDEX, DataError, Sample, SegDataset

SPEC_KEYS = ("kind", "root", "split", "options", "class_map")


@dataclass(frozen=True)
class CrossSpec:
    """One other data set to evaluate a run on (see the module docstring for the keys)."""

    kind: str
    root: str | None
    split: str
    options: dict[str, Any] = field(default_factory=dict)
    class_map: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "root": self.root, "split": self.split, "options": dict(self.options),
                "class_map": dict(self.class_map)}


def parse_spec(values: Any, where: str) -> CrossSpec:
    """A :class:`CrossSpec` from a mapping; every error is one line naming ``where`` and the key."""
    if not isinstance(values, dict):
        raise DataError(f"{where} must be a mapping with keys {', '.join(SPEC_KEYS)}, got {type(values).__name__}")
    unknown = sorted(str(k) for k in values if k not in SPEC_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key {unknown[0]!r}; valid keys: {', '.join(SPEC_KEYS)}")
    for key in ("kind", "split"):
        if not isinstance(values.get(key), str) or not values[key]:
            raise DataError(f"{where}.{key} is required (a string), got {values.get(key)!r}")
    root = values.get("root")
    if root is not None and not isinstance(root, str):
        raise DataError(f"{where}.root must be a path (a string), got {root!r}")
    options = values.get("options") or {}
    cmap = values.get("class_map") or {}
    for key, val in (("options", options), ("class_map", cmap)):
        if not isinstance(val, dict):
            raise DataError(f"{where}.{key} must be a mapping, got {val!r}")
    bad = [(k, v) for k, v in cmap.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise DataError(f"{where}.class_map: names must be strings, got {bad[0][0]!r}: {bad[0][1]!r}")
    targets = list(cmap.values())
    dup = sorted({t for t in targets if targets.count(t) > 1})
    if dup:
        raise DataError(f"{where}.class_map maps several classes onto {dup[0]!r}; one class each")
    return CrossSpec(values["kind"], root, values["split"], dict(options), dict(cmap))


def class_pairs(other_names: Sequence[str], run_names: Sequence[str], class_map: dict[str, str],
                where: str) -> dict[str, str]:
    """{other name: run name} of the classes both data sets have (through ``class_map``, else by equal name).

    A ``class_map`` key that is not a class of the other data set, or a value that is not a run class, is an error:
    a typo must not silently drop a class.
    """
    unknown = [k for k in class_map if k not in other_names]
    if unknown:
        raise DataError(f"{where}.class_map: {unknown[0]!r} is not a class of the other data set "
                        f"(it has {len(other_names)}: {', '.join(list(other_names)[:12])}{', ...' if len(other_names) > 12 else ''})")
    not_run = [v for v in class_map.values() if v not in run_names]
    if not_run:
        raise DataError(f"{where}.class_map: {not_run[0]!r} is not a class of this run ({', '.join(run_names)})")
    pairs = {o: class_map.get(o, o) for o in other_names if class_map.get(o, o) in run_names}
    taken = list(pairs.values())
    clash = sorted({r for r in taken if taken.count(r) > 1})
    if clash:
        raise DataError(f"{where}: several classes of the other data set meet run class {clash[0]!r} "
                        "(one by name, one by class_map); map one of them elsewhere")
    if not pairs:
        raise DataError(f"{where}: no class of the other data set matches a class of this run; add a class_map")
    return pairs


class CrossDataset(SegDataset):
    """``inner`` (all its classes) with the run's class names and indices: images without a mapped class dropped
    (counted in :attr:`dropped`), pixels of unmapped classes 0, ignore pixels kept."""

    def __init__(self, inner: SegDataset, run_names: Sequence[str], pairs: dict[str, str]) -> None:
        self.inner = inner
        self.class_names = tuple(run_names)
        run_index = {n: k for k, n in enumerate(run_names)}
        to_run = {k: run_index[pairs[n]] for k, n in enumerate(inner.class_names) if n in pairs}
        self._lut = np.zeros(256, np.uint8)
        self._lut[IGNORE_INDEX] = IGNORE_INDEX
        for k, r in to_run.items():
            self._lut[k + 1] = r + 1
        self._index: list[int] = []  # sample -> the inner loader's index
        self.samples = []
        for i, s in enumerate(inner.samples):
            labels = frozenset(to_run[k] for k in s.labels if k in to_run)
            if labels:
                self._index.append(i)
                self.samples.append(Sample(s.id, labels))
        self.dropped = len(inner.samples) - len(self.samples)
        self.pairs = dict(pairs)
        self.left_out = [n for n in inner.class_names if n not in pairs]
        self.missing = [n for n in run_names if n not in pairs.values()]

    def image(self, i: int) -> Image.Image:
        return self.inner.image(self._index[i])

    def mask(self, i: int) -> np.ndarray:
        return self._lut[self.inner.mask(self._index[i])]


def load_cross(spec: CrossSpec, run_names: Sequence[str], where: str, max_images: int | None = None) -> CrossDataset:
    """The other data set of ``spec`` under the run's classes ``run_names`` (loaded once, with all its classes)."""
    from repcam.data import load_dataset

    try:
        every = load_dataset(spec.kind, spec.root, spec.split, None, **spec.options)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    ds = CrossDataset(every, run_names, class_pairs(every.class_names, run_names, spec.class_map, where))
    if not ds.samples:
        raise DataError(f"{where}: no image of {spec.kind} {spec.split} holds one of the mapped classes")
    if max_images is not None and len(ds) > max_images:
        ds.samples = ds.samples[:max_images]
    return ds


def describe(ds: CrossDataset, name: str, spec: CrossSpec) -> str:
    """One note for the tables and the report: what was compared with what, and what was left out."""
    renamed = [f"{o} -> {r}" for o, r in ds.pairs.items() if o != r]
    text = (f"split {name!r} is another data set ({spec.kind} {spec.split} at {spec.root}): {len(ds)} images with "
            f"{len(ds.pairs)} of the run's classes")
    if renamed:
        text += f" (renamed: {', '.join(renamed)})"
    left = ds.left_out
    if ds.dropped:
        text += f"; {ds.dropped} of its images hold none of them and are left out"
    if left:
        text += f"; its {len(left)} other classes are left out (their pixels count as background): {', '.join(left)}"
    if ds.missing:
        text += f"; run classes with no counterpart there (no IoU): {', '.join(ds.missing)}"
    return text
