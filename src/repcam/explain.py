"""Explain new images with a finished run's models: representative maps, their fusion and Grad-CAM.

    from repcam.explain import Explainer
    explainer = Explainer.from_run("runs/demo")
    explainer.explain("photo.jpg")[0].save("photo_cam.png")
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import yaml
from PIL import Image

from repcam.config import ConfigError, load_config
from repcam.data.base import DataError
from repcam.data.images import DISPLAY_SIDE, for_display, read_image, to_rgb8
from repcam.engine.cam import MultiLayerGradCAM
from repcam.method.methods import Method, paper_rows
from repcam.method.representative import RepresentativeCAM
from repcam.models.backbones import Preprocess
from repcam.models.train import resolve_device
from repcam.pipeline.units import ModelSpec
from repcam.store.layout import MULTICLASS_MODEL, RunDir
from repcam.store.rundir import ClassFiles, stale_reason
from repcam.store.storage import ArtefactError, load_error_message, read_json, verify
from repcam.errors import ExplainError  # noqa: F401 - defined in repcam.errors, importable from here


@dataclass
class Explanation:
    """The maps of one class on one image, each (H, W) in [0, 1] at the model's input resolution."""

    image: np.ndarray  # (H, W, 3) uint8, the image for display (longest side at most the explain's display_size)
    cls: str
    score: float  # the multi-class model's probability of ``cls``
    method: str  # e.g. "S-1+A+F"
    representative_maps: dict[str, np.ndarray] = field(default_factory=dict)  # representative class -> map (A)
    fused: np.ndarray | None = None  # the method's map (F over the representative maps)
    gradcam: np.ndarray | None = None  # Grad-CAM of the multi-class model, last layer (the baseline)
    image_size: tuple[int, int] | None = None  # (width, height) of the original image (None: that of ``image``)

    def panels(self) -> dict[str, np.ndarray | None]:
        """Panel title -> map, in display order: "vs <class>" per representative class, the method's fused map, then
        Grad-CAM (None where a map is absent)."""
        out: dict[str, np.ndarray | None] = {f"vs {s}": m for s, m in self.representative_maps.items()}
        out[self.method] = self.fused
        out["Grad-CAM"] = self.gradcam
        return out

    def full_size(self, name: str) -> np.ndarray:
        """The panel ``name`` (a key of :meth:`panels`) upsampled (bilinear) to the original image's size, (H, W)
        float32: computed only when asked, since at photo size every map costs width x height x 4 bytes."""
        m = self.panels()[name]
        if m is None:
            raise KeyError(f"panel {name!r} has no map")
        w, h = self.image_size or (self.image.shape[1], self.image.shape[0])
        return np.asarray(Image.fromarray(np.ascontiguousarray(m, dtype=np.float32)).resize((w, h), Image.Resampling.BILINEAR))

    def save(self, path: str | Path, fmt: str | None = None) -> Path:
        """The overlay figure: image | each representative map | fused map | Grad-CAM."""
        from repcam.reporting.figures import overlay_grid

        title = f"{self.cls} (p={self.score:.2f}): {self.method} over {len(self.representative_maps)} representative classes"
        return overlay_grid(self.image, self.panels(), None, path, title=title, fmt=fmt)


