"""Run configuration: nested dataclasses read from YAML/TOML with strict validation."""

from __future__ import annotations

import dataclasses
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

SELECTION_METHODS = ("random", "rank-a", "rank-b", "s1", "s2", "s3", "s4", "all")
VARIANTS = ("max", "geomean", "contrast", "with-gradcam")


class ConfigError(ValueError):
    """An invalid configuration: the message names the key and the file."""


@dataclass
class DataConfig:
    kind: str = "partsworld"  # partsworld | voc | coco | folder
    root: str | None = None
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["val"])
    classes: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # passed to the loader (e.g. only_original_masks)
    eval_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per eval split overrides
    max_eval_images: int | None = None


@dataclass
class BackboneConfig:
    name: str = "tiny_cnn"
    weights: str | None = None  # "imagenet", a state-dict path, or null
    input_size: int | None = None


@dataclass
class MultiClassConfig:
    mode: str = "multilabel"  # multilabel (fair default: sigmoid on all images) | single (the paper: softmax on single-label images)
    epochs: int = 200
    lr: float = 1e-4
    batch_size: int = 24
    patience: int = 5
    factor: float = 0.5
    max_images: int | None = None
    # Train the baseline further until it has seen as many image-epochs as all pair models together (fair default).
    match_pair_budget: bool = True


@dataclass
class PairConfig:
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 24
    target_accuracy: float = 0.95
    max_images_per_class: int | None = None
    min_images: int = 5
    # pretrained: the backbone's pretrained weights (ImageNet where they exist, as in the paper);
    # multiclass: the trained multi-class model's weights, head excluded (for backbones without pretrained weights)
    init: str = "pretrained"


@dataclass
class SelectionConfig:
    n: int = 4
    methods: list[str] = field(default_factory=lambda: ["random", "rank-a", "rank-b", "s1", "s2", "s3", "s4"])
    min_cluster_size: int = 4
    pairwise: bool = False  # train every pair: the paper's Table 1 and the Top-k oracle


@dataclass
class EvalConfig:
    threshold: float = 0.15
    protocol: str = "whole"  # whole: resize the whole image; crop: the paper's centre crop
    map_size: int = 64  # stored maps are map_size x map_size float16
    batch_size: int = 16
    # Ablation switches beyond the paper, each adding rows per selection: "max" / "geomean" class fusion,
    # "contrast" (FinerCAM-style Grad-CAM of y_c - gamma * mean(y_s) from the multi-class model, no pair model),
    # "with-gradcam" (the +A+F map averaged with the multi-class Grad-CAM).
    variants: list[str] = field(default_factory=lambda: ["max", "geomean", "contrast", "with-gradcam"])
    contrast_gamma: float = 1.0
    amp: bool = False  # mixed-precision forward for the maps (CUDA float16 / CPU bfloat16); see the README for the tolerance


@dataclass
class ExecutionConfig:
    kind: str = "inprocess"  # inprocess | process (local pool) | ray (local cluster, or `address`)
    workers: int = 1
    address: str | None = None  # an existing Ray cluster, e.g. "ray://head:10001" or "auto"
    threads: int | None = None  # torch threads per work unit; default: CPU cores // workers. Equal threads, equal results.


@dataclass
class RunConfig:
    name: str = "run"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    multiclass: MultiClassConfig = field(default_factory=MultiClassConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, values: Any, where: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"{source}: unknown key '{_join(where, unknown[0])}'; valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = _join(where, name)
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key, source)
        else:
            kwargs[name] = _check_type(value, hint, key, source)
    return cls(**kwargs)


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _check_type(value: Any, hint: Any, key: str, source: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
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
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
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
        ("pairs.init", cfg.pairs.init, ("pretrained", "multiclass")),
        ("evaluation.protocol", cfg.evaluation.protocol, ("whole", "crop")),
        ("execution.kind", cfg.execution.kind, ("inprocess", "process", "ray")),
    ]:
        if value not in allowed:
            fail(key, f"must be one of {', '.join(allowed)}; got {value!r}")
    if cfg.data.kind != "partsworld" and not cfg.data.root:
        fail("data.root", f"is required for data.kind={cfg.data.kind!r} (the data set folder)")
    for key, values, allowed in [("selection.methods", cfg.selection.methods, SELECTION_METHODS), ("evaluation.variants", cfg.evaluation.variants, VARIANTS)]:
        bad = [v for v in values if v not in allowed]
        if bad:
            fail(key, f"has unknown {key.split('.')[1][:-1]} {bad[0]!r}; choose from {', '.join(allowed)}")
    if cfg.execution.workers < 1 or (cfg.execution.threads is not None and cfg.execution.threads < 1):
        fail("execution", "workers and threads must be >= 1")
    if not 0 < cfg.evaluation.threshold < 1:
        fail("evaluation.threshold", "must be in (0, 1)")
    if cfg.device not in ("auto", "cpu", "cuda") and not cfg.device.startswith("cuda:"):
        fail("device", f"must be auto, cpu or cuda; got {cfg.device!r}")
    for key, value in [
        ("selection.n", cfg.selection.n),
        ("multiclass.epochs", cfg.multiclass.epochs),
        ("pairs.epochs", cfg.pairs.epochs),
        ("pairs.batch_size", cfg.pairs.batch_size),
        ("multiclass.batch_size", cfg.multiclass.batch_size),
        ("evaluation.map_size", cfg.evaluation.map_size),
    ]:
        if value < 1:
            fail(key, f"must be >= 1, got {value}")
    return cfg


def from_dict(values: dict[str, Any], source: str = "config") -> RunConfig:
    return validate(_build(RunConfig, values or {}, "", source), source)


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML (.yaml/.yml) or TOML (.toml) run config; every error names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse: {e}") from e
    return from_dict(values or {}, str(path))


def demo_config() -> RunConfig:
    """The built-in default: the full ablation on the procedural parts world with a tiny CNN, minutes on 2 CPU cores."""
    return from_dict(
        {
            "name": "demo",
            # 30% of the objects lack their marker (the one part telling the classes of a group apart), so the
            # multi-class model confuses classes within a group: B has the planted block structure.
            "data": {"kind": "partsworld", "options": {"num_images": 1500, "hidden_marker_fraction": 0.3},
                     "eval_options": {"val": {"num_images": 300}}},
            # Output stride 8: an 8 x 8 last-layer map at 64 px, as fine relative to the image as ResNet's at 224 px.
            "backbone": {"name": "tiny_cnn_s8", "weights": None, "input_size": 64},
            # The parts world's training images are mostly single-object, so the paper's softmax setting is fair here.
            "multiclass": {"mode": "single", "epochs": 15, "lr": 3e-3, "batch_size": 32},
            # No ImageNet weights for the tiny CNN: pair models start from the multi-class model instead (the paper
            # starts them from ImageNet weights); the baseline then gets the multi-class model's image-epochs plus theirs.
            "pairs": {"epochs": 4, "lr": 3e-3, "batch_size": 32, "target_accuracy": 0.97, "max_images_per_class": 100,
                      "init": "multiclass"},
            "evaluation": {"map_size": 64},
        },
        "built-in demo config",
    )
