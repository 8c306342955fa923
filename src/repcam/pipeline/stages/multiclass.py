"""Stage: the multi-class model (``multiclass``), the similarity matrix B it gives, and the baseline's training
budget matched to the pair models' (:mod:`repcam.models.budget`)."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Callable, Iterable

import numpy as np
import torch

from repcam.config import multiclass_training
from repcam.data import SegDataset
from repcam.method import selection as S
from repcam.models.budget import Costs, extra_epochs, forward_flops, step_flops
from repcam.models.featcache import PartialModel, split_model
from repcam.models.train import ImageCache, fit, predict
from repcam.pipeline.context import RunContext, RunError
from repcam.store.layout import MULTICLASS_BASELINE, MULTICLASS_MODEL, RunDir
from repcam.store.storage import Artefact, config_key, read_json, write_json

PairSides = Callable[[tuple[int, int]], tuple[list[int], list[int]]]


class MultiClassStage:
    """The multi-class model behind B and every baseline row, its training images, and the budget note."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.num_classes = 0  # set once the training split is loaded
        self._images: list[int] | None = None
        self._first_meta: dict[str, Any] | None = None

    def train(self, train: SegDataset, cache: ImageCache):
        """The multi-class model, trained or reused."""
        ctx, mc = self.ctx, self.ctx.cfg.multiclass
        key = config_key({"model": ctx.model_key(), "multiclass": multiclass_training(mc)})
        art = Artefact(ctx.paths.multiclass_model, key)
        if art.done():
            model = ctx.stored_model(train.num_classes, art)
            ctx.say("multi-class model: reused")
            return model
        idx, x, y, loss = self.data(train, cache)
        C = train.num_classes
        torch.manual_seed(ctx.seed("multiclass"))
        bb = ctx.new_model(C)
        with ctx.timed("train multi-class"), ctx.progress(f"multi-class model ({mc.mode}, {len(idx)} images)", mc.epochs) as adv:
            res = fit(bb.model, x, y, bb.preprocess, loss=loss, epochs=mc.epochs, lr=mc.lr, batch_size=mc.batch_size,
                      seed=ctx.seed("mc-fit"), device=ctx.device, plateau=(mc.factor, mc.patience), progress=lambda d, t: adv(),
                      channels_last=ctx.channels_last)
        art.save_torch({k: v.cpu() for k, v in bb.model.state_dict().items()}, images=len(idx), mode=mc.mode,
                       epochs=res.epochs, train_accuracy=res.train_accuracy, seconds=res.seconds, history=res.history)
        return bb.model.eval()

    def data(self, train: SegDataset, cache: ImageCache) -> tuple[list[int], torch.Tensor, torch.Tensor, str]:
        """Image indices, uint8 images, targets and loss of the multi-class model (and of the trained baselines)."""
        idx = cache.ok(self.images(train))
        if not idx:
            raise RunError("no training images for the multi-class model (check data.classes and multiclass.mode)")
        if self.ctx.cfg.multiclass.mode == "single":
            return idx, cache.stack(idx), torch.tensor([next(iter(train.samples[i].labels)) for i in idx]), "ce"
        y = torch.zeros(len(idx), train.num_classes)
        for r, i in enumerate(idx):
            y[r, list(train.samples[i].labels)] = 1
        return idx, cache.stack(idx), y, "bce"

    def images(self, train: SegDataset) -> list[int]:
        """The multi-class model's training images (chosen, and any shortage noted, once per run)."""
        if self._images is not None:
            return self._images
        mc = self.ctx.cfg.multiclass
        if mc.mode == "single":
            idx = [i for i, s in enumerate(train.samples) if len(s.labels) == 1]
            counts = np.bincount([next(iter(train.samples[i].labels)) for i in idx], minlength=train.num_classes)
            lacking = [f"{train.class_names[c]} ({counts[c]})" for c in range(train.num_classes) if counts[c] < 5]
            if lacking:
                self.ctx.note("classes with fewer than 5 single-label training images (the paper's multi-class setting): "
                              + ", ".join(lacking) + "; their rows of B and their Grad-CAM baseline are weak. "
                              "Consider multiclass.mode: multilabel (the fair baseline).")
        else:
            idx = list(range(len(train)))
        if mc.max_images is not None and len(idx) > mc.max_images:
            rng = np.random.default_rng(self.ctx.seed("mc-subset"))
            idx = sorted(rng.choice(idx, mc.max_images, replace=False).tolist())
        self._images = idx
        return idx

    def similarity(self, model, train: SegDataset, cache: ImageCache) -> np.ndarray:
        """B (Eq. 2) from the model's predictions on its training images, written to similarity.json.

        Reused when similarity.json holds the B of the same model (its checksum), images and mode: a resumed run does
        not repeat the forward pass over every training image (minutes at 224 px on a CPU; issue 28), nor load them
        (the key names the images the model was meant to see, as the model's own key does: an image unreadable since
        is one the stored model and B were both computed with)."""
        ctx = self.ctx
        wanted = self.images(train)
        multilabel = ctx.cfg.multiclass.mode == "multilabel"
        key = config_key({"mc": self.first_model_meta()["sha256"], "images": [train.samples[i].id for i in wanted],
                          "classes": list(train.class_names), "multilabel": multilabel})
        stored = self._stored_similarity(key)
        if stored is not None:
            return stored
        idx = cache.ok(wanted)
        with ctx.timed("similarity"):
            logits = predict(model, cache.stack(idx), ctx.preprocess, ctx.device, channels_last=ctx.channels_last)
        probs = (torch.sigmoid(logits) if multilabel else torch.softmax(logits, 1)).numpy()
        labels = np.zeros((len(idx), train.num_classes), bool)
        for r, i in enumerate(idx):
            labels[r, list(train.samples[i].labels)] = True
        B = S.similarity_matrix(probs, labels, multilabel=multilabel)
        write_json(ctx.paths.similarity, {"classes": list(train.class_names), "B": B, "affinity": S.affinity(B), "multilabel": multilabel,
                                          "definition": "B[i,j] = sum over training images of class i of p(j) (Eq. 2); multilabel: images that also contain j are left out of B[i,j]",
                                          "key": key})
        return B

    def _stored_similarity(self, key: str) -> np.ndarray | None:
        """similarity.json's B if it was computed under ``key`` and is a square finite matrix; else None (recompute)."""
        path = self.ctx.paths.similarity
        try:
            stored = read_json(path)
            if not isinstance(stored, dict) or stored.get("key") != key:
                return None
            B = np.asarray(stored["B"], dtype=float)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        n = len(stored.get("classes", []))
        return B if B.shape == (n, n) and np.isfinite(B).all() else None

    def first_model_meta(self) -> dict[str, Any]:
        """The metadata of the multi-class model behind B (and the pair models' start with ``pairs.init: multiclass``),
        read once per run: the model is trained or reused before anything asks, and is not written again."""
        if self._first_meta is None:
            self._first_meta = read_json(RunDir.meta(self.ctx.paths.multiclass_model))
        return self._first_meta

    # ---- the baseline's budget -------------------------------------------------------------------
    def train_baseline(self, mc_model, train: SegDataset, cache: ImageCache, pair_compute: float) -> tuple[Any, str]:
        """The multi-class model every baseline row uses, and the path of its artefact.

        With ``multiclass.match_pair_budget`` (default), a model that had less training than all pair models together
        is trained further, on the same images, until it has had at least as much, counted in
        ``multiclass.budget_unit`` (:mod:`repcam.models.budget`): the paper's baseline gets no less training than the method
        it is compared with. With ``pairs.init: multiclass`` the pair models build on the first model's training, so
        the baseline gets that plus as much as all pair models together. B and the selections keep the first model.
        """
        ctx, mc = self.ctx, self.ctx.cfg.multiclass
        meta = self.first_model_meta()
        per_epoch = int(meta["images"]) * self.costs.multiclass
        extra = extra_epochs(image_epochs(meta) * self.costs.multiclass, self.method_compute(pair_compute), per_epoch)
        if not mc.match_pair_budget or extra == 0:
            return mc_model, MULTICLASS_MODEL
        art = Artefact(ctx.paths.multiclass_baseline, config_key({"mc": meta["sha256"], "extra_epochs": extra}))
        bb = ctx.new_model(train.num_classes, pretrained=False)  # its state comes from the first model or the artefact
        if art.done():
            bb.model.load_state_dict(art.load_torch())
            return bb.model.to(ctx.device).eval(), MULTICLASS_BASELINE
        bb.model.load_state_dict({k: v.cpu() for k, v in mc_model.state_dict().items()})
        idx, x, y, loss = self.data(train, cache)
        with ctx.timed("train baseline"), ctx.progress(f"baseline: {extra} more epochs to match the pair models' budget", extra) as adv:
            res = fit(bb.model, x, y, bb.preprocess, loss=loss, epochs=extra, lr=mc.lr, batch_size=mc.batch_size,
                      seed=ctx.seed("baseline-fit"), device=ctx.device, plateau=(mc.factor, mc.patience), progress=lambda d, t: adv(),
                      channels_last=ctx.channels_last)
        art.save_torch({k: v.cpu() for k, v in bb.model.state_dict().items()}, images=len(idx), mode=mc.mode,
                       epochs=int(meta["epochs"]) + res.epochs, extra_epochs=res.epochs, train_accuracy=res.train_accuracy,
                       seconds=res.seconds, history=res.history)
        return bb.model.eval(), MULTICLASS_BASELINE

    @cached_property
    def costs(self) -> Costs:
        """What an image-epoch of each kind of training costs in ``multiclass.budget_unit`` (:mod:`repcam.models.budget`)."""
        ctx = self.ctx
        if ctx.cfg.multiclass.budget_unit == "image-epochs":
            return Costs()
        size = ctx.preprocess.input_size
        x = torch.randn(2, 3, size, size)
        mc = step_flops(ctx.new_model(self.num_classes, pretrained=False).model, x)
        pair = ctx.new_model(2, pretrained=False).model
        stage = ctx.cfg.pairs.freeze_until
        if stage is None:
            return Costs("flops", mc, step_flops(pair, x))
        split = split_model(pair, stage, check_size=size)
        features = torch.zeros(split.trunk(x).shape)  # a plain tensor (the trunk's is an inference tensor)
        return Costs("flops", mc, step_flops(PartialModel(split, from_features=True), features), 2 * forward_flops(split.trunk, x))

    def pair_compute(self, pair_arts: dict[tuple[int, int], Artefact], pair_sides: PairSides) -> float:
        """The pair models' training compute in the budget unit, with the shared feature cache counted once.

        The cache's images are counted from the pairs' sides, not from the feature cache's recorded ``ids``: a resumed
        run whose pair models are all on disk never opens the cache (it may be gone), and the budget must not depend on it.
        """
        cache_images = 0
        if self.costs.cache_image:
            cache_images = len({i for p in pair_arts for side in pair_sides(p) for i in side})
        return self.costs.pairs(pair_budget(pair_arts.values()), cache_images)

    def first_model_share(self) -> int:
        """Image-epochs of the first multi-class model that the method's maps build on: all of them with
        ``pairs.init: multiclass`` (the pair models start from it), none otherwise."""
        if self.ctx.cfg.pairs.init != "multiclass":
            return 0
        return image_epochs(self.first_model_meta())

    def method_compute(self, pair_compute: float) -> float:
        """Training behind the method's maps: the pair models', plus the first multi-class model's when they start from it."""
        first = self.first_model_share()
        if not first:
            return pair_compute
        return pair_compute + first * self.costs.multiclass

    def budget_note(self, base_path: str, pair_budget: int, pair_compute: float, n_pairs: int) -> None:
        """Say how the baseline's training budget compares with the pair models' (image-epochs actually run)."""
        ctx, costs = self.ctx, self.costs
        base_meta = self.first_model_meta() if base_path == MULTICLASS_MODEL else read_json(RunDir.meta(ctx.paths / base_path))
        mc_budget = image_epochs(base_meta)
        method = pair_budget + self.first_model_share()  # image-epochs, every run's record; the ratio is in the unit that was matched
        method_compute = self.method_compute(pair_compute)
        ratio = mc_budget * costs.multiclass / method_compute if method_compute else float("inf")
        ctx.budget = {"baseline_model": base_path, "multiclass_image_epochs": mc_budget, "pairs_image_epochs": pair_budget,
                      "pair_models": n_pairs, "pairs_start_from_multiclass": method != pair_budget,
                      "method_image_epochs": method, "ratio": ratio}
        if costs.unit != "image-epochs":
            ctx.budget.update({"unit": costs.unit, "multiclass_flops": mc_budget * costs.multiclass,
                               "pairs_flops": pair_compute, "method_flops": method_compute,
                               "flops_per_image_epoch": {"multiclass": costs.multiclass, "pair": costs.pair,
                                                         "feature_cache_per_image": costs.cache_image}})
        msg = (f"training budget: the multi-class baseline ({base_path}) saw {mc_budget} image-epochs, the {n_pairs} pair models "
               f"{pair_budget} in total")
        if method != pair_budget:
            msg += f" on top of the {method - pair_budget} of the multi-class model they start from"
        if costs.unit == "image-epochs":
            msg += f" (baseline/method = {ratio:.2f})" if method != pair_budget else f" (baseline/pairs = {ratio:.2f})"
        else:
            msg += (f"; in training FLOPs (multiclass.budget_unit: flops) the baseline had {mc_budget * costs.multiclass:.3g}, "
                    f"the method {method_compute:.3g} (baseline/method = {ratio:.2f})")
        if ratio < 1:
            msg += "; the baseline had less training than the method (multiclass.match_pair_budget is off)"
        ctx.note(msg)


def image_epochs(meta: dict[str, Any]) -> int:
    """Image-epochs a stored multi-class model was trained for."""
    return int(meta["images"]) * int(meta["epochs"])


def pair_budget(pair_arts: Iterable[Artefact]) -> int:
    """Image-epochs all pair models were trained for."""
    return sum(sum(m["images"]) * int(m["epochs"]) for m in (a.meta() for a in pair_arts))
