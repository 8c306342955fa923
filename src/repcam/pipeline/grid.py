"""The evaluation grid (issue 15): map source x gradient weighting x layer fusion, every cell a row.

Everything comes from the run's multi-class (baseline) model; no model is trained. Per (source, weighting) one
forward and backward pass gives the per-layer maps, and every requested layer fusion of them is stored as a map
kind of one record file ``maps/<split>/grid__<source>__<weighting>.npz`` (keyed like ``multiclass.npz``, so a
rerun reuses it). The rows are evaluated by :func:`repcam.evaluation.evaluate.evaluate_split` together with the ablation's
(same accumulators, same paired intervals against Grad-CAM and the strongest baseline) and then split off into
``results/<split>/grid.{csv,json,md}``: the ablation tables stay exactly as without the grid.

Sources: ``multiclass`` (the class's own logit), ``contrast`` (:class:`~repcam.engine.cam.ContrastTarget` against each
selection's representative classes, as the ``contrast`` variant), ``topk-contrast`` (against the k classes the
model itself scores highest on that image, target excluded; k = ``selection.n``; needs no B).
The pair-model source (``pairs``: each pair model's maps fused over the representatives) is :mod:`repcam.pipeline.grid_pairs`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from repcam.engine.cam import ContrastTarget, MultiLayerGradCAM
from repcam.engine.fusion import fuse_layers
from repcam.engine.tta import TTA
from repcam.models.train import ImageCache
from repcam.pipeline.grid_names import GRID_FUSIONS, GRID_SOURCES, check_grid  # noqa: F401 - importable from here
from repcam.pipeline.maps import shrink_maps
from repcam.store.records import RecordFile, RecordWriter
from repcam.store.storage import Artefact, config_key, slug, write_json, write_text

def topk_references(logits: torch.Tensor, cls: int, k: int) -> tuple[int, ...]:
    """The ``k`` classes with the highest logits of one image's ``logits`` row, ``cls`` excluded, highest first.

    Logits rank classes as the model's sigmoid or softmax probabilities do (both are monotonic), so this is the
    image's own top-k list without B. Ties go to the lower class index (a stable sort), so the choice is deterministic.
    """
    order = torch.sort(logits.detach().float(), descending=True, stable=True).indices.tolist()
    return tuple(c for c in order if c != cls)[:k]


@dataclass(frozen=True)
class TopKContrastTarget:
    """Target ``y_c - gamma * mean(y_r)`` over the image's own top-``k`` other classes r (:func:`topk_references`),
    chosen from the logits of the same forward pass. Picklable, usable wherever a target is."""

    cls: int
    k: int
    gamma: float = 1.0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return ContrastTarget(self.cls, topk_references(logits, self.cls, self.k), self.gamma)(logits)


@dataclass
class GridSource:
    """One map source: its row label, its file stem, what its maps depend on, and its target per (image, class)."""

    kind: str  # one of GRID_SOURCES
    label: str  # e.g. "multiclass", "contrast S-2", "top-4 contrast"
    stem: str
    key: dict[str, Any]
    target: Callable[[int], Any]  # class -> target (an index or a callable on the logits)


TTA_SUFFIX = " +TTA"
"""Appended to the row name of a test-time augmented map (``evaluation.tta``)."""


def row_name(label: str, weighting: str, fusion: str, tta: bool = False) -> str:
    """The grid row of one cell, e.g. ``contrast S-2 [xgradcam, paper]``: source, weighting, layer fusion (and
    `` +TTA`` for the test-time augmented twin)."""
    return f"{label} [{weighting}, {fusion}]" + (TTA_SUFFIX if tta else "")


def contrast_stem(selection: str) -> str:
    """The grid map files' stem of the contrast source of one selection (``RunDir.grid_maps``)."""
    return f"contrast__{slug(selection)}"


def topk_stem(k: int) -> str:
    """The grid map files' stem of the image-level top-``k`` contrast source."""
    return f"top{k}-contrast"


def grid_sources(sources: Sequence[str], selections: dict[str, dict[int, Sequence[int]]], class_names: Sequence[str],
                 n: int, gamma: float) -> list[GridSource]:
    """The sources of the grid in config order; ``contrast`` gives one per selection of the run."""
    out: list[GridSource] = []
    for kind in sources:
        if kind == "multiclass":
            out.append(GridSource(kind, "multiclass", "multiclass", {"source": "multiclass"}, lambda c: c))
        elif kind == "contrast":
            for sel_name, sel in selections.items():
                reps = {class_names[c]: [class_names[r] for r in sel[c]] for c in sorted(sel)}
                out.append(GridSource(kind, f"contrast {sel_name}", contrast_stem(sel_name),
                                      {"source": "contrast", "contrast": reps, "gamma": gamma},
                                      lambda c, sel=sel: ContrastTarget(c, tuple(sel.get(c, ())), gamma)))
        elif kind == "topk-contrast":
            out.append(GridSource(kind, f"top-{n} contrast", topk_stem(n), {"source": "topk-contrast", "k": n, "gamma": gamma},
                                  lambda c: TopKContrastTarget(c, n, gamma)))
    return out


