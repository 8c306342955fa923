"""Score maps from any extractor against a data set's masks and the model: ``repcam score`` and :func:`score_maps`.

    from repcam.evaluation.score import score_maps, make_extractor
    result = score_maps({"gradcam": make_extractor("gradcam", model), "mine": my_fn}, dataset, model,
                        transform=to_tensor)
    print(result.markdown())

An extractor is any callable ``(images (B, 3, H, W), class indices (B,)) -> (B, H, W)`` maps (tensor or array).
Each map is min-max normalised per record (a constant map is clipped to [0, 1]). Records are the (image, class)
pairs of the data set (every class of an image's labels). Metrics (definitions in :mod:`repcam.evaluation.faithfulness`):
mIoU at T = 0.15 and PxAP (:class:`repcam.evaluation.metrics.IoUAccumulator`, maps resized to the mask), deletion and
insertion AUC, ROAD MoRF and LeRF, Average Drop and Increase in Confidence (%), MaxBoxAccV2 (%, at the model's
input resolution, the mask resized by nearest neighbour). Every method after the first gets its difference to the
first with a paired 95% bootstrap interval over images (PxAP: point difference only, it is not a per-record mean).
``repcam score``'s data set and model from its arguments: :mod:`repcam.evaluation.score_inputs`.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from repcam.data.base import IGNORE_INDEX, SegDataset
from repcam.evaluation import faithfulness as fm
from repcam.evaluation.bootstrap import paired_bootstrap
from repcam.evaluation.metric_names import FAITHFULNESS_KEYS, METRICS, _fmt, format_cell, metric_keys  # noqa: F401 - importable from here
from repcam.evaluation.metrics import IoUAccumulator, record_pxap, safe_div
from repcam.errors import ScoreError  # noqa: F401 - defined in repcam.errors, importable from here

Extractor = Callable[[torch.Tensor, torch.Tensor], Any]


def make_extractor(name: str, model: nn.Module) -> Extractor:
    """An extractor by name: one of :data:`repcam.stock.METHODS` (the methods of ``repcam explain --model``, the same
    maps), or ``pgc:<Class>`` (e.g. ``pgc:GradCAM``) for a pytorch-grad-cam CAM class on the model's deepest auto
    layer (needs the optional ``grad-cam`` package)."""
    from repcam.engine.layers import LayerError, resolve_layers
    from repcam.errors import StockError
    from repcam.stock.engine import method_extractor
    from repcam.stock.methods import score_method

    name = score_method(name)
    if not name.startswith("pgc:"):
        try:
            return method_extractor(name, model)
        except StockError as e:
            raise ScoreError(f"method {name!r}: {e}") from None
    try:
        deepest = resolve_layers(model, "auto")[-1]
    except LayerError as e:
        raise ScoreError(f"method {name!r}: {e}") from None
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise ScoreError(f"method {name!r} needs pytorch-grad-cam: pip install grad-cam") from None
    cls_name = name[4:]
    pgc_cls = getattr(pytorch_grad_cam, cls_name, None)
    if not isinstance(pgc_cls, type):
        raise ScoreError(f"method {name!r}: pytorch_grad_cam has no class {cls_name!r} (e.g. pgc:GradCAM, pgc:LayerCAM)")
    pgc = pgc_cls(model=model, target_layers=[deepest[1]])

    def extract(x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(pgc(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in cls]))

    return extract


def normalise_maps(maps: Any, shape: tuple[int, int, int], name: str) -> torch.Tensor:
    """(B, H, W) float32 maps in [0, 1]: min-max per map; a constant map is clipped to [0, 1]."""
    m = torch.as_tensor(np.asarray(maps.detach().cpu() if torch.is_tensor(maps) else maps), dtype=torch.float32)
    if tuple(m.shape) != shape:
        raise ScoreError(f"method {name!r} returned maps of shape {tuple(m.shape)}, expected {shape}")
    if not torch.isfinite(m).all():
        raise ScoreError(f"method {name!r} returned NaN or inf in its maps")
    flat = m.reshape(len(m), -1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    span = hi - lo
    return torch.where(span > 0, (m - lo) / span.clamp_min(1e-12), m.clamp(0, 1))


@dataclass
class ScoreResult:
    """Per-record values of every method and metric, and the summary table against the first method."""

    methods: list[str]
    image_ids: list[str]
    values: dict[str, dict[str, np.ndarray]]  # method -> metric -> (N,) per-record values
    summary: dict[str, dict[str, float]]  # method -> metric -> value (the table's number)
    intervals: dict[str, dict[str, tuple[float, float, float]]] = field(default_factory=dict)  # method -> metric -> diff, lo, hi
    metrics: tuple[str, ...] = tuple(k for k, _, _ in METRICS)  # the keys scored, in METRICS order
    classes: list[int] = field(default_factory=list)  # per record: the data set's class index
    class_names: list[str] = field(default_factory=list)  # the data set's class names
    counts: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # method -> intersection/union (N,) at the mIoU threshold
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> images the data set's loader skipped (not scored)
    skipped_ids: list[tuple[str, str]] = field(default_factory=list)  # (image id, reason) of each

    def skipped_line(self) -> str:
        """``"1 image skipped (no mask: 1): cat2"``, or ``""`` when nothing was skipped."""
        total = sum(self.skipped.values())
        if not total:
            return ""
        ids = [i for i, _ in self.skipped_ids]
        shown = ", ".join(map(str, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.skipped.items(), key=lambda kv: -kv[1]))
        return f"{total} image{'s' if total != 1 else ''} skipped ({reasons})" + (f": {shown}" if shown else "")

    def _columns(self) -> list[tuple[str, str, str]]:
        return [m for m in METRICS if m[0] in self.metrics]

    def rows(self) -> list[dict[str, Any]]:
        """One row per (method, metric): value, difference to the first method and its interval (None where none)."""
        out = []
        for m in self.methods:
            for key, title, better in self._columns():
                d = self.intervals.get(m, {}).get(key)
                out.append({"method": m, "metric": key, "title": title, "better": better, "value": _num(self.summary[m][key]),
                            "diff": _num(d[0]) if d else None, "low": _num(d[1]) if d else None, "high": _num(d[2]) if d else None})
        return out

    def markdown(self) -> str:
        """The table: one row per method, one column per metric; rows after the first add `diff [low, high]` vs it."""
        from repcam.reporting.tables import md_cell  # method names are user strings (pgc:<Class>)

        columns = self._columns()
        head = "| method | " + " | ".join(f"{t} ({'↑' if b == 'higher' else '↓'})" for _, t, b in columns) + " |"
        lines = [head, "|---|" + "---:|" * len(columns)]
        for m in self.methods:
            cells = [format_cell(self.summary[m][key], self.intervals.get(m, {}).get(key)) for key, _, _ in columns]
            lines.append(f"| {md_cell(m)} | " + " | ".join(cells) + " |")
        n = len(self.image_ids)
        lines.append(f"\n{n} records ((image, class) pairs) on {len(set(self.image_ids))} images; in brackets: difference to "
                     f"{self.methods[0]} with a paired 95% bootstrap interval over images (PxAP: point difference only).")
        if self.skipped_line():
            lines.append(f"Not scored: {self.skipped_line()}.")
        return "\n".join(lines) + "\n"

    def write(self, path: Path) -> Path:
        """Write the table as .md, .csv or .json (by suffix), atomically."""
        from repcam.store.storage import atomic_write

        suffix = path.suffix.lower()
        if suffix == ".json":
            text = json.dumps({"records": len(self.image_ids), "reference": self.methods[0], "rows": self.rows(),
                               "skipped": dict(self.skipped), "skipped_ids": [list(x) for x in self.skipped_ids]}, indent=2)
        elif suffix == ".csv":
            import csv
            import io

            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=["method", "metric", "title", "better", "value", "diff", "low", "high"])
            w.writeheader()
            w.writerows(self.rows())
            text = buf.getvalue()
        else:
            text = self.markdown()
        atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return path


    def record_rows(self) -> list[dict[str, Any]]:
        """One row per method and (image, class) record, with every metric's per-record value: ``miou`` is the record's
        IoU at the threshold with its ``intersection`` and ``union`` pixel counts (the table's mIoU is, per class, the
        summed intersection over the summed union, then the mean over classes), ``pxap`` the record's own PxAP (the
        table's pools each class's pixels first), the faithfulness columns the per-record values whose mean is the table's
        (MaxBoxAccV2: the record's box accuracy at the threshold chosen over all records)."""
        out = []
        for m in self.methods:
            vals, cnt = self.values.get(m, {}), self.counts.get(m, {})
            for r, image in enumerate(self.image_ids):
                c = self.classes[r] if r < len(self.classes) else None
                row: dict[str, Any] = {"method": m, "image": image, "class_index": c,
                                       "class": self.class_names[c] if c is not None and c < len(self.class_names) else ""}
                if "intersection" in cnt:
                    row["intersection"], row["union"] = int(cnt["intersection"][r]), int(cnt["union"][r])
                for key in self.metrics:
                    if key in vals:
                        row[key] = _num(float(vals[key][r]))
                out.append(row)
        return out

    def write_records(self, path: Path) -> Path:
        """Write :meth:`record_rows` as CSV (empty cell: undefined, e.g. the IoU of a record with no mask and no map pixel), atomically."""
        import csv
        import io

        from repcam.store.storage import atomic_write

        rows = self.record_rows()
        fields = ["method", "image", "class_index", "class", "intersection", "union", *self.metrics]
        fields = [f for f in fields if any(f in r for r in rows)] or fields
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        atomic_write(Path(path), lambda tmp: tmp.write_text(buf.getvalue(), encoding="utf-8"))
        return Path(path)


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


def box_target(mask: np.ndarray, cls: int, size: tuple[int, int]) -> np.ndarray:
    """MaxBoxAccV2's ground truth of one record: class ``cls``'s pixels of a label ``mask`` (values class + 1,
    :data:`~repcam.data.base.IGNORE_INDEX` ignored), resized to the model input ``size`` by nearest neighbour."""
    small = F.interpolate(torch.from_numpy(mask)[None, None].float(), size=tuple(size), mode="nearest")[0, 0].numpy()
    return (small == cls + 1) & (small != IGNORE_INDEX)


def record_values(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    cls: torch.Tensor,
    metrics: Sequence[str] = FAITHFULNESS_KEYS,
    masks: Sequence[tuple[np.ndarray, int]] | None = None,
    *,
    steps: int = fm.DEFAULT_STEPS,
    road_percentiles: Sequence[float] = fm.ROAD_PERCENTILES,
    box_thresholds: Sequence[float] = fm.BOX_CAM_THRESHOLDS,
) -> dict[str, np.ndarray]:
    """Per-record values of ``metrics`` (keys of :data:`FAITHFULNESS_KEYS`) for one batch: ``x`` (B, 3, S, S) the
    model's inputs, ``maps`` (B, S, S) normalised maps (:func:`normalise_maps`), ``cls`` (B,) the model outputs scored.

    Returns {key: (B,) values}, Average Drop and Increase in %, except ``maxboxacc_v2``: the (B, D, T) correctness
    of :func:`repcam.evaluation.faithfulness.box_correct` (MaxBoxAccV2 chooses its thresholds over all records: pass them
    stacked to :func:`~repcam.evaluation.faithfulness.max_box_acc_v2`), from ``masks`` = (label mask, data set class) per record.
    ROAD draws from torch's global RNG, MoRF before LeRF. The shared engine of ``repcam score`` and the ablation's
    faithfulness columns (:mod:`repcam.evaluation.faith_ablation`)."""
    unknown = [k for k in metrics if k not in FAITHFULNESS_KEYS]
    if unknown:
        raise ScoreError(f"unknown faithfulness metric {unknown[0]!r}; choose from {', '.join(FAITHFULNESS_KEYS)}")
    out: dict[str, np.ndarray] = {}
    if "deletion" in metrics:
        out["deletion"] = fm.deletion_auc(model, x, maps, cls, steps).numpy()
    if "insertion" in metrics:
        out["insertion"] = fm.insertion_auc(model, x, maps, cls, steps).numpy()
    for order in ("morf", "lerf"):
        if f"road_{order}" in metrics:
            out[f"road_{order}"] = fm.road(model, x, maps, cls, order, road_percentiles).numpy()  # type: ignore[arg-type]
    if "avg_drop" in metrics or "avg_increase" in metrics:
        drop, inc = fm.average_drop_increase(model, x, maps, cls)
        out.update({k: (100 * v).numpy() for k, v in (("avg_drop", drop), ("avg_increase", inc)) if k in metrics})
    if "maxboxacc_v2" in metrics:
        if masks is None or len(masks) != len(x):
            raise ScoreError("MaxBoxAccV2 needs one (mask, class) per record")
        size = tuple(x.shape[-2:])
        out["maxboxacc_v2"] = np.stack([fm.box_correct(m, box_target(mask, c, size), box_thresholds)
                                        for m, (mask, c) in zip(maps.detach().cpu().numpy(), masks)])
    return out


def score_maps(
    extractor: Extractor | Mapping[str, Extractor],
    dataset: SegDataset,
    model: nn.Module,
    transform: Callable[[Image.Image], torch.Tensor],
    *,
    class_map: Sequence[int] | None = None,
    max_images: int | None = None,
    batch_size: int = 8,
    steps: int = fm.DEFAULT_STEPS,
    road_percentiles: Sequence[float] = fm.ROAD_PERCENTILES,
    box_thresholds: Sequence[float] = fm.BOX_CAM_THRESHOLDS,
    metrics: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
) -> ScoreResult:
    """Score one extractor (or a dict name -> extractor) on every (image, class) record of ``dataset``.

    ``transform``: a PIL image -> the model's normalised (3, S, S) input. ``class_map[k]``: the model output of the
    data set's class k (default: the identity). ROAD's noise is drawn after ``torch.manual_seed(seed)``. ``metrics``:
    keys of :data:`METRICS` to compute (default all; mIoU and PxAP alone need no extra forward pass).
    """
    keys = metric_keys(metrics)
    faith = tuple(k for k in keys if k in FAITHFULNESS_KEYS)
    extractors, cmap, records = _records(extractor, dataset, class_map, max_images)
    model = model.to(device)
    torch.manual_seed(seed)
    accs = {m: IoUAccumulator(dataset.num_classes) for m in extractors}
    vals: dict[str, dict[str, list[float]]] = {m: {k: [] for k in faith if k != "maxboxacc_v2"} for m in extractors}
    box_rows: dict[str, list[np.ndarray]] = {m: [] for m in extractors}
    ids: list[str] = []
    pxaps: dict[str, list[float]] = {m: [] for m in extractors}
    with _progress(progress, len(records) * len(extractors)) as advance:
        cache: dict[int, tuple[torch.Tensor, np.ndarray]] = {}
        for s in range(0, len(records), batch_size):
            chunk = records[s : s + batch_size]
            cache = _load_chunk(dataset, chunk, cache, transform)
            x = torch.stack([cache[i][0] for i, _ in chunk]).to(device)
            cls = torch.tensor([cmap[c] for _, c in chunk], device=device)
            size = tuple(x.shape[-2:])
            ids += [dataset.samples[i].id for i, _ in chunk]
            for name, fn in extractors.items():
                maps = normalise_maps(fn(x, cls), (len(chunk), *size), name).to(device)
                for (i, c), m in zip(chunk, maps.cpu().numpy()):
                    accs[name].add(dataset.samples[i].id, c, m, cache[i][1])
                    if "pxap" in keys:  # a per-record average precision only when asked for
                        pxaps[name].append(record_pxap(m, cache[i][1], c, accs[name].ap_bins))
                    if not faith:
                        advance(1)  # mask metrics only: the work is per record
                if not faith:
                    continue
                per_record = record_values(model, x, maps, cls, faith, [(cache[i][1], c) for i, c in chunk],
                                           steps=steps, road_percentiles=road_percentiles, box_thresholds=box_thresholds)
                box_rows[name] += list(per_record.pop("maxboxacc_v2", []))
                for k, v in per_record.items():
                    vals[name][k] += v.tolist()
                advance(len(chunk))  # the faithfulness metrics score a batch's records together
    methods = list(extractors)
    values, summary = _summarise(methods, vals, box_rows, accs)
    intervals = _differences(methods, values, summary, accs, ids, n_boot, seed, keys)
    counts = {}
    for m in methods:  # per record, after the intervals (those of mIoU and PxAP come from the accumulators)
        pc = accs[m].primary_counts()
        counts[m] = {"intersection": pc.intersection, "union": pc.union}
        if "miou" in keys:
            values[m]["miou"] = safe_div(pc.intersection, pc.union)
        if "pxap" in keys:
            values[m]["pxap"] = np.asarray(pxaps[m], dtype=np.float64)
    return ScoreResult(methods, ids, values, summary, intervals, keys, [c for _, c in records], list(dataset.class_names),
                       counts, dict(getattr(dataset, "skipped", None) or {}), list(getattr(dataset, "skipped_ids", None) or []))


def _records(
    extractor: Extractor | Mapping[str, Extractor], dataset: SegDataset, class_map: Sequence[int] | None, max_images: int | None
) -> tuple[dict[str, Extractor], list[int], list[tuple[int, int]]]:
    """:func:`score_maps`'s checked inputs: the extractors by name, the class map and the (image index, class) records."""
    extractors = dict(extractor) if isinstance(extractor, Mapping) else {"method": extractor}
    if not extractors:
        raise ScoreError("no method to score")
    cmap = list(range(dataset.num_classes)) if class_map is None else [int(c) for c in class_map]
    if len(cmap) != dataset.num_classes:
        raise ScoreError(f"class_map has {len(cmap)} entries but the data set has {dataset.num_classes} classes")
    n_images = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    records = [(i, c) for i in range(n_images) for c in sorted(dataset.samples[i].labels)]
    if not records:
        raise ScoreError("the data set has no (image, class) record to score")
    return extractors, cmap, records


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator[Callable[[int], None]]:
    """A function that advances a transient progress bar over ``total`` records by n (does nothing when not ``enabled``)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("scoring records"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True,
                   console=Console(stderr=True))  # stdout carries the table
    bar.start()
    task = bar.add_task("scoring", total=total)
    try:
        yield lambda n: bar.update(task, advance=n)
    finally:
        bar.stop()


def _load_chunk(
    dataset: SegDataset, chunk: list[tuple[int, int]], cache: dict[int, tuple[torch.Tensor, np.ndarray]],
    transform: Callable[[Image.Image], torch.Tensor],
) -> dict[int, tuple[torch.Tensor, np.ndarray]]:
    """The cache of (model input, mask) by image index with every image of ``chunk`` in it, each read once."""
    for i, _ in chunk:
        if i not in cache:
            cache = {k: v for k, v in cache.items() if k >= chunk[0][0]}  # keep only this chunk's images
            cache[i] = (transform(dataset.image(i)), dataset.mask(i))
    return cache


def _summarise(
    methods: list[str], vals: dict[str, dict[str, list[float]]], box_rows: dict[str, list[np.ndarray]],
    accs: dict[str, IoUAccumulator],
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, float]]]:
    """Per method: the per-record values of every metric and the table's numbers (means; MaxBoxAccV2 over all
    records; mIoU and PxAP from the accumulator)."""
    values: dict[str, dict[str, np.ndarray]] = {}
    summary: dict[str, dict[str, float]] = {}
    for m in methods:
        values[m] = {k: np.asarray(v, dtype=np.float64) for k, v in vals[m].items()}
        box = None
        if box_rows[m]:  # MaxBoxAccV2 was asked for
            box, _, per_record = fm.max_box_acc_v2(np.stack(box_rows[m]))
            values[m]["maxboxacc_v2"] = 100 * per_record
        summary[m] = {k: float(v.mean()) for k, v in values[m].items()}
        if box is not None:
            summary[m]["maxboxacc_v2"] = 100 * box
        summary[m]["miou"] = accs[m].miou()
        summary[m]["pxap"] = accs[m].mpxap()
    return values, summary


def _differences(
    methods: list[str], values: dict[str, dict[str, np.ndarray]], summary: dict[str, dict[str, float]],
    accs: dict[str, IoUAccumulator], ids: list[str], n_boot: int, seed: int, keys: Sequence[str] = ("miou", "pxap"),
) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Every method after the first: (difference to the first, low, high) per metric, a paired 95% bootstrap interval
    over images (PxAP: the point difference only); mIoU's bootstrap only when ``keys`` asks for mIoU."""
    intervals: dict[str, dict[str, tuple[float, float, float]]] = {}
    ref = methods[0]
    for m in methods[1:]:
        intervals[m] = {k: fm.paired_difference(values[m][k], values[ref][k], ids, n_boot=n_boot, seed=seed) for k in values[m]}
        if "miou" in keys:
            intervals[m]["miou"] = tuple(float(v) for v in paired_bootstrap(accs[m], accs[ref], n_boot=n_boot, seed=seed))  # type: ignore[assignment]
        if "pxap" in keys:
            intervals[m]["pxap"] = (summary[m]["pxap"] - summary[ref]["pxap"], float("nan"), float("nan"))
    return intervals
