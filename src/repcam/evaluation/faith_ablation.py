"""The ablation tables' faithfulness columns (``evaluation.faithfulness``, off by default: expensive).

Every row of the ablation (the multi-class baselines, the trained baselines, S+F, S+A+F, the variants, Top-k) is
scored by ONE judge, the run's multi-class baseline model (the model the Grad-CAM and LayerCAM rows come from), so the
rows are comparable: a pair model's map is judged by the multi-class model, not by the pair model that made it.
The records are those of the IoU columns: :func:`repcam.evaluation.evaluate.evaluate_split` hands every map it scores to
:meth:`FaithfulnessColumns.add` (``on_map``). Each map is upsampled to the model input (bilinear, as the CAM engine
upsamples) and min-max normalised as ``repcam score`` does (:func:`repcam.evaluation.score.normalise_maps`); the input is the
image the maps were computed from (the evaluation's image cache, the run's protocol). The metrics are
``repcam score``'s (:func:`repcam.evaluation.score.record_values`, definitions in :mod:`repcam.evaluation.faithfulness`), each row's mean
with the paired bootstrap interval of its difference to the Grad-CAM row
(:func:`repcam.evaluation.faithfulness.paired_difference`; MaxBoxAccV2 as ``repcam score``: per-record values at the row's
chosen thresholds).

Cost, per (row, record): ``deletion`` and ``insertion`` 21 forward passes each (20 steps); ``road`` one forward
pass and one sparse linear solve (the noisy linear imputer) per percentile and order, 2 x 9 (the expensive part at
224 px); ``avg_drop`` 2 forward passes; ``maxboxacc`` 100 connected-component labellings, no forward pass. A run
has about (rows x records) of them: 54 rows x 450 records on the demo's val split. Identical maps (e.g. a Top-k row
equal to an S-k row) are scored once.

The per-record values are stored in ``results/<split>/faithfulness.npz`` (:meth:`repcam.store.layout.RunDir.faithfulness_records`,
an :class:`~repcam.store.storage.Artefact` written atomically after every class), keyed by a hash of the record's image
id, class and map bytes, under an artefact key of the judge model's checksum, the data and metric settings and the
seed: a rerun (or a resumed, killed run) computes only maps it has not scored, and a changed map is scored again.
ROAD's noise is seeded per record from that hash, so a value does not depend on which records share its batch.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from repcam.data.base import SegDataset
from repcam.evaluation import faithfulness as fm
from repcam.evaluation.evaluate import BASELINE, eval_mask
from repcam.evaluation.metric_names import METRIC_GROUPS, check_metrics, column_title, columns  # noqa: F401 - importable from here
from repcam.evaluation.score import normalise_maps, record_values
from repcam.models.backbones import Preprocess
from repcam.models.train import ImageCache
from repcam.store.storage import Artefact, ArtefactError, config_key, verify

_KEY_BYTES = 16
_VERSION = 1  # of the stored values' definition: part of the artefact key


def record_key(image_id: str, cls: int, cam: np.ndarray) -> bytes:
    """The stored values' key of one record: a hash of its image id, class and the map's bytes (float32)."""
    cam = np.ascontiguousarray(cam, dtype=np.float32)
    h = hashlib.blake2b(f"{image_id}\0{cls}\0{cam.shape}\0".encode(), digest_size=_KEY_BYTES)
    h.update(cam.tobytes())
    return h.digest()


def store_key(judge_sha: str, data: dict[str, Any], split: str, eval_options: dict[str, Any], protocol: str,
              pre: Preprocess, seed: int) -> str:
    """The artefact key of a split's stored values: what a record's value depends on besides its image, class and map."""
    return config_key({"faithfulness": _VERSION, "judge": judge_sha, "data": data, "split": split, "eval_options": eval_options,
                       "protocol": protocol, "input": [pre.input_size, list(pre.mean), list(pre.std)], "seed": seed,
                       "steps": fm.DEFAULT_STEPS, "road_percentiles": list(fm.ROAD_PERCENTILES),
                       "box": [list(fm.BOX_CAM_THRESHOLDS), list(fm.BOX_IOU_THRESHOLDS)]})


class FaithfulnessColumns:
    """Scores the maps :func:`~repcam.evaluation.evaluate.evaluate_split` hands over (``on_map=cols.add``) with the judge model,
    in batches, reusing and extending the values stored in ``art``.

    ``rows(name)`` says which rows get the columns (the ablation's, not the evaluation grid's)."""

    def __init__(self, metrics: Sequence[str], model: torch.nn.Module, ds: SegDataset, cache: ImageCache, pre: Preprocess,
                 protocol: str, device: torch.device, art: Artefact, seed: int, batch_size: int,
                 rows: Callable[[str], bool] = lambda name: True) -> None:
        self.groups = [g for g in METRIC_GROUPS if g in metrics]
        self.model, self.ds, self.cache, self.pre, self.protocol, self.device = model, ds, cache, pre, protocol, device
        self.art, self.seed, self.batch_size, self.rows = art, seed, batch_size, rows
        self.store: dict[str, dict[bytes, np.ndarray]] = {g: {} for g in self.groups}
        self.records: dict[str, list[tuple[int, int, bytes]]] = {}  # row -> (image, class, key) in scoring order
        self.pending: dict[bytes, tuple[int, int, np.ndarray]] = {}  # key -> (image, class, map) to score
        self.computed = 0  # maps scored in this run (distinct keys)
        self.seconds = 0.0
        self._dirty = False
        self._load()

    # ---- the store ----------------------------------------------------------------------------------------------
    def _load(self) -> None:
        """The stored values of this key, every group (also the ones not chosen now: they are kept when saving)."""
        if not self.art.done():
            return
        with np.load(verify(self.art.path), allow_pickle=False) as z:
            for name in z.files:
                group, _, part = name.partition(".")
                if group not in METRIC_GROUPS or part not in ("keys", "values"):
                    raise ArtefactError(f"{self.art.path}: unexpected member {name!r}; not repcam's faithfulness store")
            for group in {n.partition(".")[0] for n in z.files}:
                keys, values = z[f"{group}.keys"], z[f"{group}.values"]
                box = group == "maxboxacc"
                want = (len(keys), *((len(fm.BOX_IOU_THRESHOLDS), (len(fm.BOX_CAM_THRESHOLDS) + 7) // 8) if box else (len(METRIC_GROUPS[group]),)))
                if keys.dtype != np.uint8 or keys.shape != (len(keys), _KEY_BYTES) or values.dtype != (np.uint8 if box else np.float32) \
                        or values.shape != want:
                    raise ArtefactError(f"{self.art.path}: member {group!r} has dtype or shape {keys.dtype}{keys.shape}, "
                                        f"{values.dtype}{values.shape}; not repcam's faithfulness store")
                if box:
                    values = np.unpackbits(values, axis=-1, count=len(fm.BOX_CAM_THRESHOLDS)).astype(bool)
                self.store.setdefault(group, {}).update(zip((bytes(k) for k in keys), values))

    def save(self) -> None:
        """Write every stored value (atomically; the sidecar last) if anything was added since the last save."""
        if not self._dirty:
            return
        arrays = {}
        for group, values in self.store.items():
            if not values:
                continue
            arrays[f"{group}.keys"] = np.frombuffer(b"".join(values), dtype=np.uint8).reshape(-1, _KEY_BYTES)
            stacked = np.stack(list(values.values()))
            arrays[f"{group}.values"] = np.packbits(stacked, axis=-1) if group == "maxboxacc" else stacked.astype(np.float32)
        self.art.save_npz(arrays, groups={g: len(v) for g, v in self.store.items()})
        self._dirty = False

    # ---- scoring --------------------------------------------------------------------------------------------------
    def add(self, name: str, image: int, cls: int, cam: np.ndarray) -> None:
        """One scored map of row ``name`` (``evaluate_split``'s ``on_map``): queued unless its values are stored."""
        if not self.rows(name):
            return
        key = record_key(self.ds.samples[image].id, cls, cam)
        self.records.setdefault(name, []).append((image, cls, key))
        if key not in self.pending and any(key not in self.store[g] for g in self.groups):
            self.pending[key] = (image, cls, np.array(cam, dtype=np.float32))
            if len(self.pending) >= self.batch_size:
                self.flush()

    def checkpoint(self) -> None:
        """Score what is queued and save (``evaluate_split`` calls it after every class, through ``progress``)."""
        self.flush()
        self.save()

    def flush(self) -> None:
        """Score the queued maps with every chosen metric they lack."""
        if not self.pending:
            return
        t0 = time.perf_counter()
        keys = list(self.pending)
        images = [self.pending[k][0] for k in keys]
        classes = [self.pending[k][1] for k in keys]
        x = self.pre.normalize(self.cache.stack(images).to(self.device))
        maps = torch.from_numpy(np.stack([self.pending[k][2] for k in keys]))
        size = tuple(x.shape[-2:])
        up = F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        maps = normalise_maps(up, (len(keys), *size), "map").to(self.device)
        cls = torch.tensor(classes, device=self.device)
        for g in self.groups:
            todo = [j for j, k in enumerate(keys) if k not in self.store[g]]
            if not todo:
                continue
            cols = METRIC_GROUPS[g]
            if g == "road":  # seeded per record: a value must not depend on the records batched with it
                for j in todo:
                    with torch.random.fork_rng(devices=[]):
                        torch.manual_seed(self._road_seed(keys[j]))
                        v = record_values(self.model, x[j : j + 1], maps[j : j + 1], cls[j : j + 1], cols)
                    self.store[g][keys[j]] = np.array([v[c][0] for c in cols], dtype=np.float32)
                continue
            sel = torch.tensor(todo, device=self.device)
            masks = [(eval_mask(self.ds, images[j], self.protocol), classes[j]) for j in todo] if g == "maxboxacc" else None
            v = record_values(self.model, x[sel], maps[sel], cls[sel], cols, masks)
            for r, j in enumerate(todo):
                self.store[g][keys[j]] = v[cols[0]][r] if g == "maxboxacc" else np.array([v[c][r] for c in cols], dtype=np.float32)
        self.computed += len(keys)
        self.pending.clear()
        self._dirty = True
        self.seconds += time.perf_counter() - t0

    def _road_seed(self, key: bytes) -> int:
        return int.from_bytes(hashlib.blake2b(self.seed.to_bytes(8, "little") + key, digest_size=8).digest(), "little") >> 1

    # ---- results --------------------------------------------------------------------------------------------------
    def values(self, name: str) -> tuple[list[tuple[int, int]], list[str], dict[str, np.ndarray], dict[str, float]]:
        """Row ``name``'s records (image, class), their image ids, per-record values per column and the row's values
        (MaxBoxAccV2 in %, per record: correctness at the row's chosen thresholds, averaged over delta)."""
        recs = sorted(self.records[name])
        per: dict[str, np.ndarray] = {}
        summary: dict[str, float] = {}
        for g in self.groups:
            stacked = np.stack([self.store[g][k] for _, _, k in recs])
            if g == "maxboxacc":
                box, _, per_record = fm.max_box_acc_v2(stacked)
                per["maxboxacc_v2"], summary["maxboxacc_v2"] = 100 * per_record, 100 * box
                continue
            for c, col in enumerate(METRIC_GROUPS[g]):
                per[col] = stacked[:, c].astype(np.float64)
                summary[col] = float(per[col].mean())
        return [(i, c) for i, c, _ in recs], [self.ds.samples[i].id for i, _, _ in recs], per, summary

    def attach(self, rows: list[dict], n_boot: int = 1000, seed: int = 0) -> None:
        """Add ``row["faithfulness"]`` = {column: {value[, diff, ci_low, ci_high, significant]}} to every row scored,
        the difference to the Grad-CAM row with a paired 95% bootstrap interval over images (none where the row's
        records differ from Grad-CAM's: its difference is then the point difference only, as in the IoU columns)."""
        self.checkpoint()
        base = self.values(BASELINE) if BASELINE in self.records else None
        for row in rows:
            if row["method"] not in self.records:
                continue
            recs, ids, per, summary = self.values(row["method"])
            out: dict[str, dict[str, Any]] = {}
            for col, value in summary.items():
                cell: dict[str, Any] = {"value": value}
                if base is not None and row["method"] != BASELINE:
                    if recs == base[0]:
                        d, lo, hi = fm.paired_difference(per[col], base[2][col], ids, n_boot=n_boot, seed=seed)
                    else:
                        d, lo, hi = value - base[3][col], float("nan"), float("nan")
                    cell.update(diff=d, ci_low=lo, ci_high=hi, significant=bool(lo > 0 or hi < 0))
                out[col] = cell
            row["faithfulness"] = out

    def info(self, judge: str, names: Sequence[str]) -> dict[str, Any]:
        """ablation.json's ``faithfulness``: the judge, metrics, columns, settings and where the values are stored."""
        return {"judge": judge, "metrics": list(names), "columns": columns(names), "steps": fm.DEFAULT_STEPS,
                "road_percentiles": list(fm.ROAD_PERCENTILES), "store": self.art.path.name}
