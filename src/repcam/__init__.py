"""repcam: class activation maps by representative class selection and multi-layer Grad-CAM fusion."""

__version__ = "0.1.0"

_LAZY = {"explain_image": "repcam.stock", "StockExplainer": "repcam.stock", "StockExplanation": "repcam.stock"}


def __getattr__(name: str):
    """``repcam.explain_image`` and friends, imported on first use so that ``import repcam`` stays light."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'repcam' has no attribute {name!r}")
