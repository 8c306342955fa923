"""Stage: the stored maps of one evaluation split (``evaluation``): the multi-class model's, its contrast maps per
selection, every pair model's, and the grid's; each an artefact keyed by what changes a map, reused when stored."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterator, Sequence

from repcam.data import SegDataset
from repcam.engine.cam import ContrastTarget
from repcam.engine.tta import TTA
from repcam.method import selection as S
from repcam.models.train import ImageCache
from repcam.pipeline.context import RunContext, RunError
from repcam.pipeline.executor import ExecutorError, Unit
from repcam.pipeline.grid import Grid, GridRider
from repcam.pipeline.grid_pairs import PairGrid
from repcam.pipeline.maps import MapSet, extract_sets
from repcam.pipeline.trunk_maps import ablation_output, clear_parts, trunk_pair_maps
from repcam.pipeline.units import MapExtraction, extract_maps
from repcam.store.layout import RunDir
from repcam.store.records import RecordWriter
from repcam.store.rundir import ClassFiles
from repcam.store.storage import Artefact, config_key, read_json

MULTICLASS_KINDS = ["last", "fused", "mean", "layercam", "cam"]  # the kinds stored for the multi-class baselines


@dataclass
class SplitMaps:
    """An evaluation split with its stored maps (every artefact complete once :func:`compute_maps` returns)."""

    ds: SegDataset
    cache: ImageCache
    jobs: list[tuple[int, int, int]]  # (image, class, target) of every class present in a readable image
    maps_key: dict[str, Any]  # what changes a map: part of every map artefact's key
    multiclass: Artefact
    contrast: dict[str, Artefact]  # selection -> contrast maps (variant "contrast")
    pairs: dict[tuple[int, int], Artefact]
    grid: Grid | None
    pair_grid: PairGrid | None = None  # evaluation.grid.sources with "pairs" (repcam.pipeline.grid_pairs)
    multiclass_tta: Artefact | None = None  # evaluation.tta: the test-time augmented twins of multiclass ...
    contrast_tta: dict[str, Artefact] = field(default_factory=dict)  # ... and of contrast


def compute_maps(ctx: RunContext, split: str, mc_model, mc_path: str, models: dict[tuple[int, int], Artefact],
                 selections: dict[str, S.Selection]) -> SplitMaps:
    """Every map of ``split`` the evaluation needs, extracted where not stored (pair models through the executor)."""
    ev = ctx.cfg.evaluation
    ds = ctx.eval_dataset(split)
    names = ds.class_names
    mdir = ctx.paths.maps_dir(split)
    # Evaluation images can be many: spilled to disk so memory stays flat (training images stay in memory).
    cache = ImageCache(ds, ctx.preprocess, crop=ev.protocol == "crop", spill_dir=mdir)
    # Only what changes a map goes into its key: thresholds and variants reuse the stored maps.
    maps_key = {"split": split, "eval_options": ctx.cfg.data.eval_options.get(split, {}), "protocol": ev.protocol,
                "map_size": ev.map_size, "max": ctx.cfg.data.max_eval_images}
    if split in ctx.cfg.cross_eval:  # another data set under this split's name: its spec changes every map
        maps_key["cross_eval"] = ctx.cfg.cross_eval[split]
    if ev.amp:  # only then, so that runs from before the option keep their keys
        maps_key["amp"] = True

    jobs = [(i, c, c) for i, s in enumerate(ds.samples) for c in sorted(s.labels)]
    ok = set(cache.ok(sorted({j[0] for j in jobs})))
    jobs = [j for j in jobs if j[0] in ok]
    mc_sha = read_json(RunDir.meta(ctx.paths / mc_path))["sha256"]
    mc_art = Artefact(ctx.paths.multiclass_maps(split), config_key({"mc": mc_sha, **maps_key}))
    contrast_arts = _contrast_artefacts(ctx, split, selections, names, mc_sha, maps_key) if "contrast" in ev.variants else {}
    tta = run_tta(ctx)
    mc_tta, contrast_tta = None, {}
    # With the grid's multiclass source, its +TTA rows are the Grad-CAM / LayerCAM maps: the multi-class twin then
    # holds only what the grid lacks, CAM (the augmented passes are the costly part of a run).
    tta_kinds = ["cam"] if ev.grid is not None and "multiclass" in ev.grid.sources else MULTICLASS_KINDS
    if tta is not None:  # the twins: same jobs, maps averaged over the augmentation, stored next to the plain ones
        tkey = {**maps_key, "tta": tta.describe()}
        if tta_kinds != MULTICLASS_KINDS:
            tkey["kinds"] = tta_kinds
        mc_tta = Artefact(tta_path(mc_art.path), config_key({"mc": mc_sha, **tkey}))
        contrast_tta = {n: Artefact(tta_path(a.path), config_key({"twin_of": a.key, "tta": tta.describe()}))
                        for n, a in contrast_arts.items()}
    pair_arts = {}
    files = ClassFiles(names)
    for (a, b), model_art in models.items():
        pair_arts[(a, b)] = Artefact(ctx.paths.pair_maps(split, files, names[a], names[b]), config_key({"pair": model_art.meta()["sha256"], **maps_key}))
    grid = Grid.plan(ev.grid, ctx.paths, split, selections, names, ctx.cfg.selection.n, ev.contrast_gamma, {"mc": mc_sha, **maps_key},
                     tta) if ev.grid else None
    pair_grid = None
    if ev.grid and "pairs" in ev.grid.sources:  # the pair models' maps under every weighting and layer fusion
        shas = {p: art.meta()["sha256"] for p, art in models.items()}
        pair_grid = PairGrid.plan(ev.grid, ctx.paths, split, names, shas, selections, maps_key)
        grid.rows_meta.update(pair_grid.rows_meta)
    todo = [(p, a) for p, a in pair_arts.items() if not a.done()]
    contrast_todo = [(n, a, None) for n, a in contrast_arts.items() if not a.done()]
    contrast_todo += [(n, a, tta) for n, a in contrast_tta.items() if not a.done()]
    total = len(todo) + 1 + (mc_tta is not None) + len(contrast_todo)
    with ctx.timed(f"maps {split}"), ctx.progress(f"maps on {split} ({len(todo)} pair models to do)", total) as adv:
        def contrast_targets(sel_name: str) -> list[ContrastTarget]:
            sel = selections[sel_name]
            return [ContrastTarget(c, tuple(sel.get(c, ())), ev.contrast_gamma) for _, c, _ in jobs]

        # The multi-class model's maps and its contrast maps per selection are streamed to disk in this process (the
        # biggest files) from one shared pass: one forward per batch, one backward per file to do. The grid's files
        # ride on it: a grid source with the targets of one of those files shares its backward, any other gets its own.
        shared = []
        if mc_art.done():
            adv()
        else:
            shared.append((mc_art, MULTICLASS_KINDS, [t for _, _, t in jobs]))
        shared += [(art, ["last", "fused"], contrast_targets(n)) for n, art, aug in contrast_todo if aug is None]
        riders = grid.riders(jobs, ev.map_size) if grid is not None else []
        if shared or riders:  # (the riders' time is the maps', not the grid's: grid.json counts their files apart)
            stream_maps(ctx, mc_model, cache, jobs, shared, riders=riders)
            adv(len(shared))
        if mc_tta is not None:
            if not mc_tta.done():
                stream_maps(ctx, mc_model, cache, jobs, [(mc_tta, tta_kinds, [t for _, _, t in jobs])], tta)
            adv()
        for sel_name, art, aug in contrast_todo:
            if aug is not None:  # test-time augmentation: one file per pass
                stream_maps(ctx, mc_model, cache, jobs, [(art, ["last", "fused"], contrast_targets(sel_name))], aug)
                adv()

        if ctx.cfg.pairs.freeze_until is not None and ctx.executor.kind == "inprocess":
            # Pair models on a frozen trunk share its forward pass (repcam.pipeline.trunk_maps), and a pair model's
            # file of the grid's pairs source shares its ablation file's backward. The files it leaves (a model whose
            # trunk differs) and the other executors' go through the per-model units (and PairGrid.extract).
            outputs = {p: [ablation_output(art)] for p, art in todo}
            if pair_grid is not None:
                for p, art in pair_grid.pair_arts.items():
                    if not pair_grid.complete(art):
                        outputs.setdefault(p, []).append(pair_grid.output(art))
            ablation = {art.path for _, art in todo}
            rejected = trunk_pair_maps(ctx, outputs, models, jobs, cache, names, lambda art: adv() if art.path in ablation else None)
            todo = [(p, a) for p, a in todo if p in rejected]

        def units() -> Iterator[Unit]:  # built lazily: only the units in flight hold their images and weights
            for (a, b), art in todo:
                pj = [(i, c, 0 if c == a else 1) for i, c, _ in jobs if c in (a, b)]
                yield Unit(art, extract_maps, map_unit(ctx, 2, models[(a, b)].load_torch(), pj, cache), ctx.threads)

        try:
            for art, records in ctx.executor.imap(units()):
                art.save_npz(records)
                adv()
        except ExecutorError as e:
            raise RunError(str(e)) from e
        clear_parts({art.path.parent for art in [*pair_arts.values(), *(pair_grid.pair_arts.values() if pair_grid else [])]})  # every pair file is complete: parts are orphans

    maps = SplitMaps(ds, cache, jobs, maps_key, mc_art, contrast_arts, pair_arts, grid, pair_grid, mc_tta, contrast_tta)
    _grid_maps(ctx, split, maps, mc_model, models)
    return maps


def _contrast_artefacts(ctx: RunContext, split: str, selections: dict[str, S.Selection], names: Sequence[str], mc_sha: str,
                        maps_key: dict[str, Any]) -> dict[str, Artefact]:
    """selection -> the artefact of its contrast maps (the multi-class model's, against the selection's representatives)."""
    ev = ctx.cfg.evaluation
    contrast_arts = {}
    for sel_name, sel in selections.items():
        reps = {names[c]: [names[r] for r in sel[c]] for c in sorted(sel)}
        key = config_key({"mc": mc_sha, "contrast": reps, "gamma": ev.contrast_gamma, **maps_key})
        contrast_arts[sel_name] = Artefact(ctx.paths.contrast_maps(split, sel_name), key)
    return contrast_arts


def _grid_maps(ctx: RunContext, split: str, maps: SplitMaps, mc_model, models: dict[tuple[int, int], Artefact]) -> None:
    """The grid's maps of ``split`` (``evaluation.grid``), extracted where not stored; nothing without a grid."""
    ev = ctx.cfg.evaluation
    grid, pair_grid, cache, jobs = maps.grid, maps.pair_grid, maps.cache, maps.jobs
    if grid is not None:  # evaluation.grid: the multi-class model's maps per (source, weighting), reused when stored
        with ctx.timed(f"grid maps {split}"), ctx.progress(f"grid maps on {split}", len(grid.cells)) as adv:
            adv(len(grid.cells) - len(grid.todo()))
            grid.extract(mc_model, cache, ctx.preprocess, jobs, ctx.device, ev.map_size, ev.batch_size, ev.amp, adv)
        if pair_grid is not None:
            with ctx.progress(f"grid pair maps on {split}", len(pair_grid.pair_arts) + len(pair_grid.fused_arts)) as adv:
                pair_grid.extract(lambda p: ctx.stored_model(2, models[p]), cache, ctx.preprocess, jobs, ctx.device,
                                  ev.map_size, ev.batch_size, ev.amp, adv)


