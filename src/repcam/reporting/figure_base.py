"""What every figure of :mod:`repcam.reporting.figures` shares: a figure on its own Agg canvas, label text safe
from mathtext, and saving (the formats, the file name, no date or software metadata in the file)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from repcam.store.storage import atomic_write

FORMATS = ("png", "pdf", "svg")


def new_figure(**kwargs: Any) -> Figure:
    """A figure on its own Agg canvas: no pyplot, no global backend switch, no display needed."""
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def label_text(s: Any, width: int | None = None) -> str:
    """Text for a matplotlib label: ``$`` escaped so user strings are never parsed as mathtext; optionally wrapped."""
    s = str(s)
    if width:
        s = "\n".join(textwrap.wrap(s, width, break_long_words=True, break_on_hyphens=False) or [""])
    return s.replace("$", r"\$")


def _out_path(path: str | Path, fmt: str | None) -> Path:
    p = Path(path)
    if fmt is not None:
        fmt = fmt.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"unknown figure format {fmt!r}; choose one of {', '.join(FORMATS)}")
        return p.with_suffix("." + fmt) if p.suffix.lower().lstrip(".") != fmt else p
    suffix = p.suffix.lower().lstrip(".")
    if suffix in FORMATS:
        return p
    return p.with_name(p.name + ".png")


def finish_figure(fig: Figure, path: str | Path | None, fmt: str | None, dpi: int) -> Figure | Path:
    """``fig`` itself when ``path`` is None; else the path it is saved to (PNG unless the path's suffix or ``fmt`` says
    ``pdf`` or ``svg``; parent folders made; no date or software in the file)."""
    if path is None:
        return fig
    out = _out_path(path, fmt)
    kind = out.suffix.lstrip(".").lower()
    meta = {"Software": None} if kind == "png" else ({"Date": None} if kind == "svg" else {"CreationDate": None})
    # Atomically: a full disk leaves the older figure (or none), never half a PNG, and says so in one line.
    atomic_write(out, lambda tmp: fig.savefig(tmp, format=kind, dpi=dpi, bbox_inches="tight", metadata=meta))
    return out
