"""Grad-CAM of several models that share a frozen trunk: the trunk's forward pass once per batch, then per model the
forward pass of its own rest of the network and one backward.

A run's pair models trained with ``pairs.freeze_until`` are equal up to that stage (the trunk kept its starting
weights) and differ only after it. Their maps still need the gradient at every hooked layer, the trunk's included, so
each model needs its own backward through the trunk; but the trunk's forward, its activations and its graph are the
same for all of them. Computing them once per batch instead of once per model is what this module is for (issue 28).
The maps equal those of :class:`~repcam.engine.cam.MultiLayerGradCAM` on each whole model: the same operations on
the same tensors, in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from repcam.engine.cam import (MultiLayerGradCAM, Target, _check_grads, _check_input, _check_logits, _check_weightings,
                               _layer_grads, _logits, cam_pass)
from repcam.engine.layers import LayerError
from repcam.engine.weightings import WEIGHTINGS


@dataclass(frozen=True)
class Head:
    """One model on the shared trunk: ``model`` is the whole model (its hooked layers after the stage are found in
    it by name), ``rest`` maps the trunk's output to its logits, and ``targets`` holds one target per image (or one
    for all), as for :class:`~repcam.engine.cam.MultiLayerGradCAM`."""

    model: nn.Module
    rest: Callable[[torch.Tensor], object]
    targets: Target | Sequence[Target] | None


class _StopAtStage(Exception):
    """Raised by the stage's forward hook: nothing after the trunk is computed in the trunk's pass."""


class SharedTrunkGradCAM(MultiLayerGradCAM):
    """:class:`~repcam.engine.cam.MultiLayerGradCAM` for models equal up to and including the module ``stage``;
    ``model`` is any one of them (its weights up to the stage are the ones used).

    The caller guarantees that every :class:`Head`'s model has the same trunk weights as ``model``
    (:meth:`repcam.models.featcache.FrozenSplit.same_trunk` checks it); nothing here can tell.

    >>> cam = SharedTrunkGradCAM(pair_models[0], "blocks.5")
    >>> cam.layer_maps_heads(x, [Head(m, split.rest, targets) for m, split in ...], ["gradcam"], emit)
    """

    def __init__(self, model: nn.Module, stage: str, target_layers="auto", fusion="paper", amp: bool = False,
                 reshape_transform="auto") -> None:
        super().__init__(model, target_layers, fusion, amp=amp, reshape_transform=reshape_transform)
        try:
            self.stage_module = model.get_submodule(stage)
        except AttributeError:
            raise LayerError(f"model has no module named {stage!r} to share as the trunk") from None
        self.stage = stage

    def layer_maps_heads(self, x: torch.Tensor, heads: Sequence[Head], weightings: Sequence[str],
                         emit: Callable[[int, dict[str, torch.Tensor]], None]) -> None:
        """Per-layer maps of every head for images ``x``: one trunk forward, then per head one forward of its rest
        and one backward; ``emit(k, {weighting: (B, L, H, W)})`` gets head ``k``'s maps before the next head's
        backward (one head's maps and gradients are in memory at a time)."""
        _check_weightings(weightings)
        _check_input(self.model, x)
        size = x.shape[-2:]
        with cam_pass(x.device.type, self.amp, self.model, *(h.model for h in heads)):
            trunk_acts: dict[int, torch.Tensor] = {}
            features = self._trunk(x, trunk_acts)
            for k, head in enumerate(heads):
                acts, grads = self._head_backward(head, features, trunk_acts)
                shaped = [(self.reshape(a.detach()), self.reshape(g)) if self.reshape else (a.detach(), g) for a, g in zip(acts, grads)]
                with torch.autocast(x.device.type, enabled=False):  # the map arithmetic in float32, as MultiLayerGradCAM's
                    emit(k, {w: torch.stack([self._layer_map(a, g, size, WEIGHTINGS[w]) for a, g in shaped], dim=1) for w in weightings})

    def _trunk(self, x: torch.Tensor, captured: dict[int, torch.Tensor]) -> torch.Tensor:
        """The stage's output for ``x`` (in the autograd graph), the hooked layers up to it captured on the way."""
        out: list[torch.Tensor] = []

        def stop(_m: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            out.append(output)  # after the stage's own capture hook, if it is hooked: the copy the model goes on with
            raise _StopAtStage

        handles = [m.register_forward_hook(self._capture_hook(i, n, captured)) for i, (n, m) in enumerate(self.layers)]
        handles.append(self.stage_module.register_forward_hook(stop))
        try:
            self.model(x)
        except _StopAtStage:
            pass
        finally:
            for h in handles:
                h.remove()
        if not out:
            raise LayerError(f"the forward pass of {type(self.model).__name__} never reached the stage {self.stage!r}")
        return out[0]

    def _head_backward(self, head: Head, features: torch.Tensor, trunk_acts: dict[int, torch.Tensor]
                       ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Head ``head``'s logits from the trunk's ``features`` and the gradient of its target score at every hooked
        layer (the trunk's graph is kept for the next head)."""
        captured: dict[int, torch.Tensor] = {}
        named = dict(head.model.named_modules())
        handles = [named[n].register_forward_hook(self._capture_hook(i, n, captured))
                   for i, (n, _) in enumerate(self.layers) if i not in trunk_acts and n in named]
        try:
            logits = _logits(head.rest(features), self.output_fn)
        finally:
            for h in handles:
                h.remove()
        acts = {**trunk_acts, **captured}
        missing = [self.layers[i][0] for i in range(len(self.layers)) if i not in acts]
        if missing:
            raise LayerError(f"layers {missing} were not executed in the trunk's or the head's forward pass")
        _check_logits(logits)
        tensors = [acts[i] for i in range(len(self.layers))]
        grads = _layer_grads(logits, head.targets, tensors, retain_graph=True)  # the trunk's graph serves the next head
        _check_grads(self.layer_names, grads)
        return tensors, list(grads)