def run_tta(ctx: RunContext) -> TTA | None:
    """The run's test-time augmentation (``evaluation.tta``), or None when off."""
    ev = ctx.cfg.evaluation
    return TTA(tuple(float(s) for s in ev.tta_scales), ev.tta_flip) if ev.tta else None


def tta_path(path):
    """Where the test-time augmented twin of a map file lives: next to it, ``<stem>__tta.npz``."""
    return path.with_name(f"{path.stem}__tta{path.suffix}")


def stream_maps(ctx: RunContext, model, cache: ImageCache, jobs: list, files: list[tuple[Artefact, list[str], list]],
                tta: TTA | None = None, riders: Sequence[GridRider] = ()) -> None:
    """Extract files of maps of the same ``jobs`` in this process, from one shared pass
    (:func:`~repcam.pipeline.maps.extract_sets`; with ``tta``, one file): ``files`` = (artefact, kinds, one target per
    job), and the grid's ``riders`` (a rider whose targets equal a file's shares that file's backward). The maps go to
    disk as they come, and the files are committed together when the pass is complete; nothing is kept if it fails
    (a kill during the pass redoes the pass, which costs less than one pass per file)."""
    ev = ctx.cfg.evaluation
    writers = [RecordWriter(art, [j[0] for j in jobs], [j[1] for j in jobs], kinds, ev.map_size) for art, kinds, _ in files]
    sets = [MapSet(kinds, targets, w) for (_, kinds, targets), w in zip(files, writers)]
    for rider in riders:
        same = next((k for k, s in enumerate(sets) if s.rider is None and list(s.targets) == rider.targets), None)
        if same is None:
            sets.append(MapSet([], rider.targets, _no_kinds, rider.emit, rider.weightings))
        else:
            sets[same] = replace(sets[same], rider=rider.emit, weightings=rider.weightings)
    try:
        extract_sets(model, cache, ctx.preprocess, jobs, sets, ctx.device, ev.map_size, ev.batch_size, amp=ev.amp, tta=tta,
                     channels_last=ctx.channels_last)
    except BaseException:
        for w in writers:
            w.discard()
        for rider in riders:
            rider.discard()
        raise
    for w in writers:
        w.commit()
    for rider in riders:
        rider.commit()


def _no_kinds(kind: str, maps: Any) -> None:
    """The sink of a map set that keeps no kind (a grid rider's own set): never called."""
    raise AssertionError(f"a rider's own map set got maps of kind {kind!r}")


def map_unit(ctx: RunContext, num_classes: int, state: dict, jobs: list, cache: ImageCache) -> MapExtraction:
    """The executor's unit that extracts the last-layer and fused (A) maps of one model."""
    ids = sorted({j[0] for j in jobs})
    ev = ctx.cfg.evaluation
    return MapExtraction(ctx.model_spec(num_classes), state, tuple(ids), cache.stack(ids), tuple(jobs), ("last", "fused"),
                         ev.map_size, ev.batch_size, str(ctx.device), ev.amp, ctx.channels_last, batch_by_class=True)
