"""Partial fine-tuning: a backbone frozen up to a named stage, and a disk cache of that stage's output.

``pairs.freeze_until: <stage>`` trains only what comes after ``<stage>``. Everything up to it (the stem and the
earlier stages) keeps its starting weights, and its BatchNorm layers stay in eval mode, so its output for an image
never changes during training: :func:`build_cache` computes it once per training image and once for the image's
horizontal flip (the only augmentation of :func:`repcam.models.train.fit`), into one float32 ``.npy`` file that every pair
model of a run reads through a memory map. A pair model then runs only the trainable rest of the network per batch.
Maps still come from the whole network, which keeps all its weights (frozen ones included) in its state dict.

How a network is split: its stages are ``layer1..layer4`` (ResNets, the tiny CNNs) or the children of its
``blocks`` / ``features`` / ``stages`` sequence (timm EfficientNet and MobileNet, VGG...). The trunk is run with a
hook that stops the forward pass at the stage; the rest is run by swapping every frozen module for an identity,
so the model's own ``forward`` carries the cached features on. That works for networks that apply their modules
one after the other up to the stage, and :func:`split_model` checks it on a random input for every model.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from repcam.engine.modes import eval_mode
from repcam.models.backbones import Preprocess
from repcam.store.storage import Artefact, config_key, temp_prefix
from repcam.errors import FreezeError  # noqa: F401 - defined in repcam.errors, importable from here

STAGE_CONTAINERS = ("blocks", "features", "stages")
DISK_RESERVE = 1 << 30  # leave 1 GiB free beside the cache: the run still has models and maps to write


def stages(model: nn.Module) -> list[str]:
    """The names of ``model``'s stages, in forward order (``layer1``.., ``blocks.0``..)."""
    children = dict(model.named_children())
    if all(f"layer{i}" in children for i in range(1, 5)):
        return [f"layer{i}" for i in range(1, 5)]
    for name in STAGE_CONTAINERS:
        if isinstance(children.get(name), nn.Sequential) and len(children[name]) > 1:
            return [f"{name}.{n}" for n, _ in children[name].named_children()]
    raise FreezeError(f"cannot find the stages of {type(model).__name__} (no layer1..layer4 or blocks/features/stages "
                      "sequence), so it cannot be frozen up to a stage; leave pairs.freeze_until null")


def freeze_points(model: nn.Module) -> list[str]:
    """The stages ``model`` may be frozen up to: all but the last (freezing every stage would leave no map to train)."""
    return stages(model)[:-1]


