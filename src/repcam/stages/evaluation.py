"""Stage: scores and tables of one evaluation split (``evaluation``), from the stored maps (:mod:`.maps`)."""

from __future__ import annotations

import yaml

from repcam import selection as S
from repcam.baselines import baseline_records
from repcam.context import RunContext
from repcam.evaluate import evaluate_split, summarize
from repcam.grid import write_grid
from repcam.maps import MapRecords
from repcam.records import RecordFile
from repcam.rundir import results_key
from repcam.stages.maps import compute_maps
from repcam.storage import Artefact, write_json_mapping
from repcam.tables import write_tables


def evaluate(ctx: RunContext, split: str, mc_model, mc_path: str, models: dict[tuple[int, int], Artefact],
             selections: dict[str, S.Selection], baseline_arts: dict[str, Artefact], skipped_train: int) -> list[dict]:
    """Every method's row on ``split``, written with the split's tables and accumulators; returns the rows."""
    ev = ctx.cfg.evaluation
    m = compute_maps(ctx, split, mc_model, mc_path, models, selections)
    ds, cache, grid = m.ds, m.cache, m.grid
    with ctx.timed(f"maps {split}"):
        trained = baseline_records(ctx, ds.num_classes, cache, m.jobs, split, m.maps_key, baseline_arts)

    def pair_records(c: int) -> dict[int, MapRecords]:
        return {(b if a == c else a): RecordFile(art.path) for (a, b), art in m.pairs.items() if c in (a, b)}

    topk = range(1, ctx.cfg.selection.n + 1) if ctx.cfg.selection.pairwise else ()
    with ctx.timed(f"evaluate {split}"), ctx.progress(f"evaluate {split}", ds.num_classes) as adv:
        contrast = {n: RecordFile(a.path) for n, a in m.contrast.items()}
        result = evaluate_split(ds, RecordFile(m.multiclass.path), pair_records, selections, ev.threshold, ev.protocol, topk, adv,
                                variants=ev.variants, contrast_records=contrast, baseline_records=trained,
                                extra_records=(grid.records() if grid is not None else [])
                                + (m.pair_grid.records() if m.pair_grid is not None else []))
    rows = summarize(result, seed=ctx.cfg.seed)
    if grid is not None:  # the grid's rows go to grid.*; the ablation's tables stay as without the grid
        result, rows, grid_rows = grid.split_off(result, rows)
        write_grid(ctx.paths.results_dir(split), split, grid_rows, grid,
                   {"pair_map_seconds": m.pair_grid.seconds} if m.pair_grid is not None else None)
    # The key of the settings behind these numbers: the report shows results whose key differs from the
    # current config.yaml's (or whose split is no longer evaluated) as stale, not as this run's.
    key = results_key(yaml.safe_load(yaml.safe_dump(ctx.cfg.to_dict(), sort_keys=False)), split)
    write_tables(ctx.paths.results_dir(split), split, result, rows, ctx.notes, skipped=len(cache.bad),
                 extra={"settings_key": key, "skipped_train_images": skipped_train})
    write_json_mapping(ctx.paths.accumulators(split), ((k, v.state_dict) for k, v in result.accs.items()))
    return rows
