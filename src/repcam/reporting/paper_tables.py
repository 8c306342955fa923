"""The paper's Table 4 and Table 5 layouts, composed from finished run directories.

Nothing is recomputed: every number comes from a run's ``results/<split>/ablation.json`` (the rows
:mod:`repcam.reporting.tables` writes), the backbone's name from its ``config.resolved.yaml`` and the wall time from its
``timings.json``. :func:`load_run` reads one directory (the only I/O); :func:`table4` and :func:`table5` are pure
functions of what it read and return a :class:`PaperTable` (Markdown or CSV).

- **Table 4** (the ablation on small networks): rows Baseline (Grad-CAM), the run's strongest baseline, and
  Random, Rank-a, Rank-b, S-1..S-4 each as +F and +A+F; one mIoU column per run, each followed by its Δ against
  Grad-CAM and against that run's strongest baseline (paired 95% bootstrap intervals, as the ablation tables);
  the last row is each run's wall time.
- **Table 5** (comparison with existing methods) of one run: CAM, Grad-CAM, LayerCAM, ACoL, CBAM (Grad-CAM),
  S-1+F ("Our w/o fusion"), S-1+A+F ("Our") and an optional extra row (the recommended method), one group of
  columns per evaluated split (the paper's PASCAL-val / PASCAL-train columns).

A row a run does not have prints as "-" with a note under the table; a directory that is not a finished run is a
:class:`PaperTableError` with a one-line message naming it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from repcam.config import run_config_path
from repcam.method.methods import SELECTIONS
from repcam.store.layout import RunDir
from repcam.store.storage import ArtefactError, read_json
from repcam.reporting.tables import md_cell
from repcam.errors import PaperTableError  # noqa: F401 - defined in repcam.errors, importable from here

GRAD_CAM = "Grad-CAM"  # the paper's baseline row (repcam.evaluation.evaluate.BASELINE)
ACOL, CBAM = "ACoL", "CBAM (Grad-CAM)"  # the trained baselines' rows (repcam.evaluation.evaluate.BASELINE_ROWS)
TABLE4_SELECTIONS = ("Random", "Rank-a", "Rank-b", "S-1", "S-2", "S-3", "S-4")
TABLE4_ROWS = (GRAD_CAM, *(sel + suffix for sel in TABLE4_SELECTIONS for suffix in ("+F", "+A+F")))
TABLE5_ROWS = ("CAM", GRAD_CAM, "LayerCAM", ACOL, CBAM, "S-1+F", "S-1+A+F")
PAPER_NAMES = {  # Table 5's rows as the paper names them
    "CAM": "CAM [21]", GRAD_CAM: "Grad-CAM [15]", ACOL: "ACoL [20]", CBAM: "CBAM [18]",
    "S-1+F": "Our w/o fusion", "S-1+A+F": "Our",
}
STRONGEST = "Strongest baseline"  # Table 4's row of each run's strongest multi-class baseline
WALL_TIME = "Wall time"
_HINTS = {  # why a row may be missing, by row name
    ACOL: "train it with `baselines: [acol, cbam]` in the run's config",
    CBAM: "train it with `baselines: [acol, cbam]` in the run's config",
}
# Table 4's selections -> their ``selection.methods`` key, from the selection registry (repcam.method.methods).
_SELECTION_KEYS = {m.display: m.key for m in SELECTIONS.values() if m.display in TABLE4_SELECTIONS}


@dataclass
class RunResults:
    """What the tables need from one finished run directory."""

    path: Path
    backbone: str
    wall_s: float | None
    rows: dict[str, dict[str, dict[str, Any]]]  # split -> method -> the ablation.json row
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or self.backbone


@dataclass
class PaperTable:
    """One of the paper's tables as text cells: title, header, rows (first cell the row name) and notes."""

    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def cell(self, row: str, column: str) -> str:
        """The cell of the row whose first cell is ``row``, in the column headed ``column``."""
        line = next(r for r in self.rows if r[0] == row)
        return line[self.header.index(column)]

    def markdown(self) -> str:
        """The table as Markdown: a ``##`` title, the pipe table, then the notes as a list."""
        lines = [f"## {self.title}", "", "| " + " | ".join(map(md_cell, self.header)) + " |", "|" + "|".join("---" for _ in self.header) + "|"]
        lines += ["| " + " | ".join(map(md_cell, r)) + " |" for r in self.rows]
        if self.notes:
            lines += ["", "Notes:"] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """The header and rows as CSV text (title and notes left out)."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.header)
        writer.writerows(self.rows)
        return buf.getvalue()


# ---- reading ---------------------------------------------------------------------------------------------------------

def evaluated_splits(run_dir: str | Path) -> list[str]:
    """The splits with a ``results/<split>/ablation.json``, sorted."""
    root = RunDir(run_dir).results_root
    return sorted(p.parent.name for p in root.glob("*/ablation.json")) if root.is_dir() else []


def load_run(run_dir: str | Path, splits: Sequence[str]) -> RunResults:
    """The config's backbone, the wall time and ``splits``' ablation rows of a finished run, or a one-line error."""
    run = RunDir(run_dir)
    where = str(run_dir)
    if not run.root.is_dir():
        raise PaperTableError(f"{where}: not a directory (give a finished run directory of `repcam run`)")
    config = run_config_path(run.root)
    if not config.is_file():
        seeds = sorted(p.name for p in run.root.glob("seed-*") if p.is_dir())
        if seeds:
            raise PaperTableError(f"{where}: a `--seeds` directory, not one run; pass its seed folders ({', '.join(seeds)})")
        raise PaperTableError(f"{where}: not a repcam run directory (no {run.resolved_config.name})")
    try:
        timings = read_json(run.timings)
    except FileNotFoundError:
        raise PaperTableError(f"{where}: not a finished run (no timings.json: interrupted or still running); "
                              "rerun `repcam run` on it to finish it") from None
    except (OSError, ValueError) as e:
        raise PaperTableError(f"{where}: timings.json cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(timings, dict) or not _is_number(timings.get("total")):
        raise PaperTableError(f"{where}: not a finished run (timings.json has no total); rerun `repcam run` on it to finish it")
    try:
        cfg = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise PaperTableError(f"{where}: {config.name} cannot be read ({type(e).__name__})") from None
    backbone = cfg.get("backbone") if isinstance(cfg, dict) else None
    name = backbone.get("name") if isinstance(backbone, dict) else None
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for split in splits:
        if not run.ablation(split).is_file():
            have = ", ".join(evaluated_splits(run.root)) or "none"
            raise PaperTableError(f"{where}: no results for split {split!r} (evaluated splits: {have})")
        try:
            table = run.read_rows(split)
        except ArtefactError as e:
            raise PaperTableError(str(e)) from None
        if not isinstance(table, list) or not all(isinstance(r, dict) and "method" in r and "miou" in r for r in table):
            raise PaperTableError(f"{run.ablation(split)}: rows without 'method' and 'miou'; damaged file, rerun `repcam run` to rewrite it")
        rows[split] = {r["method"]: r for r in table}
    return RunResults(run.root, str(name) if name else "?", float(timings["total"]), rows)


def load_runs(run_dirs: Sequence[str | Path], splits: Sequence[str]) -> list[RunResults]:
    """:func:`load_run` of each directory; runs that share a backbone get their directory name in their label."""
    runs = [load_run(d, splits) for d in run_dirs]
    names = [r.backbone for r in runs]
    for r in runs:
        if names.count(r.backbone) > 1:
            r.label = f"{r.backbone} ({r.path.name})"
    labels = [r.label for r in runs]
    for r in runs:
        if labels.count(r.label) > 1:  # the same backbone in two folders of the same name
            r.label = f"{r.backbone} ({r.path})"
    return runs


# ---- formatting ------------------------------------------------------------------------------------------------------

def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def pct(x: Any) -> str:
    """A fraction as a percentage with two decimals ("-" when absent)."""
    return f"{100 * x:.2f}" if _is_number(x) else "-"


def delta(row: Mapping[str, Any] | None, suffix: str = "") -> str:
    """``diff<suffix>`` with its interval: "+1.23 [+0.40, +2.10]", " (n.s.)" when the interval contains 0."""
    if row is None or not _is_number(row.get("diff" + suffix)):
        return "-"
    d, lo, hi = row["diff" + suffix], row.get("ci_low" + suffix), row.get("ci_high" + suffix)
    if not (_is_number(lo) and _is_number(hi)):
        return f"{100 * d:+.2f}"
    mark = "" if row.get("significant" + suffix, not lo <= 0 <= hi) else " (n.s.)"
    return f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]{mark}"


def seconds(s: float | None) -> str:
    """A wall time for a table cell: seconds below 2 minutes, minutes above; "-" when unknown."""
    if s is None:
        return "-"
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def strongest_baseline(rows: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The run's strongest multi-class baseline, as its ablation rows record it."""
    return next((r["strongest_baseline"] for r in rows.values() if r.get("strongest_baseline")), None)


