"""repcam: class activation maps by representative class selection and multi-layer Grad-CAM fusion.

The public API, importable from here (each name loads its module on first use, so ``import repcam`` stays light and
does not import torch)::

    from repcam import MultiLayerGradCAM, explain_image, overlay, score

Engine: :class:`MultiLayerGradCAM` (any layers, weightings and fusions; ``targets=None`` means each image's top class),
:class:`CAMResult`, :class:`ContrastTarget`, :func:`zhou_cam`, :func:`register_weighting` / :data:`WEIGHTINGS`.
Stock models: :func:`explain_image`, :class:`StockExplainer`, :class:`StockExplanation`, :data:`METHODS`,
:func:`load_stock_model`. Runs: :class:`Explainer`, :class:`Explanation`, :func:`load_config`, :func:`load_dataset`.
Scoring: :func:`score` (any callable's maps against a folder, a config's data or a data set), :func:`score_maps`,
:func:`make_extractor`, :class:`ScoreResult`. Figures: :func:`overlay`. Errors: :mod:`repcam.errors`.
Deep import paths (``repcam.engine.cam.MultiLayerGradCAM`` ...) keep working.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    # engine
    "MultiLayerGradCAM": "repcam.engine.cam",
    "CAMResult": "repcam.engine.cam",
    "ContrastTarget": "repcam.engine.cam",
    "zhou_cam": "repcam.engine.cam",
    "register_weighting": "repcam.engine.weightings",
    "WEIGHTINGS": "repcam.engine.weightings",
    # stock models
    "explain_image": "repcam.stock.explainer",
    "StockExplainer": "repcam.stock.explainer",
    "StockExplanation": "repcam.stock.explainer",
    "METHODS": "repcam.stock.methods",
    "load_stock_model": "repcam.stock_model",
    # runs
    "Explainer": "repcam.explain",
    "Explanation": "repcam.explain",
    "load_config": "repcam.config",
    "load_dataset": "repcam.data",
    # scoring
    "score": "repcam.evaluation.score_api",
    "score_maps": "repcam.evaluation.score",
    "make_extractor": "repcam.evaluation.score",
    "ScoreResult": "repcam.evaluation.score",
    # figures
    "overlay": "repcam.reporting.overlay",
    # errors
    **{name: "repcam.errors" for name in (
        "ArtefactError", "CAMError", "ConfigError", "DataError", "ExplainError", "LayerError", "RunError", "ScoreError",
        "StockError", "WeightsError")},
}

__all__ = sorted(_LAZY) + ["__version__"]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from repcam.config import load_config
    from repcam.data import load_dataset
    from repcam.engine.cam import CAMResult, ContrastTarget, MultiLayerGradCAM, zhou_cam
    from repcam.engine.weightings import WEIGHTINGS, register_weighting
    from repcam.errors import (ArtefactError, CAMError, ConfigError, DataError, ExplainError, LayerError, RunError,
                               ScoreError, StockError, WeightsError)
    from repcam.evaluation.score import ScoreResult, make_extractor, score_maps
    from repcam.evaluation.score_api import score
    from repcam.explain import Explainer, Explanation
    from repcam.reporting.overlay import overlay
    from repcam.stock.explainer import StockExplainer, StockExplanation, explain_image
    from repcam.stock.methods import METHODS
    from repcam.stock_model import load_stock_model


def __getattr__(name: str) -> Any:
    """``repcam.explain_image`` and friends, imported on first use so that ``import repcam`` stays light."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'repcam' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
