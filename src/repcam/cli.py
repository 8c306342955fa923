"""Command line: ``repcam demo``, ``repcam run CONFIG``."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from repcam.config import ConfigError, demo_config, load_config, validate
from repcam.data.base import DataError
from repcam.run import Run, RunError
from repcam.rundir import RunDirLocked, locked
from repcam.storage import ArtefactError, slug

app = typer.Typer(add_completion=False, help="Class activation maps by representative class selection and multi-layer fusion.")
console = Console(stderr=True, soft_wrap=True)  # never wrap: an error stays one line in a log or pipe


def _note(msg: str) -> None:
    console.print(f"[yellow]note:[/] {msg}")


def _lock(stack: ExitStack, run_dir: Path) -> None:
    """Hold ``run_dir``'s lock until ``stack`` closes, or exit with the one-line error naming its holder."""
    try:
        stack.enter_context(locked(run_dir, _note))
    except RunDirLocked as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


def _run_one(cfg, run_dir: Path, progress: bool) -> Run:
    with ExitStack() as stack:  # one lock over the run and its report: no other writer in between
        try:
            run = Run(cfg, run_dir, console=console, show_progress=progress)
            stack.enter_context(locked(run_dir, _note))
            run.run()
        except (ConfigError, DataError, RunError, RunDirLocked, ValueError, FileNotFoundError) as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
        try:
            from repcam.report import write_report

            console.print(f"report: {write_report(run_dir)}")
        except Exception as e:  # noqa: BLE001 - the results are on disk; a failed report must not fail the run
            console.print(f"[yellow]warning:[/] report not written: {e}")
    return run


def _execute(cfg, run_dir: Path, device: Optional[str], progress: bool, seeds: int = 1, executor: Optional[str] = None,
             workers: Optional[int] = None, address: Optional[str] = None) -> None:
    if device:
        cfg.device = device
    ex = cfg.execution
    ex.kind = executor if executor is not None else ex.kind
    ex.workers = workers if workers is not None else ex.workers
    ex.address = address if address is not None else ex.address
    try:
        validate(cfg, "command line")
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    if seeds < 1:
        console.print(f"[red]error:[/] --seeds must be >= 1, got {seeds}")
        raise typer.Exit(2)
    if seeds == 1:
        run = _run_one(cfg, run_dir, progress)
        for split in cfg.data.eval_splits:
            typer.echo((run_dir / "results" / slug(split) / "ablation.md").read_text())
        console.print(f"results in {run_dir}/results, total {run.timings.get('total', 0):.0f} s")
        return
    from repcam.seeds import seed_configs, seed_dirs, write_seed_tables

    seed_list = [cfg.seed + k for k in range(seeds)]
    dirs = seed_dirs(run_dir, seed_list)
    with ExitStack() as stack:
        _lock(stack, run_dir)  # the seed folders get their own locks; this one guards the tables over seeds
        for s, c in seed_configs(cfg, seed_list).items():
            console.print(f"[bold]seed {s}[/] -> {dirs[s]}")
            _run_one(c, dirs[s], progress)
        for split in cfg.data.eval_splits:
            typer.echo(write_seed_tables(run_dir, split, seed_list))
    console.print(f"per-seed runs in {run_dir}/seed-*, tables over seeds in {run_dir}/results/<split>/seeds.md")


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), help="Where models, maps and tables go; a rerun resumes."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    seeds: int = typer.Option(1, help="Repeat with this many seeds (RUN_DIR/seed-K each) and tabulate mean ± std."),
    executor: Optional[str] = typer.Option(None, help="Where pair models and maps are computed: inprocess, process or ray."),
    workers: Optional[int] = typer.Option(None, help="Parallel workers for --executor process/ray."),
    address: Optional[str] = typer.Option(None, help="An existing Ray cluster's address (default: start a local one)."),
) -> None:
    """The full ablation (Table 2) on the built-in parts world with a tiny CNN."""
    _execute(demo_config(), run_dir, device, progress, seeds, executor, workers, address)


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML or TOML run config."),
    run_dir: Optional[Path] = typer.Option(None, help="Defaults to runs/<name>."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda (overrides the config)."),
    progress: bool = typer.Option(True),
    seeds: int = typer.Option(1, help="Repeat with seeds SEED..SEED+N-1 (RUN_DIR/seed-K each) and tabulate mean ± std."),
    executor: Optional[str] = typer.Option(None, help="Where pair models and maps are computed: inprocess, process or ray."),
    workers: Optional[int] = typer.Option(None, help="Parallel workers for --executor process/ray."),
    address: Optional[str] = typer.Option(None, help="An existing Ray cluster's address (default: start a local one)."),
) -> None:
    """Run the experiment a config describes (any data set, backbone and table)."""
    try:
        cfg = load_config(config)
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    _execute(cfg, run_dir or Path("runs") / cfg.name, device, progress, seeds, executor, workers, address)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory (finished, or partly: missing parts are noted in the page)."),
    figures: bool = typer.Option(True, help="Rebuild the figures into RUN_DIR/figures (else embed the ones already there)."),
    screenshot: Optional[Path] = typer.Option(None, help="Also save a PNG screenshot of the page's top (needs Chromium)."),
) -> None:
    """Write RUN_DIR/report.html: one self-contained page (tables, figures, config, timings; no network, no JS)."""
    from repcam.report import screenshot as take_screenshot
    from repcam.report import write_report

    with ExitStack() as stack:
        if run_dir.is_dir():
            _lock(stack, run_dir)  # it writes figures/ and report.html into the run directory
        try:
            path = write_report(run_dir, figures=figures)
        except (FileNotFoundError, ArtefactError) as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
    console.print(f"report: {path}")
    if screenshot is not None:
        try:
            console.print(f"screenshot: {take_screenshot(path, screenshot)}")
        except (RuntimeError, OSError) as e:
            console.print(f"[red]error:[/] screenshot failed: {e}")
            raise typer.Exit(1) from None


@app.command()
def explain(
    image: Path = typer.Argument(..., help="Any image PIL reads (any size)."),
    run: Path = typer.Option(..., "--run", help="A run directory with trained models (from `repcam run` or `repcam demo`)."),
    cls: Optional[list[str]] = typer.Option(None, "--class", help="Class to explain (repeatable); default: every class scored >= --min-score."),
    method: Optional[str] = typer.Option(None, help="Selection whose representative classes to use (e.g. S-1); default: the run's best +A+F row."),
    min_score: float = typer.Option(0.5, help="Without --class: explain the classes the multi-class model scores at least this high."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: RUN/explain)."),
    fmt: str = typer.Option("png", help="png, pdf or svg."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
) -> None:
    """Overlay figure of one image: each representative class's map, their fusion and Grad-CAM, per class."""
    from repcam.explain import Explainer, ExplainError

    folder = out or run / "explain"
    with ExitStack() as stack:
        if run.is_dir() and folder.resolve().is_relative_to(run.resolve()):
            _lock(stack, run)  # the figures go into the run directory
        try:
            explainer = Explainer.from_run(run, method, device)
            explanations = explainer.explain(image, cls or None, min_score)
        except (ExplainError, ArtefactError) as e:
            console.print(f"[red]error:[/] {e}")
            raise typer.Exit(2) from None
        for ex in explanations:
            # The run's class -> file-name mapping: two classes never share a figure (e.g. 'x y' and 'x_y').
            path = ex.save(folder / f"{slug(image.stem)}_{explainer.files.stem(ex.cls)}.{fmt.lower()}", fmt=fmt)
            typer.echo(f"{ex.cls}\tp={ex.score:.3f}\t{path}")


def main() -> None:  # pragma: no cover
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
