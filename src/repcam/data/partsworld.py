"""Parts world: a procedurally generated segmentation data set with planted groups of similar classes.

Built in, deterministic for a seed, no download, rendered on demand. It is
made to show the paper's setting on a CPU: classes of a group differ only by one small part, so a binary
classifier against a class of the *same* group can only look at that part, while one against a class of
*another* group can use large shared parts, and partners from different groups use different parts.

Objects are drawn in an object frame (u along the body's long axis, v across it, in units of the object's
scale ``r`` in pixels) that is moved, scaled, rotated and mirrored at random. An object has

- a ``body`` (a random shape: ellipse, box, diamond, hexagon or egg; a random yellow-to-cyan colour),
  about half of the object's area;
- some of the *slots* ``SLOTS``: dark stripes across the body, an orange head, blue legs, pink spikes
  (and, with more groups, a violet tail, antennae, a keel), each in its own colour in every group;
- one ``marker``: a small shape (block, ring, cross, ...) with a dark outline at a random place on the body,
  marker ``k`` having the same shape and colour in every group (a few percent of the object's area).

Classes come in ``n_groups`` planted groups of ``classes_per_group`` classes; class
``g * classes_per_group + k`` is group ``g`` with marker ``k``. Group ``g`` has every slot in use **but**
slot ``g`` (with more groups than slots: but a pair of slots). So

- classes of one group differ only by their marker, the only cue between them;
- markers alone do not tell groups apart (marker ``k`` is in every group), so a multi-class classifier needs
  the marker and the group, and the group shows as the *lack* of one part;
- a binary classifier of group ``g`` against group ``h`` finds positive evidence for ``g`` in slot ``h`` (which
  ``g`` has and ``h`` lacks), so partners from different groups make it look at different parts, and the
  average over partners of all other groups covers all of the object's slots.

Images have cluttered backgrounds (smooth greyish colour noise, faint bands and lines, pixel noise) and
loose distractors (checkered blobs, triangles, stars, bars) that are not objects, are not in the mask, and
share no part with the objects. An image holds one object or, with probability ``multi_object_fraction``,
2-3 objects of different classes (smaller, may overlap slightly, each stays at least 70 % visible).

Masks cover all parts of each object with ``k + 1`` for class ``k`` and 0 elsewhere; with
``ignore_border=True`` the one-pixel outer border of each object is 255 as in VOC. ``parts(i)`` gives the
part of each pixel (``PART_*``), ``instances(i)`` the object index (0 none, ``j + 1`` the ``j``-th object
of ``objects(i)``).

Images are rendered lazily (on first access, then cached) from a generator seeded by
``(seed, split, index)``, so image ``i`` does not depend on ``num_images`` and ``train``/``val`` are
disjoint streams. The class designs depend only on ``n_groups`` and ``classes_per_group``, never on the seed.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .base import IGNORE_INDEX, DataError, Sample, SegDataset
from .partsworld_design import (BODY_HUES, BODY_SHAPES, GROUP_NAMES, MARKER_COLOURS, MARKER_SHAPES, PART_BACKGROUND, PART_BODY,
                                PART_HEAD, PART_LIMBS, PART_MARKER, PART_NAMES, SLOT_COLOURS, SLOT_PART, SLOTS, ClassDesign, Pose,
                                absent_sets, design_classes, max_groups)
from .partsworld_render import Canvas, background, draw_distractor, draw_object, sample_pose

__all__ = ["BODY_HUES", "BODY_SHAPES", "DEFAULT_MULTI_OBJECT_FRACTION", "DEFAULT_NUM_IMAGES", "GROUP_NAMES", "MARKER_COLOURS",
           "MARKER_SHAPES", "PART_BACKGROUND", "PART_BODY", "PART_HEAD", "PART_LIMBS", "PART_MARKER", "PART_NAMES", "SLOTS",
           "SLOT_COLOURS", "SLOT_PART", "SPLITS", "ClassDesign", "PartsWorld", "Pose", "design_classes", "max_groups",
           "sample_pose"]

SPLITS = {"train": 0x747261696E, "val": 0x76616C}
"""Split -> seed-stream key: the two splits never share a random stream."""

DEFAULT_NUM_IMAGES = {"train": 1200, "val": 300}
DEFAULT_MULTI_OBJECT_FRACTION = {"train": 0.2, "val": 0.4}


def _outer_border(mask: np.ndarray) -> np.ndarray:
    """Pixels of the object ``mask`` that touch (4-neighbourhood) a pixel outside it."""
    p = np.pad(mask, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


# ------------------------------------------------------------------------------------------------
# Data set
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rendered:
    image: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # uint8 (H, W)
    parts: np.ndarray  # uint8 (H, W)
    instances: np.ndarray  # uint8 (H, W)
    objects: tuple[tuple[int, Pose], ...]  # (class, pose), in drawing order


class PartsWorld(SegDataset):
    """The built-in parts-world data set (see the module docstring).

    Args:
        split: "train" or "val" (disjoint random streams).
        num_images: number of images (default 1200 for train, 300 for val).
        image_size: side of the square images in pixels (>= 32).
        n_groups, classes_per_group: the planted groups; class ``g * classes_per_group + k`` is group ``g``,
            marker ``k``.
        multi_object_fraction: probability that an image has 2-3 objects (default 0.2 train, 0.4 val).
        seed: the data set's seed.
        max_distractors: each image has 0..max_distractors loose parts.
        ignore_border: mark the one-pixel outer border of each object 255 in the mask.
        object_scale: multiplies every object's size (1.0: single objects span about half the image).
        hidden_marker_fraction: probability that an object is drawn without its marker (as if the one part
            that tells the classes of a group apart were occluded): such objects can only be told apart from
            their group's other classes by chance, which is what makes a classifier confuse classes of one group.
    """

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        image_size: int = 64,
        n_groups: int = 4,
        classes_per_group: int = 3,
        multi_object_fraction: float | None = None,
        seed: int = 0,
        *,
        max_distractors: int = 2,
        ignore_border: bool = False,
        object_scale: float = 1.0,
        hidden_marker_fraction: float = 0.0,
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if num_images is None:
            num_images = DEFAULT_NUM_IMAGES[split]
        if num_images < 0:
            raise DataError(f"num_images must be >= 0, got {num_images}")
        if image_size < 32:
            raise DataError(f"image_size must be >= 32, got {image_size}")
        if multi_object_fraction is None:
            multi_object_fraction = DEFAULT_MULTI_OBJECT_FRACTION[split]
        if not 0.0 <= multi_object_fraction <= 1.0:
            raise DataError(f"multi_object_fraction must be in [0, 1], got {multi_object_fraction}")
        if seed < 0:
            raise DataError(f"seed must be >= 0, got {seed}")
        if max_distractors < 0:
            raise DataError(f"max_distractors must be >= 0, got {max_distractors}")
        if not 0.25 <= object_scale <= 1.6:
            raise DataError(f"object_scale must be in [0.25, 1.6], got {object_scale}")
        if not 0.0 <= hidden_marker_fraction <= 1.0:
            raise DataError(f"hidden_marker_fraction must be in [0, 1], got {hidden_marker_fraction}")
        self.split = split
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.multi_object_fraction = float(multi_object_fraction)
        self.max_distractors = int(max_distractors)
        self.ignore_border = bool(ignore_border)
        self.object_scale = float(object_scale)
        self.hidden_marker_fraction = float(hidden_marker_fraction)
        self.designs: list[ClassDesign] = design_classes(n_groups, classes_per_group)
        self.n_slots = absent_sets(n_groups)[0]
        self.class_names = tuple(d.name for d in self.designs)
        self.groups: list[list[int]] = [
            [g * classes_per_group + k for k in range(classes_per_group)] for g in range(n_groups)
        ]
        self.samples = [
            Sample(id=f"{split}_{i:05d}", labels=frozenset(self._draw_classes(self._rng(i)))) for i in range(num_images)
        ]
        # A few recent renders (image and mask are asked for together); bounded so memory does not grow with the data.
        self._cache: OrderedDict[int, _Rendered] = OrderedDict()

    # -- public API ---------------------------------------------------------------------------------

    def image(self, i: int) -> Image.Image:
        """The i-th image (RGB)."""
        return Image.fromarray(self._render(i).image, mode="RGB")

    def mask(self, i: int) -> np.ndarray:
        """The i-th mask: ``k + 1`` for class ``k``, 0 background (255 on object borders with ``ignore_border``)."""
        return self._render(i).mask.copy()

    def image_array(self, i: int) -> np.ndarray:
        """The i-th image as uint8 (H, W, 3)."""
        return self._render(i).image.copy()

    def parts(self, i: int) -> np.ndarray:
        """The part each visible pixel shows: ``PART_BODY``, ``PART_HEAD``, ``PART_LIMBS``, ``PART_MARKER`` or 0."""
        return self._render(i).parts.copy()

    def instances(self, i: int) -> np.ndarray:
        """Object index of each pixel: 0 none, ``j + 1`` the ``j``-th entry of ``objects(i)``."""
        return self._render(i).instances.copy()

    def objects(self, i: int) -> list[tuple[int, Pose]]:
        """(class index, pose) of each object of the i-th image, in drawing order (back to front)."""
        return list(self._render(i).objects)

    def single_label_indices(self) -> list[int]:
        """Indices of the images with exactly one class (one object)."""
        return [i for i, s in enumerate(self.samples) if len(s.labels) == 1]

    def group_of(self, c: int) -> int:
        """The planted group of class ``c``."""
        return self.designs[c].group

    def marker_of(self, c: int) -> int:
        """The marker (index into ``MARKER_SHAPES``) of class ``c``."""
        return self.designs[c].marker

    def render_object(
        self, c: int, pose_seed: int = 0, background: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ) -> tuple[np.ndarray, np.ndarray]:
        """One object of class ``c`` alone on a plain background, centred; the pose depends only on
        ``pose_seed``, so two classes rendered with the same seed differ only where their parts differ.
        Returns (uint8 RGB image, uint8 part map)."""
        if not 0 <= c < self.num_classes:
            raise DataError(f"class index must be in 0..{self.num_classes - 1}, got {c}")
        n = self.image_size
        rng = np.random.default_rng([self.seed, 0x6F626A, int(pose_seed)])
        pose = sample_pose(rng, n, (0.2 * n, 0.24 * n), centre=(n / 2, n / 2))
        canvas = Canvas(np.empty((n, n, 3), dtype=np.float32))
        canvas.rgb[:] = np.asarray(background, dtype=np.float32)
        draw_object(canvas, self.designs[c], pose, 1)
        return _to_uint8(canvas.rgb), canvas.part

    # -- generation ---------------------------------------------------------------------------------

    def _rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], i])

    def _draw_classes(self, rng: np.random.Generator) -> list[int]:
        """The image's classes: the first draws of its generator (so labels are known without rendering)."""
        multi = rng.random() < self.multi_object_fraction and self.num_classes >= 2
        count = (2 if rng.random() < 0.8 or self.num_classes < 3 else 3) if multi else 1
        return [int(c) for c in rng.choice(self.num_classes, size=count, replace=False)]

    def _render(self, i: int) -> _Rendered:
        if not -len(self) <= i < len(self):
            raise IndexError(f"image index {i} out of range for {len(self)} images")
        i %= len(self)
        hit = self._cache.get(i)
        if hit is not None:
            self._cache.move_to_end(i)
            return hit
        rng = self._rng(i)
        classes = self._draw_classes(rng)
        n = self.image_size
        bg = background(rng, n)
        dcanvas = Canvas(bg)
        for _ in range(int(rng.integers(0, self.max_distractors + 1))):
            draw_distractor(dcanvas, rng)
        if len(classes) == 1:
            r_range = (0.2 * n, 0.3 * n)
        else:
            r_range = (0.16 * n, 0.21 * n) if len(classes) == 2 else (0.13 * n, 0.16 * n)
        r_range = (r_range[0] * self.object_scale, r_range[1] * self.object_scale)
        # Hidden markers come from their own stream, so the default world (fraction 0) draws exactly as before.
        hide = np.random.default_rng([self.seed, SPLITS[self.split], i, _HIDE_KEY]).random(len(classes)) < self.hidden_marker_fraction
        for attempt in range(_PLACEMENT_ATTEMPTS + 1):
            shrink = 1.0 - 0.015 * attempt
            poses = [sample_pose(rng, n, (r_range[0] * shrink, r_range[1] * shrink)) for _ in classes]
            if attempt == _PLACEMENT_ATTEMPTS:  # fallback: a fixed layout without overlaps
                poses = _fixed_layout(poses, n)
            elif len(classes) > 1 and not _spread_out(poses):
                continue
            canvas = Canvas(bg.copy())
            totals = [
                draw_object(canvas, self.designs[c], p, j + 1, marker=not hide[j]) for j, (c, p) in enumerate(zip(classes, poses))
            ]
            visible = np.bincount(canvas.inst.ravel(), minlength=len(classes) + 1)[1:]
            if all(t > 0 and vis >= 0.7 * t and vis >= 12 for t, vis in zip(totals, visible)):
                break
        mask = np.zeros((n, n), dtype=np.uint8)
        for j, c in enumerate(classes):
            obj = canvas.inst == j + 1
            if not obj.any():  # pragma: no cover - the fixed layout cannot hide an object
                raise RuntimeError(f"object {j} of image {i} is hidden")
            mask[obj] = c + 1
            if self.ignore_border:
                border = _outer_border(obj)
                if (obj & ~border).any():
                    mask[border] = IGNORE_INDEX
        out = _Rendered(
            image=_to_uint8(canvas.rgb),
            mask=mask,
            parts=canvas.part,
            instances=canvas.inst,
            objects=tuple(zip(classes, poses)),
        )
        self._cache[i] = out
        if len(self._cache) > _RENDER_CACHE:
            self._cache.popitem(last=False)
        return out


_RENDER_CACHE = 64  # renders kept (LRU)
_PLACEMENT_ATTEMPTS = 40
_HIDE_KEY = 0x68696465


def _fixed_layout(poses: list[Pose], n: int) -> list[Pose]:
    """Small objects at fixed, well separated places (the last resort of the placement)."""
    spots = [(0.27, 0.3), (0.73, 0.3), (0.5, 0.75)] if len(poses) > 1 else [(0.5, 0.5)]
    r_max = 0.12 * n if len(poses) > 1 else 0.3 * n
    return [
        dataclasses.replace(p, cx=sx * n, cy=sy * n, r=min(p.r, r_max)) for p, (sx, sy) in zip(poses, spots)
    ]


def _spread_out(poses: list[Pose]) -> bool:
    """Objects may overlap slightly but not much: centres at least 1.3 (r_a + r_b) apart."""
    for a in range(len(poses)):
        for b in range(a + 1, len(poses)):
            pa, pb = poses[a], poses[b]
            if math.hypot(pa.cx - pb.cx, pa.cy - pb.cy) < 1.3 * (pa.r + pb.r):
                return False
    return True


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
