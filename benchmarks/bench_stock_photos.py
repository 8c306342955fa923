"""How concentrated each stock-explain method's map is on the three scikit-image photos of tests/test_stock.py.

For every method of repcam.stock.METHODS and the pretrained Lite0's top class: whether the map's peak lies in the
hand-drawn box of the object, and the ratio of the map's mean inside the box to its mean outside (the test asks for
a peak inside and a ratio above 1.5). Writes benchmarks/results/stock_photos.md.
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stock_photos.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from skimage import data as skdata

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_stock import LITE0, PHOTOS, _box_mask  # noqa: E402  (the test's boxes: one definition)

from repcam.stock import METHODS, StockExplainer  # noqa: E402
from repcam.stock_model import load_stock_model  # noqa: E402
from repcam.store.storage import write_text  # noqa: E402


def main() -> None:
    model = load_stock_model(LITE0)
    photos = {name: getattr(skdata, name)() for name in PHOTOS}
    lines = ["# Stock explain on scikit-image photos (Lite0, top class)", "",
             "Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_stock_photos.py`. Cell: in/out mean ratio "
             "of the map over the hand-drawn box of tests/test_stock.py (* = peak outside the box).", "",
             "| method | " + " | ".join(PHOTOS) + " |", "|---|" + "---:|" * len(PHOTOS)]
    for method in METHODS:
        cells = []
        for (name, (box, _)), ex in zip(PHOTOS.items(), StockExplainer(model, method, topk=1, device="cpu").explain(list(photos.values()))):
            m = ex.maps[0]
            inside = _box_mask(m.shape, box)
            peak_in = inside[np.unravel_index(m.argmax(), m.shape)]
            cells.append(f"{m[inside].mean() / max(float(m[~inside].mean()), 1e-9):.2f}" + ("" if peak_in else " *"))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    write_text(ROOT / "benchmarks" / "results" / "stock_photos.md", text)
    print(text)


if __name__ == "__main__":
    main()