def _missing_note(methods: Sequence[str], where: str) -> str:
    """One note for the rows a run lacks, with what would add them."""
    hints = list(dict.fromkeys(_HINTS[m] for m in methods if m in _HINTS))
    keys = [_SELECTION_KEYS[s] for s in dict.fromkeys(m.split("+", 1)[0] for m in methods) if s in _SELECTION_KEYS]
    if keys:
        hints.append("selection.methods lacks " + ", ".join(keys))
    return f"{where}: no {', '.join(methods)} (printed as -)" + (f"; {'; '.join(hints)}" if hints else "")


_DELTA_NOTE = "Δ: difference in mIoU points with a paired 95% bootstrap interval over images; (n.s.): the interval contains 0."


def _wall_note() -> str:
    return ("Wall time: timings.json's total, i.e. the last `repcam run` on the directory; a resumed run counts only what "
            "that invocation computed.")


# ---- the tables ------------------------------------------------------------------------------------------------------

def table4(runs: Sequence[RunResults], split: str = "val", intervals: bool = True) -> PaperTable:
    """The paper's Table 4 layout over ``runs`` (one column per run) on ``split``."""
    if not runs:
        raise PaperTableError("Table 4 needs at least one run directory")
    header = ["Method"]
    columns = []  # per run: (run, rows, strongest or None, with the strongest column)
    notes: list[str] = []
    for run in runs:
        rows = run.rows[split]
        strongest = strongest_baseline(rows)
        vs_strongest = intervals and strongest is not None and strongest != GRAD_CAM
        header.append(run.label)
        if intervals:
            header.append(f"{run.label}: Δ vs Grad-CAM [95% CI]")
        if vs_strongest:
            header.append(f"{run.label}: Δ vs {strongest} (strongest baseline) [95% CI]")
        columns.append((run, rows, strongest, vs_strongest))
        if strongest == GRAD_CAM:
            notes.append(f"{run.label}: Grad-CAM is the strongest baseline of this run.")
        elif strongest is None:
            notes.append(f"{run.label}: its rows do not name a strongest baseline (a run from before it was recorded).")

    missing: list[list[str]] = [[] for _ in runs]  # per run, the rows it lacks

    def cells(method: str, label: str) -> list[str]:
        line = [label]
        for k, (_run, rows, strongest, vs_strongest) in enumerate(columns):
            r = rows.get(method)
            if r is None:
                missing[k].append(method)
            line.append(pct(r["miou"]) if r else "-")
            if intervals:
                line.append("baseline" if method == GRAD_CAM and r else delta(r))
            if vs_strongest:
                line.append("strongest baseline" if method == strongest and r else delta(r, "_strongest"))
        return line

    body = [cells(GRAD_CAM, "Baseline (Grad-CAM)")]
    body.append(_strongest_line(columns, intervals))
    for method in TABLE4_ROWS[1:]:
        body.append(cells(method, method))
    wall = [WALL_TIME]
    for run, _rows, _strongest, vs_strongest in columns:
        wall += [seconds(run.wall_s)] + [""] * (int(intervals) + int(vs_strongest))
    body.append(wall)
    for run, lacking in zip(runs, missing):
        if lacking:
            notes.append(_missing_note(lacking, f"{run.label} ({run.path}/results/{split}/ablation.json)"))
    notes += ([_DELTA_NOTE] if intervals else []) + [_wall_note()]
    title = f"Table 4 layout: mIoU (%) on {split}, one column per run"
    return PaperTable(title, header, body, notes)


