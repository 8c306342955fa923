"""How fast the CLI answers when no work is asked: ``repcam --help``, ``repcam --version`` and an argument error
(``repcam score --method gradcam --per-record x.txt``), each the median of 5 fresh processes (issue 27: 7.5 s for
``--help`` and 8 to 24 s per argument error before torch was kept out of start-up).

    python benchmarks/bench_cli_startup.py            # writes benchmarks/results/cli_startup.md

Run on an idle machine for the headline number; the result file records the load average at the start and end.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = {
    "repcam --help": ["--help"],
    "repcam --version": ["--version"],
    "argument error (score --per-record x.txt)": ["score", "--method", "gradcam", "--per-record", "x.txt"],
}
REPEATS = 5


def time_once(args: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "repcam.cli", *args], capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    root = Path(__file__).resolve().parent
    load_before = os.getloadavg()
    rows = []
    for label, args in CASES.items():
        times, codes = zip(*(time_once(args) for _ in range(REPEATS)))
        rows.append((label, statistics.median(times), min(times), max(times), sorted(set(codes))))
    load_after = os.getloadavg()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root).stdout.strip()
    except OSError:
        commit = "?"
    lines = [
        "# CLI start-up time",
        "",
        f"Command: `python benchmarks/bench_cli_startup.py` (each case: median of {REPEATS} fresh `python -m repcam.cli` processes).",
        f"Machine: {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; code {commit}.",
        "",
        "| case | median (s) | min (s) | max (s) | exit codes |",
        "|---|---:|---:|---:|---|",
    ]
    lines += [f"| {label} | {med:.3f} | {lo:.3f} | {hi:.3f} | {', '.join(map(str, codes))} |" for label, med, lo, hi, codes in rows]
    out = root / "results" / "cli_startup.md"
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(out.read_text())


if __name__ == "__main__":
    main()
