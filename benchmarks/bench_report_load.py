"""How long headless Chromium takes to load and lay out repcam reports (issue 25: the 80-class report's load time).

    python benchmarks/bench_report_load.py REPORT.html [REPORT.html ...] [--repeat 5]

For each page (and a blank page, the browser's own start-up, measured in the same run): the median wall time of
``chromium --headless --dump-dom`` over ``--repeat`` loads, which returns once the page has loaded (images decoded,
layout done), the page size and the number of embedded images. The difference to the blank page is the report's own
load time; quote it as that difference or as a ratio to another report measured in the same run, not as seconds on
another machine.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from repcam.reporting.browser import dump_dom, find_browser


def load_seconds(page: Path, repeat: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        dump_dom(page, timeout=300)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pages", nargs="+", type=Path)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    browser = find_browser()
    if browser is None:
        print("no Chromium-family browser found (install chromium, or set REPCAM_BROWSER)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        blank = Path(tmp) / "blank.html"
        blank.write_text("<!doctype html><title>blank</title>")
        base, base_all = load_seconds(blank, a.repeat)
        print(f"browser: {browser}; median of {a.repeat} loads each")
        print("| page | size MB | images | median load s | minus blank s | all loads s |")
        print("|---|---:|---:|---:|---:|---|")
        print(f"| blank page | 0.0 | 0 | {base:.2f} | 0.00 | {', '.join(f'{t:.2f}' for t in base_all)} |")
        for page in a.pages:
            html = page.read_text(errors="replace")
            images = len(re.findall(r"<img\b", html))
            med, all_t = load_seconds(page, a.repeat)
            print(f"| {page} | {page.stat().st_size / 1e6:.1f} | {images} | {med:.2f} | {med - base:.2f} | {', '.join(f'{t:.2f}' for t in all_t)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
