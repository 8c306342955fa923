"""Several seeds of one config: one run directory per seed, and a table of mean ± spread over them."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from repcam.config import RunConfig
from repcam.reporting.tables import csv_text, markdown_table, method_order
from repcam.store.layout import RunDir
from repcam.store.storage import read_json, write_json, write_text


def seed_dirs(run_dir: Path, seeds: Sequence[int]) -> dict[int, Path]:
    """Seed -> its run directory (``RUN_DIR/seed-K``) under ``run_dir``."""
    return {s: RunDir(run_dir).seed(s).root for s in seeds}


def seed_configs(cfg: RunConfig, seeds: Sequence[int]) -> dict[int, RunConfig]:
    """The config once per seed (the seed drives data generation, subsets, initialisation and selections)."""
    return {s: dataclasses.replace(cfg, seed=int(s)) for s in seeds}


def summarize_seeds(rows_by_seed: dict[int, list[dict]]) -> list[dict]:
    """Per method: mean, sample std, min and max of mIoU@T over seeds, and in how many seeds its difference to
    Grad-CAM was significantly positive / negative (95% bootstrap interval excluding 0)."""
    methods: dict[str, list[dict]] = {}
    for rows in rows_by_seed.values():
        for r in rows:
            methods.setdefault(r["method"], []).append(r)
    out = []
    for name in method_order(list(methods)):
        rs = methods[name]
        v = np.array([r["miou"] for r in rs], dtype=float)
        d = np.array([r.get("diff", math.nan) for r in rs], dtype=float)
        out.append({
            "method": name,
            "seeds": len(rs),
            "miou_mean": float(np.nanmean(v)),
            "miou_std": float(np.nanstd(v, ddof=1)) if len(v) > 1 else math.nan,
            "miou_min": float(np.nanmin(v)),
            "miou_max": float(np.nanmax(v)),
            "diff_mean": float(np.nanmean(d)) if np.isfinite(d).any() else math.nan,
            "better": sum(1 for r in rs if r.get("significant") and r.get("diff", 0) > 0),
            "worse": sum(1 for r in rs if r.get("significant") and r.get("diff", 0) < 0),
        })
    return out


def write_seed_tables(run_dir: Path, split: str, seeds: Sequence[int]) -> str:
    """Read every seed's ablation.json for ``split`` and write RUN_DIR/results/<split>/seeds.{md,csv,json}."""
    rows_by_seed = {}
    for s, d in seed_dirs(run_dir, seeds).items():
        f = RunDir(d).ablation(split)
        if f.is_file():
            rows_by_seed[s] = read_json(f)["rows"]
    summary = summarize_seeds(rows_by_seed)

    def pct(x: float) -> str:
        return "-" if math.isnan(x) else f"{100 * x:.2f}"

    header = ["Method", "mIoU@T mean ± std", "min", "max", "Δ vs Grad-CAM (mean)", "seeds significantly better / worse"]
    table = [[r["method"], f"{pct(r['miou_mean'])} ± {pct(r['miou_std'])}", pct(r["miou_min"]), pct(r["miou_max"]),
              "baseline" if r["method"] == "Grad-CAM" else (f"{100 * r['diff_mean']:+.2f}" if not math.isnan(r["diff_mean"]) else "-"),
              "-" if r["method"] == "Grad-CAM" else f"{r['better']} / {r['worse']}"] for r in summary]
    md = (f"## {split}: {len(rows_by_seed)} seeds ({', '.join(map(str, rows_by_seed))})\n\n"
          "mIoU in % at the run's threshold, mean ± sample standard deviation over seeds; each seed retrains every model "
          "(and, for the built-in data, regenerates the images). Last column: in how many seeds the 95% bootstrap "
          "interval of the difference to Grad-CAM lay above / below zero.\n\n" + markdown_table(header, table))
    out = RunDir(run_dir).results_dir(split)
    write_text(out / "seeds.md", md)
    write_text(out / "seeds.csv", csv_text(header, table))
    write_json(out / "seeds.json", {"split": split, "seeds": list(rows_by_seed), "rows": summary})
    return md
