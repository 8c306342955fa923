"""Stage: scores and tables of one evaluation split (``evaluation``), from the stored maps (:mod:`.maps`)."""

from __future__ import annotations

import yaml

from repcam.data.cross import describe, parse_spec
from repcam.evaluation.evaluate import MC_METHODS, StoredRows, computed_kinds, evaluate_split, summarize
from repcam.evaluation.faith_ablation import FaithfulnessColumns, store_key
from repcam.evaluation.metrics import IoUAccumulator
from repcam.method import selection as S
from repcam.models.baselines import baseline_records
from repcam.pipeline.context import RunContext
from repcam.method.methods import Method
from repcam.pipeline.grid import TTA_SUFFIX, write_grid
from repcam.pipeline.maps import MapRecords
from repcam.pipeline.stages.maps import SplitMaps, compute_maps
from repcam.reporting.tables import write_tables
from repcam.store.layout import RunDir
from repcam.store.records import RecordFile
from repcam.store.rundir import results_key, scoring_key
from repcam.store.storage import Artefact, ArtefactError, config_key, read_json, write_json, write_json_mapping


def evaluate(ctx: RunContext, split: str, mc_model, mc_path: str, models: dict[tuple[int, int], Artefact],
             selections: dict[str, S.Selection], baseline_arts: dict[str, Artefact], skipped_train: int) -> list[dict]:
    """Every method's row on ``split``, written with the split's tables and accumulators; returns the rows.

    Results whose inputs (settings, models, selections) are those of this call are reused as stored: a rerun of a
    finished run, or one with another evaluation split added, re-scores nothing it already scored. Otherwise the rows
    whose maps and scoring are unchanged are reused (:func:`stored_groups`) and only the others scored: a grid row or
    selection added to a finished run scores only its own rows.
    """
    ev = ctx.cfg.evaluation
    inputs = results_inputs_key(ctx, split, mc_path, models, selections, baseline_arts, skipped_train)
    stored = stored_rows(ctx, split, inputs)
    if stored is not None:
        ctx.say(f"results on {split}: reused (same settings and models as when they were scored)")
        return stored
    config = yaml.safe_load(yaml.safe_dump(ctx.cfg.to_dict(), sort_keys=False))
    # Per-row reuse needs every map that is scored to pass through evaluate_split: not with the faithfulness columns.
    reusable = None if ev.faithfulness else stored_groups(ctx, split)
    ctx.paths.results_inputs(split).unlink(missing_ok=True)  # until rewritten last, the folder is not complete
    ctx.paths.row_groups(split).unlink(missing_ok=True)  # and the stored groups vouch for nothing until rewritten
    m = compute_maps(ctx, split, mc_model, mc_path, models, selections)
    ds, cache, grid = m.ds, m.cache, m.grid
    with ctx.timed(f"maps {split}"):
        trained = baseline_records(ctx, ds.num_classes, cache, m.jobs, split, m.maps_key, baseline_arts)

    def pair_records(c: int) -> dict[int, MapRecords]:
        return {(b if a == c else a): RecordFile(art.path) for (a, b), art in m.pairs.items() if c in (a, b)}

    topk = range(1, ctx.cfg.selection.n + 1) if ctx.cfg.selection.pairwise else ()
    faith = faithfulness_columns(ctx, split, mc_model, mc_path, m) if ev.faithfulness else None
    with ctx.timed(f"evaluate {split}"), ctx.progress(f"evaluate {split}", ds.num_classes) as adv:
        contrast = {n: RecordFile(a.path) for n, a in m.contrast.items()}
        # Without pair models a selection has no pair rows (its contrast maps are scored from contrast_records).
        pair_selections = selections if ctx.cfg.pairs.train else {}
        result = evaluate_split(ds, RecordFile(m.multiclass.path), pair_records, pair_selections, ev.threshold, ev.protocol, topk,
                                adv if faith is None else lambda n: (faith.checkpoint(), adv(n)),
                                variants=ev.variants, contrast_records=contrast, baseline_records=trained,
                                extra_records=tta_records(m) + (grid.records() if grid is not None else [])
                                + (m.pair_grid.records() if m.pair_grid is not None else []),
                                on_map=None if faith is None else faith.add, stored=reusable,
                                scoring_key=None if faith is not None else scoring_key(config, split),
                                # the run's threads count pixels (the judge model of the faithfulness columns runs
                                # in the calling thread, on torch's threads: then one)
                                workers=ctx.threads if faith is None else 1)
    if result.reused:
        n = len(result.accs) - len(result.reused)
        ctx.say(f"results on {split}: {n} row{'s' * (n != 1)} scored, {len(result.reused)} reused "
                "(their maps and scoring settings are unchanged)")
    rows = summarize(result, seed=ctx.cfg.seed)
    row_groups = {"groups": {g: {"key": k, "rows": names} for g, (k, names) in result.groups.items()},
                  "irn": {n: [[bg, v] for bg, v in sweep.items()] for n, sweep in result.irn.items()}}
    if grid is not None:  # the grid's rows go to grid.*; the ablation's tables stay as without the grid
        grid_accs = {k: v for k, v in result.accs.items() if k in grid.rows_meta}
        # Their per-image counts too (results/<split>/grid_accumulators.json): paired intervals across runs need them.
        write_json_mapping(ctx.paths.grid_accumulators(split), ((k, v.state_dict) for k, v in grid_accs.items()))
        result, rows, grid_rows = grid.split_off(result, rows)
        write_grid(ctx.paths.results_dir(split), split, grid_rows, grid,
                   {"pair_map_seconds": m.pair_grid.seconds} if m.pair_grid is not None else None)
    # The key of the settings behind these numbers: the report shows results whose key differs from the
    # current config.yaml's (or whose split is no longer evaluated) as stale, not as this run's.
    key = results_key(config, split)
    extra = {"settings_key": key, "skipped_train_images": skipped_train}
    notes = list(ctx.notes)
    if split in ctx.cfg.cross_eval:  # another data set: say which classes were compared and which left out
        spec = parse_spec(ctx.cfg.cross_eval[split], f"cross_eval.{split}")
        notes.append(describe(ds, split, spec))
        extra["cross_eval"] = {**spec.to_dict(), "images": len(ds), "pairs": ds.pairs, "left_out": ds.left_out,
                               "missing": ds.missing, "dropped_images": ds.dropped}
    if faith is not None:  # only then: with the switch off, ablation.json is byte for byte as before it
        with ctx.timed(f"faithfulness {split}"):
            faith.attach(rows, seed=ctx.cfg.seed)
        ctx.timings[f"faithfulness {split}"] += faith.seconds
        extra["faithfulness"] = faith.info(mc_path, ev.faithfulness)
        ctx.say(f"faithfulness on {split}: {faith.computed} maps scored by the judge model, the rest reused "
                f"({ctx.paths.faithfulness_records(split)})")
    write_tables(ctx.paths.results_dir(split), split, result, rows, notes, skipped=len(cache.bad), extra=extra)
    write_json_mapping(ctx.paths.accumulators(split), ((k, v.state_dict) for k, v in result.accs.items()))
    write_json(ctx.paths.row_groups(split), row_groups)
    write_json(ctx.paths.results_inputs(split), {"split": split, "inputs_key": inputs})
    return rows


