"""Command line: ``repcam demo``, ``repcam run CONFIG``, ``repcam explain``, ``repcam score``, ``repcam report``,
``repcam tables``.

Only typer and rich are imported here: every heavy module (torch, timm, the pipeline) is imported inside the command
that needs it, so ``repcam --help``, ``repcam --version`` and argument errors answer at once (issue 27;
``tests/test_import_graph.py`` keeps torch out, ``benchmarks/bench_cli_startup.py`` times it).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape

from repcam.errors import ArtefactError, ConfigError, DataError, RunDirLocked, ScoreError, WriteError

if TYPE_CHECKING:  # repcam.pipeline.run (timm, the engine) is imported only once a run starts: config errors come back fast
    from repcam.pipeline.run import Run

app = typer.Typer(add_completion=False, help="Class activation maps by representative class selection and multi-layer fusion.")
console = Console(stderr=True, soft_wrap=True)  # never wrap: an error stays one line in a log or pipe

INTERRUPTED = "interrupted; rerun the same command to resume"
DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda or cuda:N."
REPORT_HELP = "Write RUN_DIR/report.html and its figures when the run ends (--no-report: results only; `repcam report RUN_DIR` writes it later)."


def _version(value: bool) -> None:
    if value:
        from repcam import __version__

        typer.echo(f"repcam {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Class activation maps by representative class selection and multi-layer fusion."""
    _install_interrupt_handlers()


def _install_interrupt_handlers() -> None:
    """Ctrl-C (SIGINT) and SIGTERM print one line saying the work is kept, then end as before (exit 130 / 143).

    Only in this process: a worker forked from it keeps the default behaviour and prints nothing, so a Ctrl-C that
    reaches the whole process group gives one line, not one per worker.
    """
    owner = os.getpid()

    def handler(signum: int, frame: Any) -> None:
        if os.getpid() != owner:  # a forked worker inherited this handler
            signal.signal(signum, signal.SIG_DFL)
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signum)
            return
        print(f"{INTERRUPTED}", file=sys.stderr, flush=True)
        signal.signal(signum, signal.SIG_DFL)
        if signum == signal.SIGINT:
            raise KeyboardInterrupt  # unwinds: locks released, temporary files removed; exit 130 below
        os.kill(os.getpid(), signum)  # SIGTERM: die of the signal as before (143); the next run takes over the lock

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. called from a test runner's worker thread): leave it
            pass


def _expand_paths(command: Callable[..., Any]) -> Callable[..., Any]:
    """Expand a leading ``~`` in every path option and argument of ``command``: ``--run-dir=~/x`` reaches us unexpanded
    (the shell expands ``~`` only at the start of a word), and would otherwise become a folder literally named ``~``."""

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        return command(**{k: _expand(v) for k, v in kwargs.items()})

    wrapper.__signature__ = inspect.signature(command)  # type: ignore[attr-defined] - typer reads the options from it
    return wrapper


def _expand(value: Any) -> Any:
    if isinstance(value, Path):
        return value.expanduser()
    if isinstance(value, (list, tuple)):
        return type(value)(_expand(v) for v in value)
    return value


def _note(msg: str) -> None:
    console.print(f"[yellow]note:[/] {msg}")


def _lock(stack: ExitStack, run_dir: Path) -> None:
    """Hold ``run_dir``'s lock until ``stack`` closes, or exit with the one-line error naming its holder."""
    from repcam.store.rundir import locked

    try:
        stack.enter_context(locked(run_dir, _note))
    except RunDirLocked as e:
        console.print(f"[red]error:[/] {e}")
        raise typer.Exit(2) from None


def _fail(message: object) -> typer.Exit:
    """Print a one-line error (never wrapped, never read as markup) and return the exit to raise."""
    console.print(f"[red]error:[/] {escape(str(message))}", soft_wrap=True)
    return typer.Exit(2)


