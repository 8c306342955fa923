"""Two finished runs of one config side by side: stage times (and their ratio) and every ablation row's numbers.

usage: python benchmarks/compare_runs.py RUN_A RUN_B [--split val]
Prints a Markdown table of timings.json and one of the rows whose numbers differ, with the largest difference per
column (points of mIoU etc.); read it as "B against A" (ratio = A's seconds / B's).
"""
import argparse
import json
from pathlib import Path

COLUMNS = ("miou", "per_image_miou", "best_miou", "pxap", "irn_miou", "diff", "ci_low", "ci_high", "diff_strongest")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--split", default="val")
    args = ap.parse_args()
    ta, tb = (json.loads((r / "timings.json").read_text()) for r in (args.a, args.b))
    print("| stage | A (s) | B (s) | A / B |\n|---|---:|---:|---:|")
    for k in ta:
        if k in tb:
            print(f"| {k} | {ta[k]:,.1f} | {tb[k]:,.1f} | {ta[k] / tb[k]:.2f}x |" if tb[k] > 0 else f"| {k} | {ta[k]:.1f} | {tb[k]:.1f} | - |")
    ra, rb = ({r["method"]: r for r in json.loads((run / "results" / args.split / "ablation.json").read_text())["rows"]}
              for run in (args.a, args.b))
    common = [m for m in ra if m in rb]
    # Numbers move with the host's CPU and the threads as well as with the code: say where the environments differ.
    ea, eb = (json.loads(p.read_text()) if (p := run / "environment.json").is_file() else {} for run in (args.a, args.b))
    keys = ("cpu", "cpu_capability", "threads", "channels_last", "torch", "device")
    for k in [k for k in keys if ea.get(k) != eb.get(k)]:
        print(f"\nenvironment differs: {k} = {ea.get(k, '(not recorded)')!r} in A, {eb.get(k, '(not recorded)')!r} in B")
    print(f"\nrows: {len(ra)} in A, {len(rb)} in B, {len(common)} in both; only in A: {sorted(set(ra) - set(rb))}, "
          f"only in B: {sorted(set(rb) - set(ra))}")
    worst = {c: (0.0, "") for c in COLUMNS}
    changed = []
    for m in common:
        d = {c: 100 * (rb[m][c] - ra[m][c]) for c in COLUMNS if isinstance(ra[m].get(c), (int, float)) and isinstance(rb[m].get(c), (int, float))}
        for c, v in d.items():
            if abs(v) > abs(worst[c][0]):
                worst[c] = (v, m)
        if any(abs(v) >= 0.005 for v in d.values()):
            changed.append((m, d))
    print(f"rows whose numbers differ (in points, 2 decimals): {len(changed)} of {len(common)}")
    print("\n| column | largest B - A (points) | row |\n|---|---:|---|")
    for c, (v, m) in worst.items():
        print(f"| {c} | {v:+.2f} | {m} |")
    if changed:
        print("\n| row | mIoU@T A | mIoU@T B | B - A | Δ vs Grad-CAM A | Δ vs Grad-CAM B | significant A / B |\n|---|---:|---:|---:|---|---|---|")
        for m, d in changed:
            a, b = ra[m], rb[m]
            fmt = lambda r: "baseline" if r.get("diff") is None else f"{100 * r['diff']:+.2f} [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]"
            print(f"| {m} | {100 * a['miou']:.2f} | {100 * b['miou']:.2f} | {d.get('miou', float('nan')):+.2f} | {fmt(a)} | {fmt(b)} | "
                  f"{a.get('significant')} / {b.get('significant')} |")


if __name__ == "__main__":
    main()
