"""Faithfulness and box-localisation metrics for class activation maps: pure functions on tensors.

Every metric returns one value per (image, class) record, so two methods scored on the same records get a mean
difference with a paired bootstrap interval from :func:`paired_difference` (the bootstrap of
:func:`repcam.evaluation.bootstrap.bootstrap_diff_ci`, which resamples images). Inputs:

- ``model``: a classifier returning (B, K) logits; it is run in eval mode under ``torch.no_grad`` (its train/eval
  mode is restored afterwards);
- ``images``: (B, 3, H, W) float tensor, already normalised as the model expects;
- ``maps``: (B, H, W) maps at the input resolution, values in [0, 1] (min-max normalised, as every repcam and
  pytorch-grad-cam map is); only their order matters for deletion, insertion and ROAD;
- ``classes``: (B,) target class indices.

The score of a class is its **softmax probability** throughout (deletion, insertion, ROAD, Average Drop).

Definitions (see NOTES-faith.md for the citations):

- deletion / insertion (Petsiuk et al. 2018, RISE): pixels are ranked by map value (ties: row-major order);
  at step k of ``steps`` the first round(k / steps * H * W) pixels are replaced by the baseline (deletion) or
  copied from the image into the baseline (insertion); the AUC is the trapezoid rule over the fraction of pixels
  in [0, 1]. Baselines as in RISE: deletion a constant 0 in the normalised space (the normalisation's mean colour),
  insertion a Gaussian blur of the image (kernel 11, sigma 5). Lower deletion and higher insertion are better.
- ROAD (Rong et al. 2022), exactly as pytorch-grad-cam 1.5's ``ROADMostRelevantFirst`` / ``ROADLeastRelevantFirst``
  (its noisy linear imputer, noise 0.01, is reused): at percentile p, MoRF imputes the pixels whose map value is at
  or above the map's p-th percentile, LeRF those whose (1 - map) is at or above its p-th percentile; the value is
  p(after) - p(before), averaged over the percentiles (default 10, 20, ..., 90). Lower MoRF and higher LeRF are better.
- Average Drop / Increase in Confidence (Chattopadhay et al. 2018, Grad-CAM++): the model input multiplied by the
  map; drop = max(0, Y - O) / Y, increase = 1 if O > Y, with Y, O the class's probability before and after.
  Reported in % by the score table (mean over records). Lower drop and higher increase are better.
- MaxBoxAccV2 (Choe et al. 2020, "Evaluating Weakly Supervised Object Localization Methods Right", Sec. 4): ground
  truth boxes are the bounding boxes of the 8-connected components of the class's mask; the map (min-max normalised)
  is thresholded at every tau in ``np.arange(0, 1, 0.01)``; as the paper's V2 defines (wsolevaluation's
  ``multi_contour_eval=True``) every connected component of the thresholded map gives a box, and a record is
  correct at (tau, delta) when the best IoU between any estimated box and any ground-truth box is >= delta.
  BoxAcc(tau, delta) is the fraction of correct records, MaxBoxAccV2 = mean over delta in {30, 50, 70}% of
  max over tau of BoxAcc. Boxes are inclusive pixel boxes (area (x1 - x0 + 1) * (y1 - y0 + 1), as wsolevaluation).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from repcam.engine.modes import eval_mode
from repcam.evaluation.bootstrap import bootstrap_diff_ci
from repcam.errors import FaithfulnessError  # noqa: F401 - defined in repcam.errors, importable from here

DEFAULT_STEPS = 20
"""Deletion / insertion steps: 5% of the pixels per step (21 forward passes per image)."""

ROAD_PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
"""pytorch-grad-cam's default ROAD percentiles."""

BOX_IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)
"""MaxBoxAccV2's IoU thresholds delta."""

BOX_CAM_THRESHOLDS: tuple[float, ...] = tuple(np.arange(0, 1, 0.01).tolist())
"""wsolevaluation's default map thresholds (cam_curve_interval 0.01)."""


# ---------------------------------------------------------------------------------------------- helpers


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """The model in eval mode under no_grad; its previous mode is restored (also on errors)."""
    with eval_mode(model), torch.no_grad():
        yield model


