"""The HTML pieces of a run's report (:mod:`repcam.reporting.report`): the page with its inline CSS, escaping,
tables, embedded images and the number formats of the cells.

Every string that comes from the run is passed through :func:`e` (:func:`html.escape`); images are base64 ``data:``
URIs, so the page needs no other file.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

IMAGE_MIME = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}

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


def finite(x: Any) -> bool:
    """Whether ``x`` is a finite int or float (not a bool): a number a cell can show."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def pct(x: Any, digits: int = 2) -> str:
    """A fraction as a percentage with ``digits`` decimals (no sign); ``-`` for anything not a finite number."""
    return f"{100 * x:.{digits}f}" if finite(x) else "-"


def duration(s: Any) -> str:
    """Seconds as ``12.3 s``, or ``300 s (5.0 min)`` from two minutes on; anything else escaped as it is."""
    if not finite(s):
        return e(s)
    return f"{s:.1f} s" if s < 120 else f"{s:.0f} s ({s / 60:.1f} min)"


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


def heat_style(v: float | None, lo: float = 0.0, hi: float = 1.0) -> str | None:
    """A background colour for a value in [lo, hi] (numbers only, never user text)."""
    if v is None or not math.isfinite(v):
        return None
    t = 0.0 if hi <= lo else min(max((v - lo) / (hi - lo), 0.0), 1.0)
    return f"background: rgba(42, 93, 176, {0.08 + 0.5 * t:.3f})"


PALETTE_ABOVE = 400_000
"""A PNG larger than this many bytes is embedded as a 256-colour palette PNG: the map overlays of the example and layer
figures are 1-1.5 MB each as drawn and 3-5x smaller as palette PNGs, which keeps a report with several splits quick
to open (the 3-split Table 5 report: 22.7 MB, 6.6 s in headless Chromium). The figure files keep full colour."""


def data_uri(path: Path) -> str:
    """The image file at ``path`` as a base64 ``data:`` URI (png, svg, jpeg, gif or webp; anything else is refused)."""
    mime = IMAGE_MIME.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path.name}: cannot embed a {path.suffix} file as an image")
    data = path.read_bytes()
    if mime == "image/png" and len(data) > PALETTE_ABOVE:
        data = _palette_png(data)
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _palette_png(data: bytes) -> bytes:
    """``data`` (a PNG) re-encoded with a 256-colour palette, or unchanged when that is not smaller or not possible."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            buf = io.BytesIO()
            im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
    except (OSError, ValueError):
        return data
    return buf.getvalue() if buf.tell() < len(data) else data


def figure_html(path: Path, caption: str, alt: str | None = None) -> str:
    """A ``<figure>``: the image at ``path`` embedded, with its escaped caption (and alt text, the caption unless given)."""
    return (f'<figure><img src="{data_uri(path)}" alt="{e(alt or caption)}">'
            f"<figcaption>{e(caption)}</figcaption></figure>")


def figures_html(figs: Mapping[str, tuple[Path, str]], *names: str) -> str:
    """The figures of ``figs`` ({name: (path, caption)}) named by ``names``, in that order; the ones missing left out."""
    return "".join(figure_html(*figs[n]) for n in names if n in figs)


def kv_table(d: Mapping[str, Any], header: Sequence[str], fmt=lambda v: v) -> str:
    """A two-column table of ``d``'s items, each value through ``fmt``."""
    return table(header, [[k, fmt(v)] for k, v in d.items()], left=2)


def report_page(name: str, body: Sequence[str]) -> str:
    """The whole HTML page of the report of run ``name``: ``body``'s non-empty parts, one a line, with the inline CSS."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        # No scripts, no remote loads: only inline style and data: images.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>repcam report: {e(name)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(b for b in body if b)
        + "\n</body></html>\n"
    )
