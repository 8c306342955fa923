"""Stage: the representative classes of every class, per selection method (``selection``), from B."""

from __future__ import annotations

import numpy as np

from repcam.method import selection as S
from repcam.method.methods import SELECTIONS, SelectionInput
from repcam.pipeline.context import RunContext, RunError
from repcam.store.storage import write_json


def select(ctx: RunContext, B: np.ndarray, classes: list[str], head: np.ndarray | None = None) -> dict[str, S.Selection]:
    """{display name: selection} of every method in ``selection.methods`` (registry: repcam.method.methods), written to
    selections.json with the clusters of the S-k methods when one ran; ``head``: the multi-class model's final linear
    layer's weight rows (for head-least), None where it has none."""
    sc = ctx.cfg.selection
    C = len(classes)
    out: dict[str, S.Selection] = {}
    inp = SelectionInput(B, sc.n, sc.min_cluster_size, ctx.seed, head=head)
    for m in sc.methods:
        method = SELECTIONS[m]
        try:
            out[method.display] = method.select(inp)
        except ValueError as e:
            raise RunError(f"selection {method.display}: {e}") from e
        for note in inp.notes:
            ctx.note(note)
        inp.notes.clear()
    clusters = inp.clusters
    if sc.pairwise:
        out.setdefault("All", S.all_select(C))
    named = {n: {classes[c]: [classes[s] for s in reps] for c, reps in sel.items()} for n, sel in out.items()}
    payload = {"selections": named}
    if clusters is not None:
        payload["clusters"] = [[classes[c] for c in range(C) if clusters[c] == g] for g in sorted(set(clusters.tolist()))]
        ctx.say("clusters: " + " | ".join(", ".join(g) for g in payload["clusters"]))
    write_json(ctx.paths.selections, payload)
    return out


def needed_pairs(ctx: RunContext, selections: dict[str, S.Selection], C: int) -> list[tuple[int, int]]:
    """The unordered pairs whose binary model some selection uses (every pair with ``selection.pairwise``)."""
    if ctx.cfg.selection.pairwise:
        return [(a, b) for a in range(C) for b in range(a + 1, C)]
    pairs = {tuple(sorted((c, s))) for sel in selections.values() for c, reps in sel.items() for s in reps}
    return sorted(pairs)


def head_weights(model) -> np.ndarray | None:
    """The (C, D) weight rows of a model's final linear layer (GAP + FC models), or None."""
    from repcam.models.backbones import gap_fc_parts  # lazy: torch

    parts = gap_fc_parts(model)
    return None if parts is None else parts[1].weight.detach().float().cpu().numpy()
