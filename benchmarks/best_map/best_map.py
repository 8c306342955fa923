"""The best-map benchmark (issue 24): which map is best, chosen on val, confirmed on images no model trained on.

One cell = one (backbone, seed, multi-class budget): a run of ``cell.yaml`` with those three filled in, which trains
only the multi-class model (``pairs.train: false``), holds the original-mask train images out of all training
(``data.holdout: original_masks``) and scores every row, with and without test-time augmentation, on val and on the
held-out images. ``run.sh [CELL...]`` runs the cells (default: all, in ORDER), each one skipped when its results are
committed; ``summarise.py`` applies RULE.md to whatever cells exist.

Per cell, under ``benchmarks/results/best_map/<cell>/``: ``rows_<split>.csv`` (every row's mIoU), ``records_<split>.npz``
(every row's per-(image, class) intersection and union at the threshold: the paired intervals, also pooled over cells,
are computed from them), ``results.md`` and ``cell.json`` (code commit, torch threads, stage times, notes, config).

COCO-mini hook: ``export_split(cell, run_dir, split)`` exports any evaluated split of a cell's run directory. Once the
cross-data-set command exists (``repcam evaluate RUN --data COCO.yaml``, the coco branch), run it on each cell's run
directory and then ``python benchmarks/best_map/best_map.py export CELL --split SPLIT`` (see run.sh: BEST_MAP_COCO_DATA).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "benchmarks" / "results" / "best_map"
RUNS = Path(os.environ.get("BEST_MAP_RUNS", "/work/runs/best_map"))

BACKBONES = {"lite0": "tf_efficientnet_lite0", "lite1": "tf_efficientnet_lite1", "lite2": "tf_efficientnet_lite2"}
BUDGETS = {
    # the short configs' 4 epochs (voc_mini_table4_*.yaml), on 400 images not 800; the multi-class model only
    "short": {"multiclass": {"epochs": 4, "max_images": 400}},
    # the paper-budget run's (voc_mini_lite0_paper_budget.yaml): every image, 6 epochs; and, as there, the pair models
    # of every selection (10 epochs after blocks.5 on the shared feature cache, which makes them cheap) and a baseline
    # matched to their training FLOPs, so that the paper's S+A+F rows are scored at the paper's budget (issue 24)
    "paper": {"multiclass": {"epochs": 6, "max_images": None, "budget_unit": "flops"},
              "pairs": {"train": True, "epochs": 10, "lr": 0.0001, "batch_size": 24, "target_accuracy": 0.95,
                        "freeze_until": "blocks.5"}},
}
SEEDS = (0, 1, 2)
ORDER = [f"{bb}_s{seed}_short" for seed in SEEDS for bb in BACKBONES] + ["lite0_s0_paper"]
"""Every matrix cell, in the order run.sh runs them: seed 0 on every backbone first, then seed 1, ..."""
CONFIRMATION = ("heldout", "coco")  # the splits the rule reports on, frozen; val is where it chooses


def parse_cell(name: str) -> tuple[str, int, str]:
    """``lite0_s1_short`` -> (timm backbone, seed, budget); a one-line error for anything else."""
    try:
        bb, seed, budget = name.split("_")
        assert bb in BACKBONES and seed.startswith("s") and budget in BUDGETS
        return BACKBONES[bb], int(seed[1:]), budget
    except (ValueError, AssertionError):
        raise SystemExit(f"unknown cell {name!r}: write BACKBONE_sSEED_BUDGET with BACKBONE in {', '.join(BACKBONES)}, "
                         f"BUDGET in {', '.join(BUDGETS)} (e.g. lite0_s1_short); the matrix: {' '.join(ORDER)}") from None


def cell_config(name: str) -> dict[str, Any]:
    """cell.yaml with the cell's backbone, seed and multi-class budget filled in."""
    backbone, seed, budget = parse_cell(name)
    cfg = yaml.safe_load((HERE / "cell.yaml").read_text())
    cfg["name"] = f"best_map_{name}"
    cfg["seed"] = seed
    cfg["backbone"]["name"] = backbone
    for section, values in BUDGETS[budget].items():
        cfg[section].update(values)
    cfg["data"]["root"] = str((REPO / cfg["data"]["root"]).resolve()) if not Path(cfg["data"]["root"]).is_absolute() else cfg["data"]["root"]
    return cfg


