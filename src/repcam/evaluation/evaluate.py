"""Turn stored maps into per-method accuracies: the baselines, each selection with and without A, Top-k and All."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, partial
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from repcam.data.base import SegDataset
from repcam.evaluation.bootstrap import paired_bootstrap
from repcam.evaluation.irn import IRNSweep
from repcam.evaluation.metrics import DEFAULT_SWEEP, ClassMask, IoUAccumulator, RecordCounts, prepare_map
from repcam.evaluation.pool import OrderedPool
from repcam.method.methods import BASELINE, MAP_KINDS, TRAINED_BASELINES, Method
from repcam.method.representative import fuse_stored
from repcam.method.selection import Selection, topk_select
from repcam.models.backbones import centre_crop_box
from repcam.pipeline.maps import MapRecords
from repcam.store.records import RecordFile, record_rows
from repcam.store.spool import MapSpool
from repcam.store.storage import config_key

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
    # Row group -> (its key, None when its maps have no stored identity; its rows in table order): what a rerun may reuse.
    groups: dict[str, tuple[str | None, list[str]]] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)  # rows taken from ``stored`` rather than scored


@dataclass
class StoredRows:
    """Rows a previous evaluation of the split scored, for :func:`evaluate_split` to reuse (issue 28: results keyed
    per row): the row groups it stored ({group: (key, rows)}), every row's accumulator and IRN sweep."""

    groups: Mapping[str, tuple[str | None, Sequence[str]]]
    accs: Mapping[str, IoUAccumulator]
    irn: Mapping[str, Mapping[float, float]]

    def reusable(self, group: str, key: str | None) -> bool:
        """Whether ``group`` was stored with ``key`` (never for an unkeyed group) and all of its rows are here."""
        stored = self.groups.get(group)
        return (key is not None and stored is not None and stored[0] == key
                and all(n in self.accs and n in self.irn for n in stored[1]))


def _identity(records: MapRecords | RecordFile) -> str | None:
    """The identity of a map file that stored scores are keyed by: its verified checksum (None for in-memory maps)."""
    return records.checksum() if isinstance(records, RecordFile) else None


def row_group_keys(
    scoring_key: str | None, mc_records: MapRecords, partners: Mapping[int, Mapping[int, MapRecords]],
    selections: Mapping[str, Selection], topk: Sequence[int], variants: Sequence[str],
    contrast_records: Mapping[str, MapRecords], baseline_records: Mapping[str, MapRecords],
    extra_records: Sequence[tuple[MapRecords, Mapping[str, str]]],
) -> dict[str, str | None]:
    """The key of every row group of a split: the rows of one group are scored from the same map files, and their
    key is those files' checksums plus what decides which rows they give (issue 28: a row added to a run is the only
    one scored). ``scoring_key`` holds what decides how any map is scored (data, threshold, protocol); a group
    whose maps are in memory, or every group when ``scoring_key`` is None, has no key (always scored).
    """
    known: dict[object, str | None] = {}

    def identity(records: MapRecords) -> str | None:  # once per file: a pair file serves both of its classes
        ref = records.path if isinstance(records, RecordFile) else id(records)
        if ref not in known:
            known[ref] = _identity(records)
        return known[ref]

    def key(*files: MapRecords, **what) -> str | None:
        ids = [identity(f) for f in files]
        return None if scoring_key is None or None in ids else config_key({"scoring": scoring_key, "files": ids, **what})

    mc = identity(mc_records)
    gradcam_mc = mc if "with-gradcam" in variants else ""  # only then do the selection rows read the multi-class maps
    modes = [m for m in ("max", "geomean") if m in variants]
    pair_ids = {(c, s): identity(r) for c in sorted(partners) for s, r in sorted(partners[c].items())}

    def pairs_of(sel: Selection) -> dict[str, str | None]:
        return {f"{c}-{s}": pair_ids.get((c, s), "absent") for c in sorted(sel) for s in sel[c]}

    def sel_key(name: str, pair_ids: dict[str, str | None], reps: object) -> str | None:
        if scoring_key is None or None in pair_ids.values() or gradcam_mc is None:
            return None
        return config_key({"scoring": scoring_key, "selection": name, "reps": reps, "pairs": pair_ids,
                           "modes": modes, "with_gradcam": gradcam_mc})

    out: dict[str, str | None] = {"multiclass": key(mc_records, kinds=computed_kinds(mc_records))}
    out.update({f"baseline {n}": key(r) for n, r in baseline_records.items()})
    for name, sel in selections.items():
        out[f"selection {name}"] = sel_key(name, pairs_of(sel), {str(c): [int(r) for r in sel[c]] for c in sorted(sel)})
    all_pairs = {f"{c}-{s}": i for (c, s), i in pair_ids.items()}
    for k in topk:  # chosen from the pairwise table of every pair model's maps
        out[f"selection Top-{k}"] = sel_key(f"Top-{k}", all_pairs, "top-k")
    if "contrast" in variants:
        out.update({f"contrast {n}": key(r) for n, r in contrast_records.items()})
    for i, (r, named) in enumerate(extra_records):
        out[_extra_group(i, r)] = key(r, rows=dict(named))
    return out


