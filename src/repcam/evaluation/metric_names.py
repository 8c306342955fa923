"""The metrics by name (no torch): the keys, titles and better directions of ``repcam score``'s columns, the names
``evaluation.faithfulness`` takes and their check, and the table-cell format. Config validation and the tables read
these without importing the metric code."""

from __future__ import annotations

import importlib.util
import math
from typing import Callable, Sequence

from repcam.errors import ScoreError

DEFAULT_THRESHOLD = 0.15
"""The CAM threshold of the primary mIoU (the paper's)."""

METRICS: tuple[tuple[str, str, str], ...] = (
    # key, column title, which direction is better
    ("miou", f"mIoU@{DEFAULT_THRESHOLD}", "higher"),
    ("pxap", "PxAP", "higher"),
    ("deletion", "deletion AUC", "lower"),
    ("insertion", "insertion AUC", "higher"),
    ("road_morf", "ROAD MoRF", "lower"),
    ("road_lerf", "ROAD LeRF", "higher"),
    ("avg_drop", "Avg Drop %", "lower"),
    ("avg_increase", "Avg Increase %", "higher"),
    ("maxboxacc_v2", "MaxBoxAccV2 %", "higher"),
)

FAITHFULNESS_KEYS: tuple[str, ...] = tuple(k for k, _, _ in METRICS if k not in ("miou", "pxap"))
"""The metrics :func:`repcam.evaluation.score.record_values` computes: every one of :data:`METRICS` but the mask-overlap ones."""

METRIC_GROUPS: dict[str, tuple[str, ...]] = {
    # evaluation.faithfulness name -> its columns (METRICS keys), in table order
    "deletion": ("deletion",),
    "insertion": ("insertion",),
    "road": ("road_morf", "road_lerf"),
    "avg_drop": ("avg_drop", "avg_increase"),
    "maxboxacc": ("maxboxacc_v2",),
}
_NEEDS = {"road": ("pytorch_grad_cam", "pip install grad-cam"), "maxboxacc": ("scipy", "pip install scipy")}
_TITLES = {k: (title, better) for k, title, better in METRICS}


def check_metrics(names: Sequence[str], fail: Callable[[str], None]) -> None:
    """``fail(message)`` for an unknown or repeated ``evaluation.faithfulness`` name, or a metric whose optional
    package is missing."""
    for k, name in enumerate(names):
        if name not in METRIC_GROUPS:
            fail(f"has unknown metric {name!r}; choose from {', '.join(METRIC_GROUPS)}")
        if name in names[:k]:
            fail(f"lists {name!r} twice")
        if name in _NEEDS and importlib.util.find_spec(_NEEDS[name][0]) is None:
            fail(f"metric {name!r} needs the {_NEEDS[name][0]} package: {_NEEDS[name][1]} (or the [score] extra)")


def metric_keys(metrics: Sequence[str] | None) -> tuple[str, ...]:
    """``repcam score --metric`` names checked against :data:`METRICS` and put in its order (None: all of them);
    :class:`ScoreError` for an unknown one, before any data or model is loaded."""
    known = [k for k, _, _ in METRICS]
    if metrics is None:
        return tuple(known)
    unknown = [k for k in metrics if k not in known]
    if unknown or not metrics:
        raise ScoreError(f"unknown metric {unknown[0]!r}; choose from {', '.join(known)}" if unknown else "no metric to score")
    return tuple(k for k in known if k in metrics)


def columns(names: Sequence[str]) -> list[str]:
    """The columns (:data:`METRICS` keys) of the chosen ``evaluation.faithfulness`` names, in table order."""
    return [c for g in METRIC_GROUPS if g in names for c in METRIC_GROUPS[g]]


def column_title(col: str) -> str:
    """``deletion AUC (↓)``: the column's title in ``repcam score``'s table with the better direction."""
    title, better = _TITLES[col]
    return f"{title} ({'↑' if better == 'higher' else '↓'})"


def _fmt(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"


def format_cell(value: float, interval: Sequence[float] | None = None) -> str:
    """A table cell: the value, and where given its difference to the reference with the interval, ``v (d [lo, hi])``."""
    cell = _fmt(value)
    if interval is not None:
        d, lo, hi = interval
        cell += f" ({d:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}])" if not math.isnan(lo) else ")")
    return cell