@dataclass
class FrozenSplit:
    """``model`` cut after ``stage``: ``frozen`` are the (parent, attribute) slots of every module up to it."""

    model: nn.Module
    stage: str
    frozen: list[tuple[nn.Module, str]]

    def frozen_modules(self) -> list[nn.Module]:
        """The frozen modules (everything up to and including ``stage``), in ``frozen`` order."""
        return [getattr(parent, name) for parent, name in self.frozen]

    def stage_module(self) -> nn.Module:
        """The module named ``stage``, whose output is the trunk's."""
        return self.model.get_submodule(self.stage)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The stage's output for normalised images ``x``, from the frozen modules in eval mode (grad-free)."""
        out: list[torch.Tensor] = []

        def stop(_m: nn.Module, _inp: Any, output: torch.Tensor) -> None:
            out.append(output)
            raise _StopForward  # nothing after the stage is needed

        frozen = self.frozen_modules()  # in eval mode for the pass; each submodule's own mode restored after
        handle = self.stage_module().register_forward_hook(stop)
        try:
            with eval_mode(*frozen) if frozen else contextlib.nullcontext(), torch.inference_mode():
                self.model(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not out:
            raise FreezeError(f"the forward pass of {type(self.model).__name__} never reached the stage {self.stage!r}")
        return out[0]

    def rest(self, features: torch.Tensor) -> torch.Tensor:
        """The model's logits for trunk ``features``: its own forward with every frozen module an identity."""
        with self._bypassed():
            return self.model(features)

    @contextlib.contextmanager
    def _bypassed(self) -> Iterator[None]:
        saved = self.frozen_modules()
        for parent, name in self.frozen:
            setattr(parent, name, nn.Identity())
        try:
            yield
        finally:  # the modules come back even after an error, so the state dict stays whole
            for (parent, name), m in zip(self.frozen, saved):
                setattr(parent, name, m)

    def like(self, model: nn.Module) -> "FrozenSplit":
        """The same split of ``model``, another instance of this architecture (a pair model loaded into a skeleton):
        the same slots by name, without :func:`split_model`'s dry runs. Parameters keep their ``requires_grad``."""
        names = {id(m): n for n, m in self.model.named_modules()}
        return FrozenSplit(model, self.stage, [(model.get_submodule(names[id(parent)]), attr) for parent, attr in self.frozen])

    def same_trunk(self, other: "FrozenSplit") -> bool:
        """Whether ``other``'s frozen modules hold exactly this split's tensors (weights and BatchNorm statistics):
        then the two models' trunk outputs are the same, and one trunk pass can serve both."""
        mine, theirs = self._frozen_state(), other._frozen_state()
        return len(mine) == len(theirs) and all(ka == kb and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
                                                for (ka, a), (kb, b) in zip(mine, theirs))

    def _frozen_state(self) -> list[tuple[str, torch.Tensor]]:
        """Every frozen tensor (weights and BatchNorm statistics) with its name, in module order."""
        return [(k, v) for m in self.frozen_modules() for k, v in m.state_dict().items()]

    def trunk_key(self) -> str:
        """A hash of every frozen tensor (weights and BatchNorm statistics): the trunk's identity for the cache key."""
        h = hashlib.sha256(self.stage.encode())
        for k, v in self._frozen_state():
            t = v.detach().cpu().contiguous().reshape(-1)
            h.update(f"{k}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return h.hexdigest()[:16]


class _StopForward(Exception):
    pass


def split_model(model: nn.Module, stage: str, check_size: int = 64, key: str = "pairs.freeze_until") -> FrozenSplit:
    """``model`` split after ``stage``, with the frozen parameters' ``requires_grad`` off.

    Raises :class:`FreezeError` (one line, listing the valid stages) for an unknown stage, for the last stage
    (nothing left to train), or when the model does not run its modules one after the other up to the stage
    (checked: the rest applied to the trunk's output must give the model's own logits on a random input).
    """
    valid = freeze_points(model)
    every = stages(model)
    if stage == every[-1]:
        raise FreezeError(f"{key}={stage!r} freezes every stage of {type(model).__name__}; choose one of: {', '.join(valid)}")
    if stage not in valid:
        raise FreezeError(f"{key}={stage!r} is not a stage of {type(model).__name__}; choose one of: {', '.join(valid)}")
    order = _call_order(model, check_size)
    container, _, _ = stage.rpartition(".")
    owner = model.get_submodule(container) if container else model
    top = container.split(".")[0] if container else stage
    frozen: list[tuple[nn.Module, str]] = []
    for name in order:  # the model's direct children, in call order, up to the one holding the stage
        if name == top:
            break
        frozen.append((model, name))
    if container:
        for name, _ in owner.named_children():
            frozen.append((owner, name))
            if name == stage.rpartition(".")[2]:
                break
    else:
        frozen.append((model, stage))
    split = FrozenSplit(model, stage, frozen)
    _check_split(split, check_size)
    for m in split.frozen_modules():
        m.requires_grad_(False)
    return split


def _call_order(model: nn.Module, size: int) -> list[str]:
    """The model's direct children in the order its forward pass first calls them (one dry run, eval mode)."""
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda _m, _i, n=n: order.append(n) if n not in order else None)
               for n, m in model.named_children()]
    try:
        with eval_mode(model), torch.inference_mode():
            model(torch.zeros(1, 3, size, size, device=_device(model)))
    finally:
        for h in handles:
            h.remove()
    return order


def _check_split(split: FrozenSplit, size: int) -> None:
    model = split.model
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, size, size, generator=gen).to(_device(model))
    with eval_mode(model), torch.inference_mode():
        whole, parts = model(x), split.rest(split.trunk(x))
    if whole.shape != parts.shape or not torch.allclose(whole, parts, rtol=1e-4, atol=1e-5):
        raise FreezeError(f"{type(model).__name__} cannot be split at {split.stage!r}: its forward pass does more than "
                          "run its modules one after the other up to that stage; leave pairs.freeze_until null")


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