def stored_groups(ctx: RunContext, split: str) -> StoredRows | None:
    """The row groups a previous evaluation of ``split`` stored (``row_groups.json``) with their rows' accumulators
    (``accumulators.json``, and ``grid_accumulators.json`` for the grid's rows) and IRN sweeps; None if there are
    none or any file is missing or damaged (then every row is scored)."""
    try:
        stored = read_json(ctx.paths.row_groups(split))
        accs = dict(read_json(ctx.paths.accumulators(split)))
        if ctx.paths.grid_accumulators(split).is_file():
            accs.update(read_json(ctx.paths.grid_accumulators(split)))
        groups = {str(g): (v["key"], [str(n) for n in v["rows"]]) for g, v in stored["groups"].items()}
        wanted = {n for _, names in groups.values() for n in names}
        return StoredRows(groups, {n: IoUAccumulator.from_state_dict(s) for n, s in accs.items() if n in wanted},
                          {str(n): {float(bg): float(v) for bg, v in sweep} for n, sweep in stored["irn"].items()})
    except (OSError, ValueError, TypeError, KeyError, AttributeError, ArtefactError):
        return None  # missing or damaged: score every row


def results_inputs_key(ctx: RunContext, split: str, mc_path: str, models: dict[tuple[int, int], Artefact],
                       selections: dict[str, S.Selection], baseline_arts: dict[str, Artefact], skipped_train: int) -> str:
    """The key of everything ``results/<split>/`` is computed from: the split's settings (:func:`results_key`, which
    leaves out the other evaluation splits), the stored models' checksums and the selections."""
    settings = results_key(yaml.safe_load(yaml.safe_dump(ctx.cfg.to_dict(), sort_keys=False)), split)
    return config_key({
        "settings": settings,
        "multiclass": read_json(RunDir.meta(ctx.paths / mc_path))["sha256"],
        "pairs": {f"{a}-{b}": art.meta()["sha256"] for (a, b), art in sorted(models.items())},
        "baselines": {kind: art.meta()["sha256"] for kind, art in sorted(baseline_arts.items())},
        "selections": {name: {str(c): [int(r) for r in reps] for c, reps in sorted(sel.items())} for name, sel in selections.items()},
        "skipped_train": skipped_train,
    })


