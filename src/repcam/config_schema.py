"""The run configuration's schema: the nested dataclasses a YAML/TOML config fills, and the error it raises.

Reading and checking a config: :mod:`repcam.config` (the public face, which re-exports these names) and
:mod:`repcam.config_validation`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repcam.errors import ConfigError  # noqa: F401 - defined in repcam.errors, importable from here


RESOLVED_CONFIG = "config.resolved.yaml"
"""The normalised config a run writes into its directory (never ``config.yaml``: that may be the user's own file)."""


def run_config_path(run_dir: str | Path) -> Path:
    """The config a run directory was made with: ``config.resolved.yaml``, or ``config.yaml`` in runs from before it."""
    run_dir = Path(run_dir)
    resolved = run_dir / RESOLVED_CONFIG
    return resolved if resolved.is_file() else run_dir / "config.yaml"


@dataclass
class DataConfig:
    """The ``data`` section: which data set (kind, root, splits, class subset) and its loader options; keys and defaults
    in the config table of docs/runs.md ("Runs and configs")."""

    kind: str = "partsworld"  # partsworld | voc | coco | folder
    root: str | None = None
    train_split: str = "train"
    eval_splits: list[str] = field(default_factory=lambda: ["val"])
    classes: list[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # passed to the loader (e.g. only_original_masks)
    eval_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # per eval split overrides
    max_eval_images: int | None = None
    # Training images kept out of ALL training and evaluated as the split "heldout" (repcam.data.holdout):
    # "original_masks" (VOC's original-mask train images) or the path of an id list file; null: none.
    holdout: str | None = None


@dataclass
class BackboneConfig:
    """The ``backbone`` section: the classifier architecture, its starting weights and input size; see the config
    table of docs/runs.md ("Runs and configs")."""

    name: str = "tiny_cnn"
    weights: str | None = None  # "imagenet", a state-dict path, or null
    input_size: int | None = None


@dataclass
class MultiClassConfig:
    """The ``multiclass`` section: training of the multi-class model and how its baseline's budget is matched; see the
    config table of docs/runs.md ("Runs and configs")."""

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
    """The ``pairs`` section: training of the binary pair models (stopping rule, starting weights, partial fine-tuning);
    see the config table of docs/runs.md ("Runs and configs")."""

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
    # false: train no pair model (the run's rows are those of the multi-class model alone: its baselines, the
    # contrast maps and the grid); the baseline is then the multi-class model itself, with no budget to match.
    train: bool = True


@dataclass
class SelectionConfig:
    """The ``selection`` section: how many representative classes, the selection methods, and whether every pair is
    trained; see the config table of docs/runs.md ("Runs and configs")."""

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
    """The ``evaluation`` section: threshold, protocol, stored map size, extra rows (variants, grid, faithfulness); see
    the config table of docs/runs.md ("Runs and configs")."""

    threshold: float = 0.15
    protocol: str = "whole"  # whole: resize the whole image; crop: the paper's centre crop
    map_size: int = 64  # stored maps are map_size x map_size float16
    batch_size: int = 16
    # Ablation switches beyond the paper, each adding rows per selection: "max" / "geomean" class fusion,
    # "contrast" (FinerCAM-style Grad-CAM of y_c - gamma * mean(y_s) from the multi-class model, no pair model),
    # "with-gradcam" (the +A+F map averaged with the multi-class Grad-CAM).
    variants: list[str] = field(default_factory=lambda: ["max", "geomean", "contrast", "with-gradcam"])
    contrast_gamma: float = 1.0
    amp: bool = False  # mixed-precision forward for the maps (CUDA float16 / CPU bfloat16); see docs/scale.md for the tolerance
    grid: GridConfig | None = None  # null: off; a mapping (may be {}): the grid's rows in results/<split>/grid.*
    # Faithfulness columns of the ablation tables (repcam.evaluation.faith_ablation): deletion, insertion, road, avg_drop,
    # maxboxacc; every row's maps scored by the baseline multi-class model. []: off (expensive: see docs/score.md).
    faithfulness: list[str] = field(default_factory=list)
    # Test-time augmentation (repcam.engine.tta): true adds, next to every multi-class row (baselines, contrast maps,
    # grid), its twin "<row> +TTA" from maps summed over tta_scales (each with its flip when tta_flip), as IRN does.
    tta: bool = False
    tta_scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 2.0])
    tta_flip: bool = True


@dataclass
class ExecutionConfig:
    """The ``execution`` section: where work units run (in process, a process pool or Ray) and with how many threads;
    see the config table of docs/runs.md ("Runs and configs")."""

    kind: str = "inprocess"  # inprocess | process (local pool) | ray (local cluster, or `address`)
    workers: int = 1
    address: str | None = None  # an existing Ray cluster, e.g. "ray://head:10001" or "auto"
    threads: int | None = None  # torch threads per work unit; default: CPU cores // workers. Equal threads, equal results.
    # Training, feature caches, B's pass and the ablation's map passes in the channels_last memory format on the CPU (1.1-1.3x
    # per step, benchmarks/results/channels_last.md). Off by default: it changes float rounding, so the numbers move
    # (on the demo, seed 0's claim margin by 2.6 points); like threads it is recorded in environment.json.
    channels_last: bool = False


@dataclass
class RunConfig:
    """A whole config file: the top-level keys (name, seed, device, baselines) and one field per section; see the
    config table of docs/runs.md ("Runs and configs")."""

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
    # Other data sets to evaluate on (repcam.data.cross): split name -> {kind, root, split, options, class_map}; a name
    # listed in data.eval_splits is read from its data set, under the run's class names.
    cross_eval: dict[str, dict[str, Any]] = field(default_factory=dict)

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
    ("cross_eval",): {},
    ("pairs", "freeze_until"): None,
    ("pairs", "train"): True,
    ("data", "holdout"): None,
    ("evaluation", "tta"): False,
    ("evaluation", "tta_scales"): [1.0, 0.5, 1.5, 2.0],
    ("evaluation", "tta_flip"): True,
    ("multiclass", "budget_unit"): "image-epochs",
    ("evaluation", "grid"): None,
    ("evaluation", "faithfulness"): [],
    ("execution", "channels_last"): False,
}
