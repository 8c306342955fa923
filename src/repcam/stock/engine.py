"""One method of :data:`repcam.stock.methods.METHODS` built on one model: the one place a method's name becomes an
engine call, shared by ``repcam explain --model`` and ``repcam score``."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from repcam.engine.cam import CAMError, ContrastTarget, MultiLayerGradCAM, Target, zhou_cam
from repcam.engine.layers import LayerError, LayerSpec, resolve_layers
from repcam.engine.modes import eval_mode
from repcam.errors import StockError
from repcam.models.backbones import gap_fc_parts
from repcam.stock.methods import METHODS, resolve_method


def rival_target(cls: int, ranking: Sequence[int], rivals: int, gamma: float = 1.0) -> ContrastTarget:
    """``cls`` against the ``rivals`` best-ranked other classes of ``ranking`` (one image's classes, best first)."""
    return ContrastTarget(cls, tuple([r for r in ranking[: rivals + 1] if r != cls][:rivals]), gamma)


class MethodEngine:
    """One method of :data:`METHODS` built on one model: ``engine(images, targets)`` gives (B, H, W) maps in [0, 1]
    at input resolution. The one place a method's name becomes an engine call, shared by ``repcam explain --model``
    (:class:`StockExplainer`) and ``repcam score`` (:func:`method_extractor`)."""

    def __init__(self, model: nn.Module, method: str, layers: Sequence[LayerSpec] | str = "auto") -> None:
        method = resolve_method(method)
        self.model, self.spec = model, METHODS[method]
        self.cam_parts = None
        self.cam: MultiLayerGradCAM | None = None
        if self.spec.engine == "cam":
            if layers != "auto":
                raise StockError("layers do not apply to method 'cam' (it uses the feature map the classifier pools)")
            self.cam_parts = gap_fc_parts(model)
            if self.cam_parts is None:
                raise StockError(f"method 'cam' needs a model that ends in global average pooling and one linear layer "
                                 f"(a timm CNN, torchvision's ResNet, MobileNet-v2, EfficientNet, DenseNet); "
                                 f"{type(model).__name__} does not: use layercam")
            self.layer_names = ["forward_features"]
            return
        try:
            if layers == "auto" and self.spec.auto == "last":
                layers = [resolve_layers(model, "auto")[-1][1]]  # the classic single-layer map
            self.cam = MultiLayerGradCAM(model, layers, fusion=self.spec.fusion, weighting=self.spec.weighting)
        except (LayerError, CAMError) as e:
            raise StockError(str(e)) from None
        self.layer_names = self.cam.layer_names

    def targets(self, classes: Sequence[int], rankings: Sequence[Sequence[int]], rivals: int, gamma: float = 1.0) -> list[Target]:
        """One target per map: the class index, or for a contrast method the class against its image's top rivals
        (``rankings[i]``: map i's image's classes, best first)."""
        if not self.spec.contrast:
            return [int(c) for c in classes]
        return [rival_target(int(c), ranking, rivals, gamma) for c, ranking in zip(classes, rankings)]

    def __call__(self, x: torch.Tensor, targets: Sequence[Target]) -> torch.Tensor:
        try:
            if self.cam_parts is not None:  # plain class indices: CAM has no contrast target
                return zhou_cam(*self.cam_parts, self.model, x, [int(t) for t in targets])
            return self.cam(x, targets).fused
        except (LayerError, CAMError) as e:
            raise StockError(str(e)) from None


def method_extractor(method: str, model: nn.Module, rivals: int | None = None, gamma: float = 1.0
                     ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``method`` as an ``(images (B, 3, H, W), class indices (B,)) -> (B, H, W) maps`` callable, the extractor that
    :func:`repcam.evaluation.score.score_maps` takes; a contrast method ranks each image's classes by the model's
    own logits (one extra forward without gradients)."""
    engine = MethodEngine(model, method)
    rivals = engine.spec.rivals if rivals is None else rivals

    def extract(x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        rankings: list[list[int]] = [[] for _ in range(len(x))]
        if engine.spec.contrast:
            with eval_mode(model), torch.no_grad():  # every submodule left in the mode it came in
                rankings = model(x).argsort(1, descending=True).tolist()
        return engine(x, engine.targets([int(c) for c in cls], rankings, rivals, gamma))

    return extract

