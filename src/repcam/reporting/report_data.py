"""What a run's report (:mod:`repcam.reporting.report`) reads from the run directory: its JSON and CSV files, the
evaluated splits, the config, and the figures of a split (built first if asked)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

from repcam.reporting.report_html import IMAGE_MIME
from repcam.store.layout import ABLATION_JSON, FIGURE_INDEX, RunDir
from repcam.store.storage import ArtefactError

log = logging.getLogger(__name__)


def read_json(path: Path) -> Any:
    """The JSON at ``path``, or None (with a warning) where it cannot be read or parsed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        log.warning("cannot read %s: %s", path, err)
        return None


def read_csv(path: Path) -> list[list[str]] | None:
    """The rows of the CSV file at ``path``, or None where it cannot be read."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [row for row in csv.reader(f)]
    except OSError:
        return None


def run_splits(run_dir: Path) -> list[tuple[str, Path]]:
    """(split name, results folder) for every evaluated split, in the config's order first."""
    found: dict[Path, str] = {}
    res = RunDir(run_dir).results_root
    if res.is_dir():
        for d in sorted(p for p in res.iterdir() if (p / ABLATION_JSON).is_file()):
            data = read_json(d / ABLATION_JSON) or {}
            found[d] = str(data.get("split", d.name))
    order: list[Path] = []
    cfg = config_dict(run_dir)
    for s in ((cfg or {}).get("data") or {}).get("eval_splits") or []:
        d = RunDir(run_dir).results_dir(str(s))
        if d in found and d not in order:
            order.append(d)
    order += [d for d in found if d not in order]
    return [(found[d], d) for d in order]


def config_dict(run_dir: Path) -> dict | None:
    """The run's ``config.yaml`` as a dict, or None where it is missing, unreadable or not a mapping."""
    import yaml

    try:
        data = yaml.safe_load(RunDir(run_dir).config.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def figures_for(run_dir: Path, split: str, build: bool, *, reuse: bool = False) -> tuple[dict[str, tuple[Path, str]], dict[str, str]]:
    """{name: (path, caption)} and {name: reason skipped} for a split's figures, building them if asked (``reuse``:
    keeping those drawn from the same inputs, :func:`~repcam.reporting.run_figures.run_figures`)."""
    fdir = RunDir(run_dir).figures_dir(split)
    if build:
        try:
            from repcam.reporting.run_figures import run_figures

            run_figures(run_dir, split, fmt="png", reuse=reuse)
        except ArtefactError:  # a damaged or foreign artefact: refuse (one line), never draw from it
            raise
        except Exception as err:  # the report must still be written
            log.warning("figures for %s failed: %s", split, err)
            return {}, {"all figures": f"{type(err).__name__}: {err}"}
    index = read_json(fdir / FIGURE_INDEX) if (fdir / FIGURE_INDEX).is_file() else None
    if not index:
        return {}, {}
    for w in index.get("warnings") or []:
        log.warning("%s", w)
    figs = {}
    for name, info in (index.get("figures") or {}).items():
        p = fdir / Path(str(info.get("file", ""))).name  # never follow a path out of the folder
        if p.is_file() and p.suffix.lower() in IMAGE_MIME:
            figs[name] = (p, str(info.get("caption", name)))
    return figs, dict(index.get("skipped") or {})
