"""The paper's method as one object: a class's map is the fusion F of its maps from the binary models against its
representative classes, each the multi-layer Grad-CAM A of that pair model.

Composed the way torchcam composes FinerCAM or RefineCAM from a CAM extractor: :class:`RepresentativeCAM` takes
how to reach a pair model, the selection (class -> representative classes) and the class fusion, and computes the
representative maps of live images; :func:`fuse_stored` is the same F over maps already computed and stored (the
evaluation, the example figures). Both fuse through :func:`repcam.fusion.fuse_classes`, so a map explained now and
a map scored by a run are the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Hashable, Mapping, Sequence, TypeVar

import numpy as np
import torch

from repcam.cam import MultiLayerGradCAM
from repcam.fusion import ClassFusion, fuse_classes
from repcam.layers import LayerSpec

K = TypeVar("K", bound=Hashable)

PairFor = Callable[[K, K], "tuple[torch.nn.Module, int] | None"]
"""``pair_for(c, s)``: the binary model of classes c and s and the logit of c in it, or None when not trained."""


def fuse_stored(maps: Sequence[np.ndarray] | np.ndarray, mode: ClassFusion = "mean") -> np.ndarray:
    """F over stored maps of one class on one image (``maps``: one (H, W) map per representative class), as float32.

    Stored maps may be float16 (repcam.records): they are fused in float32, as every run has always done."""
    return fuse_classes(torch.from_numpy(np.stack(maps).astype(np.float32)), mode).numpy()


@dataclass
class RepresentativeMaps(Generic[K]):
    """One class on one image: the map from each representative's pair model (A) and their fusion (F)."""

    maps: dict[K, torch.Tensor] = field(default_factory=dict)  # representative class -> (H, W) map, on the CPU
    fused: torch.Tensor | None = None  # None when no representative's pair model is available


class RepresentativeCAM(Generic[K]):
    """The paper's map of a class: F over the A maps of the pair models against its representative classes.

    ``selection`` maps a class to its representative classes (any hashable names, as long as ``pair_for`` takes
    them); representatives without a pair model are left out of the fusion, as in the evaluation."""

    def __init__(self, pair_for: PairFor, selection: Mapping[K, Sequence[K]], class_fusion: ClassFusion = "mean",
                 layers: Sequence[LayerSpec] | str = "auto") -> None:
        self.pair_for = pair_for
        self.selection = selection
        self.class_fusion = class_fusion
        self.layers = layers

    def __call__(self, x: torch.Tensor, cls: K) -> RepresentativeMaps[K]:
        """The maps of ``cls`` on the single image ``x`` (1, 3, H, W), already preprocessed for the pair models."""
        maps: dict[K, torch.Tensor] = {}
        for s in self.selection.get(cls, []):
            pair = self.pair_for(cls, s)
            if pair is not None:
                model, logit = pair
                maps[s] = MultiLayerGradCAM(model, self.layers)(x, [logit]).fused[0].cpu()
        fused = fuse_classes(torch.stack(list(maps.values())), self.class_fusion) if maps else None
        return RepresentativeMaps(maps, fused)
