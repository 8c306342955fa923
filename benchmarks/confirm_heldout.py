"""Held-out confirmation of evaluation-grid rows chosen on another split (issue 15's rule).

A grid row picked as the best of hundreds on one split is biased upwards there; this scores the *frozen* choice on a
split the choice never saw, against named multi-class baselines, with the same paired 95% bootstrap over images as
the ablation tables. Only stored maps are read (a finished run with ``evaluation.grid``): the rows' grid map files
and the multi-class model's maps, scored by :func:`repcam.evaluation.evaluate.evaluate_split` exactly as the run scores them.

    python benchmarks/confirm_heldout.py RUN_DIR --split train \\
        --row "contrast S-1 [layercam, paper]" --row "top-4 contrast [layercam, paper]" \\
        --against LayerCAM --against CAM --out benchmarks/results/NAME_train_confirm.md
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from repcam.config import load_config
from repcam.evaluation.evaluate import evaluate_split, paired_test
from repcam.pipeline.context import RunContext
from repcam.pipeline.grid import contrast_stem, topk_stem
from repcam.store.layout import RunDir
from repcam.store.records import RecordFile
from repcam.reporting.tables import delta_cell
from repcam.store.storage import write_text

ROW = re.compile(r"^(?P<label>.+) \[(?P<weighting>[a-z+]+), (?P<fusion>[a-z]+)\]$")


def grid_file(paths: RunDir, split: str, row: str) -> tuple[Path, str]:
    """(map file, map kind) of a multi-class grid row: ``multiclass``, ``contrast <selection>``, ``top-<k> contrast``."""
    m = ROW.match(row)
    if m is None:
        sys.exit(f"error: {row!r} is not a grid row name like 'contrast S-1 [layercam, paper]'")
    label, weighting, fusion = m["label"], m["weighting"], m["fusion"]
    if label == "multiclass":
        stem = "multiclass"
    elif label.startswith("contrast "):
        stem = contrast_stem(label[len("contrast "):])
    elif re.fullmatch(r"top-\d+ contrast", label):
        stem = topk_stem(int(label.split()[0][4:]))
    else:
        sys.exit(f"error: {row!r}: only multi-class grid sources (multiclass, contrast, top-k contrast) are supported")
    path = paths.grid_maps(split, stem, weighting)
    if not path.is_file():
        sys.exit(f"error: {path} does not exist: is {split!r} evaluated with this grid row in that run?")
    return path, fusion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--split", required=True)
    ap.add_argument("--row", action="append", required=True, help="a grid row name, chosen on another split")
    ap.add_argument("--against", action="append", default=None, help="multi-class baseline rows (default LayerCAM, CAM)")
    ap.add_argument("--chosen-on", default="val", help="the split the rows were chosen on (for the table's note)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    against = args.against or ["LayerCAM", "CAM"]

    paths = RunDir(args.run_dir)
    cfg = load_config(paths.resolved_config)
    ctx = RunContext(cfg, args.run_dir, show_progress=False)
    ds = ctx.eval_dataset(args.split)
    extra = [(RecordFile(p), {row: kind}) for row in args.row for p, kind in [grid_file(paths, args.split, row)]]
    result = evaluate_split(ds, RecordFile(paths.multiclass_maps(args.split)), lambda c: {}, {}, cfg.evaluation.threshold,
                            cfg.evaluation.protocol, extra_records=extra)
    accs = result.accs
    missing = [a for a in against + ["Grad-CAM"] if a not in accs]
    if missing:
        sys.exit(f"error: no row {missing[0]!r} among the multi-class baselines ({', '.join(accs)})")

    lines = [f"## Held-out confirmation on {args.split}\n",
             f"Rows chosen on {args.chosen_on} (frozen), scored on {args.split} ({len(ds)} images) from the run's stored maps "
             f"(`{args.run_dir}`); mIoU@T={cfg.evaluation.threshold} in %, Δ with paired 95% bootstrap intervals over "
             "images (1000 resamples, seed 0), as in the ablation tables.\n",
             "| Row | mIoU | " + " | ".join(f"Δ vs {a} [95% CI]" for a in ["Grad-CAM"] + against) + " |",
             "|---|---:|" + "---|" * (1 + len(against))]
    for name in args.row + [a for a in ["Grad-CAM"] + against]:
        cells = []
        for ref in ["Grad-CAM"] + against:
            if ref == name:
                cells.append("—")
                continue
            d, lo, hi, sig, _ = paired_test(accs[name], accs[ref], n_boot=1000, seed=0)  # the ablation's interval and test
            cells.append(delta_cell({"diff": d, "ci_low": lo, "ci_high": hi, "significant": sig}))  # and its cell format
        lines.append(f"| {name} | {100 * accs[name].miou():.2f} | " + " | ".join(cells) + " |")
    md = "\n".join(lines) + "\n"
    print(md)
    if args.out:
        write_text(args.out, md)
    assert np.isfinite([a.miou() for a in accs.values()]).all()


if __name__ == "__main__":
    main()
