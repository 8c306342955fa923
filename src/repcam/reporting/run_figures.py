"""The figures of a finished run directory: what to plot, read from the run (:func:`run_figures`).

The plotting itself is :mod:`repcam.reporting.figures` (pure functions of arrays); this module reads the run directory
(similarity, selections, accumulators, stored maps, the models for the layer figures), picks the examples and
writes ``figures/<split>/`` with its ``index.json``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from repcam.method.methods import Method
from repcam.reporting.figures import (
    IGNORE_INDEX,
    layer_grid,
    overlay_grid,
    pairwise_heatmap,
    per_class_bars,
    similarity_heatmap,
    threshold_curves,
)
from repcam.reporting.tables import best_method, is_paper_row  # noqa: F401 - best_method importable from here
from repcam.store.layout import RunDir
from repcam.store.records import RecordFile
from repcam.store.rundir import ClassFiles
from repcam.store.storage import ArtefactError, verify

log = logging.getLogger(__name__)


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def pick_examples(method_records: Sequence[tuple[str, int, float]], base_records: Sequence[tuple[str, int, float]]) -> dict[str, dict[str, Any]]:
    """Best, median and worst (image, class) by IoU gain of a method over the baseline, from ``records``
    ((image_id, class, IoU) lists). Pairs with a NaN IoU on either side are left out; ties are broken by id, class."""
    base = {(str(i), int(c)): float(v) for i, c, v in base_records}
    gains = []
    for i, c, v in method_records:
        b = base.get((str(i), int(c)))
        if b is None or not (math.isfinite(v) and math.isfinite(b)):
            continue
        gains.append((v - b, str(i), int(c), float(v), b))
    gains.sort()
    if not gains:
        return {}
    picks = {"best": gains[-1], "median": gains[len(gains) // 2], "worst": gains[0]}
    out: dict[str, dict[str, Any]] = {}
    seen = set()
    for label, (g, i, c, v, b) in picks.items():
        if (i, c) in seen:
            continue
        seen.add((i, c))
        out[label] = {"image_id": i, "cls": c, "gain": g, "iou": v, "base_iou": b}
    return out


def _stored_map(path: Path, kind: str, image: int, cls: int) -> np.ndarray | None:
    """The stored ``kind`` map of (image, class) from a record file, or None; reads that one row only."""
    if not path.is_file():
        return None
    rec = RecordFile(verify(path))  # checksum, then the dtype allow-list, before a byte is mapped
    rows = np.flatnonzero((rec.image == image) & (rec.cls == cls))
    return rec.rows(kind, rows[:1])[0] if len(rows) and kind in rec else None


def _selection_for(sel_name: str, paths: RunDir, split: str, classes: Sequence[str]) -> dict[str, list[str]]:
    sels = _read_json(paths.selections).get("selections", {}) if paths.selections.is_file() else {}
    if sel_name in sels:
        return sels[sel_name]
    if sel_name.startswith("Top-") and paths.pairwise(split).is_file():
        from repcam.method.selection import topk_select

        pw = _read_json(paths.pairwise(split))
        M = np.array([[np.nan if v is None else v for v in row] for row in pw["miou"]], dtype=float)
        np.fill_diagonal(M, np.nan)
        k = int(sel_name.split("-", 1)[1])
        out = {}
        for c in range(len(classes)):
            row = np.full_like(M, np.nan)
            row[c] = M[c]
            if np.isfinite(M[c]).sum() >= k:
                out[classes[c]] = [classes[s] for s in topk_select(row, k)[c]]
        return out
    raise KeyError(f"selection {sel_name!r} is not in selections.json")


class _RunData:
    """Lazy access to what the example figures need from a run directory."""

    def __init__(self, run_dir: Path, split: str) -> None:
        from repcam.config import load_config

        self.dir = run_dir
        self.paths = RunDir(run_dir)
        self.split = split
        self.cfg = load_config(self.paths.config)
        self.cfg.device = "cpu"
        self._ds = None

    @property
    def ds(self):
        if self._ds is None:
            from repcam.pipeline.run import Run

            # eval_dataset: the split as evaluated (eval options, data.max_eval_images; a cross_eval split's other data set)
            self._ds = Run(self.cfg, self.dir, show_progress=False).eval_dataset(self.split)
        return self._ds

    @property
    def crop(self) -> bool:
        return self.cfg.evaluation.protocol == "crop"

    def image_and_mask(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        from repcam.models.backbones import centre_crop_box

        img = self.ds.image(i).convert("RGB")
        mask = np.asarray(self.ds.mask(i))
        if self.crop:
            box = centre_crop_box(img.size)
            img = img.crop(box)
            mask = mask[box[1] : box[3], box[0] : box[2]]
        return np.asarray(img), mask

    def model(self, state_path: Path, num_classes: int):
        import torch

        from repcam.models.backbones import build_classifier

        b = self.cfg.backbone
        bb = build_classifier(b.name, num_classes, weights=None, input_size=b.input_size)
        bb.model.load_state_dict(torch.load(verify(state_path), map_location="cpu", weights_only=True))
        return bb.model.eval(), bb.preprocess

    def layer_maps(self, state_path: Path, num_classes: int, i: int, target: int):
        from repcam.engine.cam import MultiLayerGradCAM

        model, pre = self.model(state_path, num_classes)
        x = pre.normalize(pre.to_uint8(self.ds.image(i), self.crop).unsqueeze(0))
        res = MultiLayerGradCAM(model, "auto")(x, [target])
        return res.layer_names, res.layer_maps[0].numpy(), res.fused[0].numpy(), res.last[0].numpy()


def run_figures(run_dir: str | Path, split: str, *, fmt: str = "png", examples: bool = True, layers: bool = True,
                reuse: bool = False) -> dict[str, Path]:
    """All figures of one evaluated split of a finished run, into ``run_dir/figures/<split>/``.

    Returns {name: path}. Also writes ``index.json`` there: {"figures": {name: {"file", "caption"}},
    "skipped": {name: reason}} (a figure whose inputs are missing or fail is skipped, never fatal).
    Example figures pick the best, median and worst (image, class) by IoU gain of the best "+A+F" method over
    Grad-CAM; they need the data set (reloaded from ``config.yaml``) and the stored maps; the layer figures also
    load the pair model (the method's first representative class) and recompute its per-layer Grad-CAM.

    ``reuse=True`` returns the figures already there, drawing nothing, when ``index.json`` says they were drawn from
    the same inputs (:func:`figures_key`): what a resumed run wants. The key does not cover the data set's files, so
    an explicit rebuild (``repcam report``) redraws, and so rechecks the examples against the data as it is now.
    """
    from repcam.evaluation.metrics import IoUAccumulator
    from repcam.store.storage import write_json

    run_dir = Path(run_dir)
    paths = RunDir(run_dir)
    out = paths.figures_dir(split)
    out.mkdir(parents=True, exist_ok=True)
    key = figures_key(paths, split, fmt=fmt, examples=examples, layers=layers)
    if reuse and (ready := _drawn_before(paths.figure_index(split), key)) is not None:
        return ready  # a resumed run with nothing new redraws nothing (12 of a no-op demo resume's 16 s were figures)
    drawn = _Drawn(out)
    attempt, skipped = drawn.attempt, drawn.skipped

    sim = _read_json(paths.similarity) if paths.similarity.is_file() else None
    classes: list[str] = list(sim["classes"]) if sim else []
    clusters = None
    if paths.selections.is_file():
        clusters = _read_json(paths.selections).get("clusters")
    if sim:
        attempt("similarity", "Similarity matrix B, rows and columns grouped by cluster (red borders); diagonal masked, log colour scale.",
                lambda p: similarity_heatmap(sim["B"], classes, clusters, p, fmt=fmt))
    else:
        skipped["similarity"] = "similarity.json not found"

    accs: dict[str, IoUAccumulator] = {}
    if paths.accumulators(split).is_file():
        accs = {m: IoUAccumulator.from_state_dict(s) for m, s in _read_json(paths.accumulators(split)).items()}
    rows = _read_json(paths.ablation(split))["rows"] if paths.ablation(split).is_file() else []
    if not rows and accs:
        rows = [{"method": m, "miou": a.miou()} for m, a in accs.items()]
    best = best_method(rows)
    best_f = best_method(rows, "+F")
    if not classes and paths.pairwise(split).is_file():
        classes = list(_read_json(paths.pairwise(split))["classes"])

    _score_figures(drawn, split, accs, classes, best, best_f, fmt)

    if paths.pairwise(split).is_file():
        pw = _read_json(paths.pairwise(split))
        if any(v is not None and math.isfinite(v) for row in pw["miou"] for v in row):
            attempt("pairwise", "Grad-CAM mIoU of each class (row) from its binary model against each other class (column); grey: no model.",
                    lambda p: pairwise_heatmap(pw["miou"], pw["classes"], p, fmt=fmt))
        else:
            skipped["pairwise"] = "no pair model scored"

    if examples:
        _example_figures(drawn, run_dir, split, accs, best, classes, fmt, layers)

    figs, captions = drawn.figs, drawn.captions
    index = {"split": split, "figures": {n: {"file": figs[n].name, "caption": captions[n]} for n in figs}, "skipped": skipped,
             "warnings": drawn.warnings, "inputs": key}
    write_json(paths.figure_index(split), index)
    return figs


def drawing_code_digest() -> str:
    """A checksum of the code that draws the figures (the modules of :mod:`repcam.reporting`):
    figures drawn by other drawing code are drawn again, even between commits of one version (a development install)."""
    import hashlib

    here = Path(__file__).parent
    h = hashlib.sha256()
    for f in sorted(here.glob("*.py")):
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def figures_key(paths: RunDir, split: str, **options: Any) -> str:
    """What a split's figures are drawn from: the bytes of every run file they read (config, B, selections, the
    split's scores and its results' inputs, which name every model and map by checksum), the options, repcam's
    version and the drawing code (:func:`drawing_code_digest`). Equal keys, equal figures."""
    import hashlib

    from repcam import __version__

    h = hashlib.sha256(json.dumps({"version": __version__, "code": drawing_code_digest(), "split": split, **options},
                                  sort_keys=True).encode())
    files = (paths.config, paths.similarity, paths.selections, paths.ablation(split), paths.accumulators(split),
             paths.pairwise(split), paths.results_inputs(split))
    for f in files:
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest() if f.is_file() else b"missing")
    return h.hexdigest()[:32]


def _drawn_before(index_path: Path, key: str) -> dict[str, Path] | None:
    """The figures an earlier call drew from the same inputs (``key``), if its index says so, skipped none and every
    file is still there; None when they must be drawn."""
    try:
        index = _read_json(index_path)
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("inputs") != key or not isinstance(index.get("figures"), dict):
        return None
    if index.get("skipped"):  # a figure that failed or lacked an input last time gets another try
        return None
    figs = {}
    for name, info in index["figures"].items():
        p = index_path.parent / Path(str((info or {}).get("file", ""))).name
        if not p.is_file():
            return None
        figs[name] = p
    return figs


class _Drawn:
    """The figures of a split as they are drawn into ``out``: {name: path}, their captions, the ones skipped (with
    the reason) and the warnings, for ``index.json``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.figs: dict[str, Path] = {}
        self.captions: dict[str, str] = {}
        self.skipped: dict[str, str] = {}
        self.warnings: list[str] = []

    def attempt(self, name: str, caption: str, make) -> Any:
        """``make(path)``'s figure, recorded under ``name`` with ``caption``; None (and the reason recorded) if it fails."""
        try:
            p = make(self.out / name)
        except ArtefactError:  # a damaged or foreign file in the run directory is not a missing figure: refuse
            raise
        except Exception as e:  # a figure is a convenience: report why it is missing, never fail the run
            log.warning("figure %s skipped: %s", name, e)
            self.skipped[name] = f"{type(e).__name__}: {e}"
            return None
        if p is not None:
            self.figs[name] = Path(p)
            self.captions[name] = caption
        return p


