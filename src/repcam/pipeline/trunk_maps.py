"""The pair models' maps through their shared frozen trunk (``pairs.freeze_until``, issue 28).

Pair models trained on a frozen trunk are equal up to the freeze stage, so for the images of one class the trunk's
forward pass is the same for every pair model of that class. Per class, each batch of its images runs the trunk once
and then, per pair model of the class, the model's own rest and one backward
(:class:`~repcam.engine.shared_trunk.SharedTrunkGradCAM`), instead of a whole forward pass per pair model. A pair
file holds the maps of both its classes, so its rows are written where they belong (a scattered
:class:`~repcam.store.records.RecordWriter`) and the file is committed once its second class is done: the same
file, row for row, as the per-model units write. A pair model whose trunk differs from the shared one (checked
tensor by tensor) is left to those units.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from repcam.engine.fusion import fuse_layers
from repcam.engine.shared_trunk import Head, SharedTrunkGradCAM
from repcam.models.featcache import FrozenSplit, split_model
from repcam.models.train import ImageCache
from repcam.pipeline.context import RunContext, RunError
from repcam.pipeline.maps import shrink_maps
from repcam.store.records import RecordWriter
from repcam.store.storage import Artefact

HEADS_PER_PASS = 12  # pair models loaded at a time: bounds memory for data sets with many classes (one trunk pass each)

Pair = tuple[int, int]


def trunk_pair_maps(ctx: RunContext, todo: list[tuple[Pair, Artefact]], models: dict[Pair, Artefact], jobs: list,
                    cache: ImageCache, names: Sequence[str], advance: Callable[[], None]) -> list[tuple[Pair, Artefact]]:
    """Write the ``last`` and ``fused`` maps of every pair in ``todo`` (pair -> map artefact) whose model shares the
    trunk of the first one, calling ``advance()`` per committed file; returns the pairs left to the per-model units.
    ``jobs`` = the split's (image, class, target) jobs, as for the units; ``names`` its class names (for errors)."""
    if not todo:
        return []
    ev = ctx.cfg.evaluation
    kinds = ["last", "fused"]
    order = {p: [(i, c) for i, c, _ in jobs if c in p] for p, _ in todo}  # a pair file's rows, as the units write them
    row = {p: {ic: r for r, ic in enumerate(ics)} for p, ics in order.items()}
    left = {p: {c for _, c in ics} for p, ics in order.items()}  # classes whose maps a pair's file still waits for
    arts = dict(todo)
    writers: dict[Pair, RecordWriter] = {}
    rejected: list[tuple[Pair, Artefact]] = []
    try:
        for p, art in todo:
            writers[p] = RecordWriter(art, [i for i, _ in order[p]], [c for _, c in order[p]], kinds, ev.map_size, scattered=True)
        for p in [p for p in writers if not left[p]]:  # neither class has an image here: an empty file
            writers.pop(p).commit()
            advance()
        trunk = _TrunkPass(ctx, models[todo[0][0]])
        skeletons: list[torch.nn.Module] = []
        for c in sorted({c for _, c, _ in jobs}):
            pairs = [p for p in writers if c in left[p]]
            images = [i for i, cc, _ in jobs if cc == c]
            for g in range(0, len(pairs), HEADS_PER_PASS):
                group = pairs[g : g + HEADS_PER_PASS]
                while len(skeletons) < len(group):
                    skeletons.append(trunk.skeleton())
                heads = []
                for p, model in zip(group, skeletons):
                    split = trunk.load(model, models[p])
                    if split is None:  # another trunk: the units make this file
                        writers.pop(p).discard()
                        rejected.append((p, arts[p]))
                    else:
                        heads.append((p, model, split))
                if heads:
                    try:
                        trunk.run(c, images, heads, cache, lambda p, kind, rows, maps: writers[p].put(kind, [row[p][(i, c)] for i in rows], maps))
                    except (ValueError, RuntimeError) as e:  # a CAM error, or torch's: named by class and pair models
                        pairs_text = ", ".join(f"{names[a]}__{names[b]}" for (a, b), _, _ in heads)
                        raise RunError(f"maps of class {names[c]} through the shared trunk (pair models {pairs_text}): {e}") from e
            for p in pairs:
                if p in writers:
                    left[p].discard(c)
                    if not left[p]:
                        writers.pop(p).commit()
                        advance()
    except BaseException:
        for w in writers.values():
            w.discard()
        raise
    return rejected


class _TrunkPass:
    """The shared trunk (a model loaded with the first pair model's weights, split at ``pairs.freeze_until``) and the
    passes over one class's images."""

    def __init__(self, ctx: RunContext, first: Artefact) -> None:
        self.ctx = ctx
        ev = ctx.cfg.evaluation
        self.channels_last = ctx.channels_last and ctx.device.type == "cpu"
        model = self.skeleton()
        model.load_state_dict(first.load_torch())
        self.split: FrozenSplit = split_model(model, ctx.cfg.pairs.freeze_until, check_size=ctx.preprocess.input_size)
        self.cam = SharedTrunkGradCAM(model, ctx.cfg.pairs.freeze_until, amp=ev.amp)

    def skeleton(self) -> torch.nn.Module:
        """A model of the run's architecture (two outputs) on the run's device and in its memory format, to load into."""
        model = self.ctx.new_model(2, pretrained=False).model.to(self.ctx.device).eval()
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def load(self, model: torch.nn.Module, art: Artefact) -> FrozenSplit | None:
        """``art``'s weights loaded into ``model`` and its split, or None when its trunk is not the shared one."""
        model.load_state_dict(art.load_torch())
        split = self.split.like(model)
        return split if self.split.same_trunk(split) else None

    def run(self, c: int, images: list[int], heads: list[tuple[Pair, torch.nn.Module, FrozenSplit]], cache: ImageCache,
            put: Callable[[Pair, str, list[int], object], None]) -> None:
        """The maps of class ``c`` on ``images`` from every head, one trunk forward per batch: ``put(pair, kind, images,
        maps)``."""
        ev = self.ctx.cfg.evaluation
        for b in range(0, len(images), ev.batch_size):
            chunk = images[b : b + ev.batch_size]
            x = self.ctx.preprocess.normalize(cache.stack(chunk).to(self.ctx.device))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)

            def emit(k: int, maps: dict[str, torch.Tensor]) -> None:
                p = heads[k][0]
                put(p, "last", chunk, shrink_maps(maps["gradcam"][:, -1], ev.map_size))
                put(p, "fused", chunk, shrink_maps(fuse_layers(maps["gradcam"], self.cam.fusion), ev.map_size))

            self.cam.layer_maps_heads(x, [Head(m, s.rest, [p.index(c)] * len(chunk)) for p, m, s in heads], ["gradcam"], emit)
