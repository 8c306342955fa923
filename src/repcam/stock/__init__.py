"""Explain a stock (pretrained, unmodified) classifier: no training, no run directory.

    import repcam
    ex = repcam.explain_image("tf_efficientnet_lite0", "cat.jpg")   # the top-3 ImageNet classes, LayerCAM
    ex.classes, ex.scores, ex.maps.shape                            # names, probabilities, (K, H, W) in [0, 1]
    ex.save("out/")                                                 # one overlay figure per class

``model`` is an ``nn.Module`` or a name: any timm name or ``torchvision/<name>``, built with weights from disk
only (see :func:`repcam.stock_model.load_stock_model`). Methods are a small registry (:data:`METHODS`), so more
weightings plug in by adding one entry. ``repcam explain IMAGE... --model NAME`` is the command-line front end (:func:`explain_files`).

The package is split by job: :mod:`~repcam.stock.methods` (the method registry, no torch), :mod:`~repcam.stock.images`
(reading and expanding images), :mod:`~repcam.stock.engine` (a method on a model), :mod:`~repcam.stock.explainer`
(the Python API) and :mod:`~repcam.stock.files` (the command line's batches). Every name is importable from here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "MethodEngine": "engine", "method_extractor": "engine", "rival_target": "engine",
    "StockExplainer": "explainer", "StockExplanation": "explainer", "explain_image": "explainer",
    "fixed_references": "explainer", "StockError": "explainer",
    "batches": "files", "explain_files": "files",
    "IMAGE_SUFFIXES": "images", "ImageInput": "images", "expand_images": "images", "load_image": "images",
    "ALIASES": "methods", "METHODS": "methods", "StockMethod": "methods", "did_you_mean": "methods", "method_names": "methods",
    "resolve_method": "methods",
}
__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from repcam.stock.engine import MethodEngine, method_extractor, rival_target
    from repcam.stock.explainer import StockError, StockExplainer, StockExplanation, explain_image, fixed_references
    from repcam.stock.files import batches, explain_files
    from repcam.stock.images import IMAGE_SUFFIXES, ImageInput, expand_images, load_image
    from repcam.stock.methods import ALIASES, METHODS, StockMethod, did_you_mean, method_names, resolve_method


def __getattr__(name: str) -> Any:
    """Each name from its submodule on first use: ``repcam.stock.methods`` (the registry) stays free of torch."""
    if name in _WHERE:
        return getattr(importlib.import_module(f"repcam.stock.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'repcam.stock' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
