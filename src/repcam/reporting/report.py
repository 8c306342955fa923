"""One self-contained HTML report of a run: tables, figures (embedded as data URIs), config, timings, environment.

The file needs no network, no JavaScript and no other file: images are base64 ``data:`` URIs and the CSS is
inline. A Content-Security-Policy meta tag forbids scripts and any remote load. Every string that comes from
the run (class names, method names, ids, config values, notes, file names) is passed through
:func:`html.escape`, so a class called ``<script>...`` shows as text.

:func:`repcam.reporting.browser.screenshot` renders a report to PNG with headless Chromium (for docs).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from repcam import __version__ as _version
from repcam.store.layout import ABLATION_JSON, FIGURE_INDEX, PAIRWISE_JSON, PER_CLASS_CSV, SWEEP_CSV, RunDir
from repcam.store.layout import REPORT_NAME  # noqa: F401 - re-exported: report.REPORT_NAME was defined here
from repcam.store.rundir import stale_reason
from repcam.store.storage import ArtefactError

log = logging.getLogger(__name__)

_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}

_CSS = """
:root { --fg: #1d2330; --muted: #5b6476; --line: #d9dde5; --head: #f1f3f7; --accent: #2a5db0; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 1.2rem 2rem 3rem; max-width: 1400px; line-height: 1.45; background: #fff; }
h1 { font-size: 1.6rem; margin: 0.2rem 0 0.3rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 0.6rem; padding-bottom: 0.2rem; border-bottom: 2px solid var(--line); }
h3 { font-size: 1.05rem; margin: 1.4rem 0 0.4rem; }
p.sub, .muted { color: var(--muted); }
nav { font-size: 0.9rem; margin: 0.5rem 0 1rem; }
nav a { margin-right: 1rem; color: var(--accent); text-decoration: none; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.4rem 0 0.8rem; }
th, td { border: 1px solid var(--line); padding: 0.22rem 0.5rem; text-align: right; white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
td.l, th.l { text-align: left; }
tr.base td { background: #fff8e1; }
tr.best td { font-weight: 700; }
td.pos { color: #1b7a32; } td.neg { color: #b3261e; }
pre { background: #f6f8fa; border: 1px solid var(--line); padding: 0.7rem; overflow-x: auto; font-size: 0.8rem; }
figure { margin: 0.8rem 0 1.4rem; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: 0.85rem; color: var(--muted); max-width: 1100px; }
details { margin: 0.4rem 0 0.8rem; }
summary { cursor: pointer; color: var(--accent); }
.kpi { display: inline-block; border: 1px solid var(--line); border-radius: 6px; padding: 0.5rem 0.9rem; margin: 0 0.6rem 0.6rem 0; }
.kpi b { font-size: 1.2rem; }
ul.notes li { margin-bottom: 0.3rem; }
.warn { color: #8a5300; }
.notebox { border-left: 4px solid #e0a800; background: #fffbea; padding: 0.4rem 0.9rem; margin: 0.6rem 0 1rem; font-size: 0.9rem; }
.notebox ul { margin: 0.3rem 0; }
"""


def e(x: Any) -> str:
    """Escape anything for HTML text or attribute values."""
    return html.escape(str(x), quote=True)


# ---------------------------------------------------------------------------------------------------- reading


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("cannot read %s: %s", path, err)
        return None


def _read_csv(path: Path) -> list[list[str]] | None:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [row for row in csv.reader(f)]
    except OSError:
        return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _pct(x: Any, digits: int = 2) -> str:
    return f"{100 * x:.{digits}f}" if _finite(x) else "-"


def _seconds(s: Any) -> str:
    if not _finite(s):
        return e(s)
    return f"{s:.1f} s" if s < 120 else f"{s:.0f} s ({s / 60:.1f} min)"


def _splits(run_dir: Path) -> list[tuple[str, Path]]:
    """(split name, results folder) for every evaluated split, in the config's order first."""
    found: dict[Path, str] = {}
    res = RunDir(run_dir).results_root
    if res.is_dir():
        for d in sorted(p for p in res.iterdir() if (p / ABLATION_JSON).is_file()):
            data = _read_json(d / ABLATION_JSON) or {}
            found[d] = str(data.get("split", d.name))
    order: list[Path] = []
    cfg = _config_dict(run_dir)
    for s in ((cfg or {}).get("data") or {}).get("eval_splits") or []:
        d = RunDir(run_dir).results_dir(str(s))
        if d in found and d not in order:
            order.append(d)
    order += [d for d in found if d not in order]
    return [(found[d], d) for d in order]


def _config_dict(run_dir: Path) -> dict | None:
    import yaml

    try:
        data = yaml.safe_load(RunDir(run_dir).config.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------------------- HTML bits


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], *, left: int = 1, row_class: Sequence[str] | None = None,
          cell_style: Sequence[Sequence[str | None]] | None = None, cell_class: Sequence[Sequence[str | None]] | None = None) -> str:
    """An HTML table; every header and cell is escaped. The first ``left`` columns are left-aligned.
    ``row_class``/``cell_class``/``cell_style`` carry presentation only and must not hold user data."""
    out = ['<div class="scroll"><table>', "<thead><tr>"]
    out += [("<th class=\"l\">" if k < left else "<th>") + f"{e(h)}</th>" for k, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for r, row in enumerate(rows):
        rc = f' class="{e(row_class[r])}"' if row_class and row_class[r] else ""
        out.append(f"<tr{rc}>")
        for k, cell in enumerate(row):
            classes = (["l"] if k < left else []) + ([cell_class[r][k]] if cell_class and cell_class[r][k] else [])
            attrs = f' class="{e(" ".join(classes))}"' if classes else ""
            if cell_style and cell_style[r][k]:
                attrs += f' style="{e(cell_style[r][k])}"'
            out.append(f"<td{attrs}>{e(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _heat(v: float | None, lo: float = 0.0, hi: float = 1.0) -> str | None:
    """A background colour for a value in [lo, hi] (numbers only, never user text)."""
    if v is None or not math.isfinite(v):
        return None
    t = 0.0 if hi <= lo else min(max((v - lo) / (hi - lo), 0.0), 1.0)
    return f"background: rgba(42, 93, 176, {0.08 + 0.5 * t:.3f})"


def data_uri(path: Path) -> str:
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path.name}: cannot embed a {path.suffix} file as an image")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def figure_html(path: Path, caption: str, alt: str | None = None) -> str:
    return (f'<figure><img src="{data_uri(path)}" alt="{e(alt or caption)}">'
            f"<figcaption>{e(caption)}</figcaption></figure>")


# ---------------------------------------------------------------------------------------------------- sections


def _ablation_section(split: str, abl: Mapping[str, Any]) -> str:
    from repcam.evaluation.evaluate import BASELINE
    from repcam.reporting.run_figures import best_method
    from repcam.reporting.tables import ablation_rows

    rows = abl.get("rows") or []
    parts = []
    best = best_method(rows)
    by = {r["method"]: r for r in rows}
    base = by.get(BASELINE)
    if best and base:
        r = by[best]
        ci = ""
        if _finite(r.get("ci_low")) and _finite(r.get("ci_high")):
            ci = f" [95% CI {100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]" + ("" if r.get("significant") else " (n.s.)")
        diff = r.get("diff", (r["miou"] - base["miou"]) if _finite(r.get("miou")) and _finite(base.get("miou")) else None)
        parts.append(
            '<div>'
            f'<span class="kpi">{e(BASELINE)}: <b>{e(_pct(base.get("miou")))}</b> mIoU</span>'
            f'<span class="kpi">best +A+F, {e(best)}: <b>{e(_pct(r.get("miou")))}</b> mIoU</span>'
            f'<span class="kpi">Δ <b>{e(f"{100 * diff:+.2f}" if _finite(diff) else "-")}</b>{e(ci)}</span>'
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
            if delta_col is not None and n != BASELINE and _finite(r.get("diff")) and r.get("significant"):
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


def _per_class_section(res: Path) -> str:
    rows = _read_csv(res / PER_CLASS_CSV)
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
    styles = [[None] + [_heat(num(c), lo, hi) for c in r[1:]] for r in body]
    return ("<p class=\"muted\">IoU (%) per class at the run's threshold; mean = mIoU; shading from the lowest to the highest value.</p>"
            + table(header, body, cell_style=styles))


def _pairwise_section(res: Path) -> str:
    pw = _read_json(res / PAIRWISE_JSON) if (res / PAIRWISE_JSON).is_file() else None
    if not pw:
        return '<p class="muted">pairwise.json not found.</p>'
    classes = pw["classes"]
    M = pw["miou"]
    body, styles = [], []
    vals = [v for c, row in enumerate(M) for s, v in enumerate(row) if c != s and _finite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    for c, row in enumerate(M):
        body.append([classes[c]] + ["-" if c == s else _pct(v, 1) for s, v in enumerate(row)])
        styles.append([None] + [None if c == s or not _finite(v) else _heat(v, lo, hi) for s, v in enumerate(row)])
    return ("<p class=\"muted\">Grad-CAM mIoU (%) of the row class from its binary model against the column class; "
            "- : no model trained for that pair.</p>" + table(["class"] + list(classes), body, cell_style=styles))


def _sweep_section(res: Path) -> str:
    rows = _read_csv(res / SWEEP_CSV)
    if not rows or len(rows) < 2:
        return ""
    return ("<details><summary>mIoU (%) at every threshold (sweep.csv)</summary>"
            + table(rows[0], rows[1:]) + "</details>")


def _figures_for(run_dir: Path, split: str, build: bool) -> tuple[dict[str, tuple[Path, str]], dict[str, str]]:
    """{name: (path, caption)} and {name: reason skipped} for a split's figures, building them if asked."""
    fdir = RunDir(run_dir).figures_dir(split)
    if build:
        try:
            from repcam.reporting.run_figures import run_figures

            run_figures(run_dir, split, fmt="png")
        except ArtefactError:  # a damaged or foreign artefact: refuse (one line), never draw from it
            raise
        except Exception as err:  # the report must still be written
            log.warning("figures for %s failed: %s", split, err)
            return {}, {"all figures": f"{type(err).__name__}: {err}"}
    index = _read_json(fdir / FIGURE_INDEX) if (fdir / FIGURE_INDEX).is_file() else None
    if not index:
        return {}, {}
    for w in index.get("warnings") or []:
        log.warning("%s", w)
    figs = {}
    for name, info in (index.get("figures") or {}).items():
        p = fdir / Path(str(info.get("file", ""))).name  # never follow a path out of the folder
        if p.is_file() and p.suffix.lower() in _MIME:
            figs[name] = (p, str(info.get("caption", name)))
    return figs, dict(index.get("skipped") or {})


def _fig(figs: Mapping[str, tuple[Path, str]], *names: str) -> str:
    return "".join(figure_html(*figs[n]) for n in names if n in figs)


def _selection_section(run_dir: Path) -> str:
    paths = RunDir(run_dir)
    sel = _read_json(paths.selections) if paths.selections.is_file() else None
    sim = _read_json(paths.similarity) if paths.similarity.is_file() else None
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


def _models_section(run_dir: Path) -> str:
    parts = []
    mc_meta = RunDir.meta(RunDir(run_dir).multiclass_model)
    mc = _read_json(mc_meta) if mc_meta.is_file() else None
    if mc:
        keys = [k for k in ("mode", "images", "epochs", "train_accuracy", "seconds") if k in mc]
        vals = [(_pct(mc[k], 1) + " %") if k == "train_accuracy" and _finite(mc[k]) else (_seconds(mc[k]) if k == "seconds" else mc[k]) for k in keys]
        parts.append("<h3>Multi-class model</h3>" + table(keys, [vals], left=1))
    stems = RunDir(run_dir).pair_model_metas()
    metas = [p for _, p in stems]
    body = []
    for stem, p in stems:
        m = _read_json(p) or {}
        cls = m.get("classes") or [stem]
        imgs = m.get("images") or []
        body.append([" vs ".join(map(str, cls)), " / ".join(map(str, imgs)), m.get("epochs", ""),
                     _pct(m.get("train_accuracy"), 1), _seconds(m.get("seconds")) if "seconds" in m else ""])
    if body:
        accs = [m for m in ((_read_json(p) or {}).get("train_accuracy") for p in metas) if _finite(m)]
        summary = f"{len(body)} binary models" + (f", training accuracy {100 * min(accs):.1f}–{100 * max(accs):.1f} %" if accs else "")
        parts.append(f"<h3>Binary (pair) models</h3><details><summary>{e(summary)}</summary>"
                     + table(["pair", "images", "epochs", "train accuracy (%)", "time"], body) + "</details>")
    return "".join(parts)


def _kv_table(d: Mapping[str, Any], header: Sequence[str], fmt=lambda v: v) -> str:
    return table(header, [[k, fmt(v)] for k, v in d.items()], left=2)


# ---------------------------------------------------------------------------------------------------- report


def write_report(run_dir: str | Path, *, figures: bool = True, path: str | Path | None = None) -> Path:
    """Write ``run_dir/report.html`` (or ``path``) and return its path.

    ``figures=True`` (re)builds the figures with :func:`repcam.reporting.run_figures.run_figures` first; ``False`` embeds the
    ones already in ``run_dir/figures``. Missing pieces of a run are reported in the page, never fatal.
    """
    from repcam.store.storage import write_text

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    cfg = _config_dict(run_dir) or {}
    name = str(cfg.get("name") or run_dir.name)
    splits = _splits(run_dir)
    # Results an earlier config left behind (a split no longer evaluated, other settings) are not this run's:
    # left out of the page, and listed with the reason.
    stale = {str(d.relative_to(run_dir)): r for s, d in splits if (r := stale_reason(cfg, s, _read_json(d / ABLATION_JSON) or {}))}
    splits = [(s, d) for s, d in splits if str(d.relative_to(run_dir)) not in stale]
    paths = RunDir(run_dir)
    notes = _read_json(paths.notes) if paths.notes.is_file() else None
    toc = [("notes", "Notes")] if isinstance(notes, list) and notes else []
    toc += [(f"split-{k}", f"Results: {s}") for k, (s, _) in enumerate(splits)]
    toc += [("selection", "Class selection"), ("models", "Models"), ("config", "Configuration"), ("timings", "Timings"),
            ("environment", "Environment")]

    body: list[str] = [
        f"<h1>repcam report: {e(name)}</h1>",
        f'<p class="sub">Run directory <code>{e(run_dir.resolve())}</code>; '
        f"class activation maps from representative-class pair models with multi-layer Grad-CAM fusion, scored by IoU "
        f"against segmentation masks. Written by repcam {e(_version)}.</p>",
        "<nav>" + "".join(f'<a href="#{a}">{e(t)}</a>' for a, t in toc) + "</nav>",
    ]
    if not splits:
        body.append('<p class="warn">No evaluated split found (results/&lt;split&gt;/ablation.json): the run may be unfinished.</p>')

    if stale:
        body.append('<div class="notebox" id="stale"><b>Stale results left out</b> (not made by this config.yaml; '
                    "rerun to update or delete them)<ul>" + "".join(f"<li>{e(d)}/: {e(r)}</li>" for d, r in stale.items()) + "</ul></div>")
    if isinstance(notes, list) and notes:
        body.append('<div class="notebox" id="notes"><b>Notes from the run</b><ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul></div>")

    shared_figs: dict[str, tuple[Path, str]] = {}
    for k, (split, res) in enumerate(splits):
        abl = _read_json(res / ABLATION_JSON) or {}
        figs, skipped = _figures_for(run_dir, split, figures)
        if "similarity" in figs:
            shared_figs.setdefault("similarity", figs["similarity"])
        body.append(f'<h2 id="split-{k}">Results: {e(split)}</h2>')
        body.append("<h3>Ablation</h3>" + _ablation_section(split, abl))
        body.append(_fig(figs, "thresholds"))
        body.append(_sweep_section(res))
        body.append("<h3>Per class</h3>" + _fig(figs, "per_class") + _per_class_section(res))
        ex = [n for n in ("example_best", "layers_best", "example_median", "layers_median", "example_worst", "layers_worst") if n in figs]
        if ex:
            body.append("<h3>Examples</h3>" + _fig(figs, *ex))
        body.append("<h3>Pairwise</h3>" + _fig(figs, "pairwise") + _pairwise_section(res))
        fdir_index = _read_json(paths.figure_index(split)) if paths.figure_index(split).is_file() else None
        for w in (fdir_index or {}).get("warnings") or []:
            body.append(f'<p class="warn">Warning: {e(w)}</p>')
        if skipped:
            body.append("<details><summary>figures not drawn</summary><ul>"
                        + "".join(f"<li>{e(n)}: {e(r)}</li>" for n, r in skipped.items()) + "</ul></details>")

    body.append('<h2 id="selection">Class selection</h2>' + _fig(shared_figs, "similarity") + _selection_section(run_dir))
    body.append('<h2 id="models">Models</h2>' + (_models_section(run_dir) or '<p class="muted">no model metadata found.</p>'))
    cfg_path = paths.config
    cfg_text = cfg_path.read_text() if cfg_path.is_file() else "config.yaml not found"
    body.append(f'<h2 id="config">Configuration</h2><pre>{e(cfg_text)}</pre>')

    timings = _read_json(paths.timings) if paths.timings.is_file() else None
    body.append('<h2 id="timings">Timings</h2>'
                + (_kv_table(timings, ["step", "time"], _seconds) if isinstance(timings, dict) else '<p class="muted">timings.json not found (unfinished run?).</p>'))
    env = _read_json(paths.environment) if paths.environment.is_file() else None
    body.append('<h2 id="environment">Environment</h2>'
                + (_kv_table(env, ["", "value"]) if isinstance(env, dict) else '<p class="muted">environment.json not found.</p>'))

    page = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        # No scripts, no remote loads: only inline style and data: images.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>repcam report: {e(name)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
    out = Path(path) if path is not None else paths.report
    write_text(out, page)
    return out