def code_commit() -> str:
    """The repository's HEAD commit, with ``+dirty`` when tracked files outside benchmarks/results differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    # the benchmark's own outputs (summary.md, rewritten after each cell) do not make the code dirty
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results") else "")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_cell(name: str, force: bool = False) -> bool:
    """Run one cell and export its results; False (nothing done) when its results exist already."""
    out = RESULTS / name
    if (out / "cell.json").is_file() and not force:
        print(f"{name}: done already ({out / 'cell.json'}), skipped", flush=True)
        return False
    import torch

    from repcam.config import from_dict
    from repcam.pipeline.run import Run

    values = cell_config(name)
    threads = int(os.environ.get("OMP_NUM_THREADS", values["execution"]["threads"]))
    values["execution"]["threads"] = threads
    torch.set_num_threads(threads)
    cfg = from_dict(values, f"best_map cell {name}")
    run_dir = RUNS / name
    commit = code_commit()
    print(f"{name}: run in {run_dir} ({threads} torch thread(s), code {commit})", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    with stage_cpu_times() as cpu:
        Run(cfg, run_dir, show_progress=False).run()
    wall, cpu_total = time.perf_counter() - t0, time.process_time() - c0
    for split in cfg.data.eval_splits:
        export_split(name, run_dir, split)
    info = {"cell": name, "backbone": cfg.backbone.name, "seed": cfg.seed, "budget": parse_cell(name)[2],
            "code_commit": commit, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu_total, 1),
            "stage_cpu_seconds": {k: round(v, 1) for k, v in cpu.items()}, "load_average": os.getloadavg(),
            "run_dir": str(run_dir), "splits": list(cfg.data.eval_splits),
            "timings": json.loads((run_dir / "timings.json").read_text()),
            "notes": json.loads((run_dir / "notes.json").read_text()), "config": values}
    _write(out / "cell.json", json.dumps(info, indent=1) + "\n")
    _write(out / "results.md", cell_markdown(info, out))
    print(f"{name}: done in {wall / 60:.1f} min -> {out}", flush=True)
    return True


@contextmanager
def stage_cpu_times() -> Iterator[dict[str, float]]:
    """The process CPU time of each stage the run times (``RunContext.timed``): its wall times depend on what else the
    machine runs, its CPU times much less, so a cell's cost is stated in both."""
    from repcam.pipeline.context import RunContext

    cpu: dict[str, float] = {}
    real = RunContext.timed

    @contextmanager
    def timed(self, step):
        c0 = time.process_time()
        with real(self, step):
            yield
        cpu[step] = cpu.get(step, 0.0) + time.process_time() - c0

    RunContext.timed = timed
    try:
        yield cpu
    finally:
        RunContext.timed = real


def _rows(run_dir: Path, split: str) -> list[dict]:
    res = run_dir / "results" / split
    rows = [dict(r, tta=r["method"].endswith(" +TTA")) for r in json.loads((res / "ablation.json").read_text())["rows"]]
    if (res / "grid.json").is_file():
        rows += json.loads((res / "grid.json").read_text())["rows"]
    return rows


def _states(run_dir: Path, split: str) -> dict[str, dict]:
    res = run_dir / "results" / split
    states = json.loads((res / "accumulators.json").read_text())
    if (res / "grid_accumulators.json").is_file():
        states.update(json.loads((res / "grid_accumulators.json").read_text()))
    return states


ROW_COLUMNS = ["method", "miou", "per_image_miou", "pxap", "records", "tta"]


