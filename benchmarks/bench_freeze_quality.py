"""Map quality of full vs partial fine-tuning of the pair models (``pairs.freeze_until``), at equal image-epochs.

Issue 14 asks for the default freeze point to be "the fastest one whose interval does not lie below zero". This
benchmark derives one run per freeze point from a base config (the VOCdevkit-mini config by default) that differ in
``pairs.freeze_until`` only, and compares their S-1+A+F (and S-1+F) maps on the first eval split with a paired
bootstrap over images (the same images and classes in every run):

* every run trains exactly ``pairs.epochs`` epochs (``target_accuracy: 1.0`` never stops early), so the runs see the
  same images the same number of times: equal image-epochs;
* only the S-1 selection, no variants, no baselines, no budget matching: nothing the comparison does not read;
* the multi-class model (hence B and S-1) is trained once, in the first run, and copied into the others (its key
  does not depend on the pair settings, so they reuse it): every run selects the same representatives.

Each run is an ordinary, resumable run directory under ``--root`` (kill and restart at will). Results:
``benchmarks/results/freeze_quality.{md,json}``.

    python benchmarks/bench_freeze_quality.py                     # full, blocks.2, blocks.3, blocks.4 on VOCdevkit-mini
    python benchmarks/bench_freeze_quality.py --points blocks.4 --root runs/fq
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from repcam.evaluation.bootstrap import paired_bootstrap
from repcam.store.layout import RunDir
from repcam.store.storage import write_json, write_text

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
ROWS = ("S-1+A+F", "S-1+F")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", default=str(ROOT / "configs" / "voc_mini_lite0.yaml"))
    p.add_argument("--points", default="blocks.2,blocks.3,blocks.4", help="freeze points compared with full fine-tuning")
    p.add_argument("--root", default=str(REPO / "runs" / "freeze_quality"), help="one run directory per configuration")
    p.add_argument("--split", default=None, help="eval split (default: the config's first)")
    p.add_argument("--epochs", type=int, default=None, help="pair epochs (default: the config's)")
    p.add_argument("--out", default=str(ROOT / "results" / "freeze_quality"))
    p.add_argument("--n-boot", type=int, default=1000)
    return p.parse_args(argv)


def derived_config(base: dict, point: str | None, split: str, epochs: int | None) -> dict:
    """The base config with only what the comparison needs, and ``pairs.freeze_until = point``."""
    cfg = json.loads(json.dumps(base))  # deep copy
    cfg["name"] = f"{base.get('name', 'run')}-freeze-{point or 'full'}"
    cfg["data"]["eval_splits"] = [split]
    cfg.setdefault("pairs", {}).update({"freeze_until": point, "target_accuracy": 1.0})
    if epochs is not None:
        cfg["pairs"]["epochs"] = epochs
    cfg.setdefault("selection", {})["methods"] = ["s1"]
    cfg.setdefault("multiclass", {})["match_pair_budget"] = False
    cfg.setdefault("evaluation", {})["variants"] = []
    cfg["evaluation"].pop("grid", None)
    cfg.pop("baselines", None)
    return cfg


def share_multiclass(src: RunDir, dst: RunDir) -> None:
    """Copy the first run's multi-class model (and its checksum sidecar) so the other runs reuse it."""
    for path in (src.multiclass_model, RunDir.meta(src.multiclass_model)):
        target = dst.root / path.relative_to(src.root)
        if path.is_file() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    base = yaml.safe_load(Path(args.config).read_text())
    split = args.split or base["data"]["eval_splits"][0]
    points: list[str | None] = [None, *[p for p in args.points.split(",") if p]]
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    runs: dict[str | None, RunDir] = {}
    for point in points:
        run = RunDir(root / (point or "full"))
        runs[point] = run
        run.root.mkdir(parents=True, exist_ok=True)
        if point is not None:
            share_multiclass(runs[None], run)
        cfg_path = run.root / "bench.yaml"
        cfg = derived_config(base, point, split, args.epochs)
        # Relative data roots are relative to the repository (where the configs are run from).
        write_text(cfg_path, yaml.safe_dump(cfg, sort_keys=False))
        cmd = [str(Path(sys.executable).with_name("repcam")), "run", str(cfg_path), "--run-dir", str(run.root), "--no-progress"]
        print("$", shlex.join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, cwd=REPO)
        print(f"  {point or 'full'}: {time.perf_counter() - t0:.0f} s", flush=True)

    full_acc = runs[None].read_accumulators(split)
    rows = []
    for point, run in runs.items():
        acc = run.read_accumulators(split)
        timings = json.loads(run.timings.read_text())
        row = {"freeze_until": point, "train_pairs_s": timings.get("train pairs"), "feature_cache_s": timings.get("feature cache")}
        for name in ROWS:
            row[name] = 100 * acc[name].miou()
            if point is not None:
                d, lo, hi = paired_bootstrap(acc[name], full_acc[name], n_boot=args.n_boot)
                row[f"{name} diff"] = [100 * d, 100 * lo, 100 * hi]
        rows.append(row)

    full_s = rows[0]["train_pairs_s"] or float("nan")
    lines = [
        "# Pair models: full vs partial fine-tuning, map quality at equal image-epochs",
        "",
        f"`{shlex.join(['python', 'benchmarks/bench_freeze_quality.py', *(argv if argv is not None else sys.argv[1:])])}` "
        f"on {Path(args.config).name}, split {split}, {time.strftime('%Y-%m-%d')}; one run directory per row under {args.root}; "
        "S-1 selection only, every pair model trained exactly pairs.epochs epochs; the same multi-class model (B, S-1) "
        f"in every row; Δ vs full with a paired 95% bootstrap interval over images ({args.n_boot} replicates).",
        "",
        "| pairs.freeze_until | train pairs s (+ cache s) | speed-up | S-1+A+F mIoU | Δ vs full [95% CI] | S-1+F mIoU | Δ vs full [95% CI] |",
        "|---|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        s = (r["train_pairs_s"] or 0) + (r["feature_cache_s"] or 0)
        cells = [r["freeze_until"] or "full (null)", f"{r['train_pairs_s']:.0f}" + (f" (+{r['feature_cache_s']:.0f})" if r["feature_cache_s"] else ""),
                 f"{full_s / s:.2f}x" if s else "-"]
        for name in ROWS:
            cells.append(f"{r[name]:.2f}")
            d = r.get(f"{name} diff")
            cells.append("-" if d is None else f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]")
        lines.append("| " + " | ".join(cells) + " |")
    out = Path(args.out)
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    write_json(out.with_suffix(".json"), {"config": args.config, "split": split, "rows": rows})
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
