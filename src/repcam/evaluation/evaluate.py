"""Turn stored maps into per-method accuracies: the baselines, each selection with and without A, Top-k and All."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from repcam.data.base import SegDataset
from repcam.evaluation.bootstrap import paired_bootstrap
from repcam.evaluation.irn import IRNSweep
from repcam.evaluation.metrics import DEFAULT_SWEEP, ClassMask, IoUAccumulator
from repcam.method.methods import MAP_KINDS, TRAINED_BASELINES, Method
from repcam.method.representative import fuse_stored
from repcam.method.selection import Selection, topk_select
from repcam.models.backbones import centre_crop_box
from repcam.pipeline.maps import MapRecords
from repcam.store.records import RecordFile, record_rows
from repcam.store.spool import MapSpool

BASELINE = "Grad-CAM"
MC_METHODS = {row: mk.kind for row, mk in MAP_KINDS.items()}  # multi-class model maps: row name -> stored map kind
BASELINE_ROWS = TRAINED_BASELINES  # trained baselines (repcam.models.baselines): switch -> row


@dataclass
class SplitResult:
    """What :func:`evaluate_split` returns: the class names, an IoU accumulator per row name, the pairwise mIoU matrix,
    per selection the images whose representative's pair model was missing, the Top-k selections and the IRN sweeps."""

    classes: list[str]
    accs: dict[str, IoUAccumulator]
    pairwise: np.ndarray  # [c, s]: mIoU of class c's last-layer maps from the (c, s) pair model; NaN if not trained
    missing_partners: dict[str, int] = field(default_factory=dict)
    topk: dict[str, Selection] = field(default_factory=dict)
    irn: dict[str, dict[float, float]] = field(default_factory=dict)  # method -> bg threshold -> (C+1)-label mIoU


def _by_image(records: MapRecords | RecordFile, cls: int, kinds: Sequence[str], images: Sequence[int]) -> dict[str, dict[int, np.ndarray]]:
    """{kind: {image: map}} of one class for some images; a record file gives up only those rows."""
    sel = np.nonzero((np.asarray(records["cls"]) == cls) & np.isin(records["image"], images))[0]
    ids = [int(records["image"][i]) for i in sel]
    return {kind: dict(zip(ids, record_rows(records, kind, sel))) for kind in kinds}


def computed_kinds(records: MapRecords | RecordFile) -> list[str]:
    """The multi-class map kinds stored with values: a kind the backbone cannot give (CAM without GAP + FC) is
    stored as NaN maps, so its first row tells."""
    first = np.arange(min(1, len(records["cls"])))
    return [k for k in dict.fromkeys(MC_METHODS.values()) if k in records and not np.isnan(record_rows(records, k, first).astype(np.float32)).any()]


