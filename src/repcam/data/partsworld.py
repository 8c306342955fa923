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

from collections import OrderedDict

import colorsys
import dataclasses
import itertools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .base import IGNORE_INDEX, DataError, Sample, SegDataset

PART_BACKGROUND, PART_BODY, PART_HEAD, PART_LIMBS, PART_MARKER = 0, 1, 2, 3, 4
PART_NAMES = ("background", "body", "head", "limbs", "marker")

SLOTS = ("stripes", "head", "legs", "spikes", "tail", "antennae", "keel")
"""The optional features a group may lack: stripes on the body (without them the body is plain), a head,
legs, spikes, a tail, antennae, a keel fin. The first ``n_groups`` are in use, so the order matters: a small
CNN trained for seconds tells missing blue legs from missing pink spikes but not a missing leg pair from a
missing tail, nor thin violet legs from pink spikes (measured: the last two groups of the default design were then
one block of B in most seeds)."""
SLOT_PART = (PART_BODY, PART_HEAD, PART_LIMBS, PART_LIMBS, PART_LIMBS, PART_LIMBS, PART_LIMBS)
SLOT_COLOURS = (
    (0.05, 0.05, 0.05),  # stripes: dark
    (1.00, 0.55, 0.10),  # head: orange
    (0.15, 0.35, 0.95),  # legs: blue
    (0.95, 0.55, 0.70),  # spikes: pink
    (0.55, 0.25, 0.85),  # tail: violet
    (0.85, 0.85, 0.80),  # antennae: pale grey
    (0.50, 0.30, 0.10),  # keel: brown
)
"""Each slot has its own colour (with jitter) in every group, so colour tells parts apart but not groups."""
BODY_SHAPES = ("ellipse", "box", "diamond", "hexagon", "egg")
BODY_HUES = (0.14, 0.52)
"""Bodies (and distractors) take any hue from yellow over green to cyan: away from the slot colours, so that a
missing part is not faked by a body or distractor of its colour. The background is greyish (low saturation)."""
MARKER_SHAPES = ("block", "ring", "cross", "bar", "tri", "x")
MARKER_COLOURS = (
    (0.92, 0.12, 0.12),  # red
    (0.10, 0.80, 0.95),  # cyan
    (0.98, 0.90, 0.10),  # yellow
    (0.95, 0.20, 0.90),  # magenta
    (0.98, 0.98, 0.98),  # white
    (0.15, 0.90, 0.20),  # green
)
"""Marker ``k`` has shape ``MARKER_SHAPES[k]`` and this colour (with jitter) in every group, and a dark outline."""
GROUP_NAMES = (
    "zorb", "plim", "quax", "drel", "vesk", "mupo", "tarn", "golu", "brix", "kelo", "snib", "wumf", "yarp",
    "fenk", "hobb", "jilt", "lurg", "nopp", "riva", "tusk", "uvol", "ximb", "ozzo", "cind", "ebru",
)  # fmt: skip

SPLITS = {"train": 0x747261696E, "val": 0x76616C}
"""Split -> seed-stream key: the two splits never share a random stream."""

DEFAULT_NUM_IMAGES = {"train": 1200, "val": 300}
DEFAULT_MULTI_OBJECT_FRACTION = {"train": 0.2, "val": 0.4}

# Object geometry in object units (multiples of the scale r): the body spans u in [-1, 1], v in [-0.62, 0.62].
_EXTENT = 1.8  # every part lies within this radius of the object centre
_MARKER_SIZE = 0.22  # marker half-size relative to r ...
_MARKER_MIN_PX = 2.6  # ... but at least this many pixels
_HEAD_U = 1.12  # head centre


@dataclass(frozen=True)
class ClassDesign:
    """One class: its group, its marker (index into MARKER_SHAPES) and the slots (SLOTS) its objects have."""

    name: str
    group: int
    marker: int
    slots: frozenset[int]


