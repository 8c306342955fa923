"""What ``repcam score`` scores, from its command-line arguments: the data set, the model, its input transform and the
class map (:func:`resolve_inputs`); the scoring itself is :mod:`repcam.evaluation.score`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import nn

from repcam.data.base import SegDataset
from repcam.evaluation.score import ScoreError


@dataclass
class ScoreInputs:
    """What ``repcam score`` resolved from its arguments: the data set, the model, its input transform, the class map."""

    dataset: SegDataset
    model: nn.Module
    transform: Callable[[Image.Image], torch.Tensor]
    class_map: list[int]


def resolve_inputs(
    *,
    config: Path | None = None,
    folder: Path | None = None,
    split: str | None = None,
    model: str | None = None,
    weights: Path | None = None,
    run: Path | None = None,
    input_size: int | None = None,
    download: bool = False,
    note: Callable[[str], None] | None = None,
) -> ScoreInputs:
    """The data set (a run config's ``data`` section, the run's own config, or a folder data set) and the model (a
    stock timm/torchvision name with offline weights, fetched first with ``download``, or a run's multi-class model). Errors are one-line
    :class:`ScoreError` / ``ValueError`` messages naming the file or argument."""
    if (model is None) == (run is None):
        raise ScoreError("pass exactly one of --model (a stock timm/torchvision model) or --run (a run's multi-class model)")
    if weights is not None and model is None:
        raise ScoreError("--weights applies to --model only")
    if download and (model is None or weights is not None):
        raise ScoreError("--download applies to --model without --weights")
    if input_size is not None and (model is None or input_size < 8):
        raise ScoreError(f"--input-size applies to --model only and must be >= 8, got {input_size}")
    if config is not None and folder is not None:
        raise ScoreError("pass at most one of --config and --folder")
    if run is not None and not Path(run).is_dir():
        raise ScoreError(f"run directory {run} does not exist")
    dataset = _dataset(config, folder, split, run)
    if run is not None:
        return _run_inputs(run, dataset)
    return _stock_inputs(str(model), weights, input_size, dataset, download, note)


def _dataset(config: Path | None, folder: Path | None, split: str | None, run: Path | None) -> SegDataset:
    """The data set to score: a folder data set, the ``data`` section of ``config``, or that of the run's own config."""
    from repcam.config import load_config
    from repcam.data import load_dataset

    if config is None and folder is None and run is not None:
        from repcam.config import run_config_path

        config = run_config_path(run)
        if not config.is_file():  # not "config file RUN/config.yaml does not exist": say what RUN lacks
            raise ScoreError(f"{run} is not a run directory: it has no config.resolved.yaml or config.yaml "
                             "(pass a run directory from `repcam run`/`repcam demo`, or the data set with --config/--folder)")
    if folder is not None:
        return load_dataset("folder", str(folder), split)  # type: ignore[arg-type]
    if config is not None:
        from repcam.data.base import DataError

        d = load_config(config).data
        options = {**d.options, **d.eval_options.get(split or d.eval_splits[0], {})}
        try:
            return load_dataset(d.kind, d.root, split or d.eval_splits[0], d.classes, **options)
        except DataError as e:  # e.g. "data folder not found: X": say which config's data section points there
            raise ScoreError(f"{config}: data: {e}") from None
    raise ScoreError("pass a data set: --folder DIR or --config CONFIG (or --run, whose config is used)")


def _run_inputs(run: Path, dataset: SegDataset) -> ScoreInputs:
    """A run's multi-class model and preprocessing; every class of the data set must be one of the run's."""
    from repcam.explain import Explainer

    ex = Explainer(run, device="cpu")
    missing = [c for c in dataset.class_names if c not in ex.classes]
    if missing:
        raise ScoreError(f"the data set's class {missing[0]!r} is not a class of the run {run} ({', '.join(ex.classes)})")
    pre = ex.preprocess
    return ScoreInputs(dataset, ex.mc_model, lambda im: pre.to_tensor(im), [ex.classes.index(c) for c in dataset.class_names])


def _stock_inputs(model: str, weights: Path | None, input_size: int | None, dataset: SegDataset, download: bool = False,
                  note: Callable[[str], None] | None = None) -> ScoreInputs:
    """A stock timm/torchvision model with its offline weights; its outputs matched to the data set's classes by name."""
    return stock_inputs(model, str(weights) if weights is not None else ("download" if download else None), input_size,
                        dataset, note)


def stock_inputs(model: Any, weights: str | Path | None, input_size: int | None, dataset: SegDataset,
                 note: Callable[[str], None] | None = None) -> ScoreInputs:
    """A stock model (a timm/torchvision name with ``weights`` None (offline), ``"download"`` or a file; an
    ``nn.Module``; a :class:`~repcam.stock_model.StockModel`) and its preprocessing; its outputs matched to the data
    set's classes by name (an unnamed head of the data set's size: by index)."""
    from repcam.stock_model import as_stock_model, load_stock_model

    sm = load_stock_model(model, None if weights is None else str(weights), note=note) if isinstance(model, str) \
        else as_stock_model(model, weights)
    if input_size is not None:  # e.g. a small model on small images: the maps and every perturbation get cheaper
        sm.data_config = {**sm.data_config, "input_size": (3, int(input_size), int(input_size))}
    if len(sm.class_names) == dataset.num_classes and sm.class_names[0] == "class 0":
        cmap = list(range(dataset.num_classes))  # an unnamed head of the data set's size: output k is class k
    else:
        cmap = [sm.class_index(c) for c in dataset.class_names]
    return ScoreInputs(dataset, sm.model, lambda im: sm.transform(im.convert("RGB")), cmap)


def skip_summary(dataset: SegDataset) -> str:
    """One line for the images the data set's loader skipped ("1 image skipped (no mask: 1): cat2"), or ``""``."""
    counts = dict(getattr(dataset, "skipped", None) or {})
    total = sum(counts.values())
    if not total:
        return ""
    ids = [i for i, _ in getattr(dataset, "skipped_ids", [])]
    shown = ", ".join(map(str, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    reasons = ", ".join(f"{r}: {n}" for r, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{total} image{'s' if total != 1 else ''} skipped ({reasons})" + (f": {shown}" if shown else "")
