"""Stage: the binary pair models (``pairs``), trained through the executor, optionally on a shared feature cache."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Iterator

import numpy as np
import torch

from repcam.data import SegDataset
from repcam.method.selection import RANK_A, RANK_B, scaled_positions
from repcam.models.featcache import FeatureCache, FreezeError, build_cache, split_model
from repcam.models.train import ImageCache
from repcam.pipeline.context import RunContext, RunError
from repcam.pipeline.executor import ExecutorError, Unit
from repcam.pipeline.units import PairTraining, backbone_state
from repcam.pipeline.units import train_pair as train_pair_unit
from repcam.store.rundir import ClassFiles
from repcam.store.storage import Artefact, config_key


class PairStage:
    """The pair models of a run: their keys, their training images, and their training."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.init: dict[str, torch.Tensor] | None = None  # pairs.init: multiclass (see set_init)
        self.init_key: str | None = None
        self.features: FeatureCache | None = None  # pairs.freeze_until: the shared trunk features (see feature_cache)

    def check_classes(self, train: SegDataset) -> None:
        """Fail before any training when a class has too few images for its pair models, or selection.n too many."""
        cfg = self.ctx.cfg
        too_few = {train.class_names[c]: len(train.indices_with(c)) for c in range(train.num_classes) if len(train.indices_with(c)) < cfg.pairs.min_images}
        if too_few:
            detail = ", ".join(f"{k} ({v} images)" for k, v in too_few.items())
            raise RunError(
                f"classes with fewer than pairs.min_images={cfg.pairs.min_images} training images cannot get pair models: "
                f"{detail}. Remove them with data.classes or lower pairs.min_images."
            )
        if cfg.selection.n > train.num_classes - 1:
            raise RunError(f"selection.n={cfg.selection.n} representative classes asked for, but each class has only {train.num_classes - 1} other classes")
        for key, positions in (("rank-a", RANK_A), ("rank-b", RANK_B)):  # fixed positions: fail now, not after training
            if key in cfg.selection.methods:
                try:
                    scaled_positions(positions, train.num_classes - 1)
                except ValueError as e:
                    raise RunError(f"selection {key}: {e}") from None

    def check_freeze(self) -> None:
        """Fail before any training when pairs.freeze_until names no usable stage or would freeze a random trunk."""
        ctx = self.ctx
        stage = ctx.cfg.pairs.freeze_until
        if stage is None:
            return
        if ctx.cfg.pairs.init == "pretrained" and ctx.cfg.backbone.weights in (None, "none"):
            raise RunError(f"pairs.freeze_until={stage!r} would freeze a random trunk (backbone.weights is null, pairs.init "
                           "is pretrained); set backbone.weights or pairs.init: multiclass")
        try:
            split_model(ctx.new_model(2, pretrained=False).model, stage, check_size=ctx.preprocess.input_size)
        except FreezeError as e:
            raise RunError(str(e)) from e
        ctx.note(f"pair models were fine-tuned only after {stage} (pairs.freeze_until): the stages up to it kept their starting "
                 "weights, so a pair model's image-epoch cost less than the baseline's")

    def set_init(self, mc_model, num_classes: int, first_meta: Callable[[], dict[str, Any]]) -> None:
        """With ``pairs.init: multiclass`` the pair models start from the multi-class model's weights (head excluded);
        ``first_meta()`` is that model's stored metadata (its checksum goes into the pair models' keys)."""
        if self.ctx.cfg.pairs.init == "multiclass":
            self.init = backbone_state(self.ctx.model_spec(num_classes), mc_model.state_dict())
            self.init_key = first_meta()["sha256"]

    def artefact(self, a: int, b: int, names: tuple[str, ...]) -> Artefact:
        """The stored model of the pair (a, b) of ``names``: its path and its key (model key, pairs settings, the pair,
        and the multi-class weights it starts from, if any); ``pairs.init`` and ``freeze_until`` at their defaults
        are left out so that keys from before those options still match."""
        pairs = asdict(self.ctx.cfg.pairs)
        if pairs["init"] == "pretrained":  # the default: left out so that keys from before the option still match
            del pairs["init"]
        if pairs["freeze_until"] is None:  # likewise
            del pairs["freeze_until"]
        settings = {"model": self.ctx.model_key(), "pairs": pairs, "pair": [names[a], names[b]]}
        if self.init_key:  # the pair model depends on the multi-class weights it starts from
            settings["init_from"] = self.init_key
        key = config_key(settings)
        return Artefact(self.ctx.paths.pair_model(ClassFiles(names), names[a], names[b]), key)

    def train(self, pairs: list[tuple[int, int]], train: SegDataset, cache: ImageCache) -> dict[tuple[int, int], Artefact]:
        """Every pair model not already on disk, trained through the executor and saved as it finishes."""
        ctx = self.ctx
        names = train.class_names
        arts = {p: self.artefact(*p, names) for p in pairs}
        todo = [p for p in pairs if not arts[p].done()]
        if ctx.cfg.pairs.freeze_until is not None and todo:
            self.features = self.feature_cache(pairs, train, cache)

        def units() -> Iterator[Unit]:
            for p in todo:  # built lazily: only the units in flight hold their images
                spec = self.training(p, train, cache)
                yield Unit((p, int((spec.labels == 0).sum()), int((spec.labels == 1).sum())), train_pair_unit, spec, ctx.threads)

        with ctx.timed("train pairs"), ctx.progress(f"pair models ({len(todo)} to train, {ctx.cfg.execution.kind})", len(pairs)) as adv:
            adv(len(pairs) - len(todo))
            try:
                for ((a, b), na, nb), (state, res) in ctx.executor.imap(units()):
                    arts[(a, b)].save_torch(state, classes=[names[a], names[b]], images=[na, nb], epochs=res.epochs,
                                            train_accuracy=res.train_accuracy, seconds=res.seconds)
                    adv()
            except ExecutorError as e:
                raise RunError(str(e)) from e
        return arts

    def training(self, pair: tuple[int, int], train: SegDataset, cache: ImageCache) -> PairTraining:
        """The unit that trains the binary model of the unordered pair (a, b): logit 0 is class a, logit 1 class b.

        Images that contain both classes are left out, so the same model serves a's maps (target logit 0, against b)
        and b's maps (target logit 1, against a): the paper's pairs (a, b) and (b, a) are one model.
        """
        ctx = self.ctx
        a, b = pair
        pc = ctx.cfg.pairs
        ids_a, ids_b = self.sides(pair, train, cache)
        # With pairs.freeze_until the unit reads its images' cached trunk features instead of the images.
        feats = self.features.rows(ids_a + ids_b) if self.features is not None else None
        images = cache.stack(ids_a + ids_b) if feats is None else cache.stack([])
        return PairTraining(ctx.model_spec(2), images, torch.tensor([0] * len(ids_a) + [1] * len(ids_b)),
                            ctx.seed("pair-init", a, b), ctx.seed("pair-fit", a, b), pc.epochs, pc.lr, pc.batch_size,
                            pc.target_accuracy, str(ctx.device), self.init, pc.freeze_until, feats, ctx.channels_last)

    def sides(self, pair: tuple[int, int], train: SegDataset, cache: ImageCache) -> tuple[list[int], list[int]]:
        """The usable training images of class a without b, and of b without a (capped by pairs.max_images_per_class)."""
        a, b = pair
        pc = self.ctx.cfg.pairs
        side: dict[int, list[int]] = {a: [], b: []}
        for i, s in enumerate(train.samples):
            if (a in s.labels) != (b in s.labels):
                side[a if a in s.labels else b].append(i)
        rng = np.random.default_rng(self.ctx.seed("pair-subset", a, b))
        for c in (a, b):
            if pc.max_images_per_class is not None and len(side[c]) > pc.max_images_per_class:
                side[c] = sorted(rng.choice(side[c], pc.max_images_per_class, replace=False).tolist())
            side[c] = cache.ok(side[c])
            if len(side[c]) < pc.min_images:
                raise RunError(f"pair ({train.class_names[a]}, {train.class_names[b]}): class {train.class_names[c]} has only "
                               f"{len(side[c])} usable images without the other class (pairs.min_images={pc.min_images})")
        return side[a], side[b]

    def feature_cache(self, pairs: list[tuple[int, int]], train: SegDataset, cache: ImageCache) -> FeatureCache:
        """The trunk features (pairs.freeze_until) of every image of every pair model, computed once and shared by all."""
        ctx = self.ctx
        stage = ctx.cfg.pairs.freeze_until
        ids = sorted({i for p in pairs for side in self.sides(p, train, cache) for i in side})
        bb = ctx.new_model(2, pretrained=self.init is None)
        if self.init is not None:  # the trunk every pair model starts from (its head is not part of the cache)
            bb.model.load_state_dict(self.init, strict=False)
        key = {"data": ctx.data_key(), "train_split": ctx.cfg.data.train_split, "backbone": asdict(ctx.cfg.backbone), "crop": True}
        try:
            with ctx.timed("feature cache"):
                fc = build_cache(ctx.paths.feature_cache(stage), split_model(bb.model, stage, check_size=bb.preprocess.input_size),
                                 bb.preprocess, ids, cache.stack, key, batch_size=ctx.cfg.pairs.batch_size, device=ctx.device,
                                 channels_last=ctx.channels_last)
        except FreezeError as e:
            raise RunError(str(e)) from e
        ctx.say(f"feature cache up to {stage}: {len(ids)} images x 2 flips, {fc.shape[2:]} float32, {fc.bytes / 2**20:.1f} MiB "
                + ("reused" if fc.reused else f"built in {fc.seconds:.1f} s") + f" ({fc.path})")
        return fc
