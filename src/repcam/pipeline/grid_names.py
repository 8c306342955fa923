"""The evaluation grid's names (no torch): its layer fusions and map sources, and the config check of
``evaluation.grid`` beside them (the weightings are :data:`repcam.engine.weightings.WEIGHTINGS`)."""

from __future__ import annotations

from typing import Any, Callable

GRID_FUSIONS = ("last", "paper", "mean", "sum", "layercam")  # "last": the deepest layer alone
GRID_SOURCES = ("multiclass", "contrast", "topk-contrast", "pairs")  # "pairs": repcam.pipeline.grid_pairs


def check_grid(grid: Any, fail: Callable[[str, str], None]) -> None:
    """Config validation of ``evaluation.grid``: known, non-empty, distinct names (``fail(key, message)`` raises)."""
    from repcam.engine.weightings import WEIGHTINGS  # lazy: the weighting registry imports torch

    for name, allowed in (("weightings", tuple(WEIGHTINGS)), ("fusions", GRID_FUSIONS), ("sources", GRID_SOURCES)):
        values = getattr(grid, name)
        key = f"evaluation.grid.{name}"
        if not values:
            fail(key, f"must not be empty; choose from {', '.join(allowed)}")
        bad = [v for v in values if v not in allowed]
        if bad:
            fail(key, f"has unknown {name.removesuffix('s')} {bad[0]!r}; choose from {', '.join(allowed)}")
        if len(set(values)) != len(values):
            fail(key, f"lists {next(v for v in values if values.count(v) > 1)!r} twice")