def _run_one(cfg, run_dir: Path, progress: bool, report: bool = True) -> Run:
    from repcam.pipeline.run import Run, RunError
    from repcam.store.rundir import locked

    with ExitStack() as stack:  # one lock over the run and its report: no other writer in between
        try:
            run = Run(cfg, run_dir, console=console, show_progress=progress)
            stack.enter_context(locked(run_dir, _note))
            run.run()
        except (ConfigError, DataError, RunError, RunDirLocked, ValueError, FileNotFoundError, WriteError) as e:
            raise _fail(e) from None
        if not report:  # --no-report: the results are complete without it; `repcam report` draws it any time later
            from repcam.store.layout import RunDir

            old = RunDir(run_dir).report
            stale = f"; {old} is from an earlier run and may not show these results" if old.is_file() else ""
            console.print(f"report: not written (--no-report){stale}; `repcam report {run_dir}` writes it", soft_wrap=True)
            return run
        try:
            from repcam.reporting.report import write_report

            console.print(f"report: {write_report(run_dir, reuse_figures=True)}")  # a resume redraws only what changed
        except Exception as e:  # noqa: BLE001 - the results are on disk; a failed report must not fail the run
            console.print(f"[yellow]warning:[/] report not written: {e}")
    return run


def _execute(cfg, run_dir: Path, device: Optional[str], progress: bool, seeds: int = 1, executor: Optional[str] = None,
             workers: Optional[int] = None, address: Optional[str] = None, report: bool = True) -> None:
    from repcam.config import validate
    from repcam.store.layout import ABLATION_MD, RunDir

    if device:
        cfg.device = device
    ex = cfg.execution
    ex.kind = executor if executor is not None else ex.kind
    ex.workers = workers if workers is not None else ex.workers
    ex.address = address if address is not None else ex.address
    try:
        validate(cfg, "command line")
    except ConfigError as e:
        raise _fail(e) from None
    if seeds < 1:
        console.print(f"[red]error:[/] --seeds must be >= 1, got {seeds}")
        raise typer.Exit(2)
    if seeds == 1:
        run = _run_one(cfg, run_dir, progress, report)
        for split in cfg.data.eval_splits:
            typer.echo(RunDir(run_dir).result(split, ABLATION_MD).read_text())
        console.print(f"results in {run_dir}/results, total {run.timings.get('total', 0):.0f} s")
        return
    from repcam.pipeline.seeds import seed_configs, seed_dirs, write_seed_tables

    seed_list = [cfg.seed + k for k in range(seeds)]
    dirs = seed_dirs(run_dir, seed_list)
    with ExitStack() as stack:
        _lock(stack, run_dir)  # the seed folders get their own locks; this one guards the tables over seeds
        for s, c in seed_configs(cfg, seed_list).items():
            console.print(f"[bold]seed {s}[/] -> {dirs[s]}")
            _run_one(c, dirs[s], progress, report)
        for split in cfg.data.eval_splits:
            typer.echo(write_seed_tables(run_dir, split, seed_list))
    console.print(f"per-seed runs in {run_dir}/seed-*, tables over seeds in {run_dir}/results/<split>/seeds.md")