def _strongest_line(columns, intervals: bool) -> list[str]:
    line = [STRONGEST]
    for _run, rows, strongest, vs_strongest in columns:
        r = rows.get(strongest) if strongest else None
        line.append(f"{pct(r['miou'])} ({strongest})" if r else "-")
        if intervals:
            line.append("baseline" if strongest == GRAD_CAM else delta(r))
        if vs_strongest:
            line.append("strongest baseline")
    return line


def table5(run: RunResults, splits: Sequence[str] = ("val",), recommended: str | None = None, intervals: bool = True) -> PaperTable:
    """The paper's Table 5 view of one run: its comparison rows and ``recommended`` (an extra row), per split."""
    if not splits:
        raise PaperTableError("Table 5 needs at least one split")
    methods = list(TABLE5_ROWS)
    if recommended and recommended not in methods:
        methods.append(recommended)
    header = ["Method", "Paper's row", "Network"]
    strongest = {s: strongest_baseline(run.rows[s]) for s in splits}
    for s in splits:
        header.append(f"mIoU {s}")
        if intervals:
            header.append(f"Δ vs Grad-CAM {s} [95% CI]")
            if strongest[s] not in (None, GRAD_CAM):
                header.append(f"Δ vs {strongest[s]} (strongest baseline) {s} [95% CI]")
    body: list[list[str]] = []
    missing: dict[str, list[str]] = {s: [] for s in splits}
    for method in methods:
        label = f"{method} (recommended)" if method == recommended else method
        line = [label, PAPER_NAMES.get(method, "not in the paper"), run.backbone]
        for s in splits:
            r = run.rows[s].get(method)
            if r is None:
                missing[s].append(method)
            line.append(pct(r["miou"]) if r else "-")
            if intervals:
                line.append("baseline" if method == GRAD_CAM and r else delta(r))
                if strongest[s] not in (None, GRAD_CAM):
                    line.append("strongest baseline" if method == strongest[s] and r else delta(r, "_strongest"))
        body.append(line)
    notes = [_missing_note(m, f"{run.path}/results/{s}/ablation.json") for s, m in missing.items() if m]
    notes += [_DELTA_NOTE] if intervals else []
    notes.append(f"One run ({run.path}), all rows on its backbone {run.backbone} (the paper uses each method's best backbone); "
                 f"wall time {seconds(run.wall_s)}.")
    notes.append(_wall_note())
    title = f"Table 5 layout: mIoU (%) on {', '.join(splits)}"
    return PaperTable(title, header, body, notes)


def compose(run_dirs: Sequence[str | Path], table: int, splits: Sequence[str] = ("val",), recommended: str | None = None,
            intervals: bool = True) -> PaperTable:
    """Read the directories and build Table ``table`` (4 or 5); every error is a one-line :class:`PaperTableError`."""
    if table == 4:
        if recommended:
            raise PaperTableError("--recommended is a Table 5 row; Table 4 has the paper's fixed rows")
        if len(splits) != 1:
            raise PaperTableError(f"Table 4 is one split (the paper's is val); got {len(splits)}: run it once per split")
        return table4(load_runs(run_dirs, splits), splits[0], intervals)
    if table == 5:
        if len(run_dirs) != 1:
            raise PaperTableError(f"Table 5 is the view of one run; got {len(run_dirs)} directories")
        return table5(load_run(run_dirs[0], splits), splits, recommended, intervals)
    raise PaperTableError(f"--table must be 4 or 5, got {table}")
