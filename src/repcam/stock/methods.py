"""The stock-explain methods by name (no torch): how each computes its map with the engine, and the one resolver of a
user's method name (case-insensitive; pytorch-grad-cam's class names as aliases; "did you mean" on a typo)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

from repcam.errors import ScoreError, StockError


@dataclass(frozen=True)
class StockMethod:
    """How one stock-explain method computes its map with :class:`~repcam.engine.cam.MultiLayerGradCAM`.

    Not a table row (that is :class:`repcam.method.methods.Method`, which also names a selection and a map source):
    a stock model has no run, so only the engine's choices are left.

    ``auto``: what ``layers="auto"`` means for it (``"last"``: the deepest of the paper's layers, i.e. the classic
    single-layer map; ``"all"``: every stage). ``contrast``: target ``y_c - gamma * mean(y_rivals)`` instead of ``y_c``,
    over the image's ``rivals`` highest-scoring other classes unless the caller asks for another number.
    """

    weighting: str
    fusion: str
    auto: Literal["last", "all"]
    contrast: bool
    label: str  # the figure's panel title
    description: str
    rivals: int = 3
    engine: Literal["gradient", "cam"] = "gradient"  # "cam": Zhou et al.'s CAM from the FC weights, no backward


METHODS: dict[str, StockMethod] = {
    "gradcam": StockMethod("gradcam", "mean", "last", False, "Grad-CAM", "Grad-CAM: the deepest stage (several --layers: their mean)"),
    "layercam": StockMethod("layercam", "mean", "all", False, "LayerCAM", "LayerCAM: element-wise positive-gradient weights, mean over all stages"),
    "paper": StockMethod("gradcam", "paper", "all", False, "Grad-CAM+A (multi-layer fusion)", "repcam's multi-layer fusion: (sum of the stage maps) x deepest map"),
    "contrast": StockMethod("gradcam", "mean", "last", True, "contrast vs top rivals", "Grad-CAM of y_c - mean(y_r) over the image's top rival classes r"),
    "contrast-layercam": StockMethod("layercam", "paper", "all", True, "LayerCAM+A contrast vs top-4",
                                     "LayerCAM weights, the paper's multi-layer fusion, target y_c - mean(y_r) over the image's top-4 other classes",
                                     rivals=4),
    # pytorch-grad-cam's single-layer variants (the weighting registry's names, as `repcam score --method`), on the
    # deepest stage (several --layers: their mean)
    "gradcampp": StockMethod("gradcampp", "mean", "last", False, "Grad-CAM++", "Grad-CAM++: second-order positive-gradient channel weights"),
    "xgradcam": StockMethod("xgradcam", "mean", "last", False, "XGrad-CAM", "XGrad-CAM: activation-normalised gradient channel weights"),
    "hirescam": StockMethod("hirescam", "mean", "last", False, "HiResCAM", "HiResCAM: element-wise gradient x activation, no averaging"),
    "eigengradcam": StockMethod("eigengradcam", "mean", "last", False, "EigenGrad-CAM",
                                "EigenGrad-CAM: first principal component of gradient x activation"),
    "cam": StockMethod("gradcam", "mean", "last", False, "CAM", "Zhou et al.'s CAM: the last feature map weighted by the class's FC weights (GAP + FC models)",
                       engine="cam"),
}
"""The methods by name; the same maps as a run's Grad-CAM, LayerCAM, Grad-CAM+A and contrast rows, and
``contrast-layercam`` = the evaluation grid's ``top-4 contrast [layercam, paper]`` row (chosen on VOCdevkit-mini val;
docs/results.md "Which method when"), and ``cam`` = the run's CAM row (Zhou et al., for models that end in GAP + FC; the
strongest single map on VOCdevkit-mini at the paper's budget, val and train); ``gradcampp``, ``xgradcam``, ``hirescam``
and ``eigengradcam`` are the engine's weightings of those names on the deepest stage (on VOCdevkit-mini with the Lite1
run's model 5 to 9 points below LayerCAM on val and train: docs/results.md "Which method when")."""


ALIASES: dict[str, str] = {
    # pytorch-grad-cam's class names (and common spellings) -> repcam's method names
    "GradCAM": "gradcam",
    "GradCAMPlusPlus": "gradcampp",
    "GradCAM++": "gradcampp",
    "XGradCAM": "xgradcam",
    "HiResCAM": "hirescam",
    "LayerCAM": "layercam",
    "EigenGradCAM": "eigengradcam",
    "CAM": "cam",
}
"""Other names a method is accepted under, compared case-insensitively and ignoring ``-``, ``_`` and spaces."""


def _key(name: str) -> str:
    return "".join(ch for ch in name.strip().lower().replace("++", "pp") if ch not in "-_ ")


_BY_KEY: dict[str, str] = {**{_key(a): m for a, m in ALIASES.items()}, **{_key(m): m for m in METHODS}}


def method_names() -> list[str]:
    """The method names and their aliases, as a user may type them."""
    return list(METHODS) + [a for a in ALIASES if _key(a) not in {_key(m) for m in METHODS}]


def did_you_mean(name: str, choices: list[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices`` to ``name`` (difflib, case-insensitive), else ``""``."""
    lowered = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(name.strip().lower(), list(lowered), n=1, cutoff=0.6)
    return f" (did you mean {lowered[close[0]]!r}?)" if close else ""


def resolve_method(name: str, option: str = "method", context: str = "") -> str:
    """A user's method name -> its :data:`METHODS` key: case-insensitive, ``-``/``_``/spaces ignored, pytorch-grad-cam's
    class names accepted (``GradCAM``, ``GradCAMPlusPlus``, ``XGradCAM``, ``HiResCAM``, ``LayerCAM``,
    ``EigenGradCAM``). An unknown name is a one-line :class:`StockError` naming ``option``, with a suggestion."""
    if not isinstance(name, str):
        raise StockError(f"{option} must be a method name, got {type(name).__name__}")
    found = _BY_KEY.get(_key(name))
    if found is None:
        raise StockError(f"unknown {option} {name!r}{did_you_mean(name, method_names())}; {context}choose one of {', '.join(METHODS)}")
    return found


def score_method(name: str) -> str:
    """A ``repcam score --method`` name -> its :data:`METHODS` key (:func:`resolve_method`), or ``pgc:<Class>``
    unchanged (its class is looked up when pytorch-grad-cam is imported); :class:`ScoreError` for an unknown name,
    before any data or model is loaded."""
    if isinstance(name, str) and name.startswith("pgc:"):
        return name
    try:
        return resolve_method(name)
    except StockError:
        raise ScoreError(f"unknown method {name!r}{did_you_mean(str(name), method_names())}; choose from "
                         f"{', '.join(METHODS)} or pgc:<pytorch-grad-cam class>") from None