@app.command()
@_expand_paths
def demo(
    run_dir: Path = typer.Option(Path("runs/demo"), help="Where models, maps and tables go; a rerun resumes."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP + " Default: the config's (auto)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    seeds: int = typer.Option(1, help="Repeat with this many seeds (RUN_DIR/seed-K each) and tabulate mean ± std."),
    executor: Optional[str] = typer.Option(None, help="Where pair models and maps are computed: inprocess, process or ray."),
    workers: Optional[int] = typer.Option(None, help="Parallel workers for --executor process/ray."),
    address: Optional[str] = typer.Option(None, help="An existing Ray cluster's address (default: start a local one)."),
    report: bool = typer.Option(True, help=REPORT_HELP),
) -> None:
    """The full ablation (Table 2) on the built-in parts world with a tiny CNN."""
    from repcam.config import demo_config

    _execute(demo_config(), run_dir, device, progress, seeds, executor, workers, address, report)


@app.command()
@_expand_paths
def run(
    config: Path = typer.Argument(..., help="YAML or TOML run config."),
    run_dir: Optional[Path] = typer.Option(None, help="Defaults to runs/<name>."),
    device: Optional[str] = typer.Option(None, help=DEVICE_HELP + " Default: the config's (auto)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    seeds: int = typer.Option(1, help="Repeat with seeds SEED..SEED+N-1 (RUN_DIR/seed-K each) and tabulate mean ± std."),
    executor: Optional[str] = typer.Option(None, help="Where pair models and maps are computed: inprocess, process or ray."),
    workers: Optional[int] = typer.Option(None, help="Parallel workers for --executor process/ray."),
    address: Optional[str] = typer.Option(None, help="An existing Ray cluster's address (default: start a local one)."),
    report: bool = typer.Option(True, help=REPORT_HELP),
) -> None:
    """Run the experiment a config describes (any data set, backbone and table)."""
    from repcam.config import load_config

    try:
        cfg = load_config(config)
    except ConfigError as e:
        raise _fail(e) from None
    _execute(cfg, run_dir or Path("runs") / cfg.name, device, progress, seeds, executor, workers, address, report)


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="A finished run directory (its config and stored models are reused)."),
    data: Path = typer.Option(..., "--data", help="A YAML file naming the other data set: kind, root, split, options, class_map (other name -> the run's), and optionally name."),
    name: Optional[str] = typer.Option(None, help="The split name the results get (default: the file's 'name', else its stem)."),
    progress: bool = typer.Option(True),
    report: bool = typer.Option(True, help=REPORT_HELP),
) -> None:
    """Score a finished run's stored models on another data set, as one more split of the run (cross_eval)."""
    import yaml

    from repcam.config import RESOLVED_CONFIG, load_config, validate
    from repcam.store.layout import ABLATION_MD, RunDir
    from repcam.store.storage import slug
    from repcam.data.cross import load_cross, parse_spec

    cfg_path = RunDir(run_dir).config
    if not cfg_path.is_file():
        raise _fail(f"{run_dir} is not a run directory (no {RESOLVED_CONFIG}); run `repcam run CONFIG --run-dir {run_dir}` first")
    try:
        cfg = load_config(cfg_path)
        values = yaml.safe_load(data.read_text(encoding="utf-8")) if data.is_file() else None
        if values is None or not isinstance(values, dict):
            raise ConfigError(f"{data}: " + ("not found" if not data.is_file() else "must be a mapping (kind, root, split, class_map)"))
        split = name or values.pop("name", None) or slug(data.stem)
        values.pop("name", None)
        if not isinstance(split, str) or not split:
            raise ConfigError(f"{data}: 'name' must be a non-empty string")
        if split == cfg.data.train_split or (split in cfg.data.eval_splits and split not in cfg.cross_eval):
            raise ConfigError(f"split name {split!r} is already a split of the run's own data set; pass --name")
        spec = parse_spec(values, str(data))  # a relative root is read from the working directory, as in a run config
        run_classes = RunDir(run_dir).read_similarity()["classes"]
        load_cross(spec, run_classes, str(data))  # every file and class name checked before any model is loaded
    except (ConfigError, DataError, ArtefactError, OSError, yaml.YAMLError) as e:
        raise _fail(" ".join(str(e).split())) from None
    cfg.cross_eval[split] = spec.to_dict()
    if split not in cfg.data.eval_splits:
        cfg.data.eval_splits.append(split)
    try:
        validate(cfg, str(data))
    except ConfigError as e:
        raise _fail(e) from None
    _run_one(cfg, run_dir, progress, report)
    typer.echo(RunDir(run_dir).result(split, ABLATION_MD).read_text())
    console.print(f"results in {RunDir(run_dir).results_dir(split)}; the run's config.resolved.yaml now lists it (cross_eval.{split})")


