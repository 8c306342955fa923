"""What every stage of a run shares: the config, the run directory, seeds and keys, the console, the executor.

A :class:`RunContext` holds no step of the method; the stages (:mod:`repcam.pipeline.stages`) read their own config section
from ``ctx.cfg`` and record their time, notes and budget here, so that the recipe (:mod:`repcam.pipeline.run`) writes them
once at the end.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from repcam.config import RunConfig
from repcam.data import DataError, SegDataset, load_dataset
from repcam.data.holdout import HELDOUT_SPLIT, holdout_ids, split_holdout
from repcam.models.train import resolve_device
from repcam.pipeline.executor import Executor, ExecutorError, default_threads
from repcam.pipeline.units import ModelSpec
from repcam.store.layout import RunDir
from repcam.store.storage import Artefact
from repcam.errors import RunError  # noqa: F401 - defined in repcam.errors, importable from here


class RunContext:
    """One run's shared state: config, directory, device, console, executor, and the timings, notes and budget the
    stages record."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, console: Console | None = None, show_progress: bool = True) -> None:
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.paths = RunDir(self.dir)  # every artefact's path (repcam.store.layout)
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.device = resolve_device(cfg.device)
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.budget: dict[str, Any] = {}
        self.class_names: tuple[str, ...] | None = None  # the training split's, once loaded (cross_eval splits need them)
        self._check_dir()

    def _check_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunError(f"run directory {self.dir} is not writable: {e.strerror or e}") from e

    # ---- console, timings, notes -----------------------------------------------------------------
    def say(self, msg: str) -> None:
        """Print ``msg`` (rich markup) on the run's console."""
        self.console.print(msg)

    def note(self, msg: str) -> None:
        """A note for every table and the report (notes.json), also shown now."""
        self.notes.append(msg)
        self.console.print(f"[yellow]note:[/] {msg}")

    @contextmanager
    def progress(self, label: str, total: int) -> Iterator:
        """A progress bar for ``label`` over ``total`` steps (hidden without ``show_progress``); yields
        ``advance(n=1)``."""
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, disable=not self.show_progress, transient=False,
        ) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n=1: bar.advance(task, n)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        """Add the time the ``with`` block takes to ``timings[step]`` (when it ends without an error)."""
        t0 = time.perf_counter()
        yield
        self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - t0

    # ---- keys and seeds (their values are part of every stored artefact's key: never change them) -------------
    def data_key(self) -> dict[str, Any]:
        """The data settings (and the run's seed) that every data-dependent artefact's key includes."""
        d = self.cfg.data
        key = {"kind": d.kind, "root": str(d.root), "classes": d.classes, "options": d.options, "seed": self.cfg.seed}
        if d.holdout:  # only then: runs without a holdout keep their keys
            key["holdout"] = d.holdout
        return key

    def model_key(self) -> dict[str, Any]:
        """What a trained model's key includes: :meth:`data_key`, the training split and the backbone section."""
        return {"data": self.data_key(), "train_split": self.cfg.data.train_split, "backbone": asdict(self.cfg.backbone)}

    def seed(self, *parts: Any) -> int:
        """A seed per purpose (e.g. ``seed("pair-fit", a, b)``), derived from the run's seed."""
        return int(hashlib.sha256(repr((self.cfg.seed,) + parts).encode()).hexdigest()[:8], 16)

    # ---- data ----------------------------------------------------------------------------------
    def load_split(self, split: str, for_eval: bool = False) -> SegDataset:
        """A split for training, or (``for_eval``) for evaluation with that split's ``data.eval_options``.

        With ``data.holdout`` the training split lacks the held-out images, and the split ``heldout`` is exactly them
        (:mod:`repcam.data.holdout`): every training loader starts from this method, so none ever sees them."""
        d = self.cfg.data
        if d.holdout and split == HELDOUT_SPLIT:
            return split_holdout(self._load_raw(d.train_split, split if for_eval else None), self.held_out_ids)[1]
        ds = self._load_raw(split, split if for_eval else None)
        if d.holdout and split == d.train_split and not for_eval:
            return split_holdout(ds, self.held_out_ids)[0]
        return ds

    def _load_raw(self, split: str, eval_options_of: str | None, **extra: Any) -> SegDataset:
        d = self.cfg.data
        opts = dict(d.options)
        if eval_options_of is not None:
            opts.update(d.eval_options.get(eval_options_of, {}))
        opts.update(extra)
        if d.kind == "partsworld":
            opts.setdefault("seed", self.cfg.seed)
            opts.setdefault("image_size", self.cfg.backbone.input_size or 64)
        return load_dataset(d.kind, d.root, split, d.classes, **opts)

    @cached_property
    def held_out_ids(self) -> set[str]:
        """The training ids ``data.holdout`` names (read once per run)."""
        d = self.cfg.data
        return holdout_ids(str(d.holdout), lambda **extra: self._load_raw(d.train_split, None, **extra), d.kind)

    def eval_dataset(self, split: str) -> SegDataset:
        """An evaluation split as evaluated: its eval options applied, cut to ``data.max_eval_images``."""
        if split in self.cfg.cross_eval:  # another data set, under the run's class names (repcam.data.cross)
            from repcam.data.cross import load_cross, parse_spec

            where = f"cross_eval.{split}"
            if self.class_names is None:
                self.class_names = tuple(self.load_split(self.cfg.data.train_split).class_names)
            return load_cross(parse_spec(self.cfg.cross_eval[split], where), self.class_names, where, self.cfg.data.max_eval_images)
        try:
            ds = self.load_split(split, for_eval=True)
        except DataError as e:
            raise DataError(f"evaluation split {split!r}: {e}") from None
        if self.cfg.data.max_eval_images is not None and len(ds) > self.cfg.data.max_eval_images:
            ds.samples = ds.samples[: self.cfg.data.max_eval_images]
        return ds

    # ---- models and execution ------------------------------------------------------------------
    def model_spec(self, num_classes: int) -> ModelSpec:
        """The configured backbone as a :class:`ModelSpec` with ``num_classes`` outputs (picklable, for work units)."""
        b = self.cfg.backbone
        return ModelSpec(b.name, num_classes, b.weights, b.input_size)

    def new_model(self, num_classes: int, pretrained: bool = True):
        """The configured backbone; ``pretrained=False`` when a stored state is loaded into it right after."""
        return self.model_spec(num_classes).build(pretrained)

    def stored_model(self, num_classes: int, art: Artefact):
        """A model of this run stored in ``art`` (checksum verified, weights only), on the run's device, in eval mode."""
        bb = self.new_model(num_classes, pretrained=False)
        bb.model.load_state_dict(art.load_torch())
        return bb.model.to(self.device).eval()

    @cached_property
    def preprocess(self):
        """The backbone's preprocessing (built once: it needs a model instance)."""
        return self.new_model(2, pretrained=False).preprocess

    @cached_property
    def executor(self) -> Executor:
        ex = self.cfg.execution
        try:
            return Executor(ex.kind, ex.workers, ex.address)
        except ExecutorError as e:
            raise RunError(str(e)) from e

    def close_executor(self) -> None:
        """Close the executor if one was started (a later stage would start a fresh one)."""
        if "executor" in self.__dict__:
            self.executor.close()
            del self.__dict__["executor"]

    @property
    def channels_last(self) -> bool:
        """Whether training and map passes use the channels_last memory format (execution.channels_last, CPU only)."""
        return self.cfg.execution.channels_last and self.device.type == "cpu"

    @property
    def threads(self) -> int:
        return self.cfg.execution.threads or default_threads(self.cfg.execution.workers)
