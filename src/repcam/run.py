"""A resumable run: multi-class model -> similarity matrix B -> selections -> pair models -> maps -> tables.

Every step writes an :class:`~repcam.storage.Artefact` keyed by the settings it depends on; a rerun skips
what is complete, and a kill at any moment loses at most the artefact being written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import time
from contextlib import contextmanager
from functools import cached_property
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from repcam import selection as S
from repcam.baselines import baseline_records, train_baselines
from repcam.budget import Costs, extra_epochs, forward_flops, step_flops
from repcam.cam import ContrastTarget
from repcam.executor import Executor, ExecutorError, Unit, default_threads
from repcam.config import RunConfig, multiclass_training
from repcam.data import DataError, SegDataset, load_dataset
from repcam.evaluate import evaluate_split, summarize
from repcam.featcache import FeatureCache, FreezeError, PartialModel, build_cache, split_model
from repcam.grid import Grid, write_grid
from repcam.grid_pairs import PairGrid
from repcam.layout import MULTICLASS_BASELINE, MULTICLASS_MODEL, RunDir
from repcam.maps import MapRecords, extract
from repcam.methods import SELECTIONS, SelectionInput
from repcam.preflight import check_eval_split
from repcam.records import RecordFile, RecordWriter
from repcam.rundir import ClassFiles, locked, results_key
from repcam.storage import Artefact, config_key, read_json, write_json, write_json_mapping, write_text
from repcam.tables import write_tables
from repcam.train import ImageCache, fit, predict, resolve_device
from repcam.units import MapExtraction, ModelSpec, PairTraining, backbone_state, extract_maps
from repcam.units import train_pair as train_pair_unit

log = logging.getLogger(__name__)



class RunError(RuntimeError):
    """A run that cannot proceed; the message says why and what to change."""


class Run:
    def __init__(self, cfg: RunConfig, run_dir: str | Path, console: Console | None = None, show_progress: bool = True) -> None:
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.paths = RunDir(self.dir)  # every artefact's path (repcam.layout)
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.device = resolve_device(cfg.device)
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.budget: dict[str, Any] = {}
        self.skipped_train = 0  # training images that could not be read (see _skipped_training_note)
        self._mc_images: list[int] | None = None
        self._num_classes = 0  # set once the training split is loaded
        self._pair_init: dict[str, torch.Tensor] | None = None  # pairs.init: multiclass (see _set_pair_init)
        self._pair_init_key: str | None = None
        self._features: FeatureCache | None = None  # pairs.freeze_until: the shared trunk features (see _feature_cache)
        self._baseline_arts: dict[str, Artefact] = {}  # config `baselines`: trained ACoL / CBAM models
        self._check_dir()

    # ---- helpers -------------------------------------------------------------------------------
    def _check_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunError(f"run directory {self.dir} is not writable: {e.strerror or e}") from e

    def say(self, msg: str) -> None:
        self.console.print(msg)

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self.console.print(f"[yellow]note:[/] {msg}")

    @contextmanager
    def progress(self, label: str, total: int) -> Iterator:
        with Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            console=self.console, disable=not self.show_progress, transient=False,
        ) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n=1: bar.advance(task, n)

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings[step] = self.timings.get(step, 0.0) + time.perf_counter() - t0

    def _data_key(self) -> dict[str, Any]:
        d = self.cfg.data
        return {"kind": d.kind, "root": str(d.root), "classes": d.classes, "options": d.options, "seed": self.cfg.seed}

    def _model_key(self) -> dict[str, Any]:
        return {"data": self._data_key(), "train_split": self.cfg.data.train_split, "backbone": asdict(self.cfg.backbone)}

    def _seed(self, *parts: Any) -> int:
        return int(hashlib.sha256(repr((self.cfg.seed,) + parts).encode()).hexdigest()[:8], 16)

    def load_split(self, split: str, for_eval: bool = False) -> SegDataset:
        """A split for training, or (``for_eval``) for evaluation with that split's ``data.eval_options``."""
        d = self.cfg.data
        opts = dict(d.options)
        if for_eval:
            opts.update(d.eval_options.get(split, {}))
        if d.kind == "partsworld":
            opts.setdefault("seed", self.cfg.seed)
            opts.setdefault("image_size", self.cfg.backbone.input_size or 64)
        return load_dataset(d.kind, d.root, split, d.classes, **opts)

    def _eval_dataset(self, split: str) -> SegDataset:
        """An evaluation split as evaluated: its eval options applied, cut to ``data.max_eval_images``."""
        try:
            ds = self.load_split(split, for_eval=True)
        except DataError as e:
            raise DataError(f"evaluation split {split!r}: {e}") from None
        if self.cfg.data.max_eval_images is not None and len(ds) > self.cfg.data.max_eval_images:
            ds.samples = ds.samples[: self.cfg.data.max_eval_images]
        return ds

    def _new_model(self, num_classes: int, pretrained: bool = True):
        """The configured backbone; ``pretrained=False`` when a stored state is loaded into it right after."""
        return self._model_spec(num_classes).build(pretrained)

    @cached_property
    def preprocess(self):
        """The backbone's preprocessing (built once: it needs a model instance)."""
        return self._new_model(2, pretrained=False).preprocess

    # ---- steps ---------------------------------------------------------------------------------
    def run(self) -> dict[str, list[dict]]:
        """Every step of the run, with the run directory locked against other processes for the whole time."""
        with locked(self.dir, lambda msg: self.say(f"[yellow]note:[/] {msg}")):
            return self._run()

    def _run(self) -> dict[str, list[dict]]:
        t0 = time.perf_counter()
        # Not config.yaml: `repcam run RUN/config.yaml --run-dir RUN` must keep the user's file (and its comments).
        write_text(self.paths.resolved_config, yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
        with self.timed("load data"):
            train = self.load_split(self.cfg.data.train_split)
        self.say(f"[bold]{train.num_classes} classes[/], {len(train)} training images, device {self.device}")
        classes = list(train.class_names)
        self._num_classes = train.num_classes
        self._check_classes(train)
        self._check_freeze()
        with self.timed("load data"):
            for split in self.cfg.data.eval_splits:  # before any training: a bad split file or mask fails in seconds
                check_eval_split(self._eval_dataset(split), split)
        cache = ImageCache(train, self.preprocess, crop=True)
        mc_model = self.train_multiclass(train, cache)
        B = self.similarity(mc_model, train, cache)
        selections = self.select(B, classes)
        pairs = self.needed_pairs(selections, train.num_classes)
        self._set_pair_init(mc_model, train.num_classes)
        try:
            pair_arts = self.train_pairs(pairs, train, cache)
            pair_budget = self._pair_budget(pair_arts)
            pair_compute = self._pair_compute(pair_arts, train, cache)
            base_model, base_path = self.train_baseline(mc_model, train, cache, pair_compute)
            self._budget_note(base_path, pair_budget, pair_compute, len(pair_arts))
            self._baseline_arts = train_baselines(self, train, cache, base_path)
            self._skipped_training_note(train, cache)
            results = {}
            for split in self.cfg.data.eval_splits:
                results[split] = self.evaluate(split, base_model, base_path, pair_arts, selections)
        finally:
            if "executor" in self.__dict__:
                self.executor.close()
                del self.__dict__["executor"]
        self.timings["total"] = time.perf_counter() - t0
        write_json(self.paths.timings, self.timings)
        write_json(self.paths.environment, _environment(self.device))
        write_json(self.paths.notes, self.notes)
        write_json(self.paths.budget, self.budget)
        return results

    @cached_property
    def executor(self) -> Executor:
        ex = self.cfg.execution
        try:
            return Executor(ex.kind, ex.workers, ex.address)
        except ExecutorError as e:
            raise RunError(str(e)) from e

    @property
    def threads(self) -> int:
        return self.cfg.execution.threads or default_threads(self.cfg.execution.workers)

    def _model_spec(self, num_classes: int) -> ModelSpec:
        b = self.cfg.backbone
        return ModelSpec(b.name, num_classes, b.weights, b.input_size)

    def _check_classes(self, train: SegDataset) -> None:
        too_few = {train.class_names[c]: len(train.indices_with(c)) for c in range(train.num_classes) if len(train.indices_with(c)) < self.cfg.pairs.min_images}
        if too_few:
            detail = ", ".join(f"{k} ({v} images)" for k, v in too_few.items())
            raise RunError(
                f"classes with fewer than pairs.min_images={self.cfg.pairs.min_images} training images cannot get pair models: "
                f"{detail}. Remove them with data.classes or lower pairs.min_images."
            )
        if self.cfg.selection.n > train.num_classes - 1:
            raise RunError(f"selection.n={self.cfg.selection.n} representative classes asked for, but each class has only {train.num_classes - 1} other classes")

    def train_multiclass(self, train: SegDataset, cache: ImageCache):
        mc = self.cfg.multiclass
        key = config_key({"model": self._model_key(), "multiclass": multiclass_training(mc)})
        art = Artefact(self.paths.multiclass_model, key)
        if art.done():
            bb = self._new_model(train.num_classes, pretrained=False)
            bb.model.load_state_dict(art.load_torch())
            self.say("multi-class model: reused")
            return bb.model.to(self.device).eval()
        idx, x, y, loss = self._multiclass_data(train, cache)
        C = train.num_classes
        torch.manual_seed(self._seed("multiclass"))
        bb = self._new_model(C)
        with self.timed("train multi-class"), self.progress(f"multi-class model ({mc.mode}, {len(idx)} images)", mc.epochs) as adv:
            res = fit(bb.model, x, y, bb.preprocess, loss=loss, epochs=mc.epochs, lr=mc.lr, batch_size=mc.batch_size,
                      seed=self._seed("mc-fit"), device=self.device, plateau=(mc.factor, mc.patience), progress=lambda d, t: adv())
        art.save_torch({k: v.cpu() for k, v in bb.model.state_dict().items()}, images=len(idx), mode=mc.mode,
                       epochs=res.epochs, train_accuracy=res.train_accuracy, seconds=res.seconds, history=res.history)
        return bb.model.eval()

    def _multiclass_data(self, train: SegDataset, cache: ImageCache) -> tuple[list[int], torch.Tensor, torch.Tensor, str]:
        """Image indices, uint8 images, targets and loss of the multi-class model."""
        idx = cache.ok(self._multiclass_images(train))
        if not idx:
            raise RunError("no training images for the multi-class model (check data.classes and multiclass.mode)")
        if self.cfg.multiclass.mode == "single":
            return idx, cache.stack(idx), torch.tensor([next(iter(train.samples[i].labels)) for i in idx]), "ce"
        y = torch.zeros(len(idx), train.num_classes)
        for r, i in enumerate(idx):
            y[r, list(train.samples[i].labels)] = 1
        return idx, cache.stack(idx), y, "bce"

    def train_baseline(self, mc_model, train: SegDataset, cache: ImageCache, pair_compute: float) -> tuple[Any, str]:
        """The multi-class model every baseline row uses, and the path of its artefact.

        With ``multiclass.match_pair_budget`` (default), a model that had less training than all pair models together
        is trained further, on the same images, until it has had at least as much, counted in
        ``multiclass.budget_unit`` (:mod:`repcam.budget`): the paper's baseline gets no less training than the method
        it is compared with. With ``pairs.init: multiclass`` the pair models build on the first model's training, so
        the baseline gets that plus as much as all pair models together. B and the selections keep the first model.
        """
        mc = self.cfg.multiclass
        meta = self._first_model_meta()
        per_epoch = int(meta["images"]) * self.costs.multiclass
        extra = extra_epochs(_image_epochs(meta) * self.costs.multiclass, self._method_compute(pair_compute), per_epoch)
        if not mc.match_pair_budget or extra == 0:
            return mc_model, MULTICLASS_MODEL
        art = Artefact(self.paths.multiclass_baseline, config_key({"mc": meta["sha256"], "extra_epochs": extra}))
        bb = self._new_model(train.num_classes, pretrained=False)  # its state comes from the first model or the artefact
        if art.done():
            bb.model.load_state_dict(art.load_torch())
            return bb.model.to(self.device).eval(), MULTICLASS_BASELINE
        bb.model.load_state_dict({k: v.cpu() for k, v in mc_model.state_dict().items()})
        idx, x, y, loss = self._multiclass_data(train, cache)
        with self.timed("train baseline"), self.progress(f"baseline: {extra} more epochs to match the pair models' budget", extra) as adv:
            res = fit(bb.model, x, y, bb.preprocess, loss=loss, epochs=extra, lr=mc.lr, batch_size=mc.batch_size,
                      seed=self._seed("baseline-fit"), device=self.device, plateau=(mc.factor, mc.patience), progress=lambda d, t: adv())
        art.save_torch({k: v.cpu() for k, v in bb.model.state_dict().items()}, images=len(idx), mode=mc.mode,
                       epochs=int(meta["epochs"]) + res.epochs, extra_epochs=res.epochs, train_accuracy=res.train_accuracy,
                       seconds=res.seconds, history=res.history)
        return bb.model.eval(), MULTICLASS_BASELINE

    def _skipped_training_note(self, train: SegDataset, cache: ImageCache) -> None:
        """Count the training images that could not be read, in the notes (hence every table and the report).

        A resumed run reads only the images of what it still trains, so the ids found by earlier runs of the same
        data are kept in ``train_skipped.json`` and merged: the count does not shrink because work was reused.
        """
        path = self.paths.train_skipped
        key = config_key({"data": self._data_key(), "train_split": self.cfg.data.train_split})
        try:
            old = read_json(path)
            known = dict(old["images"]) if isinstance(old, dict) and old.get("key") == key else {}
        except (OSError, ValueError, KeyError, TypeError):
            known = {}
        skipped = {**known, **{str(train.samples[i].id): reason for i, reason in cache.bad.items()}}
        write_json(path, {"key": key, "images": skipped})
        self.skipped_train = len(skipped)
        if skipped:
            first = ", ".join(sorted(skipped)[:5]) + (", ..." if len(skipped) > 5 else "")
            self.note(f"{len(skipped)} training images could not be read and were skipped ({first}; reasons in train_skipped.json)")

    def _multiclass_images(self, train: SegDataset) -> list[int]:
        """The multi-class model's training images (chosen, and any shortage noted, once per run)."""
        if self._mc_images is not None:
            return self._mc_images
        mc = self.cfg.multiclass
        if mc.mode == "single":
            idx = [i for i, s in enumerate(train.samples) if len(s.labels) == 1]
            counts = np.bincount([next(iter(train.samples[i].labels)) for i in idx], minlength=train.num_classes)
            lacking = [f"{train.class_names[c]} ({counts[c]})" for c in range(train.num_classes) if counts[c] < 5]
            if lacking:
                self.note("classes with fewer than 5 single-label training images (the paper's multi-class setting): "
                          + ", ".join(lacking) + "; their rows of B and their Grad-CAM baseline are weak. "
                          "Consider multiclass.mode: multilabel (the fair baseline).")
        else:
            idx = list(range(len(train)))
        if mc.max_images is not None and len(idx) > mc.max_images:
            rng = np.random.default_rng(self._seed("mc-subset"))
            idx = sorted(rng.choice(idx, mc.max_images, replace=False).tolist())
        self._mc_images = idx
        return idx

    def similarity(self, model, train: SegDataset, cache: ImageCache) -> np.ndarray:
        path = self.paths.similarity
        idx = cache.ok(self._multiclass_images(train))
        with self.timed("similarity"):
            logits = predict(model, cache.stack(idx), self.preprocess, self.device)
        multilabel = self.cfg.multiclass.mode == "multilabel"
        probs = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)).numpy()
        labels = np.zeros((len(idx), train.num_classes), bool)
        for r, i in enumerate(idx):
            labels[r, list(train.samples[i].labels)] = True
        B = S.similarity_matrix(probs, labels, multilabel=multilabel)
        write_json(path, {"classes": list(train.class_names), "B": B, "affinity": S.affinity(B), "multilabel": multilabel,
                          "definition": "B[i,j] = sum over training images of class i of p(j) (Eq. 2); multilabel: images that also contain j are left out of B[i,j]"})
        return B

    def select(self, B: np.ndarray, classes: list[str]) -> dict[str, S.Selection]:
        sc = self.cfg.selection
        C = len(classes)
        out: dict[str, S.Selection] = {}
        inp = SelectionInput(B, sc.n, sc.min_cluster_size, self._seed)
        for m in sc.methods:
            method = SELECTIONS[m]
            try:
                out[method.display] = method.select(inp)
            except ValueError as e:
                raise RunError(f"selection {method.display}: {e}") from e
            for note in inp.notes:
                self.note(note)
            inp.notes.clear()
        clusters = inp.clusters
        if sc.pairwise:
            out.setdefault("All", S.all_select(C))
        named = {n: {classes[c]: [classes[s] for s in reps] for c, reps in sel.items()} for n, sel in out.items()}
        payload = {"selections": named}
        if clusters is not None:
            payload["clusters"] = [[classes[c] for c in range(C) if clusters[c] == g] for g in sorted(set(clusters.tolist()))]
            self.say("clusters: " + " | ".join(", ".join(g) for g in payload["clusters"]))
        write_json(self.paths.selections, payload)
        return out

    def needed_pairs(self, selections: dict[str, S.Selection], C: int) -> list[tuple[int, int]]:
        if self.cfg.selection.pairwise:
            return [(a, b) for a in range(C) for b in range(a + 1, C)]
        pairs = {tuple(sorted((c, s))) for sel in selections.values() for c, reps in sel.items() for s in reps}
        return sorted(pairs)

    def _set_pair_init(self, mc_model, num_classes: int) -> None:
        """With ``pairs.init: multiclass`` the pair models start from the multi-class model's weights (head excluded)."""
        if self.cfg.pairs.init == "multiclass":
            self._pair_init = backbone_state(self._model_spec(num_classes), mc_model.state_dict())
            self._pair_init_key = self._first_model_meta()["sha256"]

    def _pair_art(self, a: int, b: int, names: tuple[str, ...]) -> Artefact:
        pairs = asdict(self.cfg.pairs)
        if pairs["init"] == "pretrained":  # the default: left out so that keys from before the option still match
            del pairs["init"]
        if pairs["freeze_until"] is None:  # likewise
            del pairs["freeze_until"]
        settings = {"model": self._model_key(), "pairs": pairs, "pair": [names[a], names[b]]}
        if self._pair_init_key:  # the pair model depends on the multi-class weights it starts from
            settings["init_from"] = self._pair_init_key
        key = config_key(settings)
        return Artefact(self.paths.pair_model(ClassFiles(names), names[a], names[b]), key)

    def train_pairs(self, pairs: list[tuple[int, int]], train: SegDataset, cache: ImageCache) -> dict[tuple[int, int], Artefact]:
        """Every pair model not already on disk, trained through the executor and saved as it finishes."""
        names = train.class_names
        arts = {p: self._pair_art(*p, names) for p in pairs}
        todo = [p for p in pairs if not arts[p].done()]
        if self.cfg.pairs.freeze_until is not None and todo:
            self._features = self._feature_cache(pairs, train, cache)

        def units() -> Iterator[Unit]:
            for p in todo:  # built lazily: only the units in flight hold their images
                spec = self._pair_training(p, train, cache)
                yield Unit((p, int((spec.labels == 0).sum()), int((spec.labels == 1).sum())), train_pair_unit, spec, self.threads)

        with self.timed("train pairs"), self.progress(f"pair models ({len(todo)} to train, {self.cfg.execution.kind})", len(pairs)) as adv:
            adv(len(pairs) - len(todo))
            try:
                for ((a, b), na, nb), (state, res) in self.executor.imap(units()):
                    arts[(a, b)].save_torch(state, classes=[names[a], names[b]], images=[na, nb], epochs=res.epochs,
                                            train_accuracy=res.train_accuracy, seconds=res.seconds)
                    adv()
            except ExecutorError as e:
                raise RunError(str(e)) from e
        return arts

    def _pair_training(self, pair: tuple[int, int], train: SegDataset, cache: ImageCache) -> PairTraining:
        """The unit that trains the binary model of the unordered pair (a, b): logit 0 is class a, logit 1 class b.

        Images that contain both classes are left out, so the same model serves a's maps (target logit 0, against b)
        and b's maps (target logit 1, against a): the paper's pairs (a, b) and (b, a) are one model.
        """
        a, b = pair
        pc = self.cfg.pairs
        ids_a, ids_b = self._pair_sides(pair, train, cache)
        # With pairs.freeze_until the unit reads its images' cached trunk features instead of the images.
        feats = self._features.rows(ids_a + ids_b) if self._features is not None else None
        images = cache.stack(ids_a + ids_b) if feats is None else cache.stack([])
        return PairTraining(self._model_spec(2), images, torch.tensor([0] * len(ids_a) + [1] * len(ids_b)),
                            self._seed("pair-init", a, b), self._seed("pair-fit", a, b), pc.epochs, pc.lr, pc.batch_size,
                            pc.target_accuracy, str(self.device), self._pair_init, pc.freeze_until, feats)

    def _pair_sides(self, pair: tuple[int, int], train: SegDataset, cache: ImageCache) -> tuple[list[int], list[int]]:
        """The usable training images of class a without b, and of b without a (capped by pairs.max_images_per_class)."""
        a, b = pair
        pc = self.cfg.pairs
        side: dict[int, list[int]] = {a: [], b: []}
        for i, s in enumerate(train.samples):
            if (a in s.labels) != (b in s.labels):
                side[a if a in s.labels else b].append(i)
        rng = np.random.default_rng(self._seed("pair-subset", a, b))
        for c in (a, b):
            if pc.max_images_per_class is not None and len(side[c]) > pc.max_images_per_class:
                side[c] = sorted(rng.choice(side[c], pc.max_images_per_class, replace=False).tolist())
            side[c] = cache.ok(side[c])
            if len(side[c]) < pc.min_images:
                raise RunError(f"pair ({train.class_names[a]}, {train.class_names[b]}): class {train.class_names[c]} has only "
                               f"{len(side[c])} usable images without the other class (pairs.min_images={pc.min_images})")
        return side[a], side[b]

    def _check_freeze(self) -> None:
        """Fail before any training when pairs.freeze_until names no usable stage or would freeze a random trunk."""
        stage = self.cfg.pairs.freeze_until
        if stage is None:
            return
        if self.cfg.pairs.init == "pretrained" and self.cfg.backbone.weights in (None, "none"):
            raise RunError(f"pairs.freeze_until={stage!r} would freeze a random trunk (backbone.weights is null, pairs.init "
                           "is pretrained); set backbone.weights or pairs.init: multiclass")
        try:
            split_model(self._new_model(2, pretrained=False).model, stage, check_size=self.preprocess.input_size)
        except FreezeError as e:
            raise RunError(str(e)) from e
        self.note(f"pair models were fine-tuned only after {stage} (pairs.freeze_until): the stages up to it kept their starting "
                  "weights, so a pair model's image-epoch cost less than the baseline's")

    def _feature_cache(self, pairs: list[tuple[int, int]], train: SegDataset, cache: ImageCache) -> FeatureCache:
        """The trunk features (pairs.freeze_until) of every image of every pair model, computed once and shared by all."""
        stage = self.cfg.pairs.freeze_until
        ids = sorted({i for p in pairs for side in self._pair_sides(p, train, cache) for i in side})
        bb = self._new_model(2, pretrained=self._pair_init is None)
        if self._pair_init is not None:  # the trunk every pair model starts from (its head is not part of the cache)
            bb.model.load_state_dict(self._pair_init, strict=False)
        key = {"data": self._data_key(), "train_split": self.cfg.data.train_split, "backbone": asdict(self.cfg.backbone), "crop": True}
        try:
            with self.timed("feature cache"):
                fc = build_cache(self.paths.feature_cache(stage), split_model(bb.model, stage, check_size=bb.preprocess.input_size),
                                 bb.preprocess, ids, cache.stack, key, batch_size=self.cfg.pairs.batch_size, device=self.device)
        except FreezeError as e:
            raise RunError(str(e)) from e
        self.say(f"feature cache up to {stage}: {len(ids)} images x 2 flips, {fc.shape[2:]} float32, {fc.bytes / 2**20:.1f} MiB "
                 + ("reused" if fc.reused else f"built in {fc.seconds:.1f} s") + f" ({fc.path})")
        return fc

    def _load_model(self, num_classes: int, art: Artefact):
        """A stored model of the run (checksum verified, weights only), in eval mode."""
        bb = self._new_model(num_classes, pretrained=False)
        bb.model.load_state_dict(art.load_torch())
        return bb.model.eval()

    def _stream_maps(self, art: Artefact, model, cache: ImageCache, jobs: list, kinds: list[str]) -> None:
        ev = self.cfg.evaluation
        writer = RecordWriter(art, [j[0] for j in jobs], [j[1] for j in jobs], kinds, ev.map_size)
        try:
            extract(model, cache, self.preprocess, jobs, self.device, ev.map_size, ev.batch_size, kinds, sink=writer, amp=ev.amp)
        except BaseException:
            writer.discard()
            raise
        writer.commit()

    def _map_unit(self, num_classes: int, state: dict, jobs: list, cache: ImageCache) -> MapExtraction:
        ids = sorted({j[0] for j in jobs})
        ev = self.cfg.evaluation
        return MapExtraction(self._model_spec(num_classes), state, tuple(ids), cache.stack(ids), tuple(jobs), ("last", "fused"),
                             ev.map_size, ev.batch_size, str(self.device), ev.amp)

    @staticmethod
    def _pair_budget(pair_arts: dict[tuple[int, int], Artefact]) -> int:
        """Image-epochs all pair models were trained for."""
        return sum(sum(m["images"]) * int(m["epochs"]) for m in (a.meta() for a in pair_arts.values()))

    @cached_property
    def costs(self) -> Costs:
        """What an image-epoch of each kind of training costs in ``multiclass.budget_unit`` (:mod:`repcam.budget`)."""
        if self.cfg.multiclass.budget_unit == "image-epochs":
            return Costs()
        size = self.preprocess.input_size
        x = torch.randn(2, 3, size, size)
        mc = step_flops(self._new_model(self._num_classes, pretrained=False).model, x)
        pair = self._new_model(2, pretrained=False).model
        stage = self.cfg.pairs.freeze_until
        if stage is None:
            return Costs("flops", mc, step_flops(pair, x))
        split = split_model(pair, stage, check_size=size)
        features = torch.zeros(split.trunk(x).shape)  # a plain tensor (the trunk's is an inference tensor)
        return Costs("flops", mc, step_flops(PartialModel(split, from_features=True), features), 2 * forward_flops(split.trunk, x))

    def _pair_compute(self, pair_arts: dict[tuple[int, int], Artefact], train: SegDataset, cache: ImageCache) -> float:
        """The pair models' training compute in the budget unit, with the shared feature cache counted once."""
        cache_images = 0
        if self.costs.cache_image:
            cache_images = len({i for p in pair_arts for side in self._pair_sides(p, train, cache) for i in side})
        return self.costs.pairs(self._pair_budget(pair_arts), cache_images)

    def _first_model_meta(self) -> dict[str, Any]:
        """The metadata of the multi-class model behind B (and the pair models' start with ``pairs.init: multiclass``)."""
        return read_json(RunDir.meta(self.paths.multiclass_model))

    def _method_compute(self, pair_compute: float) -> float:
        """Training behind the method's maps: the pair models', plus the first multi-class model's when they start from it."""
        if self.cfg.pairs.init != "multiclass":
            return pair_compute
        return pair_compute + _image_epochs(self._first_model_meta()) * self.costs.multiclass

    def _budget_note(self, base_path: str, pair_budget: int, pair_compute: float, n_pairs: int) -> None:
        """Say how the baseline's training budget compares with the pair models' (image-epochs actually run)."""
        mc_budget = _image_epochs(read_json(RunDir.meta(self.paths / base_path)))
        first = _image_epochs(self._first_model_meta()) if self.cfg.pairs.init == "multiclass" else 0
        method = pair_budget + first  # image-epochs, every run's record; the ratio is in the unit that was matched
        method_compute = self._method_compute(pair_compute)
        ratio = mc_budget * self.costs.multiclass / method_compute if method_compute else float("inf")
        self.budget = {"baseline_model": base_path, "multiclass_image_epochs": mc_budget, "pairs_image_epochs": pair_budget,
                       "pair_models": n_pairs, "pairs_start_from_multiclass": method != pair_budget,
                       "method_image_epochs": method, "ratio": ratio}
        if self.costs.unit != "image-epochs":
            self.budget.update({"unit": self.costs.unit, "multiclass_flops": mc_budget * self.costs.multiclass,
                                "pairs_flops": pair_compute, "method_flops": method_compute,
                                "flops_per_image_epoch": {"multiclass": self.costs.multiclass, "pair": self.costs.pair,
                                                          "feature_cache_per_image": self.costs.cache_image}})
        msg = (f"training budget: the multi-class baseline ({base_path}) saw {mc_budget} image-epochs, the {n_pairs} pair models "
               f"{pair_budget} in total")
        if method != pair_budget:
            msg += f" on top of the {method - pair_budget} of the multi-class model they start from"
        if self.costs.unit == "image-epochs":
            msg += f" (baseline/method = {ratio:.2f})" if method != pair_budget else f" (baseline/pairs = {ratio:.2f})"
        else:
            msg += (f"; in training FLOPs (multiclass.budget_unit: flops) the baseline had {mc_budget * self.costs.multiclass:.3g}, "
                    f"the method {method_compute:.3g} (baseline/method = {ratio:.2f})")
        if ratio < 1:
            msg += "; the baseline had less training than the method (multiclass.match_pair_budget is off)"
        self.note(msg)

    def evaluate(self, split: str, mc_model, mc_path: str, models: dict[tuple[int, int], Artefact], selections: dict[str, S.Selection]) -> list[dict]:
        ev = self.cfg.evaluation
        ds = self._eval_dataset(split)
        names = ds.class_names
        pre = self.preprocess
        mdir = self.paths.maps_dir(split)
        # Evaluation images can be many: spilled to disk so memory stays flat (training images stay in memory).
        cache = ImageCache(ds, pre, crop=ev.protocol == "crop", spill_dir=mdir)
        # Only what changes a map goes into its key: thresholds and variants reuse the stored maps.
        maps_key = {"split": split, "eval_options": self.cfg.data.eval_options.get(split, {}), "protocol": ev.protocol,
                    "map_size": ev.map_size, "max": self.cfg.data.max_eval_images}
        if ev.amp:  # only then, so that runs from before the option keep their keys
            maps_key["amp"] = True

        jobs = [(i, c, c) for i, s in enumerate(ds.samples) for c in sorted(s.labels)]
        ok = set(cache.ok(sorted({j[0] for j in jobs})))
        jobs = [j for j in jobs if j[0] in ok]
        mc_sha = read_json(RunDir.meta(self.paths / mc_path))["sha256"]
        mc_art = Artefact(self.paths.multiclass_maps(split), config_key({"mc": mc_sha, **maps_key}))
        contrast_arts = {}
        if "contrast" in ev.variants:
            for sel_name, sel in selections.items():
                reps = {names[c]: [names[r] for r in sel[c]] for c in sorted(sel)}
                key = config_key({"mc": mc_sha, "contrast": reps, "gamma": ev.contrast_gamma, **maps_key})
                contrast_arts[sel_name] = Artefact(self.paths.contrast_maps(split, sel_name), key)
        pair_arts = {}
        files = ClassFiles(names)
        for (a, b), model_art in models.items():
            pair_arts[(a, b)] = Artefact(self.paths.pair_maps(split, files, names[a], names[b]), config_key({"pair": model_art.meta()["sha256"], **maps_key}))
        grid = Grid.plan(ev.grid, self.paths, split, selections, names, self.cfg.selection.n, ev.contrast_gamma, {"mc": mc_sha, **maps_key}) if ev.grid else None
        pair_grid = None
        if ev.grid and "pairs" in ev.grid.sources:  # the pair models' maps under every weighting and layer fusion
            shas = {p: art.meta()["sha256"] for p, art in models.items()}
            pair_grid = PairGrid.plan(ev.grid, self.paths, split, names, shas, selections, maps_key)
            grid.rows_meta.update(pair_grid.rows_meta)
        todo = [(p, a) for p, a in pair_arts.items() if not a.done()]
        contrast_todo = [(n, a) for n, a in contrast_arts.items() if not a.done()]
        total = len(todo) + 1 + len(contrast_todo)
        with self.timed(f"maps {split}"), self.progress(f"maps on {split} ({len(todo)} pair models to do)", total) as adv:
            # Multi-class maps (one pass over every job each) are streamed to disk in this process: the biggest files.
            if not mc_art.done():
                self._stream_maps(mc_art, mc_model, cache, jobs, ["last", "fused", "mean", "layercam", "cam"])
            adv()
            for sel_name, art in contrast_todo:
                sel = selections[sel_name]
                cj = [(i, c, ContrastTarget(c, tuple(sel.get(c, ())), ev.contrast_gamma)) for i, c, _ in jobs]
                self._stream_maps(art, mc_model, cache, cj, ["last", "fused"])
                adv()

            def units() -> Iterator[Unit]:  # built lazily: only the units in flight hold their images and weights
                for (a, b), art in todo:
                    pj = [(i, c, 0 if c == a else 1) for i, c, _ in jobs if c in (a, b)]
                    yield Unit(art, extract_maps, self._map_unit(2, models[(a, b)].load_torch(), pj, cache), self.threads)

            try:
                for art, records in self.executor.imap(units()):
                    art.save_npz(records)
                    adv()
            except ExecutorError as e:
                raise RunError(str(e)) from e

        if grid is not None:  # evaluation.grid: the multi-class model's maps per (source, weighting), reused when stored
            with self.timed(f"grid maps {split}"), self.progress(f"grid maps on {split}", len(grid.cells)) as adv:
                adv(len(grid.cells) - len(grid.todo()))
                grid.extract(mc_model, cache, pre, jobs, self.device, ev.map_size, ev.batch_size, ev.amp, adv)
            if pair_grid is not None:
                with self.progress(f"grid pair maps on {split}", len(pair_grid.pair_arts) + len(pair_grid.fused_arts)) as adv:
                    pair_grid.extract(lambda p: self._load_model(2, models[p]), cache, pre, jobs, self.device, ev.map_size,
                                      ev.batch_size, ev.amp, adv)
        with self.timed(f"maps {split}"):
            trained = baseline_records(self, ds.num_classes, cache, jobs, split, maps_key, self._baseline_arts)

        def pair_records(c: int) -> dict[int, MapRecords]:
            return {(b if a == c else a): RecordFile(art.path) for (a, b), art in pair_arts.items() if c in (a, b)}

        topk = range(1, self.cfg.selection.n + 1) if self.cfg.selection.pairwise else ()
        with self.timed(f"evaluate {split}"), self.progress(f"evaluate {split}", ds.num_classes) as adv:
            contrast = {n: RecordFile(a.path) for n, a in contrast_arts.items()}
            result = evaluate_split(ds, RecordFile(mc_art.path), pair_records, selections, ev.threshold, ev.protocol, topk, adv,
                                    variants=ev.variants, contrast_records=contrast, baseline_records=trained,
                                    extra_records=(grid.records() if grid is not None else []) + (pair_grid.records() if pair_grid else []))
        rows = summarize(result, seed=self.cfg.seed)
        if grid is not None:  # the grid's rows go to grid.*; the ablation's tables stay as without the grid
            result, rows, grid_rows = grid.split_off(result, rows)
            write_grid(self.paths.results_dir(split), split, grid_rows, grid,
                       {"pair_map_seconds": pair_grid.seconds} if pair_grid is not None else None)
        # The key of the settings behind these numbers: the report shows results whose key differs from the
        # current config.yaml's (or whose split is no longer evaluated) as stale, not as this run's.
        key = results_key(yaml.safe_load(yaml.safe_dump(self.cfg.to_dict(), sort_keys=False)), split)
        write_tables(self.paths.results_dir(split), split, result, rows, self.notes, skipped=len(cache.bad),
                     extra={"settings_key": key, "skipped_train_images": self.skipped_train})
        write_json_mapping(self.paths.accumulators(split), ((k, v.state_dict) for k, v in result.accs.items()))
        return rows


def _image_epochs(meta: dict[str, Any]) -> int:
    """Image-epochs a stored multi-class model was trained for."""
    return int(meta["images"]) * int(meta["epochs"])


def _environment(device: torch.device) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
    }