def evaluate_split(
    ds: SegDataset,
    mc_records: MapRecords,
    pair_records: Callable[[int], dict[int, MapRecords]],
    selections: dict[str, Selection],
    threshold: float,
    protocol: str,
    topk: Iterable[int] = (),
    progress: Callable[[int], None] | None = None,
    variants: Sequence[str] = (),
    contrast_records: Mapping[str, MapRecords] | None = None,
    chunk_size: int = 64,
    baseline_records: Mapping[str, MapRecords] | None = None,
    extra_records: Sequence[tuple[MapRecords, Mapping[str, str]]] = (),
    on_map: Callable[[str, int, int, np.ndarray], None] | None = None,
) -> SplitResult:
    """Evaluate every method class by class, in chunks of ``chunk_size`` images, so memory does not grow with the data.

    ``pair_records(c)`` returns {partner s: maps of the (c, s) pair model}. ``variants`` adds rows per selection
    (see :data:`repcam.method.methods.VARIANTS`); ``contrast_records`` holds the multi-class model's contrast maps per selection;
    ``baseline_records`` {row name: maps of kind "map"} the trained baselines' (:data:`BASELINE_ROWS`);
    ``extra_records`` (records, {row name: map kind}) pairs add one row per named kind (the grid, repcam.pipeline.grid).
    ``on_map(row name, image, class, map)`` also gets every map scored (the faithfulness columns, repcam.evaluation.faith_ablation).
    """
    C = ds.num_classes
    rows = _Rows(ds, threshold, on_map)
    pairwise = np.full((C, C), np.nan)
    missing: dict[str, int] = {}
    topk_sel: dict[str, Selection] = {f"Top-{k}": {} for k in topk}
    kinds = computed_kinds(mc_records)
    class_modes = [m for m in ("max", "geomean") if m in variants]
    contrast_records = contrast_records or {}
    baseline_records = baseline_records or {}
    for c in range(C):
        images = sorted({int(i) for i, k in zip(mc_records["image"], mc_records["cls"]) if k == c})
        chunks = [images[b : b + chunk_size] for b in range(0, len(images), chunk_size)]
        partners = pair_records(c)
        pairs = _PairScores(ds, c, partners, threshold)
        if topk:  # Top-k needs class c's whole pairwise row before any fused map: one extra pass
            for chunk in chunks:
                pairs.score(chunk, {s: _by_image(r, c, ["last"], chunk)["last"] for s, r in partners.items()},
                            {i: ClassMask(eval_mask(ds, i, protocol), c) for i in chunk})
            pairwise[c, list(partners)] = pairs.row()
            _select_topk(pairwise, c, topk, topk_sel)
        for chunk in chunks:  # only one chunk of one class's maps is in memory at a time
            maps = _chunk_maps(ds, c, chunk, protocol, mc_records, kinds, partners, contrast_records, baseline_records,
                               extra_records, variants)
            if not topk:
                pairs.score(chunk, maps.last, maps.masks)
            for i in chunk:
                _score_image(rows.add, i, c, maps, list(selections.items()) + [(n, s) for n, s in topk_sel.items() if c in s],
                             missing, variants, class_modes)
        if not topk:
            pairwise[c, list(partners)] = pairs.row()
        if progress:
            progress(1)
    return SplitResult(list(ds.class_names), rows.accs, pairwise, missing, topk_sel, _irn_results(ds, rows.spool, protocol))


class _Rows:
    """The accumulator of every row of a split, filled map by map; each map also goes to the IRN spool and ``on_map``."""

    def __init__(self, ds: SegDataset, threshold: float, on_map: Callable[[str, int, int, np.ndarray], None] | None) -> None:
        self.ds, self.threshold, self.on_map = ds, threshold, on_map
        self.accs: dict[str, IoUAccumulator] = {}
        # The IRN protocol needs every image's maps of all its classes at once: spool them to disk (flat memory).
        self.spool = MapSpool()

    def add(self, name: str, image: int, c: int, cam: np.ndarray, mask: ClassMask) -> None:
        """Score one map of row ``name`` (image, class ``c``) against its evaluation mask."""
        if name not in self.accs:
            self.accs[name] = IoUAccumulator(self.ds.num_classes, primary=self.threshold)
        self.accs[name].add(self.ds.samples[image].id, c, cam, mask)
        self.spool.add(name, image, c, cam)
        if self.on_map is not None:
            self.on_map(name, image, c, cam)


class _PairScores:
    """Class ``c``'s last-layer maps of each (c, s) pair model scored alone: row c of the pairwise mIoU table."""

    def __init__(self, ds: SegDataset, c: int, partners: Mapping[int, MapRecords], threshold: float) -> None:
        self.ds, self.c, self.partners = ds, c, list(partners)
        self.acc = {s: IoUAccumulator(ds.num_classes, thresholds=(threshold,), primary=threshold) for s in partners}

    def score(self, chunk: list[int], last: dict, masks: dict) -> None:
        """Add the chunk's images' maps ({partner: {image: map}}) against their masks ({image: class c's mask})."""
        for s in self.partners:
            for i in chunk:
                if i in last[s]:
                    self.acc[s].add(self.ds.samples[i].id, self.c, last[s][i].astype(np.float32), masks[i])

    def row(self) -> list[float]:
        """Class c's IoU from each partner's pair model, in partner order."""
        return [self.acc[s].per_class_iou()[self.c] for s in self.partners]


def _select_topk(pairwise: np.ndarray, c: int, topk: Iterable[int], topk_sel: dict[str, Selection]) -> None:
    """Class c's Top-k representatives into ``topk_sel`` for each k, once row c of ``pairwise`` has k values."""
    for k in topk:
        # Rows of classes not evaluated yet are NaN, and NaN is never selected: only row c matters here.
        if np.isfinite(pairwise[c]).sum() >= k:
            topk_sel[f"Top-{k}"][c] = topk_select(pairwise, k)[c]


