"""Parts world: a procedurally generated segmentation data set with planted groups of similar classes.

Built in, deterministic for a seed, no download. It is made so that the paper's claim can be seen on a
CPU in minutes: Grad-CAM of a multi-class classifier tends to be local, while binary classifiers against
classes of *other* groups use more of the object, and different partners use different parts.

Every object is made of parts, drawn in an object frame (u along the body's long axis, v across it,
both in units of the object's scale ``r`` in pixels) that is moved, scaled, rotated and mirrored at random:

- ``body``: a large shape (ellipse, box, diamond, ...) filled with a two-tone texture (stripes, dots,
  checker, ...), roughly half of the object's area;
- ``head``: a medium shape (disc, triangle, square, ...) at the front of the body;
- ``limbs``: a set of appendages (legs, fins, tail, spikes, ...);
- ``marker``: one small shape in a fixed colour (block, ring, cross, ...) at a random place on the body,
  a few percent of the object's area.

Classes come in ``n_groups`` planted groups of ``classes_per_group`` classes. All classes of a group share
body shape, body texture, head and limbs; they differ **only** by their marker. Marker ``k`` is the same in
every group, so markers alone do not tell groups apart: a multi-class classifier needs the body parts for
the group and the marker for the class within it, and the marker is the only cue between classes of one
group. Groups differ in more than one part: with ``V = ceil(sqrt(n_groups))`` variants per part, group ``g``
has body shape ``g // V``, texture ``g % V``, head ``(g // V + g % V) % V`` (so two groups differ in at least
two of these three) and limbs ``g`` (modulo the number of limb designs). With the default 4 groups every
cross-group pair shares exactly one of shape/texture/head, so classifiers against partners from different
groups rely on different parts.

Colours are random per object (body, head and limbs; the texture is two-tone), so colour is no group cue;
only markers have a fixed colour per marker index (with jitter). Images have cluttered backgrounds (smooth
colour noise, pixel noise, random lines) and loose distractor parts (heads, limbs, textured blobs and
marker-like shapes in random colours) that are not objects and are not in the mask. Images hold one
object or, with probability ``multi_object_fraction``, 2-3 objects of different classes (which may overlap
slightly, each stays mostly visible).

Masks cover all parts of each object with ``k + 1`` for class ``k`` and 0 elsewhere; with
``ignore_border=True`` the one-pixel outer border of each object is 255 as in VOC. ``parts(i)`` gives the
part of each pixel (``PART_*``), ``instances(i)`` the object index (0 none, ``j + 1`` the ``j``-th object
of ``objects(i)``).

Images are rendered lazily (on first access, then cached) from a generator seeded by
``(seed, split, index)``, so image ``i`` does not depend on ``num_images`` and ``train``/``val`` are
disjoint streams. The class designs depend only on ``n_groups`` and ``classes_per_group``, never on the seed.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .base import IGNORE_INDEX, DataError, Sample, SegDataset

PART_BACKGROUND, PART_BODY, PART_HEAD, PART_LIMBS, PART_MARKER = 0, 1, 2, 3, 4
PART_NAMES = ("background", "body", "head", "limbs", "marker")

BODY_SHAPES = ("ellipse", "box", "diamond", "hexagon", "egg")
TEXTURES = ("stripes", "dots", "checker", "rings", "zigzag")
HEAD_SHAPES = ("disc", "triangle", "square", "rhombus", "bar")
LIMB_SETS = ("legs", "fins", "tail", "spikes", "arms")
MARKER_SHAPES = ("block", "ring", "cross", "bar", "tri", "x")
MARKER_COLOURS = (
    (0.92, 0.12, 0.12),  # red
    (0.10, 0.80, 0.95),  # cyan
    (0.98, 0.90, 0.10),  # yellow
    (0.95, 0.20, 0.90),  # magenta
    (0.98, 0.98, 0.98),  # white
    (0.15, 0.90, 0.20),  # green
)
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
_COLOUR_SPLIT = lambda s, t, v: (s + t) % v  # noqa: E731
_LIMB_CENTRES = ((0.0, 0.75), (-0.1, 0.0), (-1.2, 0.0), (0.0, -0.75), (0.0, 0.0))  # per LIMB_SETS, for loose limbs


@dataclass(frozen=True)
class ClassDesign:
    """The parts of one class (indices into BODY_SHAPES, TEXTURES, HEAD_SHAPES, LIMB_SETS, MARKER_SHAPES)."""

    name: str
    group: int
    marker: int
    body: int
    texture: int
    head: int
    limbs: int
    colour: int  # body colour family (of n_colours)
    n_colours: int


@dataclass(frozen=True)
class Pose:
    """Everything random about one object except its class: place, size, angle, colours, marker place."""

    cx: float
    cy: float
    r: float
    angle: float
    flip: float  # +1 or -1 (mirror across the long axis)
    marker_u: float
    marker_v: float
    marker_angle: float
    phase_u: float
    phase_v: float
    hue: float  # in [-1, 1]: where in its family's hue range the body colour lies
    body_sv: tuple[float, float]
    part_hsv: tuple[float, float, float]  # hue relative to the body's
    marker_jitter: tuple[float, float, float]


def design_classes(n_groups: int = 4, classes_per_group: int = 3) -> list[ClassDesign]:
    """The class designs: class ``g * classes_per_group + k`` is group ``g`` with marker ``k``."""
    if not 1 <= classes_per_group <= len(MARKER_SHAPES):
        raise DataError(f"classes_per_group must be in 1..{len(MARKER_SHAPES)}, got {classes_per_group}")
    max_groups = len(BODY_SHAPES) ** 2
    if not 1 <= n_groups <= max_groups:
        raise DataError(f"n_groups must be in 1..{max_groups}, got {n_groups}")
    if n_groups * classes_per_group < 2:
        raise DataError("PartsWorld needs at least 2 classes")
    v = max(2, math.ceil(math.sqrt(n_groups)))
    out = []
    for g in range(n_groups):
        s, t = divmod(g, v)
        gname = GROUP_NAMES[g] if g < len(GROUP_NAMES) else f"g{g}"
        for k in range(classes_per_group):
            out.append(
                ClassDesign(
                    name=f"{gname}_{MARKER_SHAPES[k]}", group=g, marker=k, body=s, texture=t,
                    head=(s + t) % v, limbs=g % len(LIMB_SETS), colour=_COLOUR_SPLIT(s, t, v), n_colours=v,
                )  # fmt: skip
            )
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


def _head_shape(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, av = u - _HEAD_U, np.abs(v)
    if kind == 0:  # disc
        return x * x + v * v <= 0.38**2
    if kind == 1:  # triangle pointing forward
        return (x >= -0.32) & (x <= 0.5) & (av <= 0.46 * (0.5 - x) / 0.82)
    if kind == 2:  # square
        return (np.abs(x) <= 0.31) & (av <= 0.31)
    if kind == 3:  # rhombus
        return np.abs(x) + av <= 0.44
    return (np.abs(x) <= 0.18) & (av <= 0.5)  # bar across the front


def _limbs_shape(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if kind == 0:  # two legs below
        return ((np.abs(u - 0.45) <= 0.1) | (np.abs(u + 0.45) <= 0.1)) & (v >= 0.3) & (v <= 1.15)
    if kind == 1:  # fins above and below
        av = np.abs(v)
        return (av >= 0.3) & (av <= 1.15) & (np.abs(u + 0.1) <= 0.5 * (1.15 - av) / 0.85)
    if kind == 2:  # fan tail behind
        return (u <= -0.8) & (u >= -1.62) & (np.abs(v) <= 0.12 + 0.6 * (-0.8 - u) / 0.82)
    if kind == 3:  # three spikes on top
        out = np.zeros(u.shape, dtype=bool)
        for c in (-0.5, 0.0, 0.5):
            out |= (v <= -0.3) & (v >= -1.1) & (np.abs(u - c) <= 0.2 * (v + 1.1) / 0.8)
        return out
    # arms: two thin diagonal bars sticking out sideways
    d1 = np.abs((u - 0.1) - 0.9 * (v - 0.0)) / 1.35
    d2 = np.abs((u - 0.1) + 0.9 * (v - 0.0)) / 1.35
    span = (np.abs(v) >= 0.3) & (np.abs(v) <= 1.15)
    return span & ((d1 <= 0.09) | (d2 <= 0.09))


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


def _texture(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A boolean two-tone pattern in the object frame (already phase-shifted)."""
    if kind == 0:  # stripes across the long axis
        return np.sin(2 * np.pi * 2.2 * u) > 0
    if kind == 1:  # dots
        fu, fv = (u * 3.2) % 1.0 - 0.5, (v * 3.2) % 1.0 - 0.5
        return fu * fu + fv * fv < 0.09
    if kind == 2:  # checker
        return (np.floor(u * 2.8) + np.floor(v * 2.8)) % 2 == 0
    if kind == 3:  # concentric rings
        return np.sin(2 * np.pi * 2.4 * np.sqrt(u * u + v * v)) > 0
    # zigzag stripes along the long axis
    return np.sin(2 * np.pi * (2.4 * v + 0.35 * np.abs((u * 3.0) % 2.0 - 1.0) * 2.0)) > 0


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
    hue = float(rng.uniform(-1, 1))
    body_sv = (float(rng.uniform(0.45, 0.9)), float(rng.uniform(0.6, 0.95)))
    part_hsv = (float(rng.uniform(0.25, 0.75)), float(rng.uniform(0.4, 0.95)), float(rng.uniform(0.4, 0.95)))
    return Pose(
        cx=cx, cy=cy, r=r,
        angle=float(rng.uniform(0, 2 * np.pi)),
        flip=1.0 if rng.random() < 0.5 else -1.0,
        marker_u=float(rng.uniform(-0.5, 0.45)),
        marker_v=float(rng.uniform(-0.2, 0.2)),
        marker_angle=float(rng.uniform(-0.35, 0.35)),
        phase_u=float(rng.random()),
        phase_v=float(rng.random()),
        hue=hue,
        body_sv=body_sv,
        part_hsv=part_hsv,
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


_COLOUR_MODE = "family"


def _body_hue(design: ClassDesign, pose: Pose) -> float:
    """Body hue: a range of hues per colour family (families evenly spread around the hue circle)."""
    if _COLOUR_MODE == "random":
        return (pose.hue + 1.0) / 2.0
    return 0.05 + design.colour / design.n_colours + pose.hue * 0.3 / design.n_colours


def _object_parts(design: ClassDesign, pose: Pose, u: np.ndarray, v: np.ndarray):
    """(part id, boolean mask, colour) of each part of one object, in drawing order (back to front)."""
    h = _body_hue(design, pose)
    body_c = np.asarray(_hsv(h, *pose.body_sv), dtype=np.float32)
    part_c = np.asarray(_hsv(h + pose.part_hsv[0], *pose.part_hsv[1:]), dtype=np.float32)
    limbs = _limbs_shape(design.limbs, u, v)
    body = _body_shape(design.body, u, v)
    tex = _texture(design.texture, u + pose.phase_u, v + pose.phase_v)
    body_rgb = np.where(tex[..., None], body_c, body_c * 0.42 + 0.04).astype(np.float32)
    head = _head_shape(design.head, u, v)
    rm = max(_MARKER_SIZE, _MARKER_MIN_PX / pose.r)
    c, s = math.cos(pose.marker_angle), math.sin(pose.marker_angle)
    du, dv = u - pose.marker_u, v - pose.marker_v
    a, b = (du * c + dv * s) / rm, (-du * s + dv * c) / rm
    outline = _marker_shape(design.marker, a / 1.45, b / 1.45) & ~_marker_shape(design.marker, a, b)
    marker = _marker_shape(design.marker, a, b)
    mc = np.clip(np.asarray(MARKER_COLOURS[design.marker], dtype=np.float32) + np.asarray(pose.marker_jitter, dtype=np.float32), 0, 1)
    dark = np.full(3, 0.06, dtype=np.float32)
    return [
        (PART_LIMBS, limbs, part_c),
        (PART_BODY, body, body_rgb),
        (PART_HEAD, head, part_c * 0.9 + 0.05),
        (PART_MARKER, outline, dark),
        (PART_MARKER, marker, mc),
    ]


def _draw_object(canvas: _Canvas, design: ClassDesign, pose: Pose, inst: int) -> int:
    """Draw one object; returns its pixel count (before anything drawn later covers it)."""
    fr = canvas.frame(pose.cx, pose.cy, pose.r, pose.angle, pose.flip, _EXTENT)
    if fr is None:
        return 0
    sl, u, v = fr
    union = np.zeros(u.shape, dtype=bool)
    for part, m, colour in _object_parts(design, pose, u, v):
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
        col = np.asarray(_hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.2, 1.0)), dtype=np.float32)
        alpha = rng.uniform(0.2, 0.5)
        rgb[m] = rgb[m] * (1 - alpha) + col * alpha
    if rng.random() < 0.4:  # faint large-scale texture
        th = rng.uniform(0, np.pi)
        f = rng.uniform(0.05, 0.2)
        rgb += (0.08 * np.sin(2 * np.pi * f * (xx * math.cos(th) + yy * math.sin(th))))[..., None]
    rgb += rng.normal(0, 0.045, size=rgb.shape).astype(np.float32)
    return rgb