def _check(images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """Validate shapes; returns the classes as a (B,) long tensor on the images' device."""
    if images.dim() != 4:
        raise FaithfulnessError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    b, _, h, w = images.shape
    if tuple(maps.shape) != (b, h, w):
        raise FaithfulnessError(f"maps must be (B, H, W) = {(b, h, w)} to match the images, got {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise FaithfulnessError("maps contain NaN or inf")
    cls = torch.as_tensor(classes, dtype=torch.long, device=images.device).reshape(-1)
    if cls.numel() != b:
        raise FaithfulnessError(f"need one class per image: {b} images, {cls.numel()} classes")
    return cls


def class_probability(model: nn.Module, images: torch.Tensor, classes: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """(N,) softmax probability of ``classes[i]`` for ``images[i]``, in batches, under no_grad and eval mode."""
    out = []
    with _eval_mode(model):
        for s in range(0, len(images), batch_size):
            logits = model(images[s : s + batch_size])
            if not torch.is_tensor(logits) or logits.dim() != 2:
                raise FaithfulnessError(f"the model must return (B, K) logits, got {getattr(logits, 'shape', type(logits).__name__)}")
            if int(classes.max()) >= logits.shape[1] or int(classes.min()) < 0:
                raise FaithfulnessError(f"class index out of range for a model with {logits.shape[1]} outputs")
            p = torch.softmax(logits.float(), 1)
            out.append(p.gather(1, classes[s : s + batch_size, None].to(p.device))[:, 0])
    return torch.cat(out)


def blur_baseline(images: torch.Tensor, kernel: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """RISE's insertion baseline: a Gaussian blur of every image (kernel 11, sigma 5)."""
    from torchvision.transforms.functional import gaussian_blur

    return gaussian_blur(images, [kernel, kernel], [sigma, sigma])


def _ranks(maps: torch.Tensor) -> torch.Tensor:
    """(B, H*W) rank of every pixel by descending map value (0 = most relevant; ties in row-major order)."""
    flat = maps.reshape(len(maps), -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order).contiguous())
    return ranks


def trapezoid_auc(curve: torch.Tensor) -> torch.Tensor:
    """(B, n + 1) values at evenly spaced fractions 0, 1/n, ..., 1 -> (B,) area by the trapezoid rule."""
    n = curve.shape[1] - 1
    return (curve[:, 1:] + curve[:, :-1]).sum(1) / (2 * n)


# ---------------------------------------------------------------------------------------------- deletion / insertion


def perturbation_curve(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor | Sequence[int],
    mode: Literal["deletion", "insertion"],
    steps: int = DEFAULT_STEPS,
    baseline: torch.Tensor | Literal["zero", "blur"] | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """(B, steps + 1) class probability after removing (deletion) or inserting (insertion) the 0, 1/steps, ..., 1
    most relevant pixel fractions. ``baseline``: a (B, C, H, W) tensor, ``"zero"`` or ``"blur"``; None = RISE's
    choice (deletion zero, insertion blur)."""
    cls = _check(images, maps, classes)
    if mode not in ("deletion", "insertion"):
        raise FaithfulnessError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise FaithfulnessError(f"steps must be an integer >= 1, got {steps!r}")
    if baseline is None:
        baseline = "zero" if mode == "deletion" else "blur"
    if isinstance(baseline, str):
        if baseline not in ("zero", "blur"):
            raise FaithfulnessError(f"baseline must be 'zero', 'blur' or a tensor, got {baseline!r}")
        base = torch.zeros_like(images) if baseline == "zero" else blur_baseline(images)
    else:
        base = baseline.to(images)
        if base.shape != images.shape:
            raise FaithfulnessError(f"baseline must have the images' shape {tuple(images.shape)}, got {tuple(base.shape)}")
    b, c, h, w = images.shape
    ranks = _ranks(maps.to(images.device)).view(b, 1, h, w)
    start, end = (images, base) if mode == "deletion" else (base, images)
    counts = [round(k * h * w / steps) for k in range(steps + 1)]
    # One batch per step (memory stays at one copy of the images): step k takes `end` on the first counts[k] pixels.
    probs = [class_probability(model, torch.where(ranks < n, end, start), cls, batch_size) for n in counts]
    return torch.stack(probs, 1).cpu()


def deletion_auc(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor | Sequence[int],
                 steps: int = DEFAULT_STEPS, baseline: torch.Tensor | Literal["zero", "blur"] = "zero",
                 batch_size: int = 64) -> torch.Tensor:
    """(B,) deletion AUC: most relevant pixels replaced by the baseline first (lower is better)."""
    return trapezoid_auc(perturbation_curve(model, images, maps, classes, "deletion", steps, baseline, batch_size))


def insertion_auc(model: nn.Module, images: torch.Tensor, maps: torch.Tensor, classes: torch.Tensor | Sequence[int],
                  steps: int = DEFAULT_STEPS, baseline: torch.Tensor | Literal["zero", "blur"] = "blur",
                  batch_size: int = 64) -> torch.Tensor:
    """(B,) insertion AUC: most relevant pixels copied into the baseline first (higher is better)."""
    return trapezoid_auc(perturbation_curve(model, images, maps, classes, "insertion", steps, baseline, batch_size))


# ---------------------------------------------------------------------------------------------- ROAD


def _imputer(noise: float) -> Any:
    try:
        from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    except ImportError as e:
        raise FaithfulnessError(f"ROAD needs pytorch-grad-cam's imputer: pip install grad-cam (or 'repcam[test]'); {e}") from None
    return NoisyLinearImputer(noise=noise)


def road(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor | Sequence[int],
    order: Literal["morf", "lerf"] = "morf",
    percentiles: Sequence[float] = ROAD_PERCENTILES,
    noise: float = 0.01,
    batch_size: int = 64,
) -> torch.Tensor:
    """(B,) ROAD: mean over ``percentiles`` of p(imputed) - p(original), pixels removed most-relevant-first
    (``"morf"``) or least-relevant-first (``"lerf"``) with noisy linear imputation (pytorch-grad-cam's
    definition; the imputer's noise draws from torch's global RNG, in percentile-major, image-minor order)."""
    cls = _check(images, maps, classes)
    if order not in ("morf", "lerf"):
        raise FaithfulnessError(f"order must be 'morf' or 'lerf', got {order!r}")
    if not percentiles or any(not 0 <= float(p) <= 100 for p in percentiles):
        raise FaithfulnessError(f"percentiles must be a non-empty list of values in [0, 100], got {list(percentiles)}")
    impute = _imputer(noise)
    before = class_probability(model, images, cls, batch_size)
    cams = maps.detach().float().cpu().numpy()
    if order == "lerf":
        cams = 1 - cams
    x_cpu = images.detach().cpu()
    diffs = []
    for p in percentiles:
        filled = []
        for i in range(len(images)):
            # 1 = kept, 0 = imputed: the pixels at or above the p-th percentile are removed (pytorch-grad-cam's rule).
            keep = torch.from_numpy(np.float32(cams[i] < np.percentile(cams[i], p)))
            filled.append(impute(x_cpu[i], keep))
        after = class_probability(model, torch.stack(filled).to(images.device), cls, batch_size)
        diffs.append(after - before)
    return torch.stack(diffs).mean(0).cpu()


# ---------------------------------------------------------------------------------------------- Average Drop / Increase


def average_drop_increase(
    model: nn.Module,
    images: torch.Tensor,
    maps: torch.Tensor,
    classes: torch.Tensor | Sequence[int],
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(drop, increase), each (B,): drop = max(0, Y - O) / Y and increase = 1.0 if O > Y else 0.0, where Y is the class
    probability on the image and O on the image (the model's normalised input) multiplied by the map."""
    cls = _check(images, maps, classes)
    if float(maps.min()) < 0 or float(maps.max()) > 1:
        raise FaithfulnessError(f"maps must lie in [0, 1] for Average Drop, got [{float(maps.min()):.3g}, {float(maps.max()):.3g}]")
    y = class_probability(model, images, cls, batch_size)
    o = class_probability(model, images * maps.to(images)[:, None], cls, batch_size)
    drop = (y - o).clamp_min(0) / y.clamp_min(1e-12)
    return drop.cpu(), (o > y).float().cpu()


# ---------------------------------------------------------------------------------------------- MaxBoxAccV2


def _label(binary: np.ndarray) -> Any:
    try:
        from scipy import ndimage
    except ImportError:
        raise FaithfulnessError("MaxBoxAccV2 needs scipy (connected components): pip install scipy (or 'repcam[test]')") from None
    return ndimage.label(binary, structure=np.ones((3, 3), dtype=bool))


def component_boxes(binary: np.ndarray) -> np.ndarray:
    """(K, 4) inclusive boxes (x0, y0, x1, y1) of the 8-connected components of a 2-D boolean array."""
    labels, n = _label(np.asarray(binary, dtype=bool))
    if n == 0:
        return np.zeros((0, 4), dtype=np.int64)
    from scipy import ndimage

    sl = ndimage.find_objects(labels)
    return np.array([[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1] for s in sl], dtype=np.int64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of inclusive pixel boxes (x0, y0, x1, y1), areas (x1 - x0 + 1) * (y1 - y0 + 1)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None]
    iw = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1).clip(0)
    ih = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1).clip(0)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0] + 1) * (x[..., 3] - x[..., 1] + 1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def box_correct(
    cam: np.ndarray,
    gt: np.ndarray,
    cam_thresholds: Sequence[float] = BOX_CAM_THRESHOLDS,
    iou_thresholds: Sequence[float] = BOX_IOU_THRESHOLDS,
) -> np.ndarray:
    """(len(iou_thresholds), len(cam_thresholds)) booleans of one record: is the best IoU between the boxes of all
    components of (normalised cam >= tau) and the boxes of all components of ``gt`` at least delta?"""
    cam = np.asarray(cam, dtype=np.float64)
    gt = np.asarray(gt, dtype=bool)
    if cam.shape != gt.shape or cam.ndim != 2:
        raise FaithfulnessError(f"cam and gt must be 2-D of one shape, got {cam.shape} and {gt.shape}")
    lo, hi = cam.min(), cam.max()
    cam = (cam - lo) / (hi - lo) if hi > lo else np.zeros_like(cam)
    gt_boxes = component_boxes(gt)
    best = np.zeros(len(cam_thresholds))
    if len(gt_boxes):
        for j, tau in enumerate(cam_thresholds):
            boxes = component_boxes(cam >= tau)
            if len(boxes):
                best[j] = box_iou(boxes, gt_boxes).max()
    return best[None, :] >= np.asarray(iou_thresholds, dtype=np.float64)[:, None] - 1e-12


def max_box_acc_v2(correct: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """From (N, D, T) per-record correctness (:func:`box_correct` stacked): (MaxBoxAccV2 in [0, 1], the chosen map
    threshold index per delta (D,), per-record values (N,)). A record's value is its correctness at each delta's chosen
    threshold, averaged over delta, so their mean equals MaxBoxAccV2 (intervals from them hold the thresholds fixed)."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim != 3 or correct.shape[0] == 0:
        raise FaithfulnessError(f"correct must be (N, D, T) with N >= 1, got {correct.shape}")
    acc = correct.mean(0)  # (D, T): BoxAcc(tau, delta)
    best = acc.argmax(1)  # ties: the lowest threshold
    per_record = correct[:, np.arange(correct.shape[1]), best].mean(1)
    return float(acc.max(1).mean()), best, per_record


# ---------------------------------------------------------------------------------------------- paired intervals


def paired_difference(
    a: Sequence[float] | np.ndarray | torch.Tensor,
    b: Sequence[float] | np.ndarray | torch.Tensor,
    image_ids: Sequence[Hashable] | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): a paired percentile bootstrap over images of per-record values of two methods
    on the same records (``image_ids`` groups records of one image; default: each record its own image). Uses
    :func:`repcam.evaluation.bootstrap.bootstrap_diff_ci` with every record as class 0, value as intersection and 1 as union, so a
    replicate's "mIoU" is exactly the mean of the resampled values. NaN values are an error."""
    va = np.asarray(a, dtype=np.float64).reshape(-1)
    vb = np.asarray(b, dtype=np.float64).reshape(-1)
    if va.shape != vb.shape or va.size == 0:
        raise FaithfulnessError(f"need two equally long, non-empty value lists, got {va.size} and {vb.size}")
    if not (np.isfinite(va).all() and np.isfinite(vb).all()):
        raise FaithfulnessError("per-record values contain NaN or inf")
    ids = list(range(va.size)) if image_ids is None else list(image_ids)
    ones = np.ones(va.size)
    point, low, high = bootstrap_diff_ci(ids, np.zeros(va.size, dtype=np.int64), va, ones, vb, ones,
                                         num_classes=1, n_boot=n_boot, seed=seed, confidence=confidence)
    return float(point), float(low), float(high)
