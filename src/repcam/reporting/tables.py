"""Result tables of a run, as Markdown, CSV and JSON."""

from __future__ import annotations

import csv
import io
import math
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from repcam.method.methods import BASELINE, MAP_KINDS, Method, TRAINED_BASELINES, VARIANTS, paper_rows, selection_order
from repcam.store.layout import ABLATION_JSON, ABLATION_MD, PAIRWISE_JSON, PER_CLASS_CSV, SWEEP_CSV
from repcam.store.storage import write_json, write_text

if TYPE_CHECKING:  # the report reads tables without the evaluation code (and torch, which it imports)
    from repcam.evaluation.evaluate import SplitResult


def method_order(names: Sequence[str]) -> list[str]:
    """Baselines first, then the paper's Table 2 order with +F before +A+F, then the variants per selection
    (all from the registries of repcam.method.methods); rows no method writes (the grid's) last, sorted."""
    order = [n for n in [*MAP_KINDS, *TRAINED_BASELINES.values()] if n in names]
    for sel in selection_order():
        order += [m.name for m in paper_rows(sel) if m.name in names]
    for sel in selection_order():  # the variants beyond the paper after its rows
        order += [m.name for variant in VARIANTS.values() for m in variant(sel) if m.name in names]
    return order + sorted(set(names) - set(order))


def is_paper_row(name: str, layers: str) -> bool:
    """Whether ``name`` is a selection's paper row with ``layers`` ("A": its +A+F row, "last": its +F row)."""
    m = Method.try_parse(name)
    return m is not None and m.selection is not None and m == Method(m.selection, layers)  # type: ignore[arg-type]


def best_method(rows: Sequence[Mapping[str, Any]], suffix: str = "+A+F") -> str | None:
    """The method with the highest mIoU among the rows of a selection's +A+F (``suffix="+A+F"``) or +F
    (``suffix="+F"``: without A) map, the paper's rows (ties: first in order)."""
    layers = {"+A+F": "A", "+F": "last"}[suffix]
    best, best_v = None, -math.inf
    for r in rows:
        v = r.get("miou")
        name = str(r.get("method", ""))
        if is_paper_row(name, layers) and v is not None and math.isfinite(float(v)) and float(v) > best_v:
            best, best_v = str(r["method"]), float(v)
    return best


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def md_cell(value: object) -> str:
    """``str(value)`` safe inside a Markdown table cell: ``|`` escaped, control characters and line separators
    (newline, NUL, U+0085, U+2028...) written as their escapes (``\\n``, ``\\x00``), so a cell never breaks its row."""
    text = str(value).replace("|", "\\|")
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
                   for ch in text)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown (pipe) table of ``header`` and ``rows``, cells as ``str`` gives them (through :func:`md_cell`), with a
    final newline."""
    lines = ["| " + " | ".join(map(md_cell, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def csv_text(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """The CSV text (Python's default dialect, ``\\r\\n`` line ends) of ``header`` then ``rows``: what a table's .csv file holds."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def delta_cell(r: dict, suffix: str = "") -> str:
    """The cell of a row's difference to a baseline, in points: ``+d [+lo, +hi]``, `` (n.s.)`` appended where the
    paired 95% interval contains 0; ``+d`` alone where the interval is NaN, ``-`` where the row has none.

    ``r`` holds ``diff``, ``ci_low``, ``ci_high`` and ``significant`` (fractions, as the evaluation writes them), each
    name followed by ``suffix`` (``"_strongest"``: against the strongest multi-class baseline).
    """
    if "ci_low" + suffix not in r:
        return "-"
    d, lo, hi = r["diff" + suffix], r["ci_low" + suffix], r["ci_high" + suffix]
    if math.isnan(lo):
        return f"{100 * d:+.2f}"
    mark = "" if r["significant" + suffix] else " (n.s.)"
    return f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]{mark}"


def ablation_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The ablation table (header, body) of an evaluation's rows, in :func:`method_order`: mIoU, the differences to
    Grad-CAM (and to the strongest baseline where that is another), per-image mIoU, best threshold, PxAP, IRN mIoU."""
    by = {r["method"]: r for r in rows}
    strongest = next((r["strongest_baseline"] for r in rows if "strongest_baseline" in r), None)
    header = ["Method", "mIoU@T", "Δ vs Grad-CAM [95% CI]"]
    if strongest and strongest != BASELINE:
        header.append(f"Δ vs {strongest} (strongest baseline)")
    header += ["per-image mIoU", "best T", "mIoU@best T", "PxAP", "IRN mIoU (bg t)"]
    out = []
    for name in method_order(list(by)):
        r = by[name]
        line = [name, _pct(r["miou"]), "baseline" if name == BASELINE else delta_cell(r)]
        if strongest and strongest != BASELINE:
            line.append("strongest baseline" if name == strongest else delta_cell(r, "_strongest"))
        irn = f"{_pct(r['irn_miou'])} ({r['irn_bg_threshold']:.2f})" if "irn_miou" in r else "-"
        line += [_pct(r["per_image_miou"]), f"{r['best_threshold']:.2f}", _pct(r["best_miou"]), _pct(r.get("pxap")), irn]
        out.append(line)
    return header, out


def faithfulness_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The faithfulness table (``evaluation.faithfulness``): one column per metric, each cell the row's value and,
    after Grad-CAM, its difference to Grad-CAM with the paired 95% interval (``repcam score``'s cells); empty if off."""
    from repcam.evaluation.metric_names import column_title, format_cell

    by = {r["method"]: r["faithfulness"] for r in rows if "faithfulness" in r}
    cols = list(next(iter(by.values()), {}))
    body = []
    for name in method_order(list(by)):
        cells = by[name]
        body.append([name] + [format_cell(cells[c]["value"], (cells[c]["diff"], cells[c]["ci_low"], cells[c]["ci_high"])
                                          if "diff" in cells[c] else None) for c in cols])
    return ["Method"] + [column_title(c) for c in cols], body


