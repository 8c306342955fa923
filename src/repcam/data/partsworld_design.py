"""The parts world's class designs: parts, slots, markers, colours and the planted groups (see
:mod:`repcam.data.partsworld`, whose data set draws them with :mod:`repcam.data.partsworld_render`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from .base import DataError

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


def absent_sets(n_groups: int) -> tuple[int, list[frozenset[int]]]:
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
    n_slots, absent = absent_sets(n_groups)
    out = []
    for g in range(n_groups):
        gname = GROUP_NAMES[g] if g < len(GROUP_NAMES) else f"g{g}"
        slots = frozenset(range(n_slots)) - absent[g]
        for k in range(classes_per_group):
            out.append(ClassDesign(name=f"{gname}_{MARKER_SHAPES[k]}", group=g, marker=k, slots=slots))
    return out