def _score_figures(drawn: _Drawn, split: str, accs: Mapping[str, Any], classes: list[str], best: str | None,
                   best_f: str | None, fmt: str) -> None:
    """The per-class bars and the threshold curves, from the accumulators ``accs``."""
    from repcam.evaluation.evaluate import MC_METHODS
    from repcam.reporting.tables import method_order

    attempt, skipped = drawn.attempt, drawn.skipped
    if accs and classes:
        order = method_order(list(accs))
        chosen = [m for m in order if m in MC_METHODS] + [m for m in (best_f, best) if m and m in accs]
        attempt("per_class", "Per-class IoU at the run's threshold: the multi-class baselines and the best +F and +A+F methods (paper Fig. 8).",
                lambda p: per_class_bars({m: accs[m].per_class_iou().tolist() for m in chosen}, classes, p, fmt=fmt,
                                         title=f"Per-class IoU on {split}"))
        curves = [m for m in order if m in MC_METHODS or is_paper_row(m, "A") or m == best_f]
        primary = next(iter(accs.values())).primary
        attempt("thresholds", "mIoU against the threshold that binarises the maps (dots: each method's best threshold; dotted line: the run's threshold).",
                lambda p: threshold_curves({m: accs[m].sweep() for m in curves}, p, primary=primary, fmt=fmt,
                                           title=f"mIoU against the threshold on {split}"))
    else:
        skipped["per_class"] = skipped["thresholds"] = "accumulators.json not found"


