"""Evaluation mode for a block of code, every submodule's own mode restored afterwards."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(model: nn.Module, *more: nn.Module) -> Iterator[nn.Module]:
    """``model`` (and ``more`` modules) in eval mode inside the block, which gets ``model``; afterwards (error or not)
    every submodule's own ``training`` flag is what it was before.

    ``model.train(was_training)`` would not do: it sets every submodule to the root's mode, so a frozen backbone kept
    in eval mode inside a training wrapper would come back in train mode (its BatchNorm updating its statistics).
    The flags are set directly, not through ``train()``, because modules that override ``train()`` (to keep a frozen
    part in eval mode) must get back exactly their state, not what their override would make of it.
    """
    flags = [(m, m.training) for root in (model, *more) for m in root.modules()]
    for root in (model, *more):
        root.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training