def export_split(name: str, run_dir: Path, split: str) -> None:
    """``rows_<split>.csv`` and ``records_<split>.npz`` of one evaluated split of a cell's run directory."""
    out = RESULTS / name
    rows = _rows(run_dir, split)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(ROW_COLUMNS)
    for r in rows:
        w.writerow([r["method"], f"{r['miou']:.6f}", f"{r.get('per_image_miou', float('nan')):.6f}",
                    f"{r.get('pxap', float('nan')):.6f}", r.get("records", ""), bool(r.get("tta", False))])
    _write(out / f"rows_{split}.csv", buf.getvalue())
    states = _states(run_dir, split)
    names = [r["method"] for r in rows if r["method"] in states]
    keys = [(str(i), int(c)) for i, c, _, _ in states[names[0]]["records"]]
    index = {k: n for n, k in enumerate(keys)}
    inter = np.zeros((len(names), len(keys)), np.int64)
    union = np.zeros((len(names), len(keys)), np.int64)
    for r, row in enumerate(names):
        recs = states[row]["records"]
        if len(recs) != len(keys):
            raise SystemExit(f"{name} {split}: row {row!r} has {len(recs)} records, {names[0]!r} {len(keys)}: not paired")
        for i, c, a, u in recs:
            n = index[(str(i), int(c))]
            inter[r, n], union[r, n] = a, u
    tmp = out / f".records_{split}.tmp.npz"
    np.savez_compressed(tmp, rows=np.array(names), image=np.array([k[0] for k in keys]), cls=np.array([k[1] for k in keys]),
                        inter=inter, union=union, num_classes=np.array(states[names[0]]["num_classes"]))
    tmp.replace(out / f"records_{split}.npz")


def read_rows(cell_dir: Path, split: str) -> dict[str, float]:
    """{row: mIoU at the threshold} of one split of a committed cell (empty when the split was not evaluated)."""
    path = cell_dir / f"rows_{split}.csv"
    if not path.is_file():
        return {}
    with path.open() as f:
        return {r["method"]: float(r["miou"]) for r in csv.DictReader(f)}


def cell_markdown(info: dict, out: Path) -> str:
    t = info["timings"]
    lines = [f"# Best-map cell {info['cell']}", "",
             f"{info['backbone']}, seed {info['seed']}, {info['budget']} multi-class budget; code {info['code_commit']}, "
             f"{info['torch_threads']} torch thread(s) on {info['cpu_count']} cores; wall {info['wall_seconds'] / 60:.1f} min.", "",
             "Stage wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()), "",
             "Stage CPU times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in info.get("stage_cpu_seconds", {}).items())
             + f"; total CPU {info.get('cpu_seconds', float('nan')):.0f} s (load average at the end {info.get('load_average')})", ""]
    for split in info["splits"]:
        rows = read_rows(out, split)
        lines += [f"## {split}: rows by mIoU@T", "", "| row | mIoU |", "|---|---|"]
        lines += [f"| {k} | {100 * v:.2f} |" for k, v in sorted(rows.items(), key=lambda kv: -kv[1])]
        lines.append("")
    lines += ["## Notes", ""] + [f"- {n}" for n in info["notes"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run cells (default: the whole matrix, in order); finished cells are skipped")
    r.add_argument("cells", nargs="*")
    r.add_argument("--force", action="store_true", help="rerun a finished cell")
    e = sub.add_parser("export", help="export one evaluated split of a cell's run directory (e.g. coco, once evaluated)")
    e.add_argument("cell")
    e.add_argument("--split", required=True)
    sub.add_parser("list", help="the matrix and which cells are done")
    c = sub.add_parser("config", help="print a cell's config")
    c.add_argument("cell")
    a = ap.parse_args(argv)
    if a.cmd == "run":
        for name in a.cells or ORDER:
            parse_cell(name)
        for name in a.cells or ORDER:
            run_cell(name, a.force)
    elif a.cmd == "export":
        parse_cell(a.cell)
        export_split(a.cell, RUNS / a.cell, a.split)
        info_path = RESULTS / a.cell / "cell.json"
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            info["splits"] = list(dict.fromkeys(info["splits"] + [a.split]))
            _write(info_path, json.dumps(info, indent=1) + "\n")
            _write(RESULTS / a.cell / "results.md", cell_markdown(info, RESULTS / a.cell))
    elif a.cmd == "list":
        for name in ORDER:
            print(name, "done" if (RESULTS / name / "cell.json").is_file() else "-")
    else:
        print(yaml.safe_dump(cell_config(a.cell), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
