"""Least: each class's N least similar classes (the tail of B's row), a control for step S.

The paper chooses representative classes among the classes a classifier confuses with the class (Sec. 3.1): a
binary model against a similar class has to find the parts that tell the two apart. Least asks the opposite
question: if pair models against the classes the multi-class model never confuses with the class give maps as
good as S-k's, similarity is not what carries the gain. ``selection.methods: [least]`` adds the rows
``Least+F`` and ``Least+A+F`` (and the variants') to every table.
"""

from __future__ import annotations

from repcam.method import selection as S
from repcam.method.methods import SelectionInput, register_selection


@register_selection("least", "Least")
def least_similar(inp: SelectionInput) -> S.Selection:
    """Class ``i`` -> the ``n`` classes with the smallest ``B[i, j]``, least similar first (ties: smaller index last,
    the reverse of :func:`~repcam.method.selection.ranked_others`)."""
    return {i: S.ranked_others(inp.B, i)[::-1][: inp.n] for i in range(inp.num_classes)}