def _example_figures(drawn: _Drawn, run_dir: Path, split: str, accs: Mapping[str, Any], best: str | None,
                     classes: list[str], fmt: str, layers: bool) -> None:
    """The best, median and worst examples of ``best`` against Grad-CAM, and their layer figures if ``layers``."""
    from repcam.method.methods import BASELINE

    attempt, skipped, captions, warnings = drawn.attempt, drawn.skipped, drawn.captions, drawn.warnings
    if not (best and BASELINE in accs and best in accs):
        skipped["examples"] = f"needs the {BASELINE} and a '+A+F' method in accumulators.json"
    else:
        picks = pick_examples(accs[best].records, accs[BASELINE].records)
        if not picks:
            skipped["examples"] = "no (image, class) with an IoU for both methods"
        data = _RunData(run_dir, split) if picks else None
        for label, pick in picks.items():
            pick["threshold"] = accs[BASELINE].primary
            n_warn = len(warnings)
            attempt(f"example_{label}", _example_caption(label, pick, best, classes),
                    lambda p, pick=pick, label=label: _example_figure(data, pick, label, best, classes, p, fmt, warnings))
            if len(warnings) > n_warn and f"example_{label}" in captions:
                captions[f"example_{label}"] += " Warning: " + warnings[-1]
            if layers:
                attempt(f"layers_{label}", f"Per-layer Grad-CAM maps and their fusion (paper Fig. 6) for the {label} example, "
                        f"from the binary model of the class against its first representative in {best}; Grad-CAM of the multi-class model for comparison.",
                        lambda p, pick=pick, label=label: _layer_figure(data, pick, label, best, classes, p, fmt))