def faithfulness_intro(judge: str) -> str:
    """The faithfulness table's note: the judge model, the records, the intervals."""
    return (f"Faithfulness: every row's maps scored by one judge, the run's multi-class baseline model ({judge}, the model of "
            "the Grad-CAM and LayerCAM rows), on the IoU columns' (image, class) records, maps upsampled to the model input "
            "and min-max normalised as repcam score does; definitions as repcam score's (class score: softmax probability; "
            "Avg Drop / Increase and MaxBoxAccV2 in %). In brackets: the difference to Grad-CAM with a paired 95% bootstrap "
            "interval over images (none where the row's records differ from Grad-CAM's).")


def write_tables(out_dir: Path, split: str, result: SplitResult, rows: list[dict], notes: Sequence[str], skipped: int = 0,
                 extra: dict | None = None) -> str:
    """Write ablation/per-class/sweep/pairwise tables; returns the ablation Markdown. ``extra`` goes into ablation.json."""
    header, table = ablation_rows(rows)
    md = f"## Ablation on {split}\n\nmIoU in % at the run's threshold (per class, intersections and unions summed over the split, then averaged); "
    md += "Δ with a paired 95% bootstrap interval over images (n.s.: interval contains 0), against Grad-CAM (the paper's baseline) "
    md += "and against the strongest multi-class baseline of this run; best T: the threshold that maximises mIoU; "
    md += "PxAP: pixel average precision (threshold free, mean over classes); IRN mIoU: the weakly supervised segmentation protocol (argmax over a constant background score and the present "
    md += "classes' maps, 21-label-style mIoU with background, best background threshold in brackets).\n\n"
    md += markdown_table(header, table)
    if extra and "faithfulness" in extra:
        f_header, f_table = faithfulness_rows(rows)
        md += f"\n### Faithfulness on {split}\n\n{faithfulness_intro(extra['faithfulness']['judge'])}\n\n" + markdown_table(f_header, f_table)
    if notes:
        md += "\nNotes:\n" + "".join(f"- {n}\n" for n in notes)
    if skipped:
        md += f"\n{skipped} evaluation images could not be read and were skipped.\n"
    write_text(out_dir / ABLATION_MD, md)  # the names readers open come from repcam.store.layout
    write_text(out_dir / "ablation.csv", csv_text(header, table))
    write_json(out_dir / ABLATION_JSON, {"split": split, "rows": rows, "notes": list(notes), "skipped_images": skipped, **(extra or {})})

    names = method_order(list(result.accs))
    classes = result.classes
    pc_header = ["Method"] + classes + ["mean"]
    pc_rows = []
    for n in names:
        ious = result.accs[n].per_class_iou()
        pc_rows.append([n] + [_pct(v) for v in ious] + [_pct(result.accs[n].miou())])
    write_text(out_dir / "per_class.md", markdown_table(pc_header, pc_rows))
    write_text(out_dir / PER_CLASS_CSV, csv_text(pc_header, pc_rows))

    strongest = next((r["strongest_baseline"] for r in rows if "strongest_baseline" in r), None)
    pcd = {r["method"]: r["per_class_strongest"] for r in rows if "per_class_strongest" in r}
    if strongest and pcd:
        pcd_rows = []
        for n in names:
            if n in pcd:
                cells = ["-" if d is None else f"{100 * d:+.1f}" + ("" if lo is None or (lo <= 0 <= hi) else "*") for d, lo, hi in pcd[n]]
                pcd_rows.append([n] + cells)
        intro = (f"Per-class IoU difference to {strongest} (the strongest multi-class baseline), in points; "
                 "*: the paired 95% bootstrap interval over images excludes 0.\n\n")
        write_text(out_dir / "per_class_delta.md", intro + markdown_table(["Method"] + classes, pcd_rows))
        write_text(out_dir / "per_class_delta.csv", csv_text(["Method"] + classes, pcd_rows))

    thresholds = result.accs[names[0]].thresholds if names else []
    sweep_rows = [[n] + [_pct(result.accs[n].miou(t)) for t in thresholds] for n in names]
    write_text(out_dir / SWEEP_CSV, csv_text(["Method"] + [f"{t:.2f}" for t in thresholds], sweep_rows))

    pw_rows = [[classes[c]] + [("-" if c == s else _pct(result.pairwise[c, s])) for s in range(len(classes))] for c in range(len(classes))]
    write_text(out_dir / "pairwise.md", "Grad-CAM mIoU of class (row) from the binary model against class (column).\n\n" + markdown_table(["class"] + classes, pw_rows))
    write_text(out_dir / "pairwise.csv", csv_text(["class"] + classes, pw_rows))
    write_json(out_dir / PAIRWISE_JSON, {"classes": classes, "miou": [[None if math.isnan(v) else v for v in row] for row in result.pairwise.tolist()]})
    return md
