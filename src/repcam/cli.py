"""Command line: ``repcam demo``, ``repcam run CONFIG``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from repcam.config import ConfigError, demo_config, load_config
from repcam.data.base import DataError
from repcam.run import Run, RunError

app = typer.Typer(add_completion=False, help="Class activation maps by representative class selection and multi-layer fusion.")
console = Console(stderr=True)


def _execute(cfg, run_dir: Path, device: Optional[str], progress: bool) -> None:
    if device:
        cfg.device = device
    try:
        run = Run(cfg, run_dir, console=console, show_progress=progress)
        run.run()
    except (ConfigError, DataError, RunError, ValueError, FileNotFoundError) as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    for split in cfg.data.eval_splits:
        md = (run_dir / "results" / split / "ablation.md").read_text()
        typer.echo(md)
    console.print(f"results in {run_dir}/results, total {run.timings.get('total', 0):.0f} s")


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), help="Where models, maps and tables go; a rerun resumes."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The full ablation (Table 2) on the built-in parts world with a tiny CNN."""
    _execute(demo_config(), run_dir, device, progress)


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML or TOML run config."),
    run_dir: Optional[Path] = typer.Option(None, help="Defaults to runs/<name>."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda (overrides the config)."),
    progress: bool = typer.Option(True),
) -> None:
    """Run the experiment a config describes (any data set, backbone and table)."""
    try:
        cfg = load_config(config)
    except ConfigError as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None
    _execute(cfg, run_dir or Path("runs") / cfg.name, device, progress)


def main() -> None:  # pragma: no cover
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