Sinks = dict[str, Callable[[str, np.ndarray], None]]  # weighting -> the sink of its (fusion, maps) chunks


def extract_grid(model: nn.Module, cache: ImageCache, pre: Any, jobs: Sequence[tuple[int, int, Any]], device: torch.device,
                 map_size: int, batch_size: int, weightings: Sequence[str], fusions: Sequence[str],
                 sources: Sequence[tuple[Sequence[Any], Sinks]], amp: bool = False, tta: TTA | None = None) -> None:
    """Stream every fusion in ``fusions`` of each weighting's per-layer maps for the (image, class, _) ``jobs`` to the
    sinks of each map source: ``sources`` = (one target per job, {weighting: sink}).

    One forward pass per batch serves every source, and one backward per source all its weightings and fusions
    (arithmetic on the same activations and gradients,
    :meth:`~repcam.engine.cam.MultiLayerGradCAM.layer_maps_sets`); with ``tta`` (one source) one pass per scale
    (:mod:`repcam.engine.tta`: each fusion's map is augmented, as a method's map is).
    """
    if tta is not None and len(sources) != 1:
        raise ValueError("test-time augmentation extracts one map source at a time")
    model.to(device).eval()
    cam = MultiLayerGradCAM(model, "auto", amp=amp)

    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b : b + batch_size]
        x = pre.normalize(cache.stack([j[0] for j in chunk]).to(device))
        target_sets = [list(targets[b : b + batch_size]) for targets, _ in sources]
        if tta is None:  # each source's maps stored before the next source's are made
            per_set, _ = cam.layer_maps_sets(x, target_sets, weightings)
            for (_, sinks), by_weighting in zip(sources, per_set):
                emit_cells(sinks, cell_maps(by_weighting, fusions), map_size)
        else:
            maps = tta(lambda v, t: cell_maps(next(cam.layer_maps_sets(v, [t], weightings)[0]), fusions), x, target_sets[0])
            emit_cells(sources[0][1], maps, map_size)


def cell_maps(by_weighting: dict[str, torch.Tensor], fusions: Sequence[str]) -> dict[tuple[str, str], torch.Tensor]:
    """Every (weighting, fusion) map of one batch from its per-layer maps {weighting: (B, L, H, W)}."""
    return {(w, fusion): layer_maps[:, -1] if fusion == "last" else fuse_layers(layer_maps, fusion)
            for w, layer_maps in by_weighting.items() for fusion in fusions}


def emit_cells(sinks: Sinks, maps: dict[tuple[str, str], torch.Tensor], map_size: int) -> None:
    """Each (weighting, fusion) map to the sink of its weighting, in stored form; weightings without a sink are skipped."""
    for (w, fusion), m in maps.items():
        if w in sinks:
            sinks[w](fusion, shrink_maps(m, map_size))


@dataclass
class GridRider:
    """The files of one grid source still to do, made in another pass of the same jobs (the ablation's shared pass,
    :func:`repcam.pipeline.stages.maps.stream_maps`) rather than one of their own: :meth:`emit` is a
    :class:`~repcam.pipeline.maps.MapSet`'s rider. When the pass's set has the same targets (the multiclass source and
    the multi-class maps, a selection's contrast source and its contrast maps) the maps come from the same backward, so
    the grid no longer computes those maps a second time."""

    cells: list[GridCell]
    targets: list[Any]
    writers: dict[str, RecordWriter]  # weighting -> its cell's writer
    fusions: list[str]
    map_size: int

    @property
    def weightings(self) -> list[str]:
        return list(self.writers)

    def emit(self, by_weighting: dict[str, torch.Tensor]) -> None:
        emit_cells(self.writers, cell_maps({w: by_weighting[w] for w in self.writers}, self.fusions), self.map_size)

    def commit(self, progress: Callable[[], None] | None = None) -> None:
        for cell in self.cells:
            self.writers[cell.weighting].commit(weighting=cell.weighting, source=cell.source.label, fusions=self.fusions)
            if progress:
                progress()

    def discard(self) -> None:
        for writer in self.writers.values():
            writer.discard()


