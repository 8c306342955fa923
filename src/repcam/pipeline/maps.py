"""Map extraction: every (image, class) map a method needs, computed once and stored compactly on disk."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repcam.engine.cam import MultiLayerGradCAM, zhou_cam
from repcam.engine.fusion import fuse_layers
from repcam.engine.tta import TTA
from repcam.models.backbones import Preprocess, gap_fc_parts
from repcam.models.train import ImageCache

MapRecords = dict[str, np.ndarray]  # "image" (n,), "cls" (n,), then one (n, S, S) float16 array per map kind


def shrink_maps(maps: torch.Tensor, size: int) -> np.ndarray:
    """(n, H, W) maps in [0, 1] -> (n, size, size) float16, the form every stored map takes.

    Bilinear resize (only when the side differs), clamped to [0, 1], on the CPU: stored maps need not keep input
    resolution. The one owner of that form: :func:`extract`, the grid and the model-based baselines all use it.
    """
    if maps.shape[-1] != size or maps.shape[-2] != size:
        maps = F.interpolate(maps.unsqueeze(1).float(), size=(size, size), mode="bilinear", align_corners=False).squeeze(1)
    return maps.detach().clamp(0, 1).cpu().numpy().astype(np.float16)


@dataclass(frozen=True)
class MapSet:
    """One set of maps in a shared pass (:func:`extract_sets`): the kinds to keep (see :func:`extract`), one
    target per job, and the sink its chunks stream to. A ``rider`` also gets each batch's per-layer maps of the set's
    targets under the ``weightings`` it asks for ({weighting: (B, L, H, W)}), from the same backward: the grid's files
    of the same targets (:class:`repcam.pipeline.grid.GridRider`) are made in the pass instead of one of their own."""

    kinds: Sequence[str]
    targets: Sequence[Any]
    sink: Callable[[str, np.ndarray], None]
    rider: Callable[[dict[str, torch.Tensor]], None] | None = None
    weightings: Sequence[str] = ()


def extract(
    model: nn.Module,
    cache: ImageCache,
    pre: Preprocess,
    jobs: Sequence[tuple[int, int, Any]],
    device: torch.device,
    map_size: int,
    batch_size: int,
    kinds: Sequence[str],
    progress: Callable[[int], None] | None = None,
    sink: Callable[[str, np.ndarray], None] | None = None,
    amp: bool = False,
    tta: TTA | None = None,
    channels_last: bool = False,
) -> MapRecords:
    """Maps for ``jobs`` = (image index, class index, target) triples; a target is a logit index or a callable
    on one image's logits (e.g. :class:`~repcam.engine.cam.ContrastTarget`).

    ``kinds`` picks what to keep: ``last`` (single-layer Grad-CAM at the deepest layer), ``fused`` (the paper's
    multi-layer map), ``mean`` (mean of the layer maps), ``layercam`` (LayerCAM, mean over layers) and
    ``cam`` (Zhou et al.'s CAM, when the model ends in GAP + FC).
    With ``sink``, every chunk goes to ``sink(kind, maps)`` as it is computed (see :class:`repcam.store.records.RecordWriter`)
    and the returned records hold only "image" and "cls": memory does not grow with the number of jobs.
    ``tta``: every map is the test-time augmented one (:mod:`repcam.engine.tta`).
    ``channels_last`` (CPU only): the passes run in that memory format (1.1-1.3x, maps equal to about 1e-6) and the
    model is back in the default format afterwards.
    """
    out: dict[str, list[np.ndarray]] = {k: [] for k in kinds}

    def keep(kind: str, maps: np.ndarray) -> None:
        if sink is not None:
            sink(kind, maps)
        else:
            out[kind].append(maps)

    targets = [j[2] if callable(j[2]) else int(j[2]) for j in jobs]
    extract_sets(model, cache, pre, jobs, [MapSet(kinds, targets, keep)], device, map_size, batch_size, progress, amp, tta,
                 channels_last)
    records: MapRecords = {
        "image": np.array([j[0] for j in jobs], dtype=np.int32),
        "cls": np.array([j[1] for j in jobs], dtype=np.int16),
    }
    if sink is None:
        for k, arrs in out.items():
            records[k] = np.concatenate(arrs) if arrs else np.zeros((0, map_size, map_size), np.float16)
    return records


def extract_sets(
    model: nn.Module,
    cache: ImageCache,
    pre: Preprocess,
    jobs: Sequence[tuple[int, int, Any]],
    sets: Sequence[MapSet],
    device: torch.device,
    map_size: int,
    batch_size: int,
    progress: Callable[[int], None] | None = None,
    amp: bool = False,
    tta: TTA | None = None,
    channels_last: bool = False,
) -> None:
    """:func:`extract` for several target sets on the same (image, class) ``jobs``: each batch runs one forward pass
    and one backward per set (:meth:`~repcam.engine.cam.MultiLayerGradCAM.layer_maps_sets`), and each set's maps
    stream to its own sink, equal to what its own :func:`extract` call would give. ``tta`` takes one set."""
    if tta is not None and (len(sets) != 1 or sets[0].rider is not None):
        raise ValueError("test-time augmentation extracts one target set at a time, without riders")
    if any(len(s.targets) != len(jobs) for s in sets):
        raise ValueError("every map set needs one target per job")
    channels_last = channels_last and device.type == "cpu"
    model.to(device).eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        _extract(model, cache, pre, jobs, sets, device, map_size, batch_size, progress, amp, tta, channels_last)
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)


def _extract(model: nn.Module, cache: ImageCache, pre: Preprocess, jobs: Sequence[tuple[int, int, Any]], sets: Sequence[MapSet],
             device: torch.device, map_size: int, batch_size: int, progress: Callable[[int], None] | None, amp: bool,
             tta: TTA | None, channels_last: bool) -> None:
    """:func:`extract_sets` on a model already on ``device`` and in its memory format."""
    gradcam = MultiLayerGradCAM(model, "auto", amp=amp)
    kinds = {k for s in sets for k in s.kinds}
    # Grad-CAM and LayerCAM differ only in the arithmetic on the same activations and gradients: one forward and
    # backward per batch serves both (MultiLayerGradCAM.layer_maps), not one each.
    weightings = ["gradcam", "layercam"] if "layercam" in kinds else ["gradcam"]
    weightings += [w for w in dict.fromkeys(w for s in sets for w in s.weightings) if w not in weightings]  # riders'
    parts = gap_fc_parts(model) if "cam" in kinds else None

    def kinds_of(s: MapSet, x: torch.Tensor, targets: list, layer_maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Set ``s``'s requested kinds as (B, H, W) maps at input resolution."""
        got = {}
        if "last" in s.kinds:
            got["last"] = layer_maps["gradcam"][:, -1]
        if "fused" in s.kinds:
            got["fused"] = fuse_layers(layer_maps["gradcam"], gradcam.fusion)
        if "mean" in s.kinds:
            got["mean"] = fuse_layers(layer_maps["gradcam"], "mean")
        if "layercam" in s.kinds:  # LayerCAM as the paper's baseline: the mean over layers
            got["layercam"] = fuse_layers(layer_maps["layercam"], "mean")
        if "cam" in s.kinds:
            got["cam"] = (torch.full((len(x), *x.shape[-2:]), float("nan")) if parts is None
                          else zhou_cam(parts[0], parts[1], model, x, [int(t) for t in targets]))
        return got

    def emit(s: MapSet, got: dict[str, torch.Tensor]) -> None:
        for k in s.kinds:
            s.sink(k, shrink_maps(got[k], map_size))

    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b : b + batch_size]
        x = pre.normalize(cache.stack([j[0] for j in chunk]).to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        target_sets = [list(s.targets[b : b + batch_size]) for s in sets]
        if tta is None:  # each set's maps reduced and stored before the next set's are made
            # Sets with equal targets (two selections that chose the same representatives) share one backward.
            distinct, which = _distinct(target_sets)
            last_use = {k: n for n, k in enumerate(which)}
            per_set, _ = gradcam.layer_maps_sets(x, distinct, weightings)
            made: dict[int, dict[str, torch.Tensor]] = {}
            for n, (s, targets, k) in enumerate(zip(sets, target_sets, which)):
                if k not in made:  # first uses come in the order of ``distinct``
                    made[k] = next(per_set)
                emit(s, kinds_of(s, x, targets, made[k]))
                if s.rider is not None:
                    s.rider(made[k])
                if last_use[k] == n:
                    del made[k]
        else:  # one set, its maps averaged over the views (one pass per scale)

            def view(v: torch.Tensor, t: list) -> dict[str, torch.Tensor]:
                per_set, _ = gradcam.layer_maps_sets(v, [t], weightings)
                return kinds_of(sets[0], v, t, next(per_set))

            emit(sets[0], tta(view, x, target_sets[0]))
        if progress:
            progress(len(chunk))


def _distinct(target_sets: Sequence[list]) -> tuple[list[list], list[int]]:
    """The distinct target lists of ``target_sets`` (by equality, first occurrence first) and, per set, the index of
    its distinct list."""
    distinct: list[list] = []
    which = []
    for targets in target_sets:
        k = next((j for j, d in enumerate(distinct) if d == targets), None)
        if k is None:
            distinct.append(targets)
            k = len(distinct) - 1
        which.append(k)
    return distinct, which
