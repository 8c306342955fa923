"""The evaluation grid's pair-model source (issue 15): the paper's maps under every weighting and layer fusion.

Rows ``pairs <selection> [<weighting>, <fusion>]``: for each (image, class c), the map of every pair model (c, r)
of c's representatives r under that weighting and layer fusion, fused over the representatives by F (the mean),
exactly as the ablation's ``+F`` (fusion "last") and ``+A+F`` (fusion "paper", weighting "gradcam") rows are; so
``pairs S-1 [gradcam, paper]`` reproduces ``S-1+A+F`` and the other cells show what the weighting and the layer
fusion change on top of the paper's selection and pair models.

Files (names from :class:`~repcam.store.layout.RunDir`), both keyed and reused like every other map file:

* ``maps/<split>/grid__pair__<pair>.npz``: one per pair model, kinds ``<weighting>__<fusion>``, over the images of
  both classes (target logit 0 for class a, 1 for b), from ONE forward and backward pass per batch for all
  weightings (:meth:`repcam.engine.cam.MultiLayerGradCAM.layer_maps`);
* ``maps/<split>/grid__pairs__<selection>.npz``: the fused maps per selection, computed from the former.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from repcam.engine.fusion import fuse_classes
from repcam.models.train import ImageCache
from repcam.pipeline.grid import cell_maps, extract_grid, row_name
from repcam.pipeline.trunk_maps import PairOutput
from repcam.store.layout import RunDir
from repcam.store.records import RecordFile, RecordWriter, record_rows
from repcam.store.rundir import ClassFiles
from repcam.store.storage import Artefact, config_key

Pair = tuple[int, int]
Selection = dict[int, Sequence[int]]


def kind_name(weighting: str, fusion: str) -> str:
    """The map kind of one (weighting, layer fusion) cell in a pair grid file."""
    return f"{weighting}__{fusion}"


def label(selection: str) -> str:
    """The grid source label of a selection's pair rows, ``pairs <selection>`` (the first part of their row names)."""
    return f"pairs {selection}"


def fuse_representatives(maps: Sequence[np.ndarray]) -> np.ndarray:
    """F of the ablation: the normalised mean of the representatives' maps (float32 in, float32 out)."""
    return fuse_classes(torch.from_numpy(np.stack(maps).astype(np.float32)), "mean").numpy()