def stored_rows(ctx: RunContext, split: str, inputs: str) -> list[dict] | None:
    """The stored rows of ``split`` if its results are complete and were computed from ``inputs``, else None."""
    try:
        if read_json(ctx.paths.results_inputs(split)).get("inputs_key") != inputs or not ctx.paths.accumulators(split).is_file():
            return None
        return ctx.paths.read_rows(split)
    except (OSError, ValueError, AttributeError, ArtefactError):
        return None  # missing or damaged: score again


def faithfulness_columns(ctx: RunContext, split: str, judge, judge_path: str, m: SplitMaps) -> FaithfulnessColumns:
    """The faithfulness columns of ``split`` (``evaluation.faithfulness``): the ablation's rows (not the grid's) scored
    by ``judge``, the baseline multi-class model, with the values stored in ``results/<split>/faithfulness.npz``."""
    ev = ctx.cfg.evaluation
    sha = read_json(RunDir.meta(ctx.paths / judge_path))["sha256"]
    key = store_key(sha, ctx.data_key(), split, ctx.cfg.data.eval_options.get(split, {}), ev.protocol, ctx.preprocess, ctx.cfg.seed)
    grid_rows = m.grid.rows_meta if m.grid is not None else {}
    return FaithfulnessColumns(ev.faithfulness, judge, m.ds, m.cache, ctx.preprocess, ev.protocol, ctx.device,
                               Artefact(ctx.paths.faithfulness_records(split), key), ctx.cfg.seed, ev.batch_size,
                               rows=lambda name: name not in grid_rows)


def tta_records(m: SplitMaps) -> list[tuple[RecordFile, dict[str, str]]]:
    """The rows of the test-time augmented twins (``evaluation.tta``): "<row> +TTA" for every multi-class baseline
    row the backbone gives and every contrast row, from their ``__tta`` map files."""
    out: list[tuple[RecordFile, dict[str, str]]] = []
    if m.multiclass_tta is not None:
        rec = RecordFile(m.multiclass_tta.path)
        kinds = set(computed_kinds(rec))
        out.append((rec, {name + TTA_SUFFIX: kind for name, kind in MC_METHODS.items() if kind in kinds}))
    for sel_name, art in m.contrast_tta.items():
        named = {Method(sel_name, layers, source="contrast").name + TTA_SUFFIX: kind for layers, kind in (("last", "last"), ("A", "fused"))}
        out.append((RecordFile(art.path), named))
    return out