def _example_caption(label: str, pick: Mapping[str, Any], method: str, classes: Sequence[str]) -> str:
    c = classes[pick["cls"]] if pick["cls"] < len(classes) else str(pick["cls"])
    return (f"{label.capitalize()} gain of {method} over Grad-CAM: image {pick['image_id']}, class {c}; "
            f"IoU {pick['iou']:.2f} vs {pick['base_iou']:.2f} ({pick['gain']:+.2f}). "
            f"Panels: the map from each representative class's binary model, their fusion, Grad-CAM, ground truth.")


def _pair_file(path_of: Callable[[ClassFiles, str, str], Path], names: Sequence[str], c: int, s: int) -> tuple[Path, int]:
    """Path of the (c, s) pair artefact (``path_of``: a RunDir method) and the target logit of class c in it."""
    a, b = sorted((c, s))
    return path_of(ClassFiles(names), names[a], names[b]), (0 if c == a else 1)


def _example_figure(data: _RunData, pick: Mapping[str, Any], label: str, method: str, classes: Sequence[str], path: Path, fmt: str,
                    warnings: list[str] | None = None) -> Path:
    from repcam.evaluation.metrics import IoUAccumulator
    from repcam.method.representative import fuse_stored

    ds = data.ds
    names = list(ds.class_names)
    ids = {s.id: i for i, s in enumerate(ds.samples)}
    if pick["image_id"] not in ids:
        raise KeyError(f"image {pick['image_id']!r} is not in the reloaded {data.split} split")
    i, c = ids[pick["image_id"]], int(pick["cls"])
    gradcam = _stored_map(data.paths.multiclass_maps(data.split), "last", i, c)
    sel = _selection_for(Method.parse(method).selection, data.paths, data.split, names)
    reps = sel.get(names[c], [])
    panels: dict[str, Any] = {}
    avail = []
    for sname in reps:
        if sname not in names:
            continue
        f, _ = _pair_file(lambda files, a, b: data.paths.pair_maps(data.split, files, a, b), names, c, names.index(sname))
        m = _stored_map(f, "fused", i, c)
        panels[f"vs {sname}"] = m
        if m is not None:
            avail.append(m)
    fused = fuse_stored(avail) if avail else None  # the paper's F over the stored representative maps
    panels[f"{method} (IoU {pick['iou']:.2f})"] = fused
    panels[f"Grad-CAM (IoU {pick['base_iou']:.2f})"] = gradcam
    img, mask = data.image_and_mask(i)
    if gradcam is not None and warnings is not None and "threshold" in pick:
        # The data set is regenerated/reloaded now: check it is the one the maps were scored on.
        t = float(pick["threshold"])
        again = IoUAccumulator(len(names), thresholds=(t,), primary=t).add(pick["image_id"], c, gradcam.astype(np.float32), mask)
        if not (abs(again - pick["base_iou"]) < 1e-6 or (math.isnan(again) and math.isnan(pick["base_iou"]))):
            warnings.append(f"{data.split} image {pick['image_id']}: its reloaded mask gives Grad-CAM IoU {again:.4f}, the run recorded "
                            f"{pick['base_iou']:.4f}; the data set (or its generator) changed since the run, so images and GT "
                            "shown may not be those the maps were computed on.")
    title = f"{label}: image {pick['image_id']}, class {names[c]} (gain {pick['gain']:+.2f})"
    return overlay_grid(img, panels, mask == c + 1, path, title=title, ignore_mask=mask == IGNORE_INDEX, fmt=fmt)


