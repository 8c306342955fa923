"""The sections of a run's report (:mod:`repcam.reporting.report`), each an HTML string (empty or a short note
where its files are missing): a split's ablation, per-class, pairwise and sweep tables, the class selection, the models."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

from repcam.reporting.report_data import read_csv, read_json
from repcam.reporting.report_html import duration, e, finite, heat_style, pct, table
from repcam.store.layout import PAIRWISE_JSON, PER_CLASS_CSV, SWEEP_CSV, RunDir


def ablation_section(split: str, abl: Mapping[str, Any]) -> str:
    """A split's ablation: the best +A+F method against the baseline in figures, then the table (and the
    faithfulness table where evaluated)."""
    from repcam.method.methods import BASELINE
    from repcam.reporting.tables import ablation_rows, best_method

    rows = abl.get("rows") or []
    parts = []
    best = best_method(rows)
    by = {r["method"]: r for r in rows}
    base = by.get(BASELINE)
    if best and base:
        r = by[best]
        ci = ""
        if finite(r.get("ci_low")) and finite(r.get("ci_high")):
            ci = f" [95% CI {100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]" + ("" if r.get("significant") else " (n.s.)")
        diff = r.get("diff", (r["miou"] - base["miou"]) if finite(r.get("miou")) and finite(base.get("miou")) else None)
        parts.append(
            '<div>'
            f'<span class="kpi">{e(BASELINE)}: <b>{e(pct(base.get("miou")))}</b> mIoU</span>'
            f'<span class="kpi">best +A+F, {e(best)}: <b>{e(pct(r.get("miou")))}</b> mIoU</span>'
            f'<span class="kpi">Δ <b>{e(f"{100 * diff:+.2f}" if finite(diff) else "-")}</b>{e(ci)}</span>'
            "</div>"
        )
    if rows:
        header, body = ablation_rows(rows)
        names = [b[0] for b in body]
        rc = ["base" if n == BASELINE else ("best" if n == best else "") for n in names]
        delta_col = next((k for k, h in enumerate(header) if str(h).startswith("Δ")), None)
        cc = []
        for n in names:
            r = by[n]
            row_cc: list[str | None] = [None] * len(header)
            if delta_col is not None and n != BASELINE and finite(r.get("diff")) and r.get("significant"):
                row_cc[delta_col] = "pos" if r["diff"] > 0 else "neg"
            cc.append(row_cc)
        irn = any("IRN" in str(h) for h in header)
        parts.append(f"<p class=\"muted\">mIoU in % at the run's threshold; Δ vs {e(BASELINE)} with a 95% paired bootstrap interval "
                     "over images (n.s.: the interval contains 0); best T: the threshold that maximises mIoU"
                     + ("; IRN mIoU: the weakly supervised segmentation protocol, best background threshold in brackets" if irn else "")
                     + ". Records: (image, class) pairs scored.</p>")
        rec = {r["method"]: r.get("records") for r in rows}
        parts.append(table(header + ["records"], [b + [rec.get(b[0], "")] for b in body], row_class=rc,
                           cell_class=[c + [None] for c in cc]))
        if isinstance(abl.get("faithfulness"), dict):  # evaluation.faithfulness: a second table, same rows
            from repcam.reporting.tables import faithfulness_intro, faithfulness_rows

            f_header, f_body = faithfulness_rows(rows)
            parts.append(f"<h3>Faithfulness</h3><p class=\"muted\">{e(faithfulness_intro(abl['faithfulness'].get('judge', '?')))}</p>"
                         + table(f_header, f_body, row_class=["base" if b[0] == BASELINE else "" for b in f_body]))
    if abl.get("skipped_images"):
        parts.append(f'<p class="warn">{e(abl["skipped_images"])} evaluation images could not be read and were skipped.</p>')
    return "".join(parts)


def per_class_section(res: Path) -> str:
    """The per-class IoU table of the results folder ``res``, shaded from the lowest to the highest value."""
    rows = read_csv(res / PER_CLASS_CSV)
    if not rows or len(rows) < 2:
        return '<p class="muted">per_class.csv not found.</p>'
    header, body = rows[0], rows[1:]

    def num(s: str) -> float | None:
        try:
            return float(s) / 100
        except ValueError:
            return None

    vals = [v for r in body for v in map(num, r[1:]) if v is not None and math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    styles = [[None] + [heat_style(num(c), lo, hi) for c in r[1:]] for r in body]
    return ("<p class=\"muted\">IoU (%) per class at the run's threshold; mean = mIoU; shading from the lowest to the highest value.</p>"
            + table(header, body, cell_style=styles))


def pairwise_section(res: Path) -> str:
    """The pairwise Grad-CAM mIoU matrix of the results folder ``res``, shaded."""
    pw = read_json(res / PAIRWISE_JSON) if (res / PAIRWISE_JSON).is_file() else None
    if not pw:
        return '<p class="muted">pairwise.json not found.</p>'
    classes = pw["classes"]
    M = pw["miou"]
    body, styles = [], []
    vals = [v for c, row in enumerate(M) for s, v in enumerate(row) if c != s and finite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    for c, row in enumerate(M):
        body.append([classes[c]] + ["-" if c == s else pct(v, 1) for s, v in enumerate(row)])
        styles.append([None] + [None if c == s or not finite(v) else heat_style(v, lo, hi) for s, v in enumerate(row)])
    return ("<p class=\"muted\">Grad-CAM mIoU (%) of the row class from its binary model against the column class; "
            "- : no model trained for that pair.</p>" + table(["class"] + list(classes), body, cell_style=styles))


def sweep_section(res: Path) -> str:
    """The mIoU at every threshold of the results folder ``res``, folded; empty where there is no sweep."""
    rows = read_csv(res / SWEEP_CSV)
    if not rows or len(rows) < 2:
        return ""
    return ("<details><summary>mIoU (%) at every threshold (sweep.csv)</summary>"
            + table(rows[0], rows[1:]) + "</details>")


def selection_section(run_dir: Path) -> str:
    """The similarity's definition, the clusters and every class's representative classes per selection method."""
    paths = RunDir(run_dir)
    sel = read_json(paths.selections) if paths.selections.is_file() else None
    sim = read_json(paths.similarity) if paths.similarity.is_file() else None
    parts = []
    if sim:
        parts.append(f'<p class="muted">{e(sim.get("definition", ""))}'
                     f'{" (multi-label model)" if sim.get("multilabel") else ""}</p>')
    if sel:
        clusters = sel.get("clusters")
        if clusters:
            parts.append("<h3>Clusters</h3>" + table(["cluster", "classes"], [[k + 1, ", ".join(map(str, g))] for k, g in enumerate(clusters)], left=2))
        sels = sel.get("selections") or {}
        if sels:
            classes = list(sim["classes"]) if sim else sorted({c for s in sels.values() for c in s})
            methods = list(sels)
            body = [[c] + [", ".join(map(str, sels[m].get(c, []))) for m in methods] for c in classes]
            parts.append("<h3>Representative classes</h3><details open><summary>class → its representative classes, by selection method</summary>"
                         + table(["class"] + methods, body, left=len(methods) + 1) + "</details>")
    return "".join(parts)


def models_section(run_dir: Path) -> str:
    """The multi-class model's training summary and one row per binary (pair) model."""
    parts = []
    mc_meta = RunDir.meta(RunDir(run_dir).multiclass_model)
    mc = read_json(mc_meta) if mc_meta.is_file() else None
    if mc:
        keys = [k for k in ("mode", "images", "epochs", "train_accuracy", "seconds") if k in mc]
        vals = [(pct(mc[k], 1) + " %") if k == "train_accuracy" and finite(mc[k]) else (duration(mc[k]) if k == "seconds" else mc[k]) for k in keys]
        parts.append("<h3>Multi-class model</h3>" + table(keys, [vals], left=1))
    stems = RunDir(run_dir).pair_model_metas()
    metas = [p for _, p in stems]
    body = []
    for stem, p in stems:
        m = read_json(p) or {}
        cls = m.get("classes") or [stem]
        imgs = m.get("images") or []
        body.append([" vs ".join(map(str, cls)), " / ".join(map(str, imgs)), m.get("epochs", ""),
                     pct(m.get("train_accuracy"), 1), duration(m.get("seconds")) if "seconds" in m else ""])
    if body:
        accs = [m for m in ((read_json(p) or {}).get("train_accuracy") for p in metas) if finite(m)]
        summary = f"{len(body)} binary models" + (f", training accuracy {100 * min(accs):.1f}–{100 * max(accs):.1f} %" if accs else "")
        parts.append(f"<h3>Binary (pair) models</h3><details><summary>{e(summary)}</summary>"
                     + table(["pair", "images", "epochs", "train accuracy (%)", "time"], body) + "</details>")
    return "".join(parts)