def _draw_distractor(canvas: _Canvas, rng: np.random.Generator, n_designs: tuple[int, int, int, int]) -> None:
    """A loose part that is no object: a head, a set of limbs, a textured blob or a marker-like shape."""
    n = canvas.size
    kind = int(rng.integers(0, 4))
    col = np.asarray(_hsv(rng.random(), rng.uniform(0.3, 0.95), rng.uniform(0.35, 0.95)), dtype=np.float32)
    variant = int(rng.integers(0, n_designs[kind]))
    r = float(rng.uniform(5.0, 10.0)) if kind != 3 else float(rng.uniform(2.5, 4.0))
    cx, cy = (float(x) for x in rng.uniform(0, n, size=2))
    angle, flip = float(rng.uniform(0, 2 * np.pi)), 1.0 if rng.random() < 0.5 else -1.0
    phase = float(rng.random())
    fr = canvas.frame(cx, cy, r, angle, flip, _EXTENT)
    if fr is None:
        return
    sl, u, v = fr
    if kind == 0:
        m = _head_shape(variant, u * 0.45 + _HEAD_U, v * 0.45)
    elif kind == 1:
        cu, cv = _LIMB_CENTRES[variant]
        m = _limbs_shape(variant, u * 0.8 + cu, v * 0.8 + cv)
    elif kind == 2:
        m = _body_shape(variant, u * 1.3, v * 1.3)
        tex = _texture(int(rng.integers(0, len(TEXTURES))), u + phase, v)
        col = np.where(tex[..., None], col, col * 0.42 + 0.04).astype(np.float32)
    else:
        m = _marker_shape(variant, u, v)
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
        multi_object_fraction: probability that an image has 2-3 objects (default 0.2 train, 0.5 val).
        seed: the data set's seed.
        max_distractors: each image has 0..max_distractors loose parts.
        ignore_border: mark the one-pixel outer border of each object 255 in the mask.
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
        self.split = split
        self.image_size = int(image_size)
        self.seed = int(seed)
        self.multi_object_fraction = float(multi_object_fraction)
        self.max_distractors = int(max_distractors)
        self.ignore_border = bool(ignore_border)
        self.designs: list[ClassDesign] = design_classes(n_groups, classes_per_group)
        self.class_names = tuple(d.name for d in self.designs)
        self.groups: list[list[int]] = [
            [g * classes_per_group + k for k in range(classes_per_group)] for g in range(n_groups)
        ]
        self.samples = [
            Sample(id=f"{split}_{i:05d}", labels=frozenset(self._draw_classes(self._rng(i)))) for i in range(num_images)
        ]
        self._cache: dict[int, _Rendered] = {}

    # -- public API ---------------------------------------------------------------------------------

    def image(self, i: int) -> Image.Image:
        return Image.fromarray(self._render(i).image, mode="RGB")

    def mask(self, i: int) -> np.ndarray:
        return self._render(i).mask.copy()

    def image_array(self, i: int) -> np.ndarray:
        """The i-th image as uint8 (H, W, 3)."""
        return self._render(i).image.copy()

    def parts(self, i: int) -> np.ndarray:
        """Which part (``PART_BODY``, ``PART_HEAD``, ``PART_LIMBS``, ``PART_MARKER``; 0 none) each visible pixel shows."""
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
        return self.designs[c].group

    def marker_of(self, c: int) -> int:
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
            return hit
        rng = self._rng(i)
        classes = self._draw_classes(rng)
        n = self.image_size
        bg = _background(rng, n)
        dcanvas = _Canvas(bg)
        sizes = (len(HEAD_SHAPES), len(LIMB_SETS), len(BODY_SHAPES), len(MARKER_SHAPES))
        for _ in range(int(rng.integers(0, self.max_distractors + 1))):
            _draw_distractor(dcanvas, rng, sizes)
        if len(classes) == 1:
            r_range = (0.2 * n, 0.3 * n)
        else:
            r_range = (0.16 * n, 0.21 * n) if len(classes) == 2 else (0.13 * n, 0.16 * n)
        for attempt in range(40):
            shrink = 1.0 - 0.015 * attempt
            rr = (r_range[0] * shrink, r_range[1] * shrink)
            poses = [sample_pose(rng, n, rr) for _ in classes]
            if len(classes) > 1 and attempt < 39 and not _spread_out(poses):
                continue
            canvas = _Canvas(bg.copy())
            totals = [_draw_object(canvas, self.designs[c], p, j + 1) for j, (c, p) in enumerate(zip(classes, poses))]
            visible = np.bincount(canvas.inst.ravel(), minlength=len(classes) + 1)[1:]
            if all(t > 0 and vis >= 0.7 * t and vis >= 12 for t, vis in zip(totals, visible)) or attempt == 39:
                break
        mask = np.zeros((n, n), dtype=np.uint8)
        for j, c in enumerate(classes):
            obj = canvas.inst == j + 1
            if not obj.any():  # pragma: no cover - placement always leaves the front object visible
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
        return out


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