@dataclass
class PairGrid:
    """The pair-model cells of ``evaluation.grid`` for one split."""

    weightings: list[str]
    fusions: list[str]
    selections: dict[str, Selection]
    pair_arts: dict[Pair, Artefact]
    fused_arts: dict[str, Artefact]
    seconds: float = 0.0
    rows_meta: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return [kind_name(w, f) for w in self.weightings for f in self.fusions]

    @classmethod
    def plan(cls, grid_cfg: Any, paths: RunDir, split: str, class_names: Sequence[str], models: dict[Pair, str],
             selections: dict[str, Selection], maps_key: dict[str, Any]) -> "PairGrid":
        """``models``: the pair models' checksums; only the pairs some selection uses get a file."""
        files = ClassFiles(class_names)
        used = sorted({tuple(sorted((c, r))) for sel in selections.values() for c, reps in sel.items() for r in reps} & set(models))
        weightings, fusions = list(grid_cfg.weightings), list(grid_cfg.fusions)
        pair_arts = {p: Artefact(paths.grid_pair_maps(split, files, class_names[p[0]], class_names[p[1]]),
                                 config_key({"grid": "pairs", "pair": models[p], **maps_key})) for p in used}
        fused_arts = {}
        for name, sel in selections.items():
            reps = {class_names[c]: [class_names[r] for r in sel[c]] for c in sorted(sel)}
            inputs = sorted(a.key for p, a in pair_arts.items() if any(p == tuple(sorted((c, r))) for c in sel for r in sel[c]))
            key = config_key({"grid": "pairs fused", "representatives": reps, "pair_maps": inputs,
                              "weightings": weightings, "fusions": fusions})
            fused_arts[name] = Artefact(paths.grid_fused_pairs(split, name), key)
        g = cls(weightings, fusions, dict(selections), pair_arts, fused_arts)
        for name in selections:
            for w in weightings:
                for f in fusions:
                    g.rows_meta[row_name(label(name), w, f)] = {"source": "pairs", "selection": name, "weighting": w,
                                                               "fusion": f, "family": f"pairs [{w}]"}
        return g

    def complete(self, art: Artefact) -> bool:
        """Whether the file ``art`` is stored, current, and holds every kind of the grid."""
        return art.done() and set(self.kinds) <= set(RecordFile(art.path).kinds)

    def output(self, art: Artefact) -> PairOutput:
        """The pair file ``art`` as a file of the shared trunk pass (:mod:`repcam.pipeline.trunk_maps`): there it
        shares its pair model's backward with the ablation's pair file, instead of a whole pass of its own."""
        return PairOutput(art, tuple(self.kinds), tuple(self.weightings),
                          lambda maps: {kind_name(w, f): m for (w, f), m in cell_maps(maps, self.fusions).items()},
                          {"source": "pairs", "weightings": self.weightings, "fusions": self.fusions})

    def todo(self) -> int:
        """How many of the pair and fused files are not complete yet (missing, stale, or lacking a kind)."""
        return sum(not self.complete(a) for a in [*self.pair_arts.values(), *self.fused_arts.values()])

    def extract(self, load_model: Callable[[Pair], nn.Module], cache: ImageCache, pre: Any, jobs: Sequence[tuple[int, int, Any]],
                device: torch.device, map_size: int, batch_size: int, amp: bool = False,
                progress: Callable[[], None] | None = None) -> None:
        """Every pair grid file not already complete, then every fused file (each written atomically when done)."""
        t0 = time.perf_counter()
        for (a, b), art in self.pair_arts.items():
            if self.complete(art):  # stored, or made in the shared trunk pass
                if progress:
                    progress()
                continue
            pj = [(i, c, 0 if c == a else 1) for i, c, _ in jobs if c in (a, b)]
            writer = RecordWriter(art, [j[0] for j in pj], [j[1] for j in pj], self.kinds, map_size)
            sinks = {w: (lambda f, chunk, w=w: writer(kind_name(w, f), chunk)) for w in self.weightings}
            try:
                extract_grid(load_model((a, b)), cache, pre, pj, device, map_size, batch_size, self.weightings, self.fusions,
                             [([j[2] for j in pj], sinks)], amp)
            except BaseException:
                writer.discard()
                raise
            writer.commit(source="pairs", weightings=self.weightings, fusions=self.fusions)
            if progress:
                progress()
        for name, art in self.fused_arts.items():
            if not self.complete(art):
                self._fuse(name, art, jobs, map_size)
            if progress:
                progress()
        self.seconds = time.perf_counter() - t0

    def _fuse(self, name: str, art: Artefact, jobs: Sequence[tuple[int, int, Any]], map_size: int) -> None:
        """One selection's fused file: per (image, class), the mean over the representatives whose pair file has it."""
        sel = self.selections[name]
        files = {p: RecordFile(a.path) for p, a in self.pair_arts.items()}
        index = {p: {(int(i), int(c)): r for r, (i, c) in enumerate(zip(f["image"], f["cls"]))} for p, f in files.items()}
        rows = []
        for i, c, _ in jobs:
            srcs = [(p, index[p][(i, c)]) for r in sel.get(c, ()) if (p := tuple(sorted((c, r)))) in index and (i, c) in index[p]]
            if srcs:
                rows.append((i, c, srcs))
        writer = RecordWriter(art, [r[0] for r in rows], [r[1] for r in rows], self.kinds, map_size)
        try:
            for kind in self.kinds:  # one kind at a time: memory holds one fused map per row, not all kinds
                fused = [fuse_representatives([record_rows(files[p], kind, np.array([r]))[0] for p, r in srcs]) for _, _, srcs in rows]
                writer(kind, np.stack(fused).astype(np.float16) if fused else np.zeros((0, map_size, map_size), np.float16))
        except BaseException:
            writer.discard()
            raise
        writer.commit(source="pairs", selection=name)

    def records(self) -> list[tuple[RecordFile, dict[str, str]]]:
        """(fused record file, {row name: map kind}) per selection, for ``evaluate_split(extra_records=...)``."""
        return [(RecordFile(art.path), {row_name(label(name), w, f): kind_name(w, f) for w in self.weightings for f in self.fusions})
                for name, art in self.fused_arts.items()]