@app.command()
@_expand_paths
def report(
    run_dir: Path = typer.Argument(..., help="A run directory (finished, or partly: missing parts are noted in the page)."),
    figures: bool = typer.Option(True, help="Rebuild the figures into RUN_DIR/figures (else embed the ones already there)."),
    screenshot: Optional[Path] = typer.Option(None, help="Also save a PNG screenshot of the page's top (needs Chromium)."),
) -> None:
    """Write RUN_DIR/report.html: one self-contained page (tables, figures, config, timings; no network, no JS)."""
    from repcam.reporting.browser import screenshot as take_screenshot
    from repcam.reporting.report import write_report
    from repcam.store.storage import check_writable

    with ExitStack() as stack:
        try:
            if run_dir.is_dir():  # fail before building any figure if nothing can be written (a read-only run directory)
                check_writable(run_dir)
                _lock(stack, run_dir)  # it writes figures/ and report.html into the run directory
            path = write_report(run_dir, figures=figures)
        except (FileNotFoundError, ArtefactError, WriteError) as e:
            raise _fail(e) from None
        except OSError as e:
            raise _fail(f"cannot write the report into {run_dir}: {_os_reason(e)}; "
                        "copy the run directory somewhere writable and report on the copy") from None
    console.print(f"report: {path}")
    if screenshot is not None:
        try:
            console.print(f"screenshot: {take_screenshot(path, screenshot)}")
        except (RuntimeError, OSError) as e:
            console.print(f"[red]error:[/] screenshot failed: {e}")
            raise typer.Exit(1) from None