def _extra_group(i: int, records: MapRecords) -> str:
    """The group of one ``extra_records`` file: its file name (stable when other files are added), else its place."""
    return f"maps {records.path.name}" if isinstance(records, RecordFile) else f"maps #{i}"


def _by_image(records: MapRecords | RecordFile, cls: int, kinds: Sequence[str], images: Sequence[int],
              load: bool = True) -> dict[str, dict[int, np.ndarray]]:
    """{kind: {image: map}} of one class for some images; a record file gives up only those rows. Without ``load``
    only which images have a map ({image: None}): enough to name a reused row where a fresh evaluation meets it."""
    sel = np.nonzero((np.asarray(records["cls"]) == cls) & np.isin(records["image"], images))[0]
    ids = [int(records["image"][i]) for i in sel]
    if not load:
        return {kind: dict.fromkeys(ids) for kind in kinds}
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
    stored: StoredRows | None = None,
    scoring_key: str | None = None,
    workers: int = 1,
) -> SplitResult:
    """Evaluate every method class by class, in chunks of ``chunk_size`` images, so memory does not grow with the data.

    ``pair_records(c)`` returns {partner s: maps of the (c, s) pair model}. ``variants`` adds rows per selection
    (see :data:`repcam.method.methods.VARIANTS`); ``contrast_records`` holds the multi-class model's contrast maps per selection;
    ``baseline_records`` {row name: maps of kind "map"} the trained baselines' (:data:`BASELINE_ROWS`);
    ``extra_records`` (records, {row name: map kind}) pairs add one row per named kind (the grid, repcam.pipeline.grid).
    ``on_map(row name, image, class, map)`` also gets every map scored (the faithfulness columns, repcam.evaluation.faith_ablation).

    Rows are scored in groups that share their map files (:func:`row_group_keys`, keyed under ``scoring_key``): a
    group ``stored`` with the same key is taken from it instead of scored, in the place a fresh evaluation gives it,
    so the result equals a fresh one's. The pairwise table, Top-k choices and missing-partner counts are always computed.

    ``workers`` threads count the maps' pixels (:class:`~repcam.evaluation.pool.OrderedPool`); the counts are added in
    the order of a one-thread evaluation, so the result is the same for any number.
    """
    C = ds.num_classes
    topk = list(topk)
    contrast_records = contrast_records or {}
    baseline_records = baseline_records or {}
    partners_of = {c: pair_records(c) for c in range(C)}
    keys = row_group_keys(scoring_key, mc_records, partners_of, selections, topk, variants, contrast_records,
                          baseline_records, extra_records)
    reuse = {g for g, k in keys.items() if stored is not None and stored.reusable(g, k)}
    pairwise = np.full((C, C), np.nan)
    missing: dict[str, int] = {}
    topk_sel: dict[str, Selection] = {f"Top-{k}": {} for k in topk}
    kinds = computed_kinds(mc_records)
    class_modes = [m for m in ("max", "geomean") if m in variants]
    # Both closed even when scoring fails: the pool's threads stopped, the spool's folder removed.
    with OrderedPool(workers) as pool, MapSpool() as spool:
        rows = _Rows(ds, threshold, on_map, spool, reuse, pool, _one_class_images(mc_records))
        for c in range(C):
            images = sorted({int(i) for i, k in zip(mc_records["image"], mc_records["cls"]) if k == c})
            chunks = [images[b : b + chunk_size] for b in range(0, len(images), chunk_size)]
            partners = partners_of[c]
            pairs = _PairScores(ds, c, partners, threshold, pool)
            if topk:  # Top-k needs class c's whole pairwise row before any fused map: one extra pass
                for chunk in chunks:
                    pairs.score(chunk, {s: _by_image(r, c, ["last"], chunk)["last"] for s, r in partners.items()},
                                {i: ClassMask(eval_mask(ds, i, protocol), c) for i in chunk})
                pairwise[c, list(partners)] = pairs.row()
                _select_topk(pairwise, c, topk, topk_sel)
            for chunk in chunks:  # only one chunk of one class's maps is in memory at a time
                maps = _chunk_maps(ds, c, chunk, protocol, mc_records, kinds, partners, contrast_records, baseline_records,
                                   extra_records, variants, reuse)
                if not topk:
                    pairs.score(chunk, maps.last, maps.masks)
                for i in chunk:
                    sels = list(selections.items()) + [(n, s) for n, s in topk_sel.items() if c in s]
                    _score_image(rows, i, c, maps, sels, missing, variants, class_modes)
            if not topk:
                pairwise[c, list(partners)] = pairs.row()
            pool.drain()  # class c is scored: the progress bar says so
            if progress:
                progress(1)
        scored_irn = _irn_results(ds, rows, protocol)
    accs = {n: rows.accs[n] if g not in reuse else stored.accs[n] for n, g in rows.order.items()}
    irn = {n: dict(stored.irn[n]) if g in reuse else scored_irn[n] for n, g in rows.order.items() if g in reuse or n in scored_irn}
    groups = {g: (keys.get(g), [n for n, h in rows.order.items() if h == g]) for g in dict.fromkeys(rows.order.values())}
    reused = [n for n, g in rows.order.items() if g in reuse]
    return SplitResult(list(ds.class_names), accs, pairwise, missing, topk_sel, irn, groups, reused)