@dataclass
class _ChunkMaps:
    """The stored maps of one class on one chunk of images, each table {image: map}, and the images' masks."""

    mc: dict[str, dict[int, np.ndarray]]  # multi-class model: kind -> table
    last: dict[int, dict[int, np.ndarray]]  # pair models: partner -> last-layer table
    fused: dict[int, dict[int, np.ndarray]]  # pair models: partner -> +A (fused layers) table
    masks: dict[int, ClassMask]  # each built once per image, shared by every row's map (the pixel work of a mask)
    contrast: dict[str, dict[str, dict[int, np.ndarray]]]  # selection -> "last" / "fused" -> table
    trained: dict[str, dict[int, np.ndarray]]  # trained baseline row -> table
    extra: list[tuple[dict[str, dict[int, np.ndarray]], Mapping[str, str]]]  # (kind -> table, {row name: kind})


def _chunk_maps(
    ds: SegDataset, c: int, chunk: list[int], protocol: str, mc_records: MapRecords, kinds: Sequence[str],
    partners: Mapping[int, MapRecords], contrast_records: Mapping[str, MapRecords], baseline_records: Mapping[str, MapRecords],
    extra_records: Sequence[tuple[MapRecords, Mapping[str, str]]], variants: Sequence[str],
) -> _ChunkMaps:
    """Every stored map of class ``c`` on the images of ``chunk`` that a row scores, and their evaluation masks."""
    mc = _by_image(mc_records, c, kinds, chunk)
    pair_maps = {s: _by_image(r, c, ["last", "fused"], chunk) for s, r in partners.items()}
    last = {s: m["last"] for s, m in pair_maps.items()}
    fused = {s: m["fused"] for s, m in pair_maps.items()}
    masks = {i: ClassMask(eval_mask(ds, i, protocol), c) for i in chunk}
    contrast_tables = {n: _by_image(r, c, ["last", "fused"], chunk) for n, r in contrast_records.items() if "contrast" in variants}
    trained = {n: _by_image(r, c, ["map"], chunk)["map"] for n, r in baseline_records.items()}
    extra = [(_by_image(r, c, list(named.values()), chunk), named) for r, named in extra_records]
    return _ChunkMaps(mc, last, fused, masks, contrast_tables, trained, extra)


def _score_image(
    add: Callable[[str, int, int, np.ndarray, ClassMask], None], i: int, c: int, maps: _ChunkMaps,
    selections: list[tuple[str, Selection]], missing: dict[str, int], variants: Sequence[str], class_modes: list[str],
) -> None:
    """Score every row's map of image ``i``, class ``c``: the multi-class and trained baselines, each selection's
    fused maps (counting in ``missing`` the images a representative's pair model lacks), contrast and extra rows."""
    mc, last, fused, masks = maps.mc, maps.last, maps.fused, maps.masks
    for name, kind in MC_METHODS.items():
        if kind in mc and i in mc[kind]:
            add(name, i, c, mc[kind][i].astype(np.float32), masks[i])
    for name, trained in maps.trained.items():
        if i in trained:
            add(name, i, c, trained[i].astype(np.float32), masks[i])
    for sel_name, sel in selections:
        reps = sel.get(c, [])
        avail = [s for s in reps if s in last and i in last[s]]
        if len(avail) < len(reps):
            missing[sel_name] = missing.get(sel_name, 0) + 1
        if not avail:
            continue
        # F over the representatives' stored maps: the paper's fusion (repcam.method.representative)
        add(Method(sel_name, "last").name, i, c, fuse_stored([last[s][i] for s in avail]), masks[i])
        af_stack = np.stack([fused[s][i] for s in avail])  # stacked once for the mean and the variants
        af_map = fuse_stored(af_stack)
        add(Method(sel_name, "A").name, i, c, af_map, masks[i])
        for mode in class_modes:
            add(Method(sel_name, "A", mode).name, i, c, fuse_stored(af_stack, mode), masks[i])
        if "with-gradcam" in variants and "last" in mc:
            add(Method(sel_name, "A", with_gradcam=True).name, i, c, fuse_stored([af_map, mc["last"][i]]), masks[i])
    for sel_name, records in maps.contrast.items():
        for layers, kind in (("last", "last"), ("A", "fused")):
            if i in records[kind]:
                add(Method(sel_name, layers, source="contrast").name, i, c, records[kind][i].astype(np.float32), masks[i])
    for tables, named in maps.extra:  # after every other row: the others' order in accs stays as without them
        for name, kind in named.items():
            if i in tables[kind]:
                add(name, i, c, tables[kind][i].astype(np.float32), masks[i])


