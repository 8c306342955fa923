"""Training loops for the multi-class classifier and the binary pair classifiers, on cached uint8 tensors."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from repcam.data.base import DataError, SegDataset
from repcam.models.backbones import Preprocess

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (done, total)
BatchInputs = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (image rows, flip flags) -> the model's input


def resolve_device(device: str) -> torch.device:
    """``"auto"``: CUDA if available, else CPU; any other name as given (ValueError for CUDA on a machine without)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available on this machine")
    return torch.device(device)


class ImageCache:
    """Each image of a data set preprocessed once into a (3, S, S) uint8 tensor; unreadable images are skipped and counted.

    With ``spill_dir`` the tensors go to an anonymous file there (deleted when the cache is, or when the process
    dies) and are read back with positioned reads, so memory does not grow with the number of images.
    """

    def __init__(self, dataset: SegDataset, pre: Preprocess, crop: bool, spill_dir: str | Path | None = None) -> None:
        self.dataset, self.pre, self.crop = dataset, pre, crop
        self._cache: dict[int, torch.Tensor] = {}
        self.bad: dict[int, str] = {}
        self._slot: dict[int, int] = {}  # image -> row in the spill file
        self._file = None
        if spill_dir is not None:
            Path(spill_dir).mkdir(parents=True, exist_ok=True)
            self._file = tempfile.TemporaryFile(dir=spill_dir, prefix=".images-")  # noqa: SIM115 - closed in __del__
        self._shape = (3, pre.input_size, pre.input_size)
        self._row_bytes = math.prod(self._shape)

    def __del__(self) -> None:
        if self._file is not None:
            self._file.close()

    def __contains__(self, i: int) -> bool:
        return i in self._cache or i in self._slot

    def _put(self, i: int, t: torch.Tensor) -> None:
        if self._file is None:
            self._cache[i] = t
            return
        buf = t.contiguous().numpy().tobytes()
        if len(buf) != self._row_bytes:
            raise DataError(f"image {i}: preprocessed to {tuple(t.shape)}, expected {self._shape}")
        self._slot[i] = len(self._slot)
        os.pwrite(self._file.fileno(), buf, self._slot[i] * self._row_bytes)

    def _get(self, i: int) -> torch.Tensor:
        if self._file is None:
            return self._cache[i]
        buf = os.pread(self._file.fileno(), self._row_bytes, self._slot[i] * self._row_bytes)
        return torch.frombuffer(bytearray(buf), dtype=torch.uint8).view(self._shape)

    def ok(self, idx: Sequence[int]) -> list[int]:
        """The subset of ``idx`` whose image loads; loads and caches them."""
        good = []
        for i in idx:
            if i in self.bad:
                continue
            if i not in self:
                try:
                    self._put(i, self.pre.to_uint8(self.dataset.image(i), self.crop))
                except DataError as e:
                    self.bad[i] = str(e)
                    log.warning("skipping image: %s", e)
                    continue
            good.append(i)
        return good

    def stack(self, idx: Sequence[int]) -> torch.Tensor:
        """The images ``idx`` (already loaded by :meth:`ok`) as one uint8 (len(idx), 3, S, S) tensor."""
        return torch.stack([self._get(i) for i in idx]) if idx else torch.empty(0, *self._shape, dtype=torch.uint8)


@dataclass
class FitResult:
    """What :func:`fit` returns: epochs trained (fewer than asked when ``target_accuracy`` stopped it), the last epoch's
    training accuracy and mean loss, wall-clock seconds, and one dict per epoch (epoch, loss, accuracy, lr)."""

    epochs: int
    train_accuracy: float
    final_loss: float
    seconds: float
    history: list[dict]


