"""``repcam explain IMAGE... --model NAME``: files, folders and globs explained in batches with a progress bar, one
figure per image and class."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from repcam.errors import StockError
from repcam.stock.explainer import StockExplainer
from repcam.stock.images import expand_images
from repcam.stock.methods import resolve_method
from repcam.stock_model import short_name

def batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Consecutive slices of ``items`` of at most ``size`` elements each."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def explain_files(
    specs: Sequence[str],
    model: str,
    *,
    weights: str | None = None,
    classes: Sequence[str] | None = None,
    method: str = "layercam",
    layers: Sequence[str] | None = None,
    out: Path = Path("explain"),
    save_npy: bool = False,
    topk: int = 3,
    rivals: int | None = None,
    references: str | None = None,
    tta: bool = False,
    batch_size: int = 8,
    fmt: str = "png",
    device: str = "auto",
    console: Any = None,
    echo: Callable[[str], None] = print,
    download: bool = False,
    note: Callable[[str], None] | None = None,
) -> list[Path]:
    """``repcam explain IMAGE... --model NAME``: every argument validated first (images, method, format, weights,
    classes, layers), then the images in batches with a progress bar; one figure per image and class in ``out``."""
    from repcam.reporting.figures import FORMATS

    method = resolve_method(method, "--method", "with --model ")
    if fmt.lower() not in FORMATS:
        raise StockError(f"unknown --fmt {fmt!r}; choose one of {', '.join(FORMATS)}")
    if batch_size < 1:
        raise StockError(f"--batch-size must be >= 1, got {batch_size}")
    if download and weights is not None:
        raise StockError("pass --download (fetch the ImageNet weights) or --weights FILE, not both")
    if weights is not None and not Path(weights).is_file():
        raise StockError(f"weight file {weights} does not exist; pass the path of a local state-dict file")
    if out.exists() and not out.is_dir():
        raise StockError(f"--out {out} is a file, not a folder")
    paths = expand_images(specs)
    if download:
        from repcam.stock_model import load_stock_model

        model = load_stock_model(model, "download", note=note)  # type: ignore[assignment] - a StockModel is accepted
    explainer = StockExplainer(model, method, layers or "auto", weights=weights, topk=topk, rivals=rivals, device=device,
                               references=references, tta=tta)
    wanted = explainer.resolve_classes(list(classes) if classes else None)
    try:  # the last check before any map is computed: the output folder must be creatable
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StockError(f"cannot create the output folder --out {out}: {e.strerror or e}") from None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    written: list[Path] = []
    with Progress(TextColumn("explain"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                  transient=True, disable=console is None or not console.is_terminal) as bar:
        task = bar.add_task("images", total=len(paths))
        for chunk in batches(paths, batch_size):
            for p, ex in zip(chunk, explainer.explain(chunk, wanted)):
                for name, score, fig in zip(ex.classes, ex.scores, ex.save(out, None, fmt, save_npy)):
                    echo(f"{p}\t{short_name(name)}\tp={score:.3f}\t{fig}")
                    written.append(fig)
            bar.advance(task, len(chunk))
    return written