@app.command()
@_expand_paths
def explain(
    images: list[str] = typer.Argument(..., help="Images PIL reads (any size); with --model also folders and globs."),
    run: Optional[Path] = typer.Option(None, "--run", help="A run directory with trained models (from `repcam run` or `repcam demo`)."),
    model: Optional[str] = typer.Option(None, "--model", help="Instead of --run: a stock timm model name or torchvision/<name>."),
    weights: Optional[Path] = typer.Option(None, help="With --model: a local state-dict file (default: offline ImageNet weights)."),
    cls: Optional[list[str]] = typer.Option(None, "--class", help="Class to explain (repeatable; with --model a name or index); default: every class scored >= --min-score (--run), the top-k predictions (--model)."),
    method: Optional[str] = typer.Option(None, help="--run: the selection whose representative classes to use (e.g. S-1; default the run's best +A+F row). --model: gradcam, layercam (default), paper, contrast, contrast-layercam, gradcampp, xgradcam, hirescam, eigengradcam or cam."),
    layers: Optional[list[str]] = typer.Option(None, "--layers", help="With --model: target layer names (repeatable), or auto (default)."),
    min_score: Optional[float] = typer.Option(None, help="With --run and no --class: explain the classes scored at least this high (default 0.5)."),
    topk: Optional[int] = typer.Option(None, help="With --model and no --class: explain the k top predictions (default 3)."),
    rivals: Optional[int] = typer.Option(None, help="With --method contrast / contrast-layercam: contrast against this many top rival classes (default 3 / 4)."),
    references: Optional[str] = typer.Option(None, "--references", help="With --model and a contrast method: rivals (the image's top rivals, default), random, all (mean of all other classes) or head-least (least similar by the head's weights)."),
    tta: bool = typer.Option(False, "--tta", help="With --model: test-time augmentation (flip + scales 1.0, 0.5, 1.5, 2.0, summed)."),
    save_npy: bool = typer.Option(False, "--save-npy", help="With --model: also save each map as float32 .npy at the image's size."),
    batch_size: Optional[int] = typer.Option(None, help="With --model: images per batch (default 8)."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default: RUN/explain, or ./explain with --model)."),
    fmt: str = typer.Option("png", help="png, pdf or svg."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    progress: bool = typer.Option(True, help="Show a progress bar (with --model)."),
    download: bool = typer.Option(False, "--download", help="With --model: fetch the ImageNet weights if they are not cached (timm's Hugging Face hub / torchvision's URLs, into their standard caches); default: offline only."),
) -> None:
    """Overlay figures, one per image and class: a finished run's maps (--run) or a stock model's (--model)."""
    from repcam.reporting.figures import FORMATS

    images = [os.path.expanduser(i) for i in images]
    # Every argument is checked before a model is loaded or a map computed.
    fmt = fmt.lower().lstrip(".")
    if fmt not in FORMATS:
        console.print(f"[red]error:[/] --fmt {fmt!r} is not a figure format; choose one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    layers = [] if layers in (None, ["auto"]) else layers  # typer may pass [] or None for an unused list option
    if (run is None) == (model is None):
        console.print("[red]error:[/] pass exactly one of --run (a finished run's models) or --model (a stock timm/torchvision model)",
                      soft_wrap=True)
        raise typer.Exit(2)
    if model is not None:
        if min_score is not None:
            console.print("[red]error:[/] --min-score applies to --run only; with --model use --topk or --class", soft_wrap=True)
            raise typer.Exit(2)
        _explain_stock(images, model, weights, cls, method, layers, out, save_npy, topk, rivals, batch_size, fmt, device,
                       progress, download, references, tta)
        return
    stock_only = {"--weights": weights, "--layers": layers or None, "--topk": topk, "--rivals": rivals, "--batch-size": batch_size,
                  "--save-npy": save_npy or None, "--download": download or None, "--references": references, "--tta": tta or None}
    given = [k for k, v in stock_only.items() if v is not None]
    if given:
        console.print(f"[red]error:[/] {', '.join(given)} apply to --model only, not to --run", soft_wrap=True)
        raise typer.Exit(2)
    min_score = 0.5 if min_score is None else min_score
    if not 0.0 <= min_score <= 1.0:
        console.print(f"[red]error:[/] --min-score must be in [0, 1], got {min_score}")
        raise typer.Exit(2)
    _explain_run(images, run, cls, method, min_score, out, fmt, device)


def _explain_stock(images: list[str], model: str, weights: Optional[Path], cls: Optional[list[str]], method: Optional[str],
                   layers: list[str], out: Optional[Path], save_npy: bool, topk: Optional[int], rivals: Optional[int],
                   batch_size: Optional[int], fmt: str, device: str, progress: bool, download: bool,
                   references: Optional[str] = None, tta: bool = False) -> None:
    """``repcam explain --model``: a stock model's maps of image files, folders and globs, in batches."""
    from repcam.errors import ExplainError
    from repcam.stock.files import explain_files

    try:
        explain_files(images, model, weights=str(weights) if weights else None, classes=cls, method=method or "layercam",
                      layers=layers or None, out=out or Path("explain"), save_npy=save_npy,
                      topk=3 if topk is None else topk, rivals=rivals, references=references, tta=tta,
                      batch_size=8 if batch_size is None else batch_size, fmt=fmt, device=device,
                      console=console if progress else None, echo=typer.echo, download=download,
                      note=lambda m: _note(escape(m)))
    except (ExplainError, WriteError) as e:
        console.print(f"[red]error:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(2) from None


def _explain_run(images: list[str], run: Path, cls: Optional[list[str]], method: Optional[str], min_score: float,
                 out: Optional[Path], fmt: str, device: str) -> None:
    """``repcam explain --run``: a finished run's maps, one figure per image and class, into the run (locked) or --out."""
    from repcam.explain import Explainer, ExplainError
    from repcam.store.layout import RunDir
    from repcam.stock.images import figure_stem
    from repcam.store.storage import check_writable

    folder = out or RunDir(run).explain_dir
    if run.is_dir() or out is not None:
        try:
            check_writable(folder)
        except OSError as e:
            hint = "" if out is not None else " (a read-only run directory?); pass --out FOLDER to write the figures elsewhere"
            console.print(f"[red]error:[/] cannot write figures to {folder}: {_os_reason(e)}{hint}")
            raise typer.Exit(2) from None
    with ExitStack() as stack:
        if run.is_dir() and folder.resolve().is_relative_to(run.resolve()):
            _lock(stack, run)  # the figures go into the run directory
        try:
            explainer = Explainer.from_run(run, method, device)
            for image in map(Path, images):
                for ex in explainer.explain(image, cls or None, min_score):
                    # The run's class -> file-name mapping: two classes never share a figure (e.g. 'x y' and 'x_y').
                    target = folder / f"{figure_stem(image)}_{explainer.files.stem(ex.cls)}.{fmt}"
                    try:
                        path = ex.save(target, fmt=fmt)
                    except OSError as e:
                        raise _fail(f"cannot write the figure of {ex.cls!r} to {folder}: {_os_reason(e)}") from None
                    typer.echo(f"{ex.cls}\tp={ex.score:.3f}\t{path}")
        except (ExplainError, ArtefactError, WriteError) as e:
            raise _fail(e) from None


@app.command()
@_expand_paths
def score(
    method: list[str] = typer.Option(..., "--method", help="Repeatable: a method of repcam explain --model (gradcam, layercam, paper, contrast, contrast-layercam, gradcampp, xgradcam, hirescam, eigengradcam, cam) or pgc:<pytorch-grad-cam class>; the first is the reference."),
    folder: Optional[Path] = typer.Option(None, help="A folder data set (classes.txt, images/, masks/)."),
    config: Optional[Path] = typer.Option(None, help="A run config whose data section is scored (default with --run: the run's)."),
    split: Optional[str] = typer.Option(None, help="The split (default: the config's first eval split; a folder: every image)."),
    model: Optional[str] = typer.Option(None, help="A stock timm name or torchvision/<name> (offline ImageNet weights unless --download)."),
    weights: Optional[Path] = typer.Option(None, help="With --model: a local state-dict file."),
    run: Optional[Path] = typer.Option(None, "--run", help="Instead of --model: a run directory's multi-class model."),
    input_size: Optional[int] = typer.Option(None, help="With --model: the input size in pixels (default: the model's data config)."),
    max_images: Optional[int] = typer.Option(None, help="Score only the first N images."),
    steps: int = typer.Option(20, help="Deletion / insertion steps."),
    road_percentiles: Optional[list[float]] = typer.Option(None, "--road-percentile", help="Repeatable (default 10, 20, ..., 90)."),
    metric: Optional[list[str]] = typer.Option(None, "--metric", help="Repeatable: only these of miou, pxap, deletion, insertion, road_morf, road_lerf, avg_drop, avg_increase, maxboxacc_v2 (default all; miou and pxap need no extra forward pass)."),
    batch_size: int = typer.Option(8, help="Records per batch."),
    out: Optional[Path] = typer.Option(None, help="Also write the table to a .md, .csv or .json file."),
    per_record: Optional[Path] = typer.Option(None, "--per-record", help="Also write one CSV row per (image, class) and method with every metric."),
    strict: bool = typer.Option(False, "--strict", help="Fail (exit 2) if the data set skips any image or record (e.g. an image without a mask)."),
    download: bool = typer.Option(False, "--download", help="With --model: fetch the ImageNet weights if they are not cached; default: offline only."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Score CAM methods against a data set's masks and the model: mIoU, PxAP, deletion/insertion, ROAD, Average Drop, MaxBoxAccV2."""
    for key, value in (("--steps", steps), ("--batch-size", batch_size), ("--max-images", max_images)):
        if value is not None and value < 1:
            raise _fail(f"{key} must be >= 1, got {value}")
    if out is not None and out.suffix.lower() not in (".md", ".csv", ".json"):
        raise _fail(f"--out {out}: the file must end in .md, .csv or .json")
    if per_record is not None and per_record.suffix.lower() != ".csv":
        raise _fail(f"--per-record {per_record}: the file must end in .csv")
    from repcam.evaluation.metric_names import metric_keys
    from repcam.stock.methods import score_method

    try:  # the names first: a typo is refused in a fraction of a second, before torch is imported
        keys = metric_keys(metric)
        for m in method:
            score_method(m)
    except ScoreError as e:
        raise _fail(e) from None
    from repcam.evaluation.score import make_extractor, score_maps
    from repcam.evaluation.score_inputs import resolve_inputs, skip_summary
    from repcam.models.train import resolve_device
    from repcam.store.storage import check_writable

    for target in (out, per_record):
        if target is not None:
            try:
                check_writable(target.parent if str(target.parent) else Path("."))
            except OSError as e:
                raise _fail(f"cannot write {target}: {_os_reason(e)}") from None
    try:
        dev = resolve_device(device)
        inputs = resolve_inputs(config=config, folder=folder, split=split, model=model, weights=weights, run=run,
                                input_size=input_size, download=download, note=lambda m: _note(escape(m)))
        skipped = skip_summary(inputs.dataset)
        if skipped and strict:
            raise _fail(f"--strict: {skipped} (every image needs its mask; see the folder layout)")
        if skipped:
            console.print(f"[yellow]warning:[/] {escape(skipped)}; not scored (--strict makes this an error)")
        extractors = {m: make_extractor(m, inputs.model.to(dev)) for m in dict.fromkeys(method)}
        result = score_maps(extractors, inputs.dataset, inputs.model, inputs.transform, class_map=inputs.class_map,
                            max_images=max_images, batch_size=batch_size, steps=steps,
                            road_percentiles=road_percentiles or (10, 20, 30, 40, 50, 60, 70, 80, 90), metrics=keys, device=dev, progress=progress)
    except (ConfigError, DataError, ValueError, FileNotFoundError, ArtefactError) as e:
        raise _fail(e) from None
    typer.echo(result.markdown())
    if out is not None:
        try:
            console.print(f"table: {result.write(out)}")
        except WriteError as e:
            raise _fail(e) from None
    if per_record is not None:
        try:
            console.print(f"per-record values: {result.write_records(per_record)}")
        except WriteError as e:
            raise _fail(e) from None


@app.command()
@_expand_paths
def tables(
    run_dirs: list[Path] = typer.Argument(..., help="Finished run directories: Table 4 one column each, Table 5 exactly one."),
    table: int = typer.Option(..., "--table", help="4: the small-network ablation layout (a column per run); 5: the comparison with CAM, Grad-CAM, LayerCAM, ACoL, CBAM of one run."),
    split: Optional[list[str]] = typer.Option(None, "--split", help="The evaluated split (default val); Table 5 takes several (repeat), one column group each."),
    recommended: Optional[str] = typer.Option(None, help="Table 5: one more row, the method to recommend (e.g. S-2+A+F)."),
    intervals: bool = typer.Option(True, help="The Δ columns against Grad-CAM and the strongest baseline, with 95% intervals."),
    as_csv: bool = typer.Option(False, "--csv", help="Print CSV instead of Markdown (the notes go to stderr)."),
    out: Optional[Path] = typer.Option(None, help="Also write the table to a .md or .csv file."),
) -> None:
    """The paper's Table 4 / Table 5 layouts from finished runs' results/<split>/ablation.json (nothing recomputed)."""
    from repcam.reporting.paper_tables import PaperTableError, compose

    if out is not None and out.suffix.lower() not in (".md", ".csv"):
        raise _fail(f"--out {out}: the file must end in .md or .csv")
    try:
        result = compose(run_dirs, table, split or ["val"], recommended, intervals)
    except PaperTableError as e:
        raise _fail(e) from None
    if as_csv:
        typer.echo(result.csv(), nl=False)
        for note in result.notes:
            _note(escape(note))
    else:
        typer.echo(result.markdown(), nl=False)
    if out is not None:
        try:
            out.write_text(result.csv() if out.suffix.lower() == ".csv" else result.markdown(), encoding="utf-8")
        except OSError as e:
            raise _fail(f"cannot write {out}: {_os_reason(e)}") from None
        console.print(f"table: {out}")


def _os_reason(e: OSError) -> str:
    """An OSError in one line: its reason and the file it concerns."""
    return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")



def main() -> None:  # pragma: no cover
    """``python -m repcam.cli``: the CLI, logging at WARNING (the ``repcam`` console script calls ``app`` directly)."""
    logging.basicConfig(level=logging.WARNING)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