Map = np.ndarray | Callable[[], np.ndarray]
"""A map to score, or a function that makes it (a fusion of stored maps, run on a pool thread)."""


class _Rows:
    """The accumulator and IRN sweep of every row of a split, filled map by map on the pool. An image with records
    of one class only is scored for IRN at once, from the same prepared map; the maps of the others wait in the
    spool until every class is scored. Every map also goes to ``on_map``. Rows of a group in ``reuse`` are only named
    (in the order a fresh evaluation meets them), not scored."""

    def __init__(self, ds: SegDataset, threshold: float, on_map: Callable[[str, int, int, np.ndarray], None] | None,
                 spool: MapSpool, reuse: frozenset[str] | set[str], pool: OrderedPool, alone: set[int]) -> None:
        self.ds, self.threshold, self.on_map, self.reuse, self.pool = ds, threshold, on_map, reuse, pool
        self.accs: dict[str, IoUAccumulator] = {}
        self.sweeps: dict[str, IRNSweep] = {}
        self.order: dict[str, str] = {}  # row -> its group, in the order rows are first met
        # The IRN protocol needs every image's maps of all its classes at once: spooled to disk (flat memory), except
        # for the images ``alone`` with one class's records, whose sweep needs that class's map only.
        self.spool, self.alone = spool, alone

    def scores(self, group: str, names: Sequence[str]) -> bool:
        """Name the rows of ``group`` (in order); whether their maps are to be scored (False when reused)."""
        for name in names:
            self.order.setdefault(name, group)
        return group not in self.reuse

    def add(self, group: str, name: str, image: int, c: int, cam: Map, mask: ClassMask) -> None:
        """Score one map of row ``name`` of ``group`` (image, class ``c``) against its evaluation mask. Its pixels
        are counted on the pool (``cam`` must not change after), the counts added in the order maps are added."""
        if not self.scores(group, [name]):
            return
        if name not in self.accs:
            self.accs[name] = IoUAccumulator(self.ds.num_classes, primary=self.threshold)
            self.sweeps[name] = IRNSweep(self.ds.num_classes, DEFAULT_SWEEP)
        acc, sweep, image_id = self.accs[name], self.sweeps[name], self.ds.samples[image].id
        if self.on_map is not None:  # the faithfulness columns' judge runs here, on this thread (then the only one)
            cam = cam() if callable(cam) else cam
            self.on_map(name, image, c, cam)
        alone = image in self.alone
        self.pool.submit(_count_record, acc, image_id, c, cam, mask, sweep if alone else None, not alone,
                         then=partial(self._apply, name, image, c, image_id))

    def _apply(self, name: str, image: int, c: int, image_id: str, counted: _Counted) -> None:
        counts, confusions, half = counted
        self.accs[name].add_counts(image_id, c, counts)
        if confusions is not None:
            self.sweeps[name].add_confusions(confusions)
        if half is not None:  # in the order maps are added: the spool's files are that order
            self.spool.add(name, image, c, half)


_Counted = tuple[RecordCounts, list[np.ndarray] | None, np.ndarray | None]


