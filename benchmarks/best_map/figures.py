"""Where the recommended map wins and where it fails against LayerCAM (issue 24, "Why"), drawn from a cell's run.

    python benchmarks/best_map/figures.py CELL [--split heldout] [--row ROW] [--k 3]

Reads the cell's exported records (``benchmarks/results/best_map/<cell>/records_<split>.npz``: per (image, class)
intersection and union at the threshold) to rank the (image, class) pairs by IoU(row) - IoU(LayerCAM), then draws the
k largest wins and k largest losses from the maps stored in the cell's run directory (``$BEST_MAP_RUNS/<cell>``; run
directories do not outlive a session, so run this right after the cell): image, LayerCAM, the row, ground truth, with
the contrast references of the class in the title. Output: ``benchmarks/results/best_map/<cell>/figures/<split>/``
(``win_<n>.png``, ``loss_<n>.png``, ``index.md``). ROW defaults to the rule's recommended row (summary.md's choice).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from best_map import RESULTS, RUNS, read_rows  # noqa: E402
from summarise import mean_ranks  # noqa: E402

GRID_ROW = re.compile(r"^(?P<source>.+) \[(?P<weighting>\w+), (?P<fusion>\w+)\](?P<tta> \+TTA)?$")
MULTICLASS_KINDS = {"LayerCAM": "layercam", "CAM": "cam", "Grad-CAM": "last", "Grad-CAM+A": "fused", "Grad-CAM (mean of layers)": "mean"}


def recommended_row(results: Path = RESULTS) -> str:
    """The rule's choice over the cells that exist (RULE.md items 1-2), as summary.md states it."""
    cells = {c.name: read_rows(c, "val") for c in sorted(results.iterdir()) if (c / "cell.json").is_file()}
    return mean_ranks(cells)[0][0]


def map_file(maps_dir: Path, row: str) -> tuple[Path, str]:
    """(record file, kind) holding ``row``'s stored maps in one split's maps folder."""
    tta = row.endswith(" +TTA")
    base = row[: -len(" +TTA")] if tta else row
    if base in MULTICLASS_KINDS:
        return maps_dir / ("multiclass__tta.npz" if tta else "multiclass.npz"), MULTICLASS_KINDS[base]
    m = GRID_ROW.match(row)
    if not m:
        raise SystemExit(f"row {row!r}: not a multi-class or grid row; no stored map to draw")
    for meta in sorted(maps_dir.glob("grid__*.npz.meta.json")):
        info = json.loads(meta.read_text())
        if info.get("source") == m["source"] and info.get("weighting") == m["weighting"] and ("__tta__" in meta.name) == bool(m["tta"]):
            return meta.with_name(meta.name[: -len(".meta.json")]), m["fusion"]
    raise SystemExit(f"row {row!r}: no grid file with source {m['source']!r} and weighting {m['weighting']!r} in {maps_dir}")


def ranked_pairs(records: Path, row: str, ref: str) -> list[tuple[float, str, int, float, float]]:
    """(IoU(row) - IoU(ref), image id, class, IoU(row), IoU(ref)) of every (image, class) pair, largest gain first."""
    z = np.load(records)
    names = list(z["rows"])
    a, b = names.index(row), names.index(ref)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = z["inter"] / np.where(z["union"] > 0, z["union"], 1)
    out = [(float(iou[a, n] - iou[b, n]), str(z["image"][n]), int(z["cls"][n]), float(iou[a, n]), float(iou[b, n]))
           for n in range(len(z["image"])) if z["union"][a, n] > 0 and z["union"][b, n] > 0]
    return sorted(out, key=lambda t: -t[0])


def draw(cell: str, split: str, row: str, k: int) -> Path:
    from repcam.reporting.map_figures import overlay_grid
    from repcam.reporting.run_figures import _RunData, _stored_map

    run_dir = RUNS / cell
    if not run_dir.is_dir():
        raise SystemExit(f"{run_dir}: the cell's run directory is gone (run this right after the cell, or rerun it)")
    out = RESULTS / cell / "figures" / split
    out.mkdir(parents=True, exist_ok=True)
    data = _RunData(run_dir, split)
    classes = list(data.cfg.data.classes)
    sels = json.loads((run_dir / "selections.json").read_text()).get("selections", {})
    source = GRID_ROW.match(row)
    refs = sels.get(source["source"].removeprefix("contrast "), {}) if source else {}
    row_file, row_kind = map_file(run_dir / "maps" / split, row)
    ref_file, ref_kind = map_file(run_dir / "maps" / split, "LayerCAM")
    pairs = ranked_pairs(RESULTS / cell / f"records_{split}.npz", row, "LayerCAM")
    lines = [f"# {cell}, {split}: {row} against LayerCAM", "",
             f"The {k} (image, class) pairs where {row} gains most over LayerCAM, and the {k} where it loses most "
             f"(IoU at the threshold; of {len(pairs)} pairs). Drawn by `python benchmarks/best_map/figures.py {cell} --split {split}`.", "",
             "| figure | image | class | IoU row | IoU LayerCAM | Δ | references |", "|---|---|---|---|---|---|---|"]
    picks = [("win", p) for p in pairs[:k]] + [("loss", p) for p in pairs[::-1][:k]]
    index_of = {s.id: i for i, s in enumerate(data.ds.samples)}
    for n, (kind, (d, image_id, c, iou_a, iou_b)) in enumerate(picks):
        i = index_of[image_id]  # the record files index images by their position in the evaluated split
        img, mask = data.image_and_mask(i)
        m_row = _stored_map(row_file, row_kind, i, c)
        m_ref = _stored_map(ref_file, ref_kind, i, c)
        name = f"{kind}_{n % k + 1}.png"
        ref_text = ", ".join(refs.get(classes[c], [])) or "-"
        overlay_grid(img, {"LayerCAM": None if m_ref is None else m_ref.astype(np.float32),
                           "recommended": None if m_row is None else m_row.astype(np.float32)},
                     mask == c + 1, out / name, ignore_mask=mask == 255, dpi=80,  # mask: class k is k + 1
                     title=f"{image_id}, {classes[c]}: IoU {100 * iou_a:.1f} vs LayerCAM {100 * iou_b:.1f} (contrast: {ref_text})")
        lines.append(f"| [{name}]({name}) | {image_id} | {classes[c]} | {100 * iou_a:.1f} | {100 * iou_b:.1f} | {100 * d:+.1f} | {ref_text} |")
    (out / "index.md").write_text("\n".join(lines) + "\n")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cell")
    ap.add_argument("--split", default="heldout")
    ap.add_argument("--row", default=None, help="default: the rule's recommended row over the cells that exist")
    ap.add_argument("--k", type=int, default=3)
    a = ap.parse_args()
    row = a.row or recommended_row()
    print(draw(a.cell, a.split, row, a.k))
    return 0


if __name__ == "__main__":
    sys.exit(main())