@dataclass(frozen=True)
class Pose:
    """Everything random about one object except its class: place, size, angle, shape, colours, marker place."""

    cx: float
    cy: float
    r: float
    angle: float
    flip: float  # +1 or -1 (mirror across the long axis)
    body_shape: int
    marker_u: float
    marker_v: float
    marker_angle: float
    phase_u: float
    phase_v: float
    body_hsv: tuple[float, float, float]
    part_jitter: tuple[float, float, float]  # added to the slot colours
    marker_jitter: tuple[float, float, float]


def _absent_sets(n_groups: int) -> tuple[int, list[frozenset[int]]]:
    """(number of slots in use, the slots each group lacks): one slot each while there are enough slots,
    then pairs of slots."""
    n_slots = min(max(n_groups, 2), len(SLOTS))
    sets = [frozenset({g}) for g in range(n_slots)] + [frozenset(c) for c in itertools.combinations(range(n_slots), 2)]
    return n_slots, sets[:n_groups]


def max_groups() -> int:
    """The largest supported ``n_groups``."""
    return len(SLOTS) + len(SLOTS) * (len(SLOTS) - 1) // 2


def design_classes(n_groups: int = 4, classes_per_group: int = 3) -> list[ClassDesign]:
    """The class designs: class ``g * classes_per_group + k`` is group ``g`` with marker ``k``."""
    if not 1 <= classes_per_group <= len(MARKER_SHAPES):
        raise DataError(f"classes_per_group must be in 1..{len(MARKER_SHAPES)}, got {classes_per_group}")
    if not 1 <= n_groups <= max_groups():
        raise DataError(f"n_groups must be in 1..{max_groups()}, got {n_groups}")
    if n_groups * classes_per_group < 2:
        raise DataError("PartsWorld needs at least 2 classes")
    n_slots, absent = _absent_sets(n_groups)
    out = []
    for g in range(n_groups):
        gname = GROUP_NAMES[g] if g < len(GROUP_NAMES) else f"g{g}"
        slots = frozenset(range(n_slots)) - absent[g]
        for k in range(classes_per_group):
            out.append(ClassDesign(name=f"{gname}_{MARKER_SHAPES[k]}", group=g, marker=k, slots=slots))
    return out


# ------------------------------------------------------------------------------------------------
# Shapes: boolean functions of object-frame coordinates (u, v)
# ------------------------------------------------------------------------------------------------


