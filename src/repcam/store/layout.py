"""The one owner of a run directory's layout: a typed path for every artefact a run writes, and small readers.

Every other module asks :class:`RunDir` for a path instead of joining literals, so a file name is written in
exactly one place. The names are those runs have always written (existing run directories resume unchanged)::

    RUN_DIR/
      config.resolved.yaml          (config.yaml in runs from before it)
      multiclass/model.pt, multiclass/baseline.pt      (+ .meta.json sidecars)
      similarity.json, selections.json
      pairs/<pair>.pt               (<pair>: ClassFiles.pair)
      baselines/<kind>.pt
      features/<stage>.npy
      maps/<split>/multiclass.npz, contrast__<selection>.npz, <pair>.npz, baseline__<kind>.npz,
                    grid__<source>__<weighting>.npz, grid__pair__<pair>.npz, grid__pairs__<selection>.npz
      results/<split>/ablation.json, accumulators.json, pairwise.json, ..., faithfulness.npz
      figures/<split>/index.json, ...
      report.html, explain/
      notes.json, timings.json, budget.json, environment.json, train_skipped.json
      seed-<K>/                     (one run directory per seed of ``--seeds``)
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repcam.config import RESOLVED_CONFIG, run_config_path
from repcam.store.rundir import ClassFiles
from repcam.store.storage import ArtefactError, load_error_message, read_json, slug, verify

if TYPE_CHECKING:  # torch is imported where a model is loaded: the report and the config checks do without it
    import torch

META_SUFFIX = ".meta.json"  # storage.Artefact's checksum sidecar: <file>.meta.json
MULTICLASS_MODEL = "multiclass/model.pt"  # relative names, as budget.json's "baseline_model" records them
MULTICLASS_BASELINE = "multiclass/baseline.pt"
REPORT_NAME = "report.html"
# Files of results/<split>/ that readers open by name (tables.write_tables writes them).
ABLATION_JSON = "ablation.json"
ABLATION_MD = "ablation.md"
ACCUMULATORS_JSON = "accumulators.json"
GRID_ACCUMULATORS_JSON = "grid_accumulators.json"
ROW_GROUPS_JSON = "row_groups.json"  # written after the accumulators: each row group's key and rows, every row's IRN sweep
PAIRWISE_JSON = "pairwise.json"
PER_CLASS_CSV = "per_class.csv"
SWEEP_CSV = "sweep.csv"
RESULTS_KEY_JSON = "inputs.json"  # written last: the key of everything behind a split's results (a rerun reuses them)
FAITHFULNESS_NPZ = "faithfulness.npz"  # + .meta.json: repcam.evaluation.faith_ablation's per-record store
FIGURE_INDEX = "index.json"  # figures/<split>/index.json


class RunDir:
    """Paths of one run directory's artefacts (nothing is created or read by the path methods)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    def __truediv__(self, rel: str) -> Path:
        """``run / "multiclass/model.pt"``: a path from a relative name a run recorded (budget.json)."""
        return self.root / rel

    @staticmethod
    def meta(path: Path) -> Path:
        """The checksum sidecar of an artefact: ``<name>.meta.json`` next to it."""
        return path.with_name(path.name + META_SUFFIX)

    # ---- config and run-level files ---------------------------------------------------------------
    @property
    def resolved_config(self) -> Path:
        """Where a run writes its normalised config."""
        return self.root / RESOLVED_CONFIG

    @property
    def config(self) -> Path:
        """The config the directory was made with (``config.yaml`` in runs from before the resolved one)."""
        return run_config_path(self.root)

    @property
    def similarity(self) -> Path:
        return self.root / "similarity.json"

    @property
    def selections(self) -> Path:
        return self.root / "selections.json"

    @property
    def notes(self) -> Path:
        return self.root / "notes.json"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def budget(self) -> Path:
        return self.root / "budget.json"

    @property
    def environment(self) -> Path:
        return self.root / "environment.json"

    @property
    def train_skipped(self) -> Path:
        return self.root / "train_skipped.json"

    @property
    def report(self) -> Path:
        return self.root / REPORT_NAME

    @property
    def explain_dir(self) -> Path:
        return self.root / "explain"

    # ---- models -----------------------------------------------------------------------------------
    @property
    def multiclass_model(self) -> Path:
        return self.root / MULTICLASS_MODEL

    @property
    def multiclass_baseline(self) -> Path:
        """The multi-class model trained further to match the pair models' budget."""
        return self.root / MULTICLASS_BASELINE

    @property
    def pairs_dir(self) -> Path:
        return self.root / "pairs"

    def pair_model(self, files: ClassFiles, a: str, b: str) -> Path:
        """The binary model of classes ``a`` and ``b`` (either order)."""
        return self.pairs_dir / f"{files.pair(a, b)}.pt"

    def pair_model_metas(self) -> list[tuple[str, Path]]:
        """(pair stem, sidecar path) of every stored pair model, sorted by file name."""
        suffix = ".pt" + META_SUFFIX
        metas = sorted(self.pairs_dir.glob("*" + suffix)) if self.pairs_dir.is_dir() else []
        return [(p.name[: -len(suffix)], p) for p in metas]

    @property
    def baselines_dir(self) -> Path:
        return self.root / "baselines"

    def baseline_model(self, kind: str) -> Path:
        """A trained Table-5 baseline ("acol", "cbam")."""
        return self.baselines_dir / f"{kind}.pt"

    @property
    def features_dir(self) -> Path:
        return self.root / "features"

    def feature_cache(self, stage: str) -> Path:
        """The frozen-backbone feature cache of freeze point ``stage``."""
        return self.features_dir / f"{slug(stage)}.npy"

    # ---- maps, results, figures -------------------------------------------------------------------
    def maps_dir(self, split: str) -> Path:
        """``maps/<split>/``: every stored map file of a split."""
        return self.root / "maps" / slug(split)

    def multiclass_maps(self, split: str) -> Path:
        """The multi-class model's maps of a split."""
        return self.maps_dir(split) / "multiclass.npz"

    def contrast_maps(self, split: str, selection: str) -> Path:
        """The multi-class model's contrast maps of one selection (``evaluation.variants: contrast``)."""
        return self.maps_dir(split) / f"contrast__{slug(selection)}.npz"

    def pair_maps(self, split: str, files: ClassFiles, a: str, b: str) -> Path:
        """The maps of the pair model of classes ``a`` and ``b`` (either order) on a split."""
        return self.maps_dir(split) / f"{files.pair(a, b)}.npz"

    def baseline_maps(self, split: str, kind: str) -> Path:
        """The maps of a trained Table-5 baseline ("acol", "cbam") on a split."""
        return self.maps_dir(split) / f"baseline__{kind}.npz"

    def grid_maps(self, split: str, source_stem: str, weighting: str) -> Path:
        """The evaluation grid's multi-class maps of one source (its stem) and weighting, all layer fusions."""
        return self.maps_dir(split) / f"grid__{source_stem}__{slug(weighting)}.npz"

    def grid_pair_maps(self, split: str, files: ClassFiles, a: str, b: str) -> Path:
        """The evaluation grid's maps of one pair model, every weighting and layer fusion."""
        return self.maps_dir(split) / f"grid__pair__{files.pair(a, b)}.npz"

    def grid_fused_pairs(self, split: str, selection: str) -> Path:
        """The grid's pair maps of one selection, fused over each class's representatives."""
        return self.maps_dir(split) / f"grid__pairs__{slug(selection)}.npz"

    @property
    def results_root(self) -> Path:
        return self.root / "results"

    def results_dir(self, split: str) -> Path:
        """``results/<split>/``: a split's tables and results."""
        return self.results_root / slug(split)

    def result(self, split: str, name: str) -> Path:
        """A file of ``results/<split>/`` ("ablation.json", "pairwise.json", "seeds.md", ...)."""
        return self.results_dir(split) / name

    def ablation(self, split: str) -> Path:
        """``results/<split>/ablation.json``: the split's ablation table, one row per method."""
        return self.result(split, ABLATION_JSON)

    def accumulators(self, split: str) -> Path:
        """``results/<split>/accumulators.json``: every row's IoU accumulator state, by row name."""
        return self.result(split, ACCUMULATORS_JSON)

    def grid_accumulators(self, split: str) -> Path:
        """``results/<split>/grid_accumulators.json``: the grid rows' accumulator states (paired intervals across runs)."""
        return self.result(split, GRID_ACCUMULATORS_JSON)

    def row_groups(self, split: str) -> Path:
        """``results/<split>/row_groups.json``: the key and rows of every row group scored and each row's IRN sweep;
        a rerun reuses a group whose key is unchanged (issue 28: results keyed per row). Written after the
        accumulators and removed before they are rewritten, so it never vouches for other rows' numbers."""
        return self.result(split, ROW_GROUPS_JSON)

    def results_inputs(self, split: str) -> Path:
        """``results/<split>/inputs.json``: the key of the settings and models behind the split's results, written
        after every other file of the folder; a rerun with the same key reuses the results instead of re-scoring."""
        return self.result(split, RESULTS_KEY_JSON)

    def pairwise(self, split: str) -> Path:
        """``results/<split>/pairwise.json``: the classes and the pairwise mIoU matrix of the pair models."""
        return self.result(split, PAIRWISE_JSON)

    def faithfulness_records(self, split: str) -> Path:
        """Per-record values of the faithfulness columns (``evaluation.faithfulness``), reused by a rerun."""
        return self.result(split, FAITHFULNESS_NPZ)

    def figures_dir(self, split: str) -> Path:
        """``figures/<split>/``: a split's figures."""
        return self.root / "figures" / slug(split)

    def figure_index(self, split: str) -> Path:
        """``figures/<split>/index.json``: the index of the split's figures."""
        return self.figures_dir(split) / FIGURE_INDEX

    def seed(self, seed: int) -> "RunDir":
        """The run directory of one seed of ``--seeds``."""
        return RunDir(self.root / f"seed-{seed}")

    # ---- readers ----------------------------------------------------------------------------------
    def read_selections(self) -> dict[str, dict[str, list[str]]]:
        """selections.json's ``selections``: selection name -> class -> representative classes."""
        return _read_mapping(self.selections, "selections")["selections"]

    def read_similarity(self) -> dict[str, Any]:
        """similarity.json (``classes``, the matrix ``B``, ...)."""
        return _read_mapping(self.similarity, "classes")

    def read_rows(self, split: str) -> list[dict[str, Any]]:
        """The table rows of ``results/<split>/ablation.json``."""
        return _read_mapping(self.ablation(split), "rows")["rows"]

    def read_accumulators(self, split: str) -> dict[str, Any]:
        """``results/<split>/accumulators.json`` as metric accumulators (method -> IoUAccumulator)."""
        from repcam.evaluation.metrics import IoUAccumulator  # metrics imports torch ops; only readers need it

        path = self.accumulators(split)
        data = _read_mapping(path)
        try:
            return {m: IoUAccumulator.from_state_dict(s) for m, s in data.items()}
        except Exception as e:  # noqa: BLE001 - any malformed entry is the file's problem, named in one line
            raise ArtefactError(f"{path}: not a repcam accumulator file ({type(e).__name__}: {e})") from None

    def load_state_dict(self, path: Path) -> dict[str, torch.Tensor]:
        """A stored model's state dict: its checksum sidecar first, then ``torch.load(weights_only=True)``."""
        import torch

        verify(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError) as e:
            raise ArtefactError(f"cannot load {path}: {load_error_message(e)}") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ArtefactError(f"{path}: not a state dict of tensors")
        return state


def _read_mapping(path: Path, key: str | None = None) -> dict[str, Any]:
    """A JSON object file, or :class:`ArtefactError` in one line naming the file (missing, damaged, wrong shape)."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise ArtefactError(f"{path} is missing; rerun `repcam run` on this directory to write it") from None
    except OSError as e:
        raise ArtefactError(f"{path}: cannot read it ({e.strerror or e})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArtefactError(f"{path}: not valid JSON ({e}); damaged file, rerun `repcam run` to rewrite it") from None
    if not isinstance(data, dict) or (key is not None and key not in data):
        what = f"an object with {key!r}" if key else "an object"
        raise ArtefactError(f"{path}: expected {what}, found {type(data).__name__}; damaged file, rerun `repcam run` to rewrite it")
    return data
