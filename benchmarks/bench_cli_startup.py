"""How fast the CLI answers when no work is asked: ``repcam --help``, ``repcam --version``, argument errors, a bad
config, an unknown ``repcam score`` method or metric and, given a finished run, ``repcam report --no-figures``; each
the median of 5 fresh processes (issue 27: 7.5 s for ``--help`` and 8 to 24 s per argument error before torch was
kept out of start-up; issue 28: a bad config, a method typo and a report without figures still imported torch).

    python benchmarks/bench_cli_startup.py                      # writes benchmarks/results/cli_startup.md
    python benchmarks/bench_cli_startup.py --baseline OLD/src --run RUN_DIR --out benchmarks/results/cli_refusals.md

``--baseline`` times the same cases with another checkout's ``src`` on ``PYTHONPATH`` (a git worktree of an older
commit), interleaved case by case with this checkout's, and adds the ratio. ``--run`` adds the report case on a copy
of that run directory. Run on an idle machine; the result file records the load average at the start and end.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPEATS = 5


def cases(tmp: Path, run: Path | None) -> dict[str, list[str]]:
    """label -> repcam arguments; the files they name are made in ``tmp``."""
    bad = tmp / "bad.yaml"
    bad.write_text("data:\n  options: {num_images: abc}\n", encoding="utf-8")
    out = {
        "repcam --help": ["--help"],
        "repcam --version": ["--version"],
        "argument error (score --per-record x.txt)": ["score", "--method", "gradcam", "--per-record", "x.txt"],
        "bad config (run bad.yaml)": ["run", str(bad), "--run-dir", str(tmp / "never")],
        "unknown method (score --method gradcm)": ["score", "--folder", str(tmp), "--model", "tiny_cnn", "--method", "gradcm"],
        "unknown metric (score --metric road)": ["score", "--folder", str(tmp), "--model", "tiny_cnn", "--method", "gradcam",
                                                 "--metric", "road"],
    }
    if run is not None:
        copy = Path(shutil.copytree(run, tmp / "run", symlinks=True))
        out["report --no-figures (a finished run)"] = ["report", str(copy), "--no-figures"]
    return out


def time_once(args: list[str], src: str | None) -> tuple[float, int]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "repcam.cli", *args], capture_output=True, text=True, env=env)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="another checkout's src folder, timed alongside")
    ap.add_argument("--run", type=Path, help="a finished run directory (copied) for the report case")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "cli_startup.md")
    args = ap.parse_args()
    this = str(ROOT.parent / "src")
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, argv in cases(Path(tmp), args.run).items():
            new, old, codes = [], [], set()
            for _ in range(REPEATS):  # interleaved: a change of the machine's speed hits both alike
                t, c = time_once(argv, this)
                new.append(t), codes.add(c)
                if args.baseline:
                    t, c = time_once(argv, args.baseline)
                    old.append(t), codes.add(c)
            rows.append((label, new, old, sorted(codes)))
    load_after = os.getloadavg()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip() or "?"
    cmd = "python benchmarks/bench_cli_startup.py" + (f" --baseline {args.baseline}" if args.baseline else "") + (
        f" --run {args.run}" if args.run else "") + (f" --out {args.out.name}" if args.out != ap.get_default("out") else "")
    lines = [
        "# CLI start-up time",
        "",
        f"Command: `{cmd}` (each case: median of {REPEATS} fresh `python -m repcam.cli` processes"
        + (", interleaved with the baseline's" if args.baseline else "") + ").",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; code {commit}"
        + (f"; baseline: {args.baseline}" if args.baseline else "") + ".",
        "",
    ]
    if args.baseline:
        lines += ["| case | this code, median (s) | baseline, median (s) | speed-up | exit codes |", "|---|---:|---:|---:|---|"]
        lines += [f"| {label} | {statistics.median(n):.3f} | {statistics.median(o):.3f} | "
                  f"{statistics.median(o) / statistics.median(n):.1f}x | {', '.join(map(str, c))} |" for label, n, o, c in rows]
    else:
        lines += ["| case | median (s) | min (s) | max (s) | exit codes |", "|---|---:|---:|---:|---|"]
        lines += [f"| {label} | {statistics.median(n):.3f} | {min(n):.3f} | {max(n):.3f} | {', '.join(map(str, c))} |"
                  for label, n, _, c in rows]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(args.out.read_text())


if __name__ == "__main__":
    main()