def _by_source(cells: Sequence[GridCell]) -> list[list[GridCell]]:
    """``cells`` grouped by their source, in order: one backward per source serves all of its weightings."""
    groups: dict[int, list[GridCell]] = {}
    for cell in cells:
        groups.setdefault(id(cell.source), []).append(cell)
    return list(groups.values())


@dataclass
class GridCell:
    """One record file of the grid: a map source under one weighting, stored in ``art`` (one map kind per fusion)."""

    source: GridSource
    weighting: str
    art: Artefact
    tta: bool = False  # the test-time augmented twin of the cell (evaluation.tta), rows named "... +TTA"


@dataclass
class Grid:
    """The grid of one evaluation split: its record files, and the rows they give."""

    cells: list[GridCell]
    fusions: list[str]
    seconds: float = 0.0  # map extraction time of the grid's own passes in this call (0 when every file was reused)
    reused: int = 0
    rows_meta: dict[str, dict[str, str]] = field(default_factory=dict)  # row name -> source / selection / weighting / fusion
    tta: TTA | None = None  # evaluation.tta: the augmentation of the cells marked tta
    shared: int = 0  # files made in the ablation's shared pass (riders), timed with the ablation's maps

    @classmethod
    def plan(cls, grid_cfg: Any, paths: Any, split: str, selections: dict, class_names: Sequence[str], n: int, gamma: float,
             maps_key: dict[str, Any], tta: TTA | None = None) -> "Grid":
        """The multi-class cells of ``evaluation.grid`` for one split (``paths``: the run's RunDir); ``maps_key`` is what every map of the split depends on
        (the model's checksum included). The fusions are not part of a file's key: a file holding every requested
        fusion is reused, whatever else it holds."""
        sources = grid_sources(grid_cfg.sources, selections, class_names, n, gamma)
        cells = [GridCell(src, w, Artefact(paths.grid_maps(split, src.stem, w),
                                           config_key({"grid": src.key, "weighting": w, **maps_key})))
                 for src in sources for w in grid_cfg.weightings]
        if tta is not None:  # every cell's test-time augmented twin, next to it
            cells += [GridCell(src, w, Artefact(paths.grid_maps(split, src.stem + "__tta", w),
                                                config_key({"grid": src.key, "weighting": w, "tta": tta.describe(), **maps_key})), True)
                      for src in sources for w in grid_cfg.weightings]
        g = cls(cells, list(grid_cfg.fusions), tta=tta)
        g.reused = len(cells) - len(g.todo())  # counted before any of its files is made (riders or extract)
        for cell in cells:
            for f in g.fusions:
                sel = cell.source.label.removeprefix("contrast ") if cell.source.kind == "contrast" else ""
                g.rows_meta[row_name(cell.source.label, cell.weighting, f, cell.tta)] = {
                    "source": cell.source.kind, "selection": sel, "weighting": cell.weighting, "fusion": f,
                    "family": f"{cell.source.kind} [{cell.weighting}]" + (TTA_SUFFIX if cell.tta else ""),
                    "tta": cell.tta}
        return g

    def _complete(self, cell: GridCell) -> bool:
        return cell.art.done() and set(self.fusions) <= set(RecordFile(cell.art.path).kinds)

    def todo(self) -> list[GridCell]:
        """The cells whose record file is missing, stale or lacks a requested fusion."""
        return [c for c in self.cells if not self._complete(c)]

    def riders(self, jobs: Sequence[tuple[int, int, Any]], map_size: int) -> list[GridRider]:
        """The files to do of every source without augmentation, one :class:`GridRider` per source, to be made in the
        ablation's shared pass; what they leave (augmented cells) :meth:`extract` makes afterwards."""
        riders = [self._rider(cells, jobs, map_size) for cells in _by_source([c for c in self.todo() if not c.tta])]
        self.shared = sum(len(r.cells) for r in riders)
        return riders

    def _rider(self, cells: list[GridCell], jobs: Sequence[tuple[int, int, Any]], map_size: int) -> GridRider:
        """The files of ``cells`` (one source, each its own weighting) with their writers open."""
        return GridRider(cells, [cells[0].source.target(c) for _, c, _ in jobs],
                         {cell.weighting: RecordWriter(cell.art, [j[0] for j in jobs], [j[1] for j in jobs], self.fusions, map_size)
                          for cell in cells}, self.fusions, map_size)

    def extract(self, model: nn.Module, cache: ImageCache, pre: Any, jobs: Sequence[tuple[int, int, Any]], device: torch.device,
                map_size: int, batch_size: int, amp: bool = False, progress: Callable[[], None] | None = None) -> None:
        """Compute every record file not already complete; each one is written atomically when done."""
        t0 = time.perf_counter()
        todo = self.todo()  # one backward per source (and augmentation) serves all of its weightings
        # Every source without augmentation shares one forward pass per batch; each augmented one has its own passes.
        passes = [_by_source([c for c in todo if not c.tta])] + [[cells] for cells in _by_source([c for c in todo if c.tta])]
        for groups in (p for p in passes if p):
            tta = self.tta if groups[0][0].tta else None
            riders = [self._rider(cells, jobs, map_size) for cells in groups]
            weightings = list(dict.fromkeys(w for r in riders for w in r.weightings))
            try:
                extract_grid(model, cache, pre, jobs, device, map_size, batch_size, weightings, self.fusions,
                             [(r.targets, r.writers) for r in riders], amp, tta)
            except BaseException:
                for r in riders:
                    r.discard()
                raise
            for r in riders:
                r.commit(progress)
        self.seconds = time.perf_counter() - t0

    def records(self) -> list[tuple[RecordFile, dict[str, str]]]:
        """(record file, {row name: map kind}) per cell, for ``evaluate_split(extra_records=...)``."""
        return [(RecordFile(c.art.path), {row_name(c.source.label, c.weighting, f, c.tta): f for f in self.fusions}) for c in self.cells]

    def split_off(self, result: Any, rows: list[dict]) -> tuple[Any, list[dict], list[dict]]:
        """(the result without the grid's accumulators, the ablation's rows, the grid's rows): the ablation's tables
        are then written from exactly what they would hold without the grid."""
        from repcam.evaluation.evaluate import SplitResult

        accs = {k: v for k, v in result.accs.items() if k not in self.rows_meta}
        irn = {k: v for k, v in result.irn.items() if k not in self.rows_meta}
        base = SplitResult(result.classes, accs, result.pairwise, result.missing_partners, result.topk, irn)
        grid_rows = [{**r, **self.rows_meta[r["method"]]} for r in rows if r["method"] in self.rows_meta]
        return base, [r for r in rows if r["method"] not in self.rows_meta], grid_rows


