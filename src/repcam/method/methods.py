"""A method's identity as a value, and the registries that name every method a run can evaluate.

A table row such as ``"S-1+A+F[max]"`` is a :class:`Method`: which selection chose the representative classes,
which layers the maps come from (A: the paper's multi-layer fusion), how the representative maps are fused (F),
and where the maps come from (the pair models, or the multi-class model with contrastive targets). Row names are
written by :attr:`Method.name` and read back by :meth:`Method.parse`, never taken apart by string slicing.

Three registries, in the style of timm's ``register_model``, are the one table behind config choices, table order
and display names:

- :data:`SELECTIONS` (``@register_selection``): ``selection.methods`` -> how the representative classes are chosen;
- :data:`MAP_KINDS` (``register_map_kind``): the multi-class baseline rows and the stored map kind behind each;
- :data:`VARIANTS` (``@register_variant``): ``evaluation.variants`` -> the rows it adds to every selection.

Adding a selection method or a variant is one decorated function here (plus its test); the config's choices,
``tables.method_order`` and the evaluation follow. This module imports only numpy: the config validation uses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Generic, Iterator, Literal, TypeVar

import numpy as np

from repcam.method import selection as S

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries under unique keys, in registration order (the order of config choices and of tables)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def add(self, key: str, entry: T) -> T:
        """Register ``entry`` under ``key`` and return it; ValueError if ``key`` is taken."""
        if key in self._entries:
            raise ValueError(f"{self.what} {key!r} is registered twice")
        self._entries[key] = entry
        return entry

    def __getitem__(self, key: str) -> T:
        return self._entries[key]

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def keys(self) -> tuple[str, ...]:
        """The keys, in registration order."""
        return tuple(self._entries)

    def values(self) -> list[T]:
        """The entries, in registration order."""
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        """(key, entry) pairs, in registration order."""
        return list(self._entries.items())


# ---- the method record -------------------------------------------------------------------------------------------

Layers = Literal["last", "A"]
Source = Literal["pairs", "contrast", "multiclass", "trained"]
ClassFusion = Literal["mean", "max", "geomean"]


@dataclass(frozen=True)
class Method:
    """One evaluated method. Rows of a selection have ``selection`` (its display name, e.g. "S-1" or "Top-2");
    baseline rows (``source`` multiclass or trained) have ``baseline``, their display name, instead."""

    selection: str | None = None
    layers: Layers = "last"  # "A": the multi-layer Grad-CAM fusion of the paper (Eq. 3)
    class_fusion: ClassFusion = "mean"  # F over the representative classes' maps
    source: Source = "pairs"
    with_gradcam: bool = False  # variant "with-gradcam": the +A+F map averaged with the multi-class Grad-CAM
    baseline: str | None = None

    @property
    def name(self) -> str:
        """The row name in every table (``"S-1+A+F"``, ``"S-2 contrast+A"``, ``"Grad-CAM"`` ...)."""
        if self.baseline is not None:
            return self.baseline
        a = "+A" if self.layers == "A" else ""
        if self.source == "contrast":
            return f"{self.selection} contrast{a}"
        fusion = "" if self.class_fusion == "mean" else f"[{self.class_fusion}]"
        return f"{self.selection}{a}+F{fusion}" + (" & Grad-CAM" if self.with_gradcam else "")

    @classmethod
    def parse(cls, name: str) -> "Method":
        """The method of a row name; ``ValueError`` for a name no method writes (e.g. an evaluation grid row)."""
        if name in MAP_KINDS:
            return MAP_KINDS[name].method
        if name in TRAINED_BASELINES.values():
            return cls(source="trained", baseline=name)
        m = _ROW.fullmatch(name)
        if m is None:
            raise ValueError(f"{name!r} is not a method's row name")
        if m["contrast"] is not None:
            return cls(m["sel"], "A" if m["ca"] else "last", source="contrast")
        return cls(m["sel"], "A" if m["a"] else "last", m["fusion"] or "mean", with_gradcam=m["g"] is not None)  # type: ignore[arg-type]

    @classmethod
    def try_parse(cls, name: str) -> "Method | None":
        """Like :meth:`parse`, but None for a name no method writes."""
        try:
            return cls.parse(name)
        except ValueError:
            return None


# The selection part is anything without the suffixes (display names such as "Rank-a" or "Top-3" contain "-").
_ROW = re.compile(r"(?P<sel>.+?)(?:(?P<contrast> contrast)(?P<ca>\+A)?|(?P<a>\+A)?\+F(?:\[(?P<fusion>max|geomean)\])?(?P<g> & Grad-CAM)?)")


# ---- selection methods -------------------------------------------------------------------------------------------

@dataclass
class SelectionInput:
    """What a selection method may use: B, the settings of ``selection`` and a seed per purpose.

    The clusters of the improved k-means are computed once per run, by the first S-k method that asks, and shared
    by all of them (they are written to selections.json when computed)."""

    B: np.ndarray | None  # None where there is no run (a stock model): only the methods of NO_B_SELECTIONS work
    n: int
    min_cluster_size: int
    seed: Callable[[str], int]  # a run's seed for one purpose (the same as before the registry: see stages)
    clusters: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    head: np.ndarray | None = None  # (C, D) rows of the classifier's final linear layer, where it has one

    @property
    def num_classes(self) -> int:
        if self.B is not None:
            return len(self.B)
        if self.head is not None:
            return len(self.head)
        raise ValueError("a selection needs B or the classifier's head weights")

    def kmeans_clusters(self) -> np.ndarray:
        """The improved k-means clusters of the classes (from B's affinity, seeded by purpose "kmeans"), computed on the
        first call and kept in ``clusters`` for every S-k method."""
        if self.clusters is None:
            self.clusters = S.improved_kmeans(S.affinity(self.B), self.n, self.min_cluster_size, seed=self.seed("kmeans") % (2**32))
        return self.clusters


SelectionFn = Callable[[SelectionInput], S.Selection]


@dataclass(frozen=True)
class SelectionMethod:
    """A registered selection method: its ``selection.methods`` key, the selection part of its row names, and the
    function that chooses the representative classes."""

    key: str  # the value in selection.methods
    display: str  # the row name's selection part
    select: SelectionFn


SELECTIONS: Registry[SelectionMethod] = Registry("selection method")


def register_selection(key: str, display: str) -> Callable[[SelectionFn], SelectionFn]:
    """Decorator: ``fn(SelectionInput) -> Selection`` becomes ``selection.methods: [key]``, shown as ``display``."""

    def deco(fn: SelectionFn) -> SelectionFn:
        SELECTIONS.add(key, SelectionMethod(key, display, fn))
        return fn

    return deco


@register_selection("random", "Random")
def _random(inp: SelectionInput) -> S.Selection:
    return S.random_select(inp.num_classes, inp.n, inp.seed("random") % (2**32))


def _rank(order: list[int]) -> SelectionFn:
    def select(inp: SelectionInput) -> S.Selection:
        sel, note = S.rank_select(inp.B, order)
        if note:
            inp.notes.append(note)
        return sel

    return select


register_selection("rank-a", "Rank-a")(_rank(S.RANK_A))
register_selection("rank-b", "Rank-b")(_rank(S.RANK_B))


def _cluster(k: int) -> SelectionFn:
    def select(inp: SelectionInput) -> S.Selection:
        return S.cluster_select(inp.B, inp.kmeans_clusters(), k)

    return select


for _k in range(1, 5):
    register_selection(f"s{_k}", f"S-{_k}")(_cluster(_k))


@register_selection("all", "All")
def _all(inp: SelectionInput) -> S.Selection:
    return S.all_select(inp.num_classes)


NO_B_SELECTIONS = ("random", "all", "head-least")
"""Selections that need no B (no run): usable as contrast references of any model, a stock one included. "all" as
contrast references is the mean of all other classes; "head-least" (method/selections/head.py) needs a linear head."""


TOPK_ORDER = tuple(f"Top-{k}" for k in range(1, 5))
"""Top-k (``selection.pairwise``) selections in table order; chosen by the evaluation, not by a registered method."""


def selection_order() -> list[str]:
    """Display names of the selections in the paper's Table 2 order (registered methods, then Top-1..4)."""
    return [m.display for m in SELECTIONS.values()] + list(TOPK_ORDER)


# ---- multi-class map kinds and trained baselines -----------------------------------------------------------------

@dataclass(frozen=True)
class MapKind:
    """A multi-class baseline row: its :class:`Method` and the map kind stored for it in the multi-class maps file."""

    method: Method
    kind: str  # the map kind stored in the multi-class maps file (repcam.pipeline.maps)


MAP_KINDS: Registry[MapKind] = Registry("map kind")


def register_map_kind(row: str, kind: str) -> MapKind:
    """A baseline row from the multi-class model's stored maps of ``kind``."""
    return MAP_KINDS.add(row, MapKind(Method(source="multiclass", baseline=row), kind))


register_map_kind("CAM", "cam")
register_map_kind("Grad-CAM", "last")
register_map_kind("Grad-CAM (mean of layers)", "mean")
register_map_kind("LayerCAM", "layercam")
register_map_kind("Grad-CAM+A", "fused")

BASELINE = "Grad-CAM"  # the row every other row's difference and interval is taken against (the paper's baseline)

TRAINED_BASELINES = {"acol": "ACoL", "cbam": "CBAM (Grad-CAM)"}  # config ``baselines`` -> row (repcam.models.baselines)


# ---- variants ----------------------------------------------------------------------------------------------------

VariantFn = Callable[[str], list[Method]]
VARIANTS: Registry[VariantFn] = Registry("variant")


def register_variant(key: str) -> Callable[[VariantFn], VariantFn]:
    """Decorator: ``fn(selection display name) -> [Method]``, the rows ``evaluation.variants: [key]`` adds."""

    def deco(fn: VariantFn) -> VariantFn:
        VARIANTS.add(key, fn)
        return fn

    return deco


@register_variant("max")
def _max(sel: str) -> list[Method]:
    return [Method(sel, "A", "max")]


@register_variant("geomean")
def _geomean(sel: str) -> list[Method]:
    return [Method(sel, "A", "geomean")]


@register_variant("contrast")
def _contrast(sel: str) -> list[Method]:
    return [Method(sel, "last", source="contrast"), Method(sel, "A", source="contrast")]


@register_variant("with-gradcam")
def _with_gradcam(sel: str) -> list[Method]:
    return [Method(sel, "A", with_gradcam=True)]


def paper_rows(sel: str) -> list[Method]:
    """The rows every selection gets: +F (last layer) and +A+F (the paper's method)."""
    return [Method(sel, "last"), Method(sel, "A")]
