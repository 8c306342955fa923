"""Run configuration: nested dataclasses read from YAML/TOML with strict validation."""

from __future__ import annotations

import dataclasses
import math
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

from repcam.method import methods as _methods

# The config's choices come from the method registries (repcam.method.methods): a registered method is a valid value.
SELECTION_METHODS = _methods.SELECTIONS.keys()
VARIANTS = _methods.VARIANTS.keys()
BASELINES = tuple(_methods.TRAINED_BASELINES)


RESOLVED_CONFIG = "config.resolved.yaml"
"""The normalised config a run writes into its directory (never ``config.yaml``: that may be the user's own file)."""


class ConfigError(ValueError):
    """An invalid configuration: the message names the key and the file."""


def run_config_path(run_dir: str | Path) -> Path:
    """The config a run directory was made with: ``config.resolved.yaml``, or ``config.yaml`` in runs from before it."""
    run_dir = Path(run_dir)
    resolved = run_dir / RESOLVED_CONFIG
    return resolved if resolved.is_file() else run_dir / "config.yaml"


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
    # Train the baseline further until it has had as much training as all pair models together (fair default),
    match_pair_budget: bool = True
    # counted in budget_unit: image-epochs, or flops (fair when pairs.freeze_until makes a pair image-epoch cheaper).
    budget_unit: str = "image-epochs"


def multiclass_training(mc: MultiClassConfig) -> dict[str, Any]:
    """The multi-class settings a trained multi-class model depends on: all but how the baseline's budget is matched
    (a model's artefact key; changing the matching must not retrain the first model)."""
    return {k: v for k, v in dataclasses.asdict(mc).items() if k not in ("match_pair_budget", "budget_unit")}


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
    # Partial fine-tuning: freeze the backbone up to this stage (e.g. blocks.2, layer2) and train only the rest, on
    # trunk features cached once per image and flip (repcam.models.featcache); null: every layer trains (full fine-tuning).
    freeze_until: str | None = None


@dataclass
class SelectionConfig:
    n: int = 4
    methods: list[str] = field(default_factory=lambda: ["random", "rank-a", "rank-b", "s1", "s2", "s3", "s4"])
    min_cluster_size: int = 4
    pairwise: bool = False  # train every pair: the paper's Table 1 and the Top-k oracle


@dataclass
class GridConfig:
    """The evaluation grid (repcam.pipeline.grid): every map source x weighting x layer fusion as one row of grid.csv."""

    weightings: list[str] = field(default_factory=lambda: ["gradcam", "layercam", "gradcampp", "xgradcam"])
    fusions: list[str] = field(default_factory=lambda: ["last", "paper", "mean", "layercam"])
    sources: list[str] = field(default_factory=lambda: ["multiclass", "contrast", "topk-contrast"])


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
    grid: GridConfig | None = None  # null: off; a mapping (may be {}): the grid's rows in results/<split>/grid.*
    # Faithfulness columns of the ablation tables (repcam.evaluation.faith_ablation): deletion, insertion, road, avg_drop,
    # maxboxacc; every row's maps scored by the baseline multi-class model. []: off (expensive: see the README).
    faithfulness: list[str] = field(default_factory=list)


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
    # Trained baselines of the paper's Table 5 (repcam.models.baselines), rows "ACoL" / "CBAM (Grad-CAM)"; empty: none.
    baselines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The normalised config; settings added after run directories existed are left out while they are off
        (:data:`ADDED_OFF`), so a config from before them keeps its key and its run directory resumes."""
        d = dataclasses.asdict(self)
        for path, off in ADDED_OFF.items():
            *parents, leaf = path
            section = d
            for p in parents:
                section = section[p]
            if section[leaf] == off:
                del section[leaf]
        return d


ADDED_OFF: dict[tuple[str, ...], Any] = {  # setting -> its "off" value (what every older config means by omitting it)
    ("baselines",): [],
    ("pairs", "freeze_until"): None,
    ("multiclass", "budget_unit"): "image-epochs",
    ("evaluation", "grid"): None,
    ("evaluation", "faithfulness"): [],
}


def _build(cls: type, values: Any, where: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted((k for k in values if k not in names), key=str)  # YAML keys may be ints, null, ...
    if unknown:
        raise ConfigError(f"{source}: unknown key '{_join(where, unknown[0])}'; valid keys here: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        key = _join(where, name)
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is not None and len(options) == 1 and dataclasses.is_dataclass(options[0]):  # an optional section
            hint = options[0]
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
    if cfg.evaluation.grid is not None:
        from repcam.pipeline.grid import check_grid  # lazy: it imports torch

        check_grid(cfg.evaluation.grid, fail)
    if cfg.evaluation.faithfulness:
        from repcam.evaluation.faith_ablation import check_metrics  # lazy: it imports torch

        check_metrics(cfg.evaluation.faithfulness, lambda msg: fail("evaluation.faithfulness", msg))
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
    return cfg


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


def _min_input_size(backbone: str) -> int:
    """The backbone's output stride: 8 or 16 for the tiny CNNs, 32 for the torchvision and timm CNNs."""
    from repcam.models.backbones import TINY_CNNS

    return 8 * TINY_CNNS[backbone] if backbone in TINY_CNNS else 32


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
                raise ConfigError(f"{source}: unknown key '{key}'; the {cfg.data.kind} loader {takes}")
            _check_type(value, accepted[name], key, source)


def from_dict(values: dict[str, Any], source: str = "config") -> RunConfig:
    return validate(_build(RunConfig, {} if values is None else values, "", source), source)


class _AliasError(yaml.YAMLError):
    pass


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a few lines of nested aliases (a "billion laughs") expand to billions
    of values as soon as the config is copied, hashed or written; a config never needs them."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasError(f"line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not allowed in a "
                              "config; write the value out")
        return super().compose_node(parent, index)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def load_config(path: str | Path) -> RunConfig:
    """Read a YAML (.yaml/.yml) or TOML (.toml) run config; every error names the file and the key."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give the YAML or TOML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save the config as UTF-8") from e
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else yaml.load(text, Loader=_NoAliasLoader)
    except _AliasError as e:
        raise ConfigError(f"{path}: {e}") from e
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot parse: {_one_line(e)}") from e
    except RecursionError as e:
        raise ConfigError(f"{path}: cannot parse: nested too deeply") from e
    return from_dict({} if values is None else values, str(path))  # an empty file is the defaults; 0 or [] is an error


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
