"""The pair models' maps through their shared frozen trunk (``pairs.freeze_until``, issue 28).

Pair models trained on a frozen trunk are equal up to the freeze stage, so for the images of one class the trunk's
forward pass is the same for every pair model of that class. Per class, each batch of its images runs the trunk once
and then, per pair model of the class, the model's own rest and one backward
(:class:`~repcam.engine.shared_trunk.SharedTrunkGradCAM`), instead of a whole forward pass per pair model.

A pair model's maps go to its ablation file (``last`` and ``fused``) and, with the evaluation grid's ``pairs``
source, to its grid file (every weighting x layer fusion): both from the same backward per batch
(:class:`PairOutput`), where the grid's file used to take a whole pass of its own. A pair file holds the maps of
both its classes, and the classes are passed one after the other, so each class's
maps of a pair go first to a part file of their own (``.parts/<pair>.class<c>.npz``, an artefact keyed by the pair
file's key, the class and its images), committed as soon as that class's pass ends. Once every class of a pair has
its part, the parts are merged into the pair file, row for row the file the per-model units write, and removed. A
run killed in the pass keeps every finished class's parts, and the next run starts where it stopped instead of
redoing the whole pass. A pair model whose trunk differs from the shared one (checked tensor by tensor) is left to
those units.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch

from repcam.engine.fusion import fuse_layers
from repcam.engine.shared_trunk import Head, SharedTrunkGradCAM
from repcam.models.featcache import FrozenSplit, split_model
from repcam.models.train import ImageCache
from repcam.pipeline.context import RunContext, RunError
from repcam.pipeline.maps import shrink_maps
from repcam.store.records import RecordFile, RecordWriter
from repcam.store.storage import Artefact, config_key

HEADS_PER_PASS = 12  # pair models loaded at a time: bounds memory for data sets with many classes (one trunk pass each)
PARTS = ".parts"  # per folder of pair files: the per-class parts of the files not yet merged

Pair = tuple[int, int]
LayerMaps = dict[str, torch.Tensor]  # weighting -> (B, L, H, W) per-layer maps of one batch


@dataclass(frozen=True)
class PairOutput:
    """One file a pair model's maps go to: its artefact, its map kinds, the weightings they need, and ``cells``, which
    makes every kind's (B, H, W) maps of a batch from its per-layer maps (``info`` goes into the file's sidecar)."""

    art: Artefact
    kinds: tuple[str, ...]
    weightings: tuple[str, ...]
    cells: Callable[[LayerMaps], dict[str, torch.Tensor]]
    info: dict = field(default_factory=dict)


def ablation_output(art: Artefact, fusion: str = "paper") -> PairOutput:
    """The ablation's pair file: its Grad-CAM map at the last stage (``last``, the +F rows) and fused over the stages
    (``fused``, the +A+F rows)."""
    return PairOutput(art, ("last", "fused"), ("gradcam",),
                      lambda maps: {"last": maps["gradcam"][:, -1], "fused": fuse_layers(maps["gradcam"], fusion)})


def part_artefact(art: Artefact, c: int, images: Sequence[int]) -> Artefact:
    """Where class ``c``'s maps of the pair file ``art`` wait for its other class, keyed by the file's key, the class
    and its images (in order): a part of another model, config or image list is never merged."""
    return Artefact(art.path.parent / PARTS / f"{art.path.stem}.class{c}.npz",
                    config_key({"file": art.key, "class": c, "images": list(images)}))


def clear_parts(folders: Iterable[Path]) -> None:
    """Remove the parts folders under ``folders`` (once every pair file there is complete, a part is an orphan: left
    by a run killed between a merge and the removal of its parts)."""
    for folder in folders:
        shutil.rmtree(Path(folder) / PARTS, ignore_errors=True)


def trunk_pair_maps(ctx: RunContext, outputs: dict[Pair, list[PairOutput]], models: dict[Pair, Artefact], jobs: list,
                    cache: ImageCache, names: Sequence[str], committed: Callable[[Artefact], None]) -> list[Pair]:
    """Write every file of ``outputs`` (pair -> the files its model's maps go to) whose pair model shares the trunk of
    the first one, calling ``committed(art)`` per file written; returns the pairs whose model has another trunk
    (their files are left to the per-model passes). ``jobs`` = the split's (image, class, target) jobs, as for the
    units; ``names`` its class names (for errors). Every file of a pair comes from the same backward per batch."""
    if not outputs:
        return []
    ev = ctx.cfg.evaluation
    order = {p: [(i, c) for i, c, _ in jobs if c in p] for p in outputs}  # a pair file's rows, as the units write them
    images = {c: [i for i, cc, _ in jobs if cc == c] for c in {c for _, c, _ in jobs}}
    classes = {p: sorted({c for _, c in order[p]}) for p in outputs}
    parts = {(p, k, c): part_artefact(out.art, c, images[c]) for p, outs in outputs.items() for k, out in enumerate(outs)
             for c in classes[p]}
    pending = [(p, k) for p, outs in outputs.items() for k in range(len(outs))]
    weightings = list(dict.fromkeys(w for outs in outputs.values() for out in outs for w in out.weightings))
    rejected: list[Pair] = []

    def merge_finished() -> None:
        """Every pending file whose classes all have their part: merged, its parts removed."""
        for p, k in [pk for pk in pending if all(parts[(*pk, c)].done() for c in classes[pk[0]])]:
            out = outputs[p][k]
            _merge(out, order[p], [(c, parts[(p, k, c)]) for c in classes[p]], ev.map_size)
            pending.remove((p, k))
            committed(out.art)

    merge_finished()  # a pair with no image of its classes here (an empty file), and the parts a killed run left
    trunk: _TrunkPass | None = None
    skeletons: list[torch.nn.Module] = []
    for c in sorted(images):
        need: dict[Pair, list[int]] = {}  # pair -> its files still without class c's part
        for p, k in pending:
            if c in classes[p] and not parts[(p, k, c)].done():
                need.setdefault(p, []).append(k)
        pairs = list(need)
        for g in range(0, len(pairs), HEADS_PER_PASS):
            group = pairs[g : g + HEADS_PER_PASS]
            if trunk is None:
                trunk = _TrunkPass(ctx, models[next(iter(outputs))])
            while len(skeletons) < len(group):
                skeletons.append(trunk.skeleton())
            heads = []
            for p, model in zip(group, skeletons):
                split = trunk.load(model, models[p])
                if split is None:  # another trunk: the per-model passes make its files
                    pending[:] = [pk for pk in pending if pk[0] != p]
                    rejected.append(p)
                else:
                    heads.append((p, model, split))
            if heads:
                files = {(p, k): (outputs[p][k], parts[(p, k, c)]) for p, _, _ in heads for k in need[p]}
                _class_parts(trunk, c, images[c], heads, files, weightings, cache, names, ev.map_size)
        merge_finished()
    return rejected


def _class_parts(trunk: "_TrunkPass", c: int, images: list[int], heads: list[tuple[Pair, torch.nn.Module, FrozenSplit]],
                 files: dict[tuple[Pair, int], tuple[PairOutput, Artefact]], weightings: list[str], cache: ImageCache,
                 names: Sequence[str], map_size: int) -> None:
    """Class ``c``'s maps on ``images`` from every head, each file's written to its part (``files``: (pair, file) ->
    (output, part)), all committed at the end of the pass and discarded on an error."""
    writers: dict[tuple[Pair, int], RecordWriter] = {}

    def put(p: Pair, maps: LayerMaps) -> None:
        for (q, k), w in writers.items():
            if q == p:
                for kind, m in files[(q, k)][0].cells(maps).items():
                    w(kind, shrink_maps(m, map_size))

    try:
        for pk, (out, part) in files.items():
            writers[pk] = RecordWriter(part, images, [c] * len(images), out.kinds, map_size)
        trunk.run(c, images, heads, weightings, cache, put)
    except BaseException as e:
        for w in writers.values():
            w.discard()
        if isinstance(e, (ValueError, RuntimeError)):  # a CAM error, or torch's: named by class and pair models
            pairs_text = ", ".join(f"{names[a]}__{names[b]}" for (a, b), _, _ in heads)
            raise RunError(f"maps of class {names[c]} through the shared trunk (pair models {pairs_text}): {e}") from e
        raise
    for w in writers.values():
        w.commit()


def _merge(out: PairOutput, order: list[tuple[int, int]], parts: list[tuple[int, Artefact]], map_size: int) -> None:
    """The file of ``out`` (rows in ``order``, as the units write them) from its classes' parts, which are then
    removed."""
    row = {ic: r for r, ic in enumerate(order)}
    writer = RecordWriter(out.art, [i for i, _ in order], [c for _, c in order], out.kinds, map_size, scattered=True)
    try:
        for c, part in parts:
            f = RecordFile(part.path)
            at = [row[(int(i), c)] for i in f.image]
            for kind in out.kinds:
                writer.put(kind, at, f.rows(kind))
    except BaseException:
        writer.discard()
        raise
    writer.commit(**out.info)
    for _, part in parts:
        part.path.unlink(missing_ok=True)
        part.meta_path.unlink(missing_ok=True)


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

    def run(self, c: int, images: list[int], heads: list[tuple[Pair, torch.nn.Module, FrozenSplit]], weightings: list[str],
            cache: ImageCache, put: Callable[[Pair, LayerMaps], None]) -> None:
        """The per-layer maps under ``weightings`` of class ``c`` on ``images`` from every head, one trunk forward per
        batch: ``put(pair, {weighting: (B, L, H, W)})`` per head and batch, in image order."""
        ev = self.ctx.cfg.evaluation
        for b in range(0, len(images), ev.batch_size):
            chunk = images[b : b + ev.batch_size]
            x = self.ctx.preprocess.normalize(cache.stack(chunk).to(self.ctx.device))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            self.cam.layer_maps_heads(x, [Head(m, s.rest, [p.index(c)] * len(chunk)) for p, m, s in heads], weightings,
                                      lambda k, maps: put(heads[k][0], maps))
