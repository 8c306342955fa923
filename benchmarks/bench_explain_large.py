"""Peak memory and time of `repcam explain` on one large synthetic photo (issue 13, item 10).

    PYTHONPATH=src python benchmarks/bench_explain_large.py [--side 8000] [--run runs/bench-explain]

Trains the tests' tiny run (tests/tiny_run.py, 32-px tiny CNN) into --run if it is not there, writes a side x side
JPEG (smooth colours plus noise, like a photo), runs `repcam explain --class C` on it in a subprocess (the `repcam` next to
this Python, with this PYTHONPATH) and prints its wall time and peak RSS (the child's ru_maxrss). Run it once with
PYTHONPATH pointing at the old code and once at the new to compare.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def ensure_run(run_dir: Path) -> None:
    if (run_dir / "multiclass" / "model.pt.meta.json").is_file() and (run_dir / "selections.json").is_file():
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_run import tiny_config

    from repcam.pipeline.run import Run

    Run(tiny_config(), run_dir, show_progress=False).run()


def first_class(run_dir: Path) -> str:
    import json

    return json.loads((run_dir / "similarity.json").read_text())["classes"][0]


def make_photo(path: Path, side: int) -> None:
    """Smooth gradients plus noise, built a band at a time (the full float image would itself cost GBs)."""
    rng = np.random.default_rng(0)
    out = np.empty((side, side, 3), np.uint8)
    x = np.linspace(0, 1, side, dtype=np.float32)
    for top in range(0, side, 1024):
        y = np.linspace(top / side, min(top + 1024, side) / side, min(1024, side - top), dtype=np.float32)[:, None]
        band = np.stack([200 * x[None, :] + 30 * y, 120 + 100 * np.sin(6 * y + 3 * x[None, :]), 255 * y * (1 - x[None, :])], -1)
        band += rng.normal(0, 8, band.shape).astype(np.float32)
        out[top:top + len(y)] = np.clip(band, 0, 255)
    Image.fromarray(out).save(path, quality=90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--side", type=int, default=8000)
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "bench-explain")
    ap.add_argument("--cls", help="the class to explain (default: the run's first); one figure")
    args = ap.parse_args()
    ensure_run(args.run)
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / f"photo_{args.side}.jpg"
        make_photo(photo, args.side)
        cmd = [str(Path(sys.executable).with_name("repcam")), "explain", str(photo), "--run", str(args.run),
               "--out", str(Path(tmp) / "out"), "--device", "cpu", "--class", args.cls or first_class(args.run)]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        wall = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
        figs = sorted((Path(tmp) / "out").glob("*.png"))
        sizes = [Image.open(f).size for f in figs]
    print(f"side {args.side}: exit {res.returncode}, {wall:.1f} s, peak RSS {peak_mb:.0f} MB, {len(figs)} figures {sizes}")
    if res.returncode:
        print(res.stderr[-2000:])


if __name__ == "__main__":
    main()