def _count_record(acc: IoUAccumulator, image_id: str, c: int, cam: Map, mask: ClassMask, sweep: IRNSweep | None = None,
                  spool: bool = False) -> _Counted:
    """The pixel work of one record, on a pool thread: (``acc``'s counts, the confusions of ``sweep`` when the image
    has this class's record only, the map as the spool stores it (float16) when ``spool``)."""
    cam = np.asarray(cam() if callable(cam) else cam)
    cm = acc.check(image_id, c, cam, mask)
    if sweep is None:
        return acc.counts(cam, cm), None, np.ascontiguousarray(cam, dtype=np.float16) if spool else None
    # The IRN sweep reads the map as the spool gives it back (float16; repcam.store.spool): scored without the spool,
    # it gets the same values, and when the map is float16 already (stored maps) the same prepared map as the IoU.
    half = np.ascontiguousarray(cam, dtype=np.float16)
    prepared = prepare_map(cam, cm.shape)
    same = half.dtype == cam.dtype or np.array_equal(half, cam)
    irn_map = prepared if same else prepare_map(half.astype(np.float32), cm.shape)
    return acc.counts_prepared(prepared, cm), sweep.confusions_one(irn_map, c, cm.mask), None


class _PairScores:
    """Class ``c``'s last-layer maps of each (c, s) pair model scored alone: row c of the pairwise mIoU table."""

    def __init__(self, ds: SegDataset, c: int, partners: Mapping[int, MapRecords], threshold: float,
                 pool: OrderedPool) -> None:
        self.ds, self.c, self.partners, self.pool = ds, c, list(partners), pool
        self.acc = {s: IoUAccumulator(ds.num_classes, thresholds=(threshold,), primary=threshold) for s in partners}

    def score(self, chunk: list[int], last: dict, masks: dict) -> None:
        """Add the chunk's images' maps ({partner: {image: map}}) against their masks ({image: class c's mask})."""
        for s in self.partners:
            for i in chunk:
                if i in last[s]:
                    image_id = self.ds.samples[i].id
                    self.pool.submit(_count_record, self.acc[s], image_id, self.c, last[s][i].astype(np.float32), masks[i],
                                     then=partial(_add_counts, self.acc[s], image_id, self.c))

    def row(self) -> list[float]:
        """Class c's IoU from each partner's pair model, in partner order."""
        self.pool.drain()
        return [self.acc[s].per_class_iou()[self.c] for s in self.partners]


def _add_counts(acc: IoUAccumulator, image_id: str, c: int, counted: _Counted) -> None:
    """Add a pair model's record (its counts only: the pairwise table has no IRN sweep)."""
    acc.add_counts(image_id, c, counted[0])


def _one_class_images(mc_records: MapRecords) -> set[int]:
    """The images with records of one class only: a row scores at most one map of each (every row's records are
    the multi-class model's (image, class) pairs or fewer), so its IRN sweep needs no other class's map."""
    classes: dict[int, set[int]] = {}
    for i, c in zip(np.asarray(mc_records["image"]).tolist(), np.asarray(mc_records["cls"]).tolist()):
        classes.setdefault(int(i), set()).add(int(c))
    return {i for i, cs in classes.items() if len(cs) == 1}


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
    extra: list[tuple[str, dict[str, dict[int, np.ndarray]], Mapping[str, str]]]  # (group, kind -> table, {row: kind})


def _chunk_maps(
    ds: SegDataset, c: int, chunk: list[int], protocol: str, mc_records: MapRecords, kinds: Sequence[str],
    partners: Mapping[int, MapRecords], contrast_records: Mapping[str, MapRecords], baseline_records: Mapping[str, MapRecords],
    extra_records: Sequence[tuple[MapRecords, Mapping[str, str]]], variants: Sequence[str],
    reuse: frozenset[str] | set[str] = frozenset(),
) -> _ChunkMaps:
    """Every stored map of class ``c`` on the images of ``chunk`` that a row scores, and their evaluation masks; of the
    baseline, contrast and extra files of a group in ``reuse`` only which images they have (the maps are not read).
    The multi-class and pair maps are always read: rows of other groups and the pairwise table use them too."""
    mc = _by_image(mc_records, c, kinds, chunk)
    pair_maps = {s: _by_image(r, c, ["last", "fused"], chunk) for s, r in partners.items()}
    last = {s: m["last"] for s, m in pair_maps.items()}
    fused = {s: m["fused"] for s, m in pair_maps.items()}
    masks = {i: ClassMask(eval_mask(ds, i, protocol), c) for i in chunk}
    contrast_tables = {n: _by_image(r, c, ["last", "fused"], chunk, f"contrast {n}" not in reuse)
                       for n, r in contrast_records.items() if "contrast" in variants}
    trained = {n: _by_image(r, c, ["map"], chunk, f"baseline {n}" not in reuse)["map"] for n, r in baseline_records.items()}
    extra = [(g, _by_image(r, c, list(named.values()), chunk, g not in reuse), named)
             for g, r, named in ((_extra_group(j, r), r, named) for j, (r, named) in enumerate(extra_records))]
    return _ChunkMaps(mc, last, fused, masks, contrast_tables, trained, extra)


