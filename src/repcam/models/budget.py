"""Training compute of a run's models, so that the baseline is trained with no less compute than the method.

The unit is ``multiclass.budget_unit``:

* ``image-epochs`` (default; what every run before it matched): images x epochs. Exact while every model trains the
  whole network; with ``pairs.freeze_until`` a pair model's image-epoch costs a fraction of the baseline's, so
  matching image-epochs gives the baseline several times the method's compute (fair to the baseline, not to the method).
* ``flops``: floating-point operations of the training steps (three forward passes' worth, the forward counted by
  :mod:`torch.utils.flop_counter` on one example: convolutions and matrix products), times the images and epochs
  trained; a partly frozen pair model counts the stages it trains per image-epoch, plus the frozen trunk's forward
  once per image and flip for the shared feature cache. Deterministic, unlike seconds, and the same on every machine.

The math is pure (:class:`Costs`, :func:`extra_epochs`); :func:`step_flops` measures one model.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

UNITS = ("image-epochs", "flops")


@dataclass(frozen=True)
class Costs:
    """What one image-epoch of each kind of training costs in ``unit`` (all 1 and no cache for image-epochs)."""

    unit: str = "image-epochs"
    multiclass: float = 1.0  # one image-epoch of the multi-class model (and of the baseline trained from it)
    pair: float = 1.0  # one image-epoch of a pair model (of its trained stages only, when partly frozen)
    cache_image: float = 0.0  # the feature cache's cost per image (trunk forward of the image and its flip)

    def pairs(self, image_epochs: int, cache_images: int = 0) -> float:
        """The cost of ``image_epochs`` pair-model image-epochs plus the feature cache over ``cache_images`` images."""
        return image_epochs * self.pair + cache_images * self.cache_image


def extra_epochs(done: float, target: float, per_epoch: float) -> int:
    """Epochs of ``per_epoch`` compute that bring ``done`` to at least ``target`` (0 when it is there already)."""
    if per_epoch <= 0:
        raise ValueError("per_epoch must be positive")
    if done >= target:
        return 0
    # A relative tolerance: a float product that lands a hair above a whole number of epochs is that number.
    return math.ceil((target - done) / per_epoch - 1e-9)


def forward_flops(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> float:
    """FLOPs per example row of a gradient-free call ``fn(example)``, counted by :mod:`torch.utils.flop_counter`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(example)
    return counter.get_total_flops() / len(example)


def step_flops(model: nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one training step per example row: three times the forward pass (the backward computes the
    gradients of the inputs and of the weights, each about one forward's worth, the usual convention).

    Not torch's own count of the backward: it charges a depthwise convolution's backward as if the convolution were
    dense (measured on Lite0: 31.4 GFLOPs backward for 0.77 forward). Counted on a copy of ``model`` in eval mode,
    so the caller's BatchNorm statistics are untouched (the count does not depend on the mode).
    """
    return 3 * forward_flops(copy.deepcopy(model).eval(), example)