class Explainer:
    """A run directory's multi-class model and pair models, loaded lazily, ready for new images."""

    def __init__(self, run_dir: str | Path, method: str | None = None, device: str = "auto") -> None:
        self.dir = Path(run_dir)
        self.paths = RunDir(self.dir)
        mc_path = self.paths.multiclass_model
        if not mc_path.is_file():
            raise ExplainError(f"run directory {self.dir} has no trained multi-class model ({mc_path} is missing); "
                               "run `repcam run CONFIG --run-dir ...` (or `repcam demo`) first")
        try:
            self.cfg = load_config(self.paths.config)
        except ConfigError as e:
            raise ExplainError(f"run directory {self.dir}: {e}") from e
        for needed in (self.paths.similarity, self.paths.selections, RunDir.meta(mc_path)):
            if not needed.is_file():
                raise ExplainError(f"run directory {self.dir} is unfinished: {needed.relative_to(self.dir).as_posix()} is missing; "
                                   "rerun the run to complete it")
        self.classes: list[str] = list(self.paths.read_similarity()["classes"])
        try:
            self.files = ClassFiles(self.classes)  # the run's class -> file-name mapping (pair models, figures)
        except ValueError as e:
            raise ExplainError(f"run directory {self.dir}: {e}") from None
        self.multilabel = read_json(RunDir.meta(mc_path)).get("mode", "multilabel") == "multilabel"
        self.selections: dict[str, dict[str, list[str]]] = self.paths.read_selections()
        self.selection = self._pick_selection(method)
        self.device = resolve_device(device)
        # Grad-CAM from the model the run's baseline rows used (trained further to match the pair budget, if it was).
        budget = read_json(self.paths.budget) if self.paths.budget.is_file() else {}
        base = self.paths / budget.get("baseline_model", MULTICLASS_MODEL)
        self.mc_model, self.preprocess = self._load(base if base.is_file() else mc_path, len(self.classes))
        self._pairs: dict[tuple[str, str], torch.nn.Module] = {}

    @classmethod
    def from_run(cls, run_dir: str | Path, method: str | None = None, device: str = "auto") -> "Explainer":
        """The same as ``Explainer(run_dir, method, device)``: ``method`` a selection ("S-1") or its +F / +A+F row;
        None: the selection of the best +A+F row in the first evaluated split's results (else the first selection)."""
        return cls(run_dir, method, device)

    # ---- loading -------------------------------------------------------------------------------
    def _pick_selection(self, method: str | None) -> str:
        """``method`` ("S-1", "S-1+A+F" ...), or the best "+A+F" row of the run's first evaluated split."""
        if method is not None:
            parsed = Method.try_parse(method)
            # a selection's name, or its paper row (+F or +A+F); any other row (a variant, a baseline) is refused below
            name = parsed.selection if parsed is not None and parsed in paper_rows(parsed.selection) else method
            if name not in self.selections:
                raise ExplainError(f"method {method!r} is not in this run; choose one of {', '.join(self.selections)}")
            return name
        for split in self.cfg.data.eval_splits:
            table = self.paths.ablation(split)
            if table.is_file() and not stale_reason(yaml.safe_load(self.paths.config.read_text()), split, read_json(table)):
                rows = [(r, Method.try_parse(r["method"])) for r in read_json(table)["rows"] if r.get("miou") is not None]
                rows = [(r, m) for r, m in rows if m is not None and m == Method(m.selection, "A") and m.selection in self.selections]
                if rows:
                    return max(rows, key=lambda rm: rm[0]["miou"])[1].selection
        return next(iter(self.selections))

    def _load(self, path: Path, num_classes: int) -> tuple[torch.nn.Module, Preprocess]:
        b = self.cfg.backbone
        bb = ModelSpec(b.name, num_classes, b.weights, b.input_size).build(pretrained=False)
        try:
            bb.model.load_state_dict(torch.load(verify(path), map_location="cpu", weights_only=True))  # checksum first
        except ArtefactError as e:
            raise ExplainError(str(e)) from None
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, KeyError) as e:
            raise ExplainError(f"model {path} cannot be loaded as a {b.name} state dict: {load_error_message(e)}") from None
        return bb.model.to(self.device).eval(), bb.preprocess

    def _pair(self, c: str, s: str) -> tuple[torch.nn.Module, int] | None:
        """The binary model of the unordered pair {c, s} and the logit of ``c`` in it (None if not trained)."""
        a, b = sorted((c, s), key=self.classes.index)
        if (a, b) not in self._pairs:
            path = self.paths.pair_model(self.files, a, b)
            if not path.is_file():
                return None
            self._pairs[(a, b)] = self._load(path, 2)[0]
        return self._pairs[(a, b)], (0 if c == a else 1)

    # ---- explaining ----------------------------------------------------------------------------
    @staticmethod
    def _read(image: str | Path | Image.Image) -> Image.Image:
        """8-bit RGB through repcam's one image reader (16-bit and float scaled; files: EXIF orientation applied)."""
        try:
            if isinstance(image, Image.Image):
                return to_rgb8(image)
            path = Path(image)
            if not path.is_file():
                raise ExplainError(f"image {path} does not exist")
            return read_image(path, exif=True)
        except DataError as e:
            raise ExplainError(str(e)) from None

    def _tensor(self, image: str | Path | Image.Image,
                display_size: int | None = DISPLAY_SIDE) -> tuple[np.ndarray, torch.Tensor, tuple[int, int]]:
        """(the image for display, the model input, the original (width, height)); the full-size pixels are dropped
        here, so a large photo costs memory only while it is read and resized."""
        pil = self._read(image)
        shown = pil if display_size is None else for_display(pil, display_size)
        return np.asarray(shown), self._input(pil), pil.size

    def _input(self, pil: Image.Image) -> torch.Tensor:
        return self.preprocess.to_tensor(pil, crop=self.cfg.evaluation.protocol == "crop").unsqueeze(0).to(self.device)

    def scores(self, image: str | Path | Image.Image) -> dict[str, float]:
        """The multi-class model's probability of every class (sigmoid if it was trained multi-label, else softmax)."""
        return self._scores(self._input(self._read(image)))

    def _scores(self, x: torch.Tensor) -> dict[str, float]:
        with torch.no_grad():
            logits = self.mc_model(x)[0].float().cpu()
        p = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, 0)
        return dict(zip(self.classes, p.tolist()))

    def explain(self, image: str | Path | Image.Image, classes: str | Sequence[str] | None = None,
                min_score: float = 0.5, display_size: int | None = DISPLAY_SIDE) -> list[Explanation]:
        """One :class:`Explanation` per class: those named, or every class scored at least ``min_score``
        (the top class if none is). ``Explanation.image`` is downscaled to ``display_size`` (longest side; None
        keeps the full image); the maps stay at the model's resolution (``Explanation.full_size`` upsamples)."""
        arr, x, size = self._tensor(image, display_size)
        scores = self._scores(x)
        if classes is None:
            wanted = [c for c, p in scores.items() if p >= min_score] or [max(scores, key=scores.get)]
        else:
            wanted = [classes] if isinstance(classes, str) else list(classes)
            unknown = [c for c in wanted if c not in self.classes]
            if unknown:
                raise ExplainError(f"unknown class {', '.join(map(repr, unknown))}; this run's classes: {', '.join(self.classes)}")
        gradcam = MultiLayerGradCAM(self.mc_model, "auto")(x.expand(len(wanted), -1, -1, -1), [self.classes.index(c) for c in wanted])
        method = RepresentativeCAM(self._pair, self.selections[self.selection])  # the paper's method: F over A maps
        out = []
        for k, c in enumerate(wanted):
            rep = method(x, c)
            fused = rep.fused.numpy() if rep.fused is not None else None
            out.append(Explanation(arr, c, scores[c], Method(self.selection, "A").name, {s: m.numpy() for s, m in rep.maps.items()}, fused,
                                   gradcam.last[k].cpu().numpy(), image_size=size))
        return out
