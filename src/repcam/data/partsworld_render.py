"""Rendering of the parts world: object shapes in the object frame, objects, backgrounds and distractors on a
canvas (the design is :mod:`repcam.data.partsworld_design`, the data set :mod:`repcam.data.partsworld`)."""

from __future__ import annotations

import colorsys
import math

import numpy as np

from .partsworld_design import (BODY_HUES, BODY_SHAPES, MARKER_COLOURS, PART_BODY, PART_HEAD, PART_MARKER, SLOT_COLOURS,
                                SLOT_PART, SLOTS, ClassDesign, Pose)

# Object geometry in object units (multiples of the scale r): the body spans u in [-1, 1], v in [-0.62, 0.62].
_EXTENT = 1.8  # every part lies within this radius of the object centre
_MARKER_SIZE = 0.22  # marker half-size relative to r ...
_MARKER_MIN_PX = 2.6  # ... but at least this many pixels
_HEAD_U = 1.12  # head centre


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


class Canvas:
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
        """Paint the pixels ``m`` of the box ``sl`` with ``colour`` (one RGB or one per pixel), part and instance."""
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


def draw_object(canvas: Canvas, design: ClassDesign, pose: Pose, inst: int, marker: bool = True) -> int:
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


def background(rng: np.random.Generator, n: int) -> np.ndarray:
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


def draw_distractor(canvas: Canvas, rng: np.random.Generator) -> None:
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