class PartialModel(nn.Module):
    """A model whose frozen trunk stays in eval mode when it is put in training mode, for :func:`repcam.models.train.fit`.

    ``from_features=True``: the input is the trunk's output (from the cache) and only the rest runs;
    ``False``: the input is images and the whole network runs (the reference the cache must reproduce).
    """

    def __init__(self, split: FrozenSplit, from_features: bool) -> None:
        super().__init__()
        self.inner = split.model  # registered, so parameters(), to() and state_dict() reach the whole model
        self.split = split
        self.from_features = from_features

    def train(self, mode: bool = True) -> "PartialModel":
        """Set training mode as ``nn.Module.train`` does, but keep the frozen modules in eval mode (their BatchNorm
        statistics are those the feature cache was computed with); returns self."""
        super().train(mode)
        for m in self.split.frozen_modules():  # frozen BatchNorm keeps its running statistics, as the cache assumes
            m.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n, num_classes) from trunk features ``x`` (``from_features``) or from images ``x`` (n, 3, H, W)."""
        return self.split.rest(x) if self.from_features else self.inner(x)


@dataclass(frozen=True)
class FeatureRows:
    """Where a unit's training images sit in a feature cache: picklable, so a unit can carry it to a worker."""

    path: str
    rows: tuple[int, ...]
    trunk_key: str  # the trunk the cache was computed with: a unit checks that its own model has the same one

    def inputs(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``inputs(idx, flip)`` for :func:`repcam.models.train.fit`: the cached features of the unit's images ``idx``,
        of their flipped version where ``flip``."""
        path = Path(self.path)
        if not path.is_file():
            raise FreezeError(f"feature cache {path} is missing (pairs.freeze_until needs the run directory on a file "
                              "system every worker sees)")
        mm = np.load(path, mmap_mode="r")
        rows = np.asarray(self.rows, dtype=np.int64)
        if rows.size and rows.max() >= mm.shape[1]:
            raise FreezeError(f"feature cache {path} has {mm.shape[1]} rows, a unit asked for row {rows.max()}")

        def batch(idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
            r, f = rows[idx.numpy()], flip.numpy()
            out = np.empty((len(r),) + mm.shape[2:], dtype=np.float32)
            out[~f] = mm[0, r[~f]]
            out[f] = mm[1, r[f]]
            return torch.from_numpy(out)

        return batch


@dataclass
class FeatureCache:
    """A built cache: ``path`` holds (2, n, C, H, W) float32, [0] the images and [1] their horizontal flips."""

    path: Path
    ids: list[int]
    trunk_key: str
    shape: tuple[int, ...]
    bytes: int
    seconds: float  # build time; 0 when reused
    reused: bool

    def rows(self, ids: Sequence[int]) -> FeatureRows:
        """The rows of images ``ids`` (data set indices), for a work unit."""
        where = {i: r for r, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise FreezeError(f"feature cache {self.path} holds no features for image {missing[0]}")
        return FeatureRows(str(self.path), tuple(where[i] for i in ids), self.trunk_key)


def build_cache(
    path: str | Path,
    split: FrozenSplit,
    pre: Preprocess,
    ids: Sequence[int],
    images: Callable[[Sequence[int]], torch.Tensor],
    key: dict[str, Any],
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    free_bytes: Callable[[Path], int] | None = None,
) -> FeatureCache:
    """The feature cache at ``path`` for images ``ids`` (``images(ids)`` gives their (n, 3, S, S) uint8 tensors):
    reused when its key matches, else (re)built atomically.

    ``key`` holds what the caller knows changes the images (data set, split, crop...); the trunk's weights, the
    stage, the input size and the ids are added here. The size, 2 x n x C x H x W x 4 bytes, is known before
    anything is written and must fit on the disk with 1 GiB to spare (:class:`FreezeError` otherwise).
    ``channels_last`` computes the trunk in that memory format (execution.channels_last; the features differ in the last
    bits, and the key leaves it out, as it leaves out the thread count).
    """
    path = Path(path)
    ids = [int(i) for i in ids]
    trunk_key = split.trunk_key()
    full_key = config_key({**key, "trunk": trunk_key, "stage": split.stage, "input_size": pre.input_size,
                           "mean": pre.mean, "std": pre.std, "ids": hashlib.sha256(repr(ids).encode()).hexdigest()})
    art = Artefact(path, full_key)
    if art.done():
        return _loaded(art, trunk_key, seconds=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _lock(path):
        # Holding the lock, no other builder is alive: temp files left next to the cache are from a killed build.
        for stale in path.parent.glob(f"{temp_prefix(path)}*.tmp"):
            stale.unlink(missing_ok=True)
        if art.done():  # built by another process while this one waited
            return _loaded(art, trunk_key, seconds=None)
        device = torch.device(device)
        split.model.to(device)
        if channels_last:
            split.model.to(memory_format=torch.channels_last)
        probe = split.trunk(pre.normalize(images(ids[:1]).to(device)))
        shape = (2, len(ids)) + tuple(probe.shape[1:])
        nbytes = int(np.prod(shape)) * 4
        _check_space(path, split.stage, len(ids), shape, nbytes, free_bytes)
        start = time.perf_counter()

        def write(tmp: Path) -> None:
            _write_features(tmp, shape, split, pre, ids, images, device, batch_size, channels_last)

        try:
            art.save(write, ids=ids, trunk=trunk_key, stage=split.stage, shape=list(shape), bytes=nbytes)
        finally:
            if channels_last:
                split.model.to(memory_format=torch.contiguous_format)
        return _loaded(art, trunk_key, seconds=time.perf_counter() - start)


def _check_space(path: Path, stage: str, n_images: int, shape: tuple[int, ...], nbytes: int,
                 free_bytes: Callable[[Path], int] | None) -> None:
    """:class:`FreezeError` unless ``nbytes`` fit on the disk of ``path`` with :data:`DISK_RESERVE` to spare."""
    free = (free_bytes or _free_bytes)(path.parent)
    if nbytes + DISK_RESERVE > free:
        raise FreezeError(f"feature cache {path} for freeze point {stage!r} needs {nbytes / 2**20:.0f} MiB "
                          f"({n_images} images x 2 flips x {shape[2:]} float32) plus 1 GiB spare, but only "
                          f"{free / 2**20:.0f} MiB are free; choose a later stage or free disk space")


def _write_features(tmp: Path, shape: tuple[int, ...], split: FrozenSplit, pre: Preprocess, ids: list[int],
                    images: Callable[[Sequence[int]], torch.Tensor], device: torch.device, batch_size: int,
                    channels_last: bool) -> None:
    """Write the trunk features of images ``ids`` and of their horizontal flips to the .npy file ``tmp`` (2, n, ...)."""
    mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
    for b in range(0, len(ids), batch_size):
        x = pre.normalize(images(ids[b : b + batch_size]).to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # Flipping the uint8 image before normalising (as fit does) equals flipping the normalised one.
        mm[0, b : b + len(x)] = split.trunk(x).float().cpu().numpy()
        mm[1, b : b + len(x)] = split.trunk(x.flip(-1)).float().cpu().numpy()
    mm.flush()
    del mm


def _loaded(art: Artefact, trunk_key: str, seconds: float | None) -> FeatureCache:
    """The cache described by ``art``'s sidecar; ``seconds`` is the build time, None when it was reused."""
    meta = art.meta()
    if meta.get("trunk") != trunk_key:  # cannot happen with a matching key, unless the sidecar was edited
        raise FreezeError(f"feature cache {art.path} was computed with another trunk; delete it")
    return FeatureCache(art.path, [int(i) for i in meta["ids"]], trunk_key, tuple(meta["shape"]), int(meta["bytes"]),
                        seconds or 0.0, seconds is None)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An exclusive lock next to ``path``, released when the holder exits or dies."""
    with open(path.with_name(f".{path.name}.lock"), "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _free_bytes(folder: Path) -> int:
    return shutil.disk_usage(folder).free
