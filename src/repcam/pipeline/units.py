"""Work units that may run in another process or machine: train one pair model, extract one model's maps.

Each takes one picklable spec holding everything it needs (uint8 images, settings, seeds) and returns plain
tensors and numbers, so :mod:`repcam.pipeline.executor` can ship it anywhere and the parent saves the result.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from repcam.models.backbones import build_classifier
from repcam.models.featcache import FeatureRows, FreezeError, PartialModel, split_model
from repcam.models.train import FitResult, fit, resolve_device
from repcam.pipeline.maps import MapRecords, extract


@dataclass(frozen=True)
class ModelSpec:
    """How to build a classifier: the backbone config's fields and the number of outputs."""

    name: str
    num_classes: int
    weights: str | None
    input_size: int | None

    def build(self, pretrained: bool = True):
        """The classifier, with its pretrained weights (``pretrained``) or random ones (to load a state into)."""
        return build_classifier(self.name, self.num_classes, weights=self.weights if pretrained else None, input_size=self.input_size)


@dataclass(frozen=True)
class PairTraining:
    """One pair model's training, shipped to :func:`train_pair`: the model, its images and 0/1 labels, seeds, the
    ``pairs`` settings and, optionally, starting weights and a freeze point with cached features."""

    model: ModelSpec
    images: torch.Tensor  # (n, 3, S, S) uint8: class a's images, then class b's
    labels: torch.Tensor  # (n,) 0 for a, 1 for b
    init_seed: int
    fit_seed: int
    epochs: int
    lr: float
    batch_size: int
    target_accuracy: float
    device: str
    init_state: dict[str, torch.Tensor] | None = None  # start from these weights (the head stays random)
    freeze_until: str | None = None  # train only the stages after this one (pairs.freeze_until)
    features: FeatureRows | None = None  # with freeze_until: the images' cached trunk features (``images`` may be empty)
    channels_last: bool = False  # execution.channels_last


def train_pair(spec: PairTraining) -> tuple[dict[str, torch.Tensor], FitResult]:
    """A binary classifier trained from ``spec``: its CPU state dict and the training summary."""
    torch.manual_seed(spec.init_seed)
    bb = spec.model.build(pretrained=spec.init_state is None)
    if spec.init_state is not None:
        loaded = bb.model.load_state_dict(spec.init_state, strict=False)  # the head is missing on purpose
        if loaded.unexpected_keys:
            raise ValueError(f"pair model {spec.model.name}: starting weights of another architecture "
                             f"(unexpected keys {loaded.unexpected_keys[:3]}...)")
    model, inputs = bb.model, None
    if spec.freeze_until is not None:  # partial fine-tuning, on cached features when the unit carries them
        split = split_model(bb.model, spec.freeze_until, check_size=bb.preprocess.input_size)
        model = PartialModel(split, from_features=spec.features is not None)
        if spec.features is not None:
            if split.trunk_key() != spec.features.trunk_key:  # e.g. a random trunk that differs per pair model
                raise FreezeError(f"pair model {spec.model.name}: its frozen trunk differs from the one the feature cache "
                                  f"{spec.features.path} was computed with")
            inputs = spec.features.inputs()
    res = fit(model, spec.images if inputs is None else None, spec.labels, bb.preprocess, loss="ce", epochs=spec.epochs,
              lr=spec.lr, batch_size=spec.batch_size, seed=spec.fit_seed, device=resolve_device(spec.device),
              target_accuracy=spec.target_accuracy, inputs=inputs, channels_last=spec.channels_last)
    return {k: v.cpu() for k, v in bb.model.state_dict().items()}, res


def backbone_state(spec: ModelSpec, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` (of a ``spec`` model) without its classifier head: the entries whose shape changes with the number
    of outputs, found by comparison with the same architecture with one more output."""
    ref = dataclasses.replace(spec, num_classes=spec.num_classes + 1).build(pretrained=False).model.state_dict()
    return {k: v.detach().cpu() for k, v in state.items() if k in ref and ref[k].shape == v.shape}


class StackedImages:
    """The ``stack`` interface of :class:`~repcam.models.train.ImageCache` over a few images shipped with a unit."""

    def __init__(self, ids: Sequence[int], images: torch.Tensor) -> None:
        self.row = {int(i): r for r, i in enumerate(ids)}
        self.images = images

    def stack(self, idx: Sequence[int]) -> torch.Tensor:
        """The images ``idx`` (ids, not rows) as one uint8 tensor, in the order given."""
        return self.images[[self.row[int(i)] for i in idx]]


@dataclass(frozen=True)
class MapExtraction:
    """One model's map extraction, shipped to :func:`extract_maps`: the model and its weights, the images it needs, the
    (image id, class, target) jobs, the map kinds and size, batch size, device and amp."""

    model: ModelSpec
    state: dict[str, torch.Tensor]
    image_ids: tuple[int, ...]
    images: torch.Tensor  # (len(image_ids), 3, S, S) uint8
    jobs: tuple[tuple[int, int, Any], ...]  # (image id, class, target)
    kinds: tuple[str, ...]
    map_size: int
    batch_size: int
    device: str
    amp: bool = False
    channels_last: bool = False  # execution.channels_last
    batch_by_class: bool = False  # batches never mix classes: a pair model's batches are those of the shared trunk pass


def extract_maps(spec: MapExtraction) -> MapRecords:
    """The maps of ``spec.jobs`` (:func:`repcam.pipeline.maps.extract`) from the model rebuilt with ``spec.state``, over
    the images shipped with the spec. With ``batch_by_class``, each class's jobs are batched apart and the rows put
    back in job order: the batches of :mod:`repcam.pipeline.trunk_maps`, so a pair file is the same bit for bit
    whichever path made it (a convolution's rounding can depend on what else is in its batch)."""
    bb = spec.model.build(pretrained=False)
    bb.model.load_state_dict(spec.state)

    def run(jobs: list) -> MapRecords:
        return extract(bb.model, StackedImages(spec.image_ids, spec.images), bb.preprocess, jobs, resolve_device(spec.device),
                       spec.map_size, spec.batch_size, list(spec.kinds), amp=spec.amp, channels_last=spec.channels_last)

    if not spec.batch_by_class or not spec.jobs:
        return run(list(spec.jobs))
    rows = [[n for n, j in enumerate(spec.jobs) if j[1] == c] for c in sorted({j[1] for j in spec.jobs})]
    parts = [run([spec.jobs[n] for n in r]) for r in rows]
    order = np.argsort(np.concatenate(rows), kind="stable")  # class by class -> job order
    return {k: np.concatenate([p[k] for p in parts])[order] for k in parts[0]}
