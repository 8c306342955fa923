"""Strict validation of a run config: values to the schema's dataclasses with type checks, then allowed values and
ranges (:func:`validate`)."""

from __future__ import annotations

import dataclasses
import math
import typing
import unicodedata
from typing import Any

from repcam.config_schema import ConfigError, RunConfig
from repcam.evaluation.metric_names import check_metrics
from repcam.method import methods as _methods
from repcam.pipeline.grid_names import check_grid

# The config's choices come from the method registries (repcam.method.methods): a registered method is a valid value.
SELECTION_METHODS = _methods.SELECTIONS.keys()
VARIANTS = _methods.VARIANTS.keys()
BASELINES = tuple(_methods.TRAINED_BASELINES)



def build_section(cls: type, values: Any, where: str, source: str) -> Any:
    """The dataclass ``cls`` from the mapping ``values`` at dotted key ``where``, nested sections built in turn; every
    value is type-checked and an unknown key is an error that names ``source`` and the key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in values if k not in names), key=str)  # YAML keys may be ints, null, ...
    if unknown:
        # repr, not the raw text: a key may hold a newline or other control characters, and the error stays one line
        raise ConfigError(f"{source}: unknown key {_join(where, unknown[0])!r}; valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = _join(where, name)
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is not None and len(options) == 1 and dataclasses.is_dataclass(options[0]):  # an optional section
            hint = options[0]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build_section(hint, value, key, source)
        else:
            kwargs[name] = _check_type(value, hint, key, source)
    return cls(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else str(name)  # str: a YAML key may be an int


def _check_type(value: Any, hint: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # X | None: a non-null value must be an X, and the error says what an X is
            return _check_type(value, options[0], key, source)
        errors = []
        for arg in args:
            try:
                return _check_type(value, arg, key, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[-1]
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{source}: '{key}' must be null")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: '{key}' must be a list, got {value!r}")
        return [_check_type(v, args[0], f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{key}' must be a mapping, got {value!r}")
        bad = [k for k in value if not isinstance(k, str)]
        if bad:
            raise ConfigError(f"{source}: '{key}' keys must be strings, got {bad[0]!r}")
        if len(args) == 2:  # e.g. eval_options: each value must be a mapping itself
            return {k: _check_type(v, args[1], f"{key}.{k}", source) for k, v in value.items()}
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise ConfigError(f"{source}: '{key}' must be a finite number, got an integer of {len(str(value))} digits") from None
        if not math.isfinite(number):  # YAML's .nan / .inf would otherwise turn into silently wrong numbers
            raise ConfigError(f"{source}: '{key}' must be a finite number, got {value!r}")
        return number
    if hint is Any or (isinstance(hint, type) and isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        return value
    raise ConfigError(f"{source}: '{key}' must be {getattr(hint, '__name__', hint)}, got {value!r}")


def validate(cfg: RunConfig, source: str = "config") -> RunConfig:
    """Checks that need more than types: allowed values and ranges."""

    def fail(key: str, msg: str) -> None:
        raise ConfigError(f"{source}: '{key}' {msg}")

    for key, value, allowed in [
        ("data.kind", cfg.data.kind, ("partsworld", "voc", "coco", "folder")),
        ("multiclass.mode", cfg.multiclass.mode, ("single", "multilabel")),
        ("multiclass.budget_unit", cfg.multiclass.budget_unit, ("image-epochs", "flops")),
        ("pairs.init", cfg.pairs.init, ("pretrained", "multiclass")),
        ("evaluation.protocol", cfg.evaluation.protocol, ("whole", "crop")),
        ("execution.kind", cfg.execution.kind, ("inprocess", "process", "ray")),
    ]:
        if value not in allowed:
            fail(key, f"must be one of {', '.join(allowed)}; got {value!r}")
    if cfg.data.kind != "partsworld" and not cfg.data.root:
        fail("data.root", f"is required for data.kind={cfg.data.kind!r} (the data set folder)")
    for key, values, allowed in [("selection.methods", cfg.selection.methods, SELECTION_METHODS), ("evaluation.variants", cfg.evaluation.variants, VARIANTS),
                                 ("baselines", cfg.baselines, BASELINES)]:
        bad = [v for v in values if v not in allowed]
        if bad:
            fail(key, f"has unknown {key.split('.')[-1].removesuffix('s')} {bad[0]!r}; choose from {', '.join(allowed)}")
    if "heldout" in cfg.data.eval_splits and not cfg.data.holdout:
        fail("data.eval_splits", "lists 'heldout', which needs data.holdout (original_masks or an id list file)")
    if not cfg.evaluation.tta_scales or any(not (isinstance(v, (int, float)) and 0 < v <= 4) for v in cfg.evaluation.tta_scales):
        fail("evaluation.tta_scales", f"must be a non-empty list of scales in (0, 4], got {cfg.evaluation.tta_scales}")
    if not cfg.pairs.train and cfg.selection.pairwise:
        fail("selection.pairwise", "needs pair models; it cannot be true with pairs.train: false")
    if not cfg.pairs.train and cfg.evaluation.grid is not None and "pairs" in cfg.evaluation.grid.sources:
        fail("evaluation.grid.sources", "lists 'pairs', which needs pair models; remove it or set pairs.train: true")
    if cfg.evaluation.grid is not None:
        check_grid(cfg.evaluation.grid, fail)
    if cfg.evaluation.faithfulness:
        check_metrics(cfg.evaluation.faithfulness, lambda msg: fail("evaluation.faithfulness", msg))
    _check_split_names(cfg, fail)
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        fail("device", f"must be auto, cpu or cuda; got {cfg.device!r}")
    values = dict(_leaves(cfg))
    for key, value in values.items():
        # Also for configs built in Python: a NaN learning rate or gamma must never become a silently wrong table.
        if isinstance(value, float) and not math.isfinite(value):
            fail(key, f"must be a finite number, got {value}")
    for key, rule in RANGES.items():
        value = values[key]
        if value is not None and not _in_range(value, rule):
            fail(key, f"must be {rule}, got {value}")
    size = cfg.backbone.input_size
    if size is not None and size < 32 and size < (stride := _min_input_size(cfg.backbone.name)):  # no stride exceeds 32
        fail("backbone.input_size", f"must be >= {stride} for {cfg.backbone.name} (its output stride: a smaller image "
                                    f"leaves the deepest feature map a single pixel), got {size}")
    _check_data_options(cfg, source)
    _check_cross_eval(cfg, source)
    # Names, paths and class names are printed to terminals and logs: an escape sequence in one would rewrite the
    # screen (and a newline forge a line of output). HTML is escaped anyway; this is for everything else. Last, so
    # that a more specific error (an unknown option, printed with escapes) comes first.
    for key, value in values.items():
        for where, text in _strings(value, key):
            if (bad := next((ch for ch in text if unicodedata.category(ch) == "Cc"), None)) is not None:
                fail(where, f"contains the control character U+{ord(bad):04X}; use printable text")
    return cfg


def _check_cross_eval(cfg: RunConfig, source: str) -> None:
    """``cross_eval``: each entry a valid spec (repcam.data.cross) whose name is not the training split."""
    from repcam.data.base import DataError
    from repcam.data.cross import parse_spec

    for name, spec in cfg.cross_eval.items():
        if name == cfg.data.train_split:
            raise ConfigError(f"{source}: 'cross_eval.{name}' has the name of the training split; name it otherwise")
        try:
            parse_spec(spec, f"cross_eval.{name}")
        except DataError as e:
            raise ConfigError(f"{source}: {e}") from None


# Every numeric range in one place: "key": ">= n", "> n", "in (lo, hi)" or "in (lo, hi]". Null (unset) values pass.
RANGES: dict[str, str] = {
    "seed": ">= 0",
    "data.max_eval_images": ">= 1",
    "multiclass.epochs": ">= 1",
    "multiclass.lr": "> 0",
    "multiclass.batch_size": ">= 1",
    "multiclass.patience": ">= 0",
    "multiclass.factor": "in (0, 1)",
    "multiclass.max_images": ">= 1",
    "pairs.epochs": ">= 1",
    "pairs.lr": "> 0",
    "pairs.batch_size": ">= 1",
    "pairs.target_accuracy": "in (0, 1]",
    "pairs.max_images_per_class": ">= 1",
    "pairs.min_images": ">= 1",  # a pair model needs training images of both of its classes
    "selection.n": ">= 1",
    "selection.min_cluster_size": ">= 1",
    "evaluation.threshold": "in (0, 1)",
    "evaluation.map_size": ">= 1",
    "evaluation.batch_size": ">= 1",
    "execution.workers": ">= 1",
    "execution.threads": ">= 1",
}


def _in_range(value: float, rule: str) -> bool:
    """Whether ``value`` satisfies one rule of :data:`RANGES`."""
    if rule.startswith(">= "):
        return value >= float(rule[3:])
    if rule.startswith("> "):
        return value > float(rule[2:])
    lo, hi = (float(x) for x in rule[4:-1].split(","))
    return lo < value and (value <= hi if rule.endswith("]") else value < hi)


def _leaves(obj: Any, where: str = "") -> typing.Iterator[tuple[str, Any]]:
    """(dotted key, value) of every setting of a config, sections flattened."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, _join(where, f.name))
        else:
            yield _join(where, f.name), value