def _body_shape(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    au, av = np.abs(u), np.abs(v)
    if kind == 0:  # ellipse
        return u * u + (v / 0.62) ** 2 <= 1.0
    if kind == 1:  # rounded box
        return (np.maximum(au - 0.7, 0) ** 2 + np.maximum(av - 0.36, 0) ** 2 <= 0.22**2) & (au <= 0.92) & (av <= 0.58)
    if kind == 2:  # diamond
        return au / 1.08 + av / 0.74 <= 1.0
    if kind == 3:  # hexagon
        return (av <= 0.58) & (au + 0.62 * av <= 1.0)
    # egg: wide at the back, narrow at the front
    w = 0.66 - 0.22 * (u + 1.0) / 2.0
    return (au <= 1.0) & (u * u + (v / w) ** 2 <= 1.0)


def _head(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x = u - _HEAD_U
    return x * x + v * v <= 0.42**2


def _appendage(slot: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Slots 2.. (legs, spikes, tail, antennae, keel)."""
    name = SLOTS[slot]
    if name == "legs":  # two legs below
        return ((np.abs(u - 0.45) <= 0.18) | (np.abs(u + 0.45) <= 0.18)) & (v >= 0.3) & (v <= 1.3)
    if name == "tail":  # fan tail behind
        return (u <= -0.8) & (u >= -1.62) & (np.abs(v) <= 0.12 + 0.6 * (-0.8 - u) / 0.82)
    if name == "spikes":  # three spikes on top
        out = np.zeros(u.shape, dtype=bool)
        for c in (-0.5, 0.0, 0.5):
            out |= (v <= -0.3) & (v >= -1.3) & (np.abs(u - c) <= 0.26 * (v + 1.3) / 1.0)
        return out
    if name == "antennae":  # two antennae at the front, top and bottom
        d1 = np.abs((v + 0.3) + 0.75 * (u - 0.7)) / 1.25
        d2 = np.abs((v - 0.3) - 0.75 * (u - 0.7)) / 1.25
        return (u >= 0.55) & (u <= 1.5) & ((d1 <= 0.08) | (d2 <= 0.08))
    # keel: a triangular fin below the middle
    return (v >= 0.3) & (v <= 1.1) & (np.abs(u) <= 0.3 * (1.1 - v) / 0.8)


def _marker_shape(kind: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    aa, ab = np.abs(a), np.abs(b)
    if kind == 0:  # block
        return (aa <= 1.0) & (ab <= 1.0)
    if kind == 1:  # ring
        rr = a * a + b * b
        return (rr <= 1.15**2) & (rr >= 0.55**2)
    if kind == 2:  # cross (plus)
        return ((aa <= 0.38) & (ab <= 1.15)) | ((ab <= 0.38) & (aa <= 1.15))
    if kind == 3:  # bar
        return (aa <= 1.3) & (ab <= 0.5)
    if kind == 4:  # triangle
        return (b <= 0.9) & (b >= -1.1) & (aa <= 0.62 * (b + 1.1))
    # x (diagonal cross)
    return ((np.abs(a - b) <= 0.55) | (np.abs(a + b) <= 0.55)) & (aa <= 1.0) & (ab <= 1.0)


def _stripes(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.sin(2 * np.pi * 2.2 * u) > 0


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, s, v)


def sample_pose(
    rng: np.random.Generator, image_size: int, r_range: tuple[float, float], centre: tuple[float, float] | None = None
) -> Pose:
    """Draw everything random about one object but its class (fixed number of draws, in a fixed order)."""
    r = float(rng.uniform(*r_range))
    m = min(1.25 * r, image_size / 2)
    cx, cy = (float(x) for x in rng.uniform(m, image_size - m, size=2))
    if centre is not None:
        cx, cy = centre
    return Pose(
        cx=cx, cy=cy, r=r,
        angle=float(rng.uniform(0, 2 * np.pi)),
        flip=1.0 if rng.random() < 0.5 else -1.0,
        body_shape=int(rng.integers(0, len(BODY_SHAPES))),
        marker_u=float(rng.uniform(-0.75, 0.7)),
        marker_v=float(rng.uniform(-0.3, 0.3)),
        marker_angle=float(rng.uniform(-0.35, 0.35)),
        phase_u=float(rng.random()),
        phase_v=float(rng.random()),
        body_hsv=(float(rng.uniform(*BODY_HUES)), float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.55, 0.95))),
        part_jitter=tuple(float(x) for x in rng.uniform(-0.08, 0.08, size=3)),
        marker_jitter=tuple(float(x) for x in rng.uniform(-0.07, 0.07, size=3)),
    )  # fmt: skip


class _Canvas:
    """Image (float RGB), part map and instance map being drawn."""

    def __init__(self, rgb: np.ndarray) -> None:
        self.size = rgb.shape[0]
        self.rgb = rgb
        self.part = np.zeros(rgb.shape[:2], dtype=np.uint8)
        self.inst = np.zeros(rgb.shape[:2], dtype=np.uint8)

    def frame(self, cx: float, cy: float, r: float, angle: float, flip: float, extent: float):
        """Slices of the object's bounding box and the object-frame coordinates (u, v) there."""
        n = self.size
        half = extent * r + 1.0
        y0, y1 = max(0, int(cy - half)), min(n, int(math.ceil(cy + half)) + 1)
        x0, x1 = max(0, int(cx - half)), min(n, int(math.ceil(cx + half)) + 1)
        if y0 >= y1 or x0 >= x1:
            return None
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        c, s = math.cos(angle), math.sin(angle)
        u = (dx * c + dy * s) / r
        v = flip * (-dx * s + dy * c) / r
        return (slice(y0, y1), slice(x0, x1)), u, v

    def paint(self, sl, m: np.ndarray, colour, part: int, inst: int) -> None:
        if not m.any():
            return
        self.rgb[sl][m] = colour if np.ndim(colour) == 1 else colour[m]
        self.part[sl][m] = part
        self.inst[sl][m] = inst


def _two_tone(pattern: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.where(pattern[..., None], colour, colour * 0.3 + 0.03).astype(np.float32)


def _object_parts(design: ClassDesign, pose: Pose, u: np.ndarray, v: np.ndarray):
    """(part id, boolean mask, colour) of each part of one object, in drawing order (back to front)."""
    body_c = np.asarray(_hsv(*pose.body_hsv), dtype=np.float32)
    part_jitter = np.asarray(pose.part_jitter, dtype=np.float32)

    def part_colour(slot: int) -> np.ndarray:
        return np.clip(np.asarray(SLOT_COLOURS[slot], dtype=np.float32) + part_jitter, 0, 1)

    out = [(SLOT_PART[slot], _appendage(slot, u, v), part_colour(slot)) for slot in sorted(design.slots) if slot >= 2]
    body = _body_shape(pose.body_shape, u, v)
    if 0 in design.slots:
        stripes = _stripes(u + pose.phase_u, v + pose.phase_v)
        body_rgb = np.where(stripes[..., None], body_c, part_colour(0)).astype(np.float32)
    else:
        body_rgb = body_c
    out.append((PART_BODY, body, body_rgb))
    if 1 in design.slots:
        out.append((PART_HEAD, _head(u, v), part_colour(1)))
    rm = max(_MARKER_SIZE, _MARKER_MIN_PX / pose.r)
    c, s = math.cos(pose.marker_angle), math.sin(pose.marker_angle)
    du, dv = u - pose.marker_u, v - pose.marker_v
    a, b = (du * c + dv * s) / rm, (-du * s + dv * c) / rm
    grow = 1.0 + 1.2 / (rm * pose.r)
    marker = _marker_shape(design.marker, a, b)
    outline = _marker_shape(design.marker, a / grow, b / grow) & ~marker
    jitter = np.asarray(pose.marker_jitter, dtype=np.float32)
    mc = np.clip(np.asarray(MARKER_COLOURS[design.marker], dtype=np.float32) + jitter, 0, 1)
    out.append((PART_MARKER, outline, np.full(3, 0.06, dtype=np.float32)))
    out.append((PART_MARKER, marker, mc))
    return out


def _draw_object(canvas: _Canvas, design: ClassDesign, pose: Pose, inst: int, marker: bool = True) -> int:
    """Draw one object (without its marker if not ``marker``); returns its pixel count (before anything drawn
    later covers it)."""
    fr = canvas.frame(pose.cx, pose.cy, pose.r, pose.angle, pose.flip, _EXTENT)
    if fr is None:
        return 0
    sl, u, v = fr
    union = np.zeros(u.shape, dtype=bool)
    for part, m, colour in _object_parts(design, pose, u, v):
        if part == PART_MARKER and not marker:
            continue
        canvas.paint(sl, m, colour, part, inst)
        union |= m
    return int(union.sum())


def _background(rng: np.random.Generator, n: int) -> np.ndarray:
    """Cluttered background: smooth colour noise, random lines, pixel noise (float32 RGB)."""
    base = np.asarray(_hsv(rng.random(), rng.uniform(0.05, 0.35), rng.uniform(0.3, 0.75)), dtype=np.float32)
    k = int(rng.integers(3, 7))
    coarse = rng.uniform(-0.2, 0.2, size=(k, k, 3)).astype(np.float32)
    pos = (np.arange(n, dtype=np.float32) + 0.5) * (k - 1) / n
    i0 = np.minimum(pos.astype(np.int64), k - 2)
    w = (pos - i0)[:, None]
    rows = coarse[i0] * (1 - w[..., None]) + coarse[i0 + 1] * w[..., None]  # (n, k, 3)
    wc = w[None, :, :]
    smooth = rows[:, i0] * (1 - wc) + rows[:, i0 + 1] * wc
    rgb = base + smooth
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) + 0.5
    for _ in range(int(rng.integers(0, 3))):  # lines / bands
        th = rng.uniform(0, np.pi)
        off = rng.uniform(0, n)
        width = rng.uniform(0.6, 3.0)
        d = np.abs((xx - n / 2) * math.cos(th) + (yy - n / 2) * math.sin(th) - (off - n / 2))
        m = d <= width
        col = np.asarray(_hsv(rng.random(), rng.uniform(0, 0.3), rng.uniform(0.2, 1.0)), dtype=np.float32)
        alpha = rng.uniform(0.2, 0.5)
        rgb[m] = rgb[m] * (1 - alpha) + col * alpha
    if rng.random() < 0.4:  # faint large-scale texture
        th = rng.uniform(0, np.pi)
        f = rng.uniform(0.05, 0.2)
        rgb += (0.08 * np.sin(2 * np.pi * f * (xx * math.cos(th) + yy * math.sin(th))))[..., None]
    rgb += rng.normal(0, 0.045, size=rgb.shape).astype(np.float32)
    return rgb


def _checker(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.floor(u * 3.0) + np.floor(v * 3.0)) % 2 == 0


def _draw_distractor(canvas: _Canvas, rng: np.random.Generator) -> None:
    """A loose part that is no object and shares no feature with the objects' slots: a checkered blob, a
    triangle, a star or a bar in a random colour (markers, heads, legs, stripes and dots never appear loose,
    so that an object's features are its own)."""
    n = canvas.size
    kind = int(rng.integers(0, 4))
    col = np.asarray(_hsv(rng.uniform(*BODY_HUES), rng.uniform(0.3, 0.95), rng.uniform(0.35, 0.95)), dtype=np.float32)
    r = float(rng.uniform(4.0, 8.0))
    cx, cy = (float(x) for x in rng.uniform(0, n, size=2))
    angle, flip = float(rng.uniform(0, 2 * np.pi)), 1.0 if rng.random() < 0.5 else -1.0
    phase = float(rng.random())
    fr = canvas.frame(cx, cy, r, angle, flip, _EXTENT)
    if fr is None:
        return
    sl, u, v = fr
    au, av = np.abs(u), np.abs(v)
    if kind == 0:  # checkered blob
        m = u * u + (v / 0.7) ** 2 <= 1.0
        col = _two_tone(_checker(u + phase, v + phase), col)
    elif kind == 1:  # triangle
        m = (v <= 0.8) & (v >= -0.9) & (au <= 0.55 * (v + 0.9))
    elif kind == 2:  # star
        ang = np.arctan2(v, u)
        m = np.sqrt(u * u + v * v) <= 0.55 + 0.4 * np.cos(5 * ang)
    else:  # bar
        m = (au <= 1.2) & (av <= 0.18)
    # Distractors are background: they go into the image only.
    if m.any():
        canvas.rgb[sl][m] = col if col.ndim == 1 else col[m]


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
        self.n_slots = _absent_sets(n_groups)[0]
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
        return Image.fromarray(self._render(i).image, mode="RGB")

    def mask(self, i: int) -> np.ndarray:
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
        canvas = _Canvas(np.empty((n, n, 3), dtype=np.float32))
        canvas.rgb[:] = np.asarray(background, dtype=np.float32)
        _draw_object(canvas, self.designs[c], pose, 1)
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
        bg = _background(rng, n)
        dcanvas = _Canvas(bg)
        for _ in range(int(rng.integers(0, self.max_distractors + 1))):
            _draw_distractor(dcanvas, rng)
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
            canvas = _Canvas(bg.copy())
            totals = [
                _draw_object(canvas, self.designs[c], p, j + 1, marker=not hide[j]) for j, (c, p) in enumerate(zip(classes, poses))
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