def _layer_figure(data: _RunData, pick: Mapping[str, Any], label: str, method: str, classes: Sequence[str], path: Path, fmt: str) -> Path:
    ds = data.ds
    names = list(ds.class_names)
    i = {s.id: k for k, s in enumerate(ds.samples)}[pick["image_id"]]
    c = int(pick["cls"])
    sel = _selection_for(Method.parse(method).selection, data.paths, data.split, names)
    model_desc, state, n_out, target = None, None, 0, 0
    for sname in sel.get(names[c], []):
        if sname in names:
            f, t = _pair_file(data.paths.pair_model, names, c, names.index(sname))
            if f.is_file():
                model_desc, state, n_out, target = f"binary model {names[c]} vs {sname}", f, 2, t
                break
    if state is None:  # no pair model: the multi-class model's layers
        state, n_out, target, model_desc = data.paths.multiclass_model, len(names), c, "multi-class model"
    layer_names, layer_maps, fused, _ = data.layer_maps(state, n_out, i, target)
    gradcam = _stored_map(data.paths.multiclass_maps(data.split), "last", i, c)
    img, mask = data.image_and_mask(i)
    title = f"{label}: image {pick['image_id']}, class {names[c]}; layers of the {model_desc}"
    return layer_grid(img, layer_maps, layer_names, fused, path, extra={"Grad-CAM (multi-class)": gradcam},
                      gt_mask=mask == c + 1, ignore_mask=mask == IGNORE_INDEX, title=title, fused_title="Fusion (A)", fmt=fmt)