def _strings(value: Any, key: str) -> typing.Iterator[tuple[str, str]]:
    """(dotted key, string) of every string in setting ``key``'s value: itself, or the items, keys and values of its
    lists and mappings (a mapping's value under ``key.<its key>``)."""
    if isinstance(value, str):
        yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k, key)
            yield from _strings(v, _join(key, str(k)))
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v, key)


def _min_input_size(backbone: str) -> int:
    """The backbone's output stride: 8 or 16 for the tiny CNNs, 32 for the torchvision and timm CNNs."""
    from repcam.models.backbones import TINY_CNNS

    return 8 * TINY_CNNS[backbone] if backbone in TINY_CNNS else 32


def _check_split_names(cfg: RunConfig, fail) -> None:
    """Evaluation splits name folders (``results/<split>``, ``maps/<split>``): two splits whose folder names meet
    (``a b`` and ``a_b``, ``Val`` and ``val`` on a case-insensitive disk) would overwrite each other's results, and a
    split name with a control character or over 100 bytes is no folder name at all."""
    from repcam.store.storage import slug  # lazy: storage imports torch

    seen: dict[str, str] = {}
    for split in cfg.data.eval_splits:
        if not isinstance(split, str) or not split.strip():
            fail("data.eval_splits", f"holds {split!r}; a split is a non-empty name")
        if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in split) or len(split.encode("utf-8", "surrogatepass")) > 100:
            fail("data.eval_splits", f"holds {split!r}; a split name must be printable and at most 100 bytes")
        folder = slug(split).lower()
        if folder in seen and seen[folder] != split:
            fail("data.eval_splits", f"holds {seen[folder]!r} and {split!r}, which share the results folder {slug(split)!r}; "
                                     "rename one")
        seen[folder] = split


def _check_data_options(cfg: RunConfig, source: str) -> None:
    """``data.options`` and ``data.eval_options``: each one a keyword the loader accepts, of the type it declares."""
    from repcam.data import loader_options

    accepted = loader_options(cfg.data.kind)
    sections = [("data.options", cfg.data.options)] + [(f"data.eval_options.{s}", o) for s, o in cfg.data.eval_options.items()]
    for where, options in sections:
        for name, value in options.items():
            key = f"{where}.{name}"
            if name not in accepted:
                takes = f"accepts {', '.join(sorted(accepted))}" if accepted else "takes no options"
                raise ConfigError(f"{source}: unknown key {key!r}; the {cfg.data.kind} loader {takes}")
            _check_type(value, accepted[name], key, source)
