"""A resumable run: multi-class model -> similarity matrix B -> selections -> pair models -> maps -> tables.

Every step writes an :class:`~repcam.store.storage.Artefact` keyed by the settings it depends on; a rerun skips
what is complete, and a kill at any moment loses at most the artefact being written.

This module is the recipe only: the shared state is a :class:`~repcam.pipeline.context.RunContext`, each step a stage of
:mod:`repcam.pipeline.stages` reading its own config section.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console

from repcam.config import RunConfig
from repcam.data import DataError, SegDataset
from repcam.data.holdout import HELDOUT_SPLIT
from repcam.models.baselines import train_baselines
from repcam.models.train import ImageCache
from repcam.pipeline.context import RunContext, RunError
from repcam.pipeline.executor import cpu_model, pinned_threads, usable_cores
from repcam.pipeline.preflight import eval_split_problems, raise_problems, split_overlaps
from repcam.pipeline.stages.data import skipped_training_note
from repcam.pipeline.stages.evaluation import evaluate
from repcam.pipeline.stages.multiclass import MultiClassStage, pair_budget
from repcam.pipeline.stages.pairs import PairStage
from repcam.pipeline.stages.selection import head_weights, needed_pairs, select
from repcam.store.layout import MULTICLASS_MODEL
from repcam.store.rundir import locked
from repcam.store.storage import write_json, write_text

__all__ = ["Run", "RunError"]


class Run(RunContext):
    """One run of a config in a run directory (``Run(cfg, run_dir).run()``), resumable at every step."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, console: Console | None = None, show_progress: bool = True) -> None:
        super().__init__(cfg, run_dir, console, show_progress)
        self.multiclass = MultiClassStage(self)
        self.pairs = PairStage(self)
        self.skipped_train = 0  # training images that could not be read (repcam.pipeline.stages.data)

    def run(self) -> dict[str, list[dict]]:
        """Every step of the run, with the run directory locked against other processes for the whole time."""
        # One torch thread count for the whole run (execution.threads, default cores // workers), also for the steps
        # outside work units: with OMP_NUM_THREADS=1 the multi-class model trained on 1 thread and the pair models on 2.
        with locked(self.dir, lambda msg: self.say(f"[yellow]note:[/] {msg}")), pinned_threads(self.threads):
            return self._run()

    def _run(self) -> dict[str, list[dict]]:
        t0 = time.perf_counter()
        # Not config.yaml: `repcam run RUN/config.yaml --run-dir RUN` must keep the user's file (and its comments).
        write_text(self.paths.resolved_config, yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        train = self._load_training()
        classes = list(train.class_names)
        cache = ImageCache(train, self.preprocess, crop=True)
        mc, pairs = self.multiclass, self.pairs
        mc_model = mc.train(train, cache)
        B = mc.similarity(mc_model, train, cache)
        selections = select(self, B, classes, head_weights(mc_model))
        try:
            if self.cfg.pairs.train:
                needed = needed_pairs(self, selections, train.num_classes)
                pairs.set_init(mc_model, train.num_classes, mc.first_model_meta)
                pair_arts = pairs.train(needed, train, cache)
                pair_compute = mc.pair_compute(pair_arts, lambda p: pairs.sides(p, train, cache))
                base_model, base_path = mc.train_baseline(mc_model, train, cache, pair_compute)
                mc.budget_note(base_path, pair_budget(pair_arts.values()), pair_compute, len(pair_arts))
            else:  # only the multi-class model's rows: nothing to train for them, nothing to match the baseline to
                pair_arts, base_model, base_path = {}, mc_model, MULTICLASS_MODEL
                self.note("pairs.train is off: no pair model was trained; the rows are the multi-class model's "
                          "(baselines, contrast maps, grid), the selections serve only as contrast references")
            baseline_arts = train_baselines(self, mc, train, cache, base_path)
            self.skipped_train = skipped_training_note(self, train, cache)
            results = {}
            for split in self.cfg.data.eval_splits:
                results[split] = evaluate(self, split, base_model, base_path, pair_arts, selections, baseline_arts, self.skipped_train)
        finally:
            self.close_executor()
        self.timings["total"] = time.perf_counter() - t0
        write_json(self.paths.timings, self.timings)
        write_json(self.paths.environment, _environment(self.device, self.channels_last))
        write_json(self.paths.notes, self.notes)
        write_json(self.paths.budget, self.budget)
        return results

    def _load_training(self) -> SegDataset:
        """The training split, with every check that can fail before any training (classes, freeze point, eval splits)."""
        with self.timed("load data"):
            train = self.load_split(self.cfg.data.train_split)
        self.say(f"[bold]{train.num_classes} classes[/], {len(train)} training images, device {self.device}")
        if self.cfg.data.holdout:
            held = len(self.load_split(HELDOUT_SPLIT))
            self.note(f"data.holdout ({self.cfg.data.holdout}): {held} training images held out of all training "
                      f"(multi-class, pair and baseline models) and evaluated as the split '{HELDOUT_SPLIT}'; "
                      f"{len(train)} training images remain")
        self.multiclass.num_classes = train.num_classes
        self.class_names = tuple(train.class_names)
        with self.timed("load data"):
            # Before any training: every bad split file, mask or annotation of every split, in one error, in seconds.
            problems: list[str] = []
            evals = {}
            for split in self.cfg.data.eval_splits:
                try:
                    evals[split] = self.eval_dataset(split)
                except DataError as e:
                    problems.append(str(e))
                    continue
                problems += eval_split_problems(evals[split], split)
            raise_problems(problems)
            for note in split_overlaps(train, self.cfg.data.train_split, evals):
                self.note(note)  # notes.json, every table and the report
        self.pairs.check_classes(train)  # after the data: a data problem is the first thing to fix
        self.pairs.check_freeze()
        return train


def _environment(device: torch.device, channels_last: bool) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        # Same code, torch, seed and threads gave a different demo table on two hosts of one machine kind (2026-12-05):
        # the CPU and the instruction set torch's kernels use change float summation order, so both are recorded.
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),  # the affinity mask's CPUs (taskset, cpusets), which default threads follow
        "threads": torch.get_num_threads(),  # every step's, pinned by Run.run (results depend on it)
        "interop_threads": torch.get_num_interop_threads(),
        "channels_last": channels_last,  # execution.channels_last as applied (CPU only): it moves float rounding too
        "thread_env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k in os.environ},
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
    }
