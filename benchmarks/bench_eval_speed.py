"""Evaluation speed: old vs new code on the same synthetic stored maps, timed back to back, interleaved.

The evaluation of a split (:func:`repcam.evaluation.evaluate.evaluate_split` then :func:`summarize`: thresholded IoU
at every sweep threshold, PxAP, the IRN sweep and the paired bootstraps) is run on synthetic float16 maps of
``--map-size`` and masks of ``--mask`` pixels, as a run stores them. The baseline is the code of ``--baseline`` (a git
revision, extracted with ``git archive`` into a temporary folder), the candidate this checkout's ``src``; each is run
in its own subprocess, alternating, ``--reps`` times, and the medians are compared. Both must give the same summary
rows (every number equal or within 1e-12) or the benchmark fails.

    python benchmarks/bench_eval_speed.py --baseline 44d90d4 --reps 5 --threads 2 --out benchmarks/results/eval_speed.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------ worker (one side)


def make_inputs(n_images: int, n_classes: int, mask_hw: tuple[int, int], map_size: int, seed: int):
    """A fake split (masks with blobs of 1-3 classes, some 255 borders) and stored maps of every kind a run scores."""
    import numpy as np

    from repcam.data.base import Sample, SegDataset

    rng = np.random.default_rng(seed)
    h, w = mask_hw
    yy, xx = np.mgrid[0:h, 0:w]
    masks, samples = [], []
    for i in range(n_images):
        labels = sorted(rng.choice(n_classes, size=int(rng.integers(1, 4)), replace=False).tolist())
        m = np.zeros((h, w), np.uint8)
        for c in labels:
            cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(h // 8, h // 3)
            m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = c + 1
        m[:3] = 255  # an ignored border
        masks.append(m)
        samples.append(Sample(id=f"img{i:04d}", labels=frozenset(labels)))

    class FakeSplit(SegDataset):
        class_names = tuple(f"class{c}" for c in range(n_classes))

        def __init__(self) -> None:
            self.samples = samples

        def image(self, i):  # pragma: no cover - never called by the evaluation
            raise NotImplementedError

        def mask(self, i):
            return masks[i]

    jobs = [(i, c) for i, s in enumerate(samples) for c in sorted(s.labels)]

    def records(kinds):
        out = {"image": np.array([j[0] for j in jobs], np.int32), "cls": np.array([j[1] for j in jobs], np.int16)}
        for k in kinds:
            out[k] = rng.random((len(jobs), map_size, map_size)).astype(np.float16)
        return out

    mc = records(["last", "fused", "mean", "layercam", "cam"])
    pairs = {}
    for a in range(n_classes):
        for b in range(a + 1, n_classes):
            sel = [t for t, (i, c) in enumerate(jobs) if c in (a, b)]
            r = records(["last", "fused"])
            pairs[(a, b)] = {k: v[sel] if k in ("image", "cls") else v[: len(sel)] for k, v in r.items()}
    selections = {"Ours": {c: [(c + 1) % n_classes, (c + 2) % n_classes] for c in range(n_classes)}}
    return FakeSplit(), mc, pairs, selections


def run_once(args: argparse.Namespace) -> dict:
    """Evaluate and summarise once; returns the seconds of each part and the rows (for the equality check)."""
    import numpy as np

    from repcam.evaluation.evaluate import evaluate_split, summarize

    ds, mc, pairs, selections = make_inputs(args.images, args.classes, tuple(args.mask), args.map_size, args.seed)

    def pair_records(c):
        return {(b if a == c else a): r for (a, b), r in pairs.items() if c in (a, b)}

    import inspect

    # The code under test counts pixels on ``--threads`` workers where it can (evaluate_split(workers=...), issue 28);
    # older code runs on one thread whatever torch is given.
    extra = {"workers": args.threads} if "workers" in inspect.signature(evaluate_split).parameters else {}
    t0 = time.perf_counter()
    result = evaluate_split(ds, mc, pair_records, selections, 0.15, "whole", topk=range(1, 3),
                            variants=["max", "geomean", "with-gradcam"], **extra)
    t1 = time.perf_counter()
    rows = summarize(result, n_boot=args.n_boot, seed=0)
    t2 = time.perf_counter()

    def clean(x):
        if isinstance(x, float) and math.isnan(x):
            return "nan"
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, np.generic):
            return clean(x.item())
        return x

    return {"evaluate_s": t1 - t0, "summarize_s": t2 - t1, "rows": clean(rows),
            "irn": clean({k: {str(t): v for t, v in d.items()} for k, d in result.irn.items()}),
            "pairwise": clean(result.pairwise.tolist())}


# ------------------------------------------------------------------------------------------------ driver


def _same(a, b, tol: float = 1e-12) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or abs(a - b) <= tol
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k], tol) for k in a)
    return a == b


def _extract(rev: str, into: Path) -> Path:
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _side(src: Path, argv: list[str], threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--worker", *argv], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", default="44d90d4", help="git revision of the old code")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--images", type=int, default=60)
    p.add_argument("--classes", type=int, default=6)
    p.add_argument("--mask", type=int, nargs=2, default=[320, 320], metavar=("H", "W"))
    p.add_argument("--map-size", type=int, default=64)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads of each side, and the new side's scoring workers")
    p.add_argument("--out", type=Path, help="write the result table (Markdown) here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_once(args)))
        return
    argv = ["--images", str(args.images), "--classes", str(args.classes), "--mask", *map(str, args.mask),
            "--map-size", str(args.map_size), "--n-boot", str(args.n_boot), "--seed", str(args.seed), "--threads", str(args.threads)]
    with tempfile.TemporaryDirectory() as tmp:
        old_src, new_src = _extract(args.baseline, Path(tmp)), ROOT / "src"
        times: dict[str, list[dict]] = {"old": [], "new": []}
        outs = {}
        for r in range(args.reps):
            for name, src in (("old", old_src), ("new", new_src)) if r % 2 == 0 else (("new", new_src), ("old", old_src)):
                res = _side(src, argv, args.threads)
                outs[name] = res
                times[name].append({k: res[k] for k in ("evaluate_s", "summarize_s")})
                print(f"rep {r} {name}: evaluate {res['evaluate_s']:.2f} s, summarize {res['summarize_s']:.2f} s", flush=True)
    identical = all(_same(outs["old"][k], outs["new"][k]) for k in ("rows", "irn", "pairwise"))
    med = {n: {k: statistics.median(t[k] for t in ts) for k in ("evaluate_s", "summarize_s")} for n, ts in times.items()}
    for n in med:
        med[n]["total_s"] = med[n]["evaluate_s"] + med[n]["summarize_s"]
    lines = [
        "# Evaluation speed: old vs new (issue 28)",
        "",
        f"Command: `python benchmarks/bench_eval_speed.py --baseline {args.baseline} "
        f"--reps {args.reps} --images {args.images} --classes {args.classes} --mask {args.mask[0]} {args.mask[1]} "
        f"--map-size {args.map_size} --n-boot {args.n_boot} --threads {args.threads}`",
        "",
        f"{args.threads} torch thread(s) per side (OMP_NUM_THREADS too), and {args.threads} scoring worker(s) on the side "
        f"whose evaluate_split takes them; old and new run alternately in fresh subprocesses, {args.reps} repetitions "
        f"each, medians. Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; the ratio "
        "is the number to read, the seconds only context.",
        "",
        f"Inputs: {args.images} images, {args.classes} classes, masks {args.mask[0]}x{args.mask[1]}, stored maps "
        f"{args.map_size}x{args.map_size} float16, every multi-class kind, all pair models, one selection with "
        f"max/geomean/with-gradcam variants and Top-1/Top-2, {args.n_boot} bootstrap replicates.",
        "",
        "| part | old (s, median) | new (s, median) | speed-up |",
        "|---|---|---|---|",
    ]
    for k, label in (("evaluate_s", "evaluate_split"), ("summarize_s", "summarize (bootstraps)"), ("total_s", "total")):
        lines.append(f"| {label} | {med['old'][k]:.2f} | {med['new'][k]:.2f} | {med['old'][k] / med['new'][k]:.2f}x |")
    lines += ["", f"Results identical (every summary number, IRN sweep and pairwise mIoU equal within 1e-12): **{identical}**", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text)
    if not identical:
        sys.exit("old and new results differ")


if __name__ == "__main__":
    main()