def fit(
    model: nn.Module,
    images: torch.Tensor | None,
    targets: torch.Tensor,
    pre: Preprocess,
    *,
    loss: str,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: torch.device,
    target_accuracy: float | None = None,
    plateau: tuple[float, int] | None = None,
    progress: Progress | None = None,
    inputs: BatchInputs | None = None,
    step: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    channels_last: bool = False,
) -> FitResult:
    """Adam on uint8 ``images`` with random horizontal flips.

    ``loss="ce"``: ``targets`` are class indices; ``loss="bce"``: ``targets`` are (n, C) 0/1 multi-label rows.
    Stops early once the epoch's training accuracy exceeds ``target_accuracy`` (the paper's pair-model rule).
    ``plateau=(factor, patience)`` halves the learning rate when the loss stops falling (the paper's schedule).
    ``inputs(rows, flip)`` replaces the flipped, normalised images as the model's input (``images`` may then be None):
    :mod:`repcam.models.featcache` passes cached trunk features, so the batches and flips stay exactly those of the images.
    ``step(model, x, y) -> (batch loss, logits)`` replaces the plain forward and loss for a model that needs the
    targets in its forward pass (ACoL erases by the ground-truth classes); the logits only feed the accuracy.
    """
    if len(targets) == 0:
        raise ValueError("no training images")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    # channels_last (opt-in, CPU only): 1.31x per training step for Lite0 at 224 px and 1.18x for tiny_cnn, one
    # thread (benchmarks/results/channels_last.md). Off by default: it changes the float rounding of training, so the
    # trained weights move in the last bits, enough to move the demo's seed-0 claim interval across zero and to break
    # the feature cache's exact equality with image training; the pipeline's numbers stay those of the default format.
    # The model returns to the default format when done, so the CAM passes and a model loaded from disk compute alike.
    channels_last = channels_last and device.type == "cpu"
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=plateau[0], patience=plateau[1]) if plateau else None
    n = len(targets)
    history: list[dict] = []
    acc = float("nan")
    epoch = 0
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5
        total_loss, correct, seen = _epoch(model, opt, images, targets, pre, order, flips, loss=loss, batch_size=batch_size,
                                           device=device, inputs=inputs, step=step, channels_last=channels_last)
        acc = correct / max(seen, 1)
        mean_loss = total_loss / max(seen, 1)
        history.append({"epoch": epoch, "loss": mean_loss, "accuracy": acc, "lr": opt.param_groups[0]["lr"]})
        if sched is not None:
            sched.step(mean_loss)
        if progress:
            progress(epoch, epochs)
        if target_accuracy is not None and acc > target_accuracy:
            break
    model.to(memory_format=torch.contiguous_format).eval()
    return FitResult(epoch, acc, history[-1]["loss"] if history else float("nan"), time.perf_counter() - start, history)


def _epoch(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    images: torch.Tensor | None,
    targets: torch.Tensor,
    pre: Preprocess,
    order: torch.Tensor,
    flips: torch.Tensor,
    *,
    loss: str,
    batch_size: int,
    device: torch.device,
    inputs: BatchInputs | None,
    step: Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
    channels_last: bool = False,
) -> tuple[float, float, int]:
    """One epoch of :func:`fit` over the images in ``order``, each flipped where ``flips`` says: (summed loss,
    correct predictions, images seen)."""
    n = len(targets)
    total_loss, correct, seen = 0.0, 0.0, 0
    for b in range(0, n, batch_size):
        idx = order[b : b + batch_size]
        if len(idx) < 2 and n >= 2:  # BatchNorm cannot train on a single image
            continue
        if inputs is None:
            x = images[idx]
            x = torch.where(flips[idx].view(-1, 1, 1, 1), x.flip(-1), x)
            x = pre.normalize(x.to(device, non_blocking=True))
        else:
            x = inputs(idx, flips[idx]).to(device, non_blocking=True)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = targets[idx].to(device)
        step_loss, logits = step(model, x, y) if step is not None else (None, model(x))
        if loss == "ce":
            batch_loss = F.cross_entropy(logits, y) if step_loss is None else step_loss
            correct += (logits.argmax(1) == y).sum().item()
        else:
            batch_loss = F.binary_cross_entropy_with_logits(logits, y.float()) if step_loss is None else step_loss
            correct += ((logits > 0) == (y > 0.5)).float().mean(1).sum().item()
        opt.zero_grad(set_to_none=True)
        batch_loss.backward()
        opt.step()
        total_loss += batch_loss.item() * len(idx)
        seen += len(idx)
    return total_loss, correct, seen


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, pre: Preprocess, device: torch.device, batch_size: int = 64,
            channels_last: bool = False) -> torch.Tensor:
    """Logits for uint8 images, in eval mode, on CPU. ``channels_last`` (execution.channels_last, CPU only): the pass
    in that memory format (1.5-1.9x for Lite1 at 240 px on one thread, logits equal to about 4e-6), the model back in
    the default format afterwards."""
    channels_last = channels_last and torch.device(device).type == "cpu"
    model.to(device).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model.to(memory_format=fmt)
    try:
        out = [model(pre.normalize(images[b : b + batch_size].to(device)).contiguous(memory_format=fmt)).float().cpu()
               for b in range(0, len(images), batch_size)]
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
    return torch.cat(out) if out else torch.empty(0)
