"""Score any maps from Python against a folder data set, a run config's data or a loaded data set: :func:`score`, the
Python twin of ``repcam score`` (the same inputs, the same :class:`~repcam.evaluation.score.ScoreResult`).

    import repcam
    result = repcam.score({"layercam": "layercam", "mine": my_fn}, folder="data/pets", model="tf_efficientnet_lite0")
    print(result.markdown()); result.write_records("per_record.csv")

``my_fn(images (B, 3, H, W), class indices (B,)) -> (B, H, W)`` maps (tensor or array): any tool's maps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Union

from torch import nn

from repcam.data.base import SegDataset
from repcam.errors import ScoreError
from repcam.evaluation.score import Extractor, ScoreResult, make_extractor, score_maps
from repcam.evaluation.score_inputs import ScoreInputs, resolve_inputs, stock_inputs

Method = Union[str, Extractor]


def score(
    methods: Method | Mapping[str, Method],
    *,
    folder: str | Path | None = None,
    config: str | Path | None = None,
    dataset: SegDataset | None = None,
    split: str | None = None,
    model: str | nn.Module | None = None,
    weights: str | Path | None = None,
    run: str | Path | None = None,
    input_size: int | None = None,
    strict: bool = False,
    **options: Any,
) -> ScoreResult:
    """Score ``methods`` (a method name such as ``"layercam"`` / ``"GradCAM"`` / ``"pgc:GradCAM"``, a callable, or a
    dict name -> either; the first is the reference of the intervals) on every (image, class) record of the data set.

    Data: ``folder`` (a folder data set: classes.txt, images/, masks/), ``config`` (a run config's data section,
    ``split`` default its first eval split), or ``dataset`` (any loaded :class:`~repcam.data.base.SegDataset`).
    Model: ``model`` (a timm name or ``torchvision/<name>``, offline weights or ``weights=`` a file or ``"download"``,
    or an ``nn.Module``: ImageNet preprocessing, its outputs matched to the data set's classes by name, or by index for
    a head of the data set's size), or ``run`` (a run directory's multi-class model). ``strict``: raise if the data
    set's loader skipped any image (e.g. one without a mask); otherwise the skips are in ``result.skipped``.
    ``options``: :func:`~repcam.evaluation.score.score_maps`'s (``metrics``, ``max_images``, ``batch_size``, ``steps``,
    ``device``, ``progress``...).
    """
    if dataset is not None and (folder is not None or config is not None):
        raise ScoreError("pass one of dataset=, folder= or config=")
    if isinstance(model, nn.Module) or dataset is not None:
        inputs = _module_inputs(model, weights, run, input_size, dataset, folder, config, split)
    else:
        inputs = resolve_inputs(config=_path(config), folder=_path(folder), split=split, model=model,
                                weights=None if weights in (None, "download") else Path(weights), run=_path(run),
                                input_size=input_size, download=weights == "download")
    from repcam.evaluation.score_inputs import skip_summary

    skipped = skip_summary(inputs.dataset)
    if skipped and strict:
        raise ScoreError(f"strict=True: {skipped}")
    named = dict(methods) if isinstance(methods, Mapping) else {_label(methods): methods}
    extractors = {k: make_extractor(v, inputs.model) if isinstance(v, str) else _callable(k, v) for k, v in named.items()}
    return score_maps(extractors, inputs.dataset, inputs.model, inputs.transform, class_map=inputs.class_map, **options)


def _module_inputs(model: Any, weights: Any, run: Any, input_size: int | None, dataset: SegDataset | None,
                   folder: Any, config: Any, split: str | None) -> ScoreInputs:
    """A caller's module or data set (no command-line equivalent)."""
    from repcam.evaluation.score_inputs import _dataset

    if run is not None:
        raise ScoreError("dataset= and an nn.Module work with model=, not run=; pass folder= or config= with run=")
    data = dataset if dataset is not None else _dataset(_path(config), _path(folder), split, None)
    if model is None:
        raise ScoreError("pass model= (a name or an nn.Module) or run=")
    return stock_inputs(model, weights, input_size, data)


def _path(p: Any) -> Path | None:
    return None if p is None else Path(p).expanduser()


def _label(method: Method) -> str:
    return method if isinstance(method, str) else getattr(method, "__name__", "method")


def _callable(name: str, fn: Any) -> Callable:
    if not callable(fn):
        raise ScoreError(f"method {name!r} must be a method name or a callable (images, classes) -> maps, got {type(fn).__name__}")
    return fn