def _score_image(
    rows: _Rows, i: int, c: int, maps: _ChunkMaps,
    selections: list[tuple[str, Selection]], missing: dict[str, int], variants: Sequence[str], class_modes: list[str],
) -> None:
    """Score every row's map of image ``i``, class ``c``: the multi-class and trained baselines, each selection's
    fused maps (counting in ``missing`` the images a representative's pair model lacks), contrast and extra rows.
    The group names passed to ``rows`` are those of :func:`row_group_keys`."""
    mc, last, fused, masks = maps.mc, maps.last, maps.fused, maps.masks
    for name, kind in MC_METHODS.items():
        if kind in mc and i in mc[kind]:
            rows.add("multiclass", name, i, c, mc[kind][i].astype(np.float32), masks[i])
    for name, trained in maps.trained.items():
        if i in trained and rows.scores(f"baseline {name}", [name]):
            rows.add(f"baseline {name}", name, i, c, trained[i].astype(np.float32), masks[i])
    for sel_name, sel in selections:
        reps = sel.get(c, [])
        avail = [s for s in reps if s in last and i in last[s]]
        if len(avail) < len(reps):
            missing[sel_name] = missing.get(sel_name, 0) + 1
        with_gradcam = "with-gradcam" in variants and "last" in mc
        names = [Method(sel_name, "last").name, Method(sel_name, "A").name,
                 *[Method(sel_name, "A", mode).name for mode in class_modes],
                 *([Method(sel_name, "A", with_gradcam=True).name] if with_gradcam else [])]
        if not avail or not rows.scores(f"selection {sel_name}", names):
            continue  # (a reused group's fused maps are not even made)
        group = f"selection {sel_name}"
        # F over the representatives' stored maps: the paper's fusion (repcam.method.representative), made on the pool
        rows.add(group, names[0], i, c, partial(fuse_stored, [last[s][i] for s in avail]), masks[i])
        af_stack = np.stack([fused[s][i] for s in avail])  # stacked once for the mean and the variants
        af_map = cache(partial(fuse_stored, af_stack))  # made once: the with-Grad-CAM variant fuses it again
        rows.add(group, names[1], i, c, af_map, masks[i])
        for mode, name in zip(class_modes, names[2:]):
            rows.add(group, name, i, c, partial(fuse_stored, af_stack, mode), masks[i])
        if with_gradcam:
            rows.add(group, names[-1], i, c, partial(_fuse_with, af_map, mc["last"][i]), masks[i])
    for sel_name, records in maps.contrast.items():
        for layers, kind in (("last", "last"), ("A", "fused")):
            name = Method(sel_name, layers, source="contrast").name
            if i in records[kind] and rows.scores(f"contrast {sel_name}", [name]):
                rows.add(f"contrast {sel_name}", name, i, c, records[kind][i].astype(np.float32), masks[i])
    for group, tables, named in maps.extra:  # after every other row: the others' order in accs stays as without them
        for name, kind in named.items():
            if i in tables[kind] and rows.scores(group, [name]):
                rows.add(group, name, i, c, tables[kind][i].astype(np.float32), masks[i])


def _fuse_with(fused: Callable[[], np.ndarray], gradcam: np.ndarray) -> np.ndarray:
    """The with-Grad-CAM variant: the fused map and the multi-class model's Grad-CAM map, fused."""
    return fuse_stored([fused(), gradcam])


def _irn_results(ds: SegDataset, rows: _Rows, protocol: str) -> dict[str, dict[float, float]]:
    """The IRN protocol's (C+1)-label mIoU per background threshold of every row: the sweeps of the images with one
    class were filled while scoring, those of the others are filled here from the spooled maps, on the pool."""
    spool = rows.spool
    for i in spool.images():  # each mask loaded once for all methods
        mask = eval_mask(ds, i, protocol)
        for name in spool.methods:
            maps = spool.maps_of(name, i)
            if maps:
                rows.pool.submit(rows.sweeps[name].confusions, {c: m.astype(np.float32) for c, m in maps.items()}, mask,
                                 then=rows.sweeps[name].add_confusions)
    rows.pool.drain()
    return {name: sweep.result() for name, sweep in rows.sweeps.items()}


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
