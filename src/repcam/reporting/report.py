"""One self-contained HTML report of a run: tables, figures (embedded as data URIs), config, timings, environment.

The file needs no network, no JavaScript and no other file: images are base64 ``data:`` URIs and the CSS is
inline. A Content-Security-Policy meta tag forbids scripts and any remote load. Every string that comes from
the run (class names, method names, ids, config values, notes, file names) is passed through
:func:`html.escape`, so a class called ``<script>...`` shows as text.

The page is put together here; :mod:`~repcam.reporting.report_data` reads the run,
:mod:`~repcam.reporting.report_sections` renders each section and :mod:`~repcam.reporting.report_html` holds the
HTML pieces (escaping, tables, images, the page itself).

:func:`repcam.reporting.browser.screenshot` renders a report to PNG with headless Chromium (for docs).
"""

from __future__ import annotations

from pathlib import Path

from repcam import __version__ as _version
from repcam.reporting.report_data import config_dict, figures_for, read_json, run_splits
from repcam.reporting.report_html import duration, e, figures_html, kv_table, report_page
from repcam.reporting.report_sections import (
    ablation_section,
    models_section,
    pairwise_section,
    per_class_section,
    selection_section,
    sweep_section,
)
from repcam.store.layout import ABLATION_JSON, RunDir
from repcam.store.layout import REPORT_NAME  # noqa: F401 - re-exported: report.REPORT_NAME was defined here
from repcam.store.rundir import stale_reason


def write_report(run_dir: str | Path, *, figures: bool = True, path: str | Path | None = None, reuse_figures: bool = False) -> Path:
    """Write ``run_dir/report.html`` (or ``path``) and return its path.

    ``figures=True`` (re)builds the figures with :func:`repcam.reporting.run_figures.run_figures` first; ``False`` embeds the
    ones already in ``run_dir/figures``; with ``reuse_figures`` as well, only the splits whose figures are missing
    or were drawn from other inputs are redrawn (a resumed run). Missing pieces of a run are reported in the page,
    never fatal.
    """
    from repcam.store.storage import write_text

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    cfg = config_dict(run_dir) or {}
    name = str(cfg.get("name") or run_dir.name)
    splits = run_splits(run_dir)
    # Results an earlier config left behind (a split no longer evaluated, other settings) are not this run's:
    # left out of the page, and listed with the reason.
    stale = {str(d.relative_to(run_dir)): r for s, d in splits if (r := stale_reason(cfg, s, read_json(d / ABLATION_JSON) or {}))}
    splits = [(s, d) for s, d in splits if str(d.relative_to(run_dir)) not in stale]
    paths = RunDir(run_dir)
    notes = read_json(paths.notes) if paths.notes.is_file() else None
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
        body += _split_parts(run_dir, k, split, res, figures, shared_figs, reuse_figures)

    body.append('<h2 id="selection">Class selection</h2>' + figures_html(shared_figs, "similarity") + selection_section(run_dir))
    body.append('<h2 id="models">Models</h2>' + (models_section(run_dir) or '<p class="muted">no model metadata found.</p>'))
    body += _run_parts(paths)
    out = Path(path) if path is not None else paths.report
    write_text(out, report_page(name, body))
    return out


def _split_parts(run_dir: Path, k: int, split: str, res: Path, figures: bool,
                 shared_figs: dict[str, tuple[Path, str]], reuse_figures: bool = False) -> list[str]:
    """The page's parts for the ``k``-th evaluated split (results folder ``res``); its similarity figure goes into
    ``shared_figs``, for the class selection section to show once."""
    paths = RunDir(run_dir)
    body: list[str] = []
    abl = read_json(res / ABLATION_JSON) or {}
    figs, skipped = figures_for(run_dir, split, figures, reuse=reuse_figures)
    if "similarity" in figs:
        shared_figs.setdefault("similarity", figs["similarity"])
    body.append(f'<h2 id="split-{k}">Results: {e(split)}</h2>')
    body.append("<h3>Ablation</h3>" + ablation_section(split, abl))
    body.append(figures_html(figs, "thresholds"))
    body.append(sweep_section(res))
    body.append("<h3>Per class</h3>" + figures_html(figs, "per_class") + per_class_section(res))
    ex = [n for n in ("example_best", "layers_best", "example_median", "layers_median", "example_worst", "layers_worst") if n in figs]
    if ex:
        body.append("<h3>Examples</h3>" + figures_html(figs, *ex))
    body.append("<h3>Pairwise</h3>" + figures_html(figs, "pairwise") + pairwise_section(res))
    fdir_index = read_json(paths.figure_index(split)) if paths.figure_index(split).is_file() else None
    for w in (fdir_index or {}).get("warnings") or []:
        body.append(f'<p class="warn">Warning: {e(w)}</p>')
    if skipped:
        body.append("<details><summary>figures not drawn</summary><ul>"
                    + "".join(f"<li>{e(n)}: {e(r)}</li>" for n, r in skipped.items()) + "</ul></details>")
    return body


def _run_parts(paths: RunDir) -> list[str]:
    """The page's parts on the run as a whole: its configuration, timings and environment."""
    body: list[str] = []
    cfg_path = paths.config
    cfg_text = cfg_path.read_text() if cfg_path.is_file() else "config.yaml not found"
    body.append(f'<h2 id="config">Configuration</h2><pre>{e(cfg_text)}</pre>')

    timings = read_json(paths.timings) if paths.timings.is_file() else None
    body.append('<h2 id="timings">Timings</h2>'
                + (kv_table(timings, ["step", "time"], duration) if isinstance(timings, dict) else '<p class="muted">timings.json not found (unfinished run?).</p>'))
    env = read_json(paths.environment) if paths.environment.is_file() else None
    body.append('<h2 id="environment">Environment</h2>'
                + (kv_table(env, ["", "value"]) if isinstance(env, dict) else '<p class="muted">environment.json not found.</p>'))
    return body