GRID_COLUMNS = ["method", "source", "selection", "weighting", "fusion", "tta", "miou", "diff", "ci_low", "ci_high", "strongest_baseline",
                "diff_strongest", "ci_low_strongest", "ci_high_strongest", "per_image_miou", "best_threshold", "best_miou", "pxap",
                "irn_miou", "irn_bg_threshold"]


def best_per_family(rows: Sequence[dict]) -> list[dict]:
    """The row with the highest mIoU at T of each family (source kind x weighting), in the grid's order.

    Chosen on the evaluated split itself: a selection, not a held-out estimate (see issue 15)."""
    best: dict[str, dict] = {}
    for r in rows:
        if not math.isnan(r["miou"]) and (r["family"] not in best or r["miou"] > best[r["family"]]["miou"]):
            best[r["family"]] = r
    return list(best.values())


def write_grid(out_dir: Path, split: str, rows: list[dict], grid: Grid, extra: dict | None = None) -> str:
    """grid.csv (every row, numbers as fractions), grid.json (the rows as summarize gives them) and grid.md (the best
    row per family, in the ablation's format); returns the Markdown."""
    from repcam.reporting.tables import ablation_rows, markdown_table

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(GRID_COLUMNS)
    for r in rows:
        w.writerow(["" if r.get(c) is None or (isinstance(r.get(c), float) and math.isnan(r[c])) else r[c] for c in GRID_COLUMNS])
    write_text(out_dir / "grid.csv", buf.getvalue())
    write_json(out_dir / "grid.json", {"split": split, "rows": rows, "fusions": grid.fusions, "map_files": len(grid.cells),
                                       "map_files_reused": grid.reused, "map_files_shared_pass": grid.shared,
                                       "map_seconds": grid.seconds, **(extra or {})})
    best = best_per_family(rows)
    header, table = ablation_rows(best)
    md = (f"## Evaluation grid on {split}: best row per family\n\n{len(rows)} rows (source x weighting x layer fusion) in grid.csv; "
          "here the row with the highest mIoU at T of each family (source x weighting), chosen on this split itself, so "
          "the maximum is biased upwards: confirm a choice on a split it was not chosen on. Columns as in ablation.md.\n\n")
    md += markdown_table(header, table)
    write_text(out_dir / "grid.md", md)
    return md
