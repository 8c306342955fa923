"""Head-least: each class's N classes least similar to it in the classifier's own head (cosine of the FC rows).

A reference choice that needs no B, hence no run: any classifier ending in one linear layer gives it, a stock
ImageNet model included. As contrast references (target ``y_c - mean(y_r)``) they subtract what the class shares
with classes that look nothing like it (background, generic texture), instead of the evidence a similar class
shares (the image's top rivals). ``selection.methods: [head-least]`` in a run; ``--references head-least`` for a
stock model (``repcam explain --method contrast``).
"""

from __future__ import annotations

import numpy as np

from repcam.method import selection as S
from repcam.method.methods import SelectionInput, register_selection


def head_cosine(head: np.ndarray) -> np.ndarray:
    """(C, C) cosine similarity of the rows of a (C, D) head weight matrix (a zero row: similarity 0)."""
    w = np.asarray(head, dtype=np.float64)
    norm = np.linalg.norm(w, axis=1, keepdims=True)
    w = np.divide(w, norm, out=np.zeros_like(w), where=norm > 0)
    return w @ w.T


def least_by_head(head: np.ndarray, n: int) -> S.Selection:
    """Class ``i`` -> the ``n`` other classes whose head rows have the smallest cosine with row ``i``, least first
    (ties: smaller index first)."""
    cos = head_cosine(head)
    C = len(cos)
    if not 1 <= n <= C - 1:
        raise ValueError(f"cannot select N={n} classes: each class has {C - 1} other classes")
    out: S.Selection = {}
    for i in range(C):
        others = [j for j in range(C) if j != i]
        out[i] = sorted(others, key=lambda j: (cos[i, j], j))[:n]
    return out


@register_selection("head-least", "Head-least")
def head_least(inp: SelectionInput) -> S.Selection:
    if inp.head is None:
        raise ValueError("head-least needs a classifier that ends in one linear layer (its weight rows); this model has none")
    return least_by_head(inp.head, inp.n)