def _irn_results(ds: SegDataset, spool: MapSpool, protocol: str) -> dict[str, dict[float, float]]:
    """The IRN protocol's (C+1)-label mIoU per background threshold of every row, from the spooled maps (then closed)."""
    try:
        sweeps = {name: IRNSweep(ds.num_classes, DEFAULT_SWEEP) for name in spool.methods}
        for i in spool.images():  # each mask loaded once for all methods
            mask = eval_mask(ds, i, protocol)
            for name, sweep in sweeps.items():
                maps = spool.maps_of(name, i)
                if maps:
                    sweep.add({c: m.astype(np.float32) for c, m in maps.items()}, mask)
    finally:
        spool.close()
    return {name: sweep.result() for name, sweep in sweeps.items()}


def eval_mask(ds: SegDataset, i: int, protocol: str) -> np.ndarray:
    """Image ``i``'s mask as the maps are scored against it: whole, or the centre crop of the ``crop`` protocol."""
    mask = ds.mask(i)
    if protocol == "crop":
        left, top, right, bottom = centre_crop_box((mask.shape[1], mask.shape[0]))
        mask = mask[top:bottom, left:right]
    return mask


def strongest_baseline(result: SplitResult) -> str | None:
    """The baseline (CAM, Grad-CAM, mean of layers, LayerCAM, Grad-CAM+A, and ACoL / CBAM when trained) with the highest mIoU."""
    rows = set(MC_METHODS) | set(BASELINE_ROWS.values())
    cands = [(acc.miou(), name) for name, acc in result.accs.items() if name in rows and not np.isnan(acc.miou())]
    return max(cands)[1] if cands else None


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def paired_test(acc: IoUAccumulator, base: IoUAccumulator, n_boot: int, seed: int, per_class: bool = False) -> tuple[float, float, float, bool, list | None]:
    """(Δ, low, high, significant, per-class [Δ, low, high] rows or None) of ``acc`` against ``base``."""
    try:
        res = paired_bootstrap(acc, base, n_boot=n_boot, seed=seed, per_class=per_class)
    except ValueError:  # evaluated on a different set of (image, class) pairs: no paired interval
        return acc.miou() - base.miou(), float("nan"), float("nan"), False, None
    (d, lo, hi), classes = res if per_class else (res, None)
    rows = [[_num(x) for x in t] for t in zip(*classes)] if classes is not None else None
    return d, lo, hi, bool(lo > 0 or hi < 0), rows


def summarize(result: SplitResult, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One row per method: mIoU at T, per-image mIoU, best threshold, PxAP, IRN mIoU, and the difference to
    Grad-CAM and to the strongest multi-class baseline, each with a paired 95% bootstrap CI over images."""
    base = result.accs.get(BASELINE)
    strongest = strongest_baseline(result)
    rows = []
    for name, acc in result.accs.items():
        best_t, best = acc.best_threshold() if len(acc.thresholds) > 1 else (acc.primary, acc.miou())
        row = {
            "method": name,
            "miou": acc.miou(),
            "per_image_miou": acc.per_image_miou(),
            "best_threshold": best_t,
            "best_miou": best,
            "pxap": acc.mpxap(),
            "records": len(acc.records),
        }
        if name in result.irn and result.irn[name]:
            bg, value = max(result.irn[name].items(), key=lambda kv: (kv[1], -kv[0]))
            row.update(irn_miou=value, irn_bg_threshold=bg)
        if base is not None and name != BASELINE:
            d, lo, hi, sig, _ = paired_test(acc, base, n_boot, seed)
            row.update(diff=d, ci_low=lo, ci_high=hi, significant=sig)
        if strongest is not None:
            row["strongest_baseline"] = strongest
            if name != strongest:
                d, lo, hi, sig, per_class = paired_test(acc, result.accs[strongest], n_boot, seed, per_class=True)
                row.update(diff_strongest=d, ci_low_strongest=lo, ci_high_strongest=hi, significant_strongest=sig)
                if per_class is not None:
                    row["per_class_strongest"] = per_class
        rows.append(row)
    return rows
