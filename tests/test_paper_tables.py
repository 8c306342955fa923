"""The paper's Table 4 / Table 5 layouts (repcam.reporting.paper_tables, `repcam tables`) from tiny finished runs."""

import math
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from repcam.cli import app
from repcam.reporting.paper_tables import (PAPER_NAMES, STRONGEST, TABLE4_ROWS, TABLE5_ROWS, WALL_TIME, PaperTableError, RunResults, compose,
                                 delta, load_run, pct, seconds, table4, table5)
from repcam.store.storage import read_json


def _tiny(tmp_path_factory, name: str, baselines: list[str], methods: list[str], seed: int) -> Path:
    """The cut-down tiny run of tests/test_baselines.py (4 classes, one representative, no variants)."""
    from repcam.config import from_dict
    from repcam.pipeline.run import Run
    from tiny_run import TINY

    values = {**TINY, "seed": seed, "baselines": baselines, "selection": {"n": 1, "methods": methods},
              "evaluation": {**TINY["evaluation"], "variants": []}}
    values["data"] = {**TINY["data"], "options": {"num_images": 120, "image_size": 32, "n_groups": 2, "classes_per_group": 2},
                      "eval_options": {"val": {"num_images": 16}}}
    run_dir = tmp_path_factory.mktemp(name)
    Run(from_dict(values, "test"), run_dir, show_progress=False).run()
    return run_dir


@pytest.fixture(scope="module")
def run_a(tmp_path_factory) -> Path:
    """ACoL and CBAM trained; Random and S-1 only."""
    return _tiny(tmp_path_factory, "run_a", ["acol", "cbam"], ["random", "s1"], seed=0)


@pytest.fixture(scope="module")
def run_b(tmp_path_factory) -> Path:
    """No trained baselines; S-1 and S-2 only."""
    return _tiny(tmp_path_factory, "run_b", [], ["s1", "s2"], seed=1)


def _rows(run: Path, split: str = "val") -> dict[str, dict]:
    return {r["method"]: r for r in read_json(run / "results" / split / "ablation.json")["rows"]}


def _total(run: Path) -> float:
    return read_json(run / "timings.json")["total"]


# ---- Table 5 ---------------------------------------------------------------------------------------------------------

def test_table5_numbers_are_those_of_ablation_json(run_a):
    rows = _rows(run_a)
    strongest = rows["Grad-CAM"]["strongest_baseline"]
    t = table5(load_run(run_a, ["val"]), ["val"], recommended="Random+A+F")
    assert [r[0] for r in t.rows] == [*TABLE5_ROWS, "Random+A+F (recommended)"]
    for line in t.rows:
        method = line[0].removesuffix(" (recommended)")
        r = rows[method]
        assert t.cell(line[0], "Paper's row") == PAPER_NAMES.get(method, "not in the paper")
        assert t.cell(line[0], "Network") == "tiny_cnn"
        assert t.cell(line[0], "mIoU val") == f"{100 * r['miou']:.2f}"
        gc = t.cell(line[0], "Δ vs Grad-CAM val [95% CI]")
        if method == "Grad-CAM":
            assert gc == "baseline"
        else:
            assert gc.startswith(f"{100 * r['diff']:+.2f} [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]")
            assert gc.endswith(" (n.s.)") != r["significant"]
        if strongest != "Grad-CAM":
            col = f"Δ vs {strongest} (strongest baseline) val [95% CI]"
            expect = "strongest baseline" if method == strongest else delta(r, "_strongest")
            assert t.cell(line[0], col) == expect
            if method != strongest:
                assert expect.startswith(f"{100 * r['diff_strongest']:+.2f} [")
    assert not any("printed as -" in n for n in t.notes)  # every row exists: ACoL and CBAM were trained
    assert any(seconds(_total(run_a)) in n for n in t.notes)


def test_table5_missing_rows_print_as_dash_with_a_note(run_b):
    t = table5(load_run(run_b, ["val"]), ["val"], recommended="S-4+A+F")
    for method in ("ACoL", "CBAM (Grad-CAM)"):
        assert t.cell(method, "mIoU val") == "-" and t.cell(method, "Δ vs Grad-CAM val [95% CI]") == "-"
    assert t.cell("S-4+A+F (recommended)", "mIoU val") == "-"
    assert t.notes[0] == (f"{run_b}/results/val/ablation.json: no ACoL, CBAM (Grad-CAM), S-4+A+F (printed as -); "
                          "train it with `baselines: [acol, cbam]` in the run's config; selection.methods lacks s4")
    assert t.cell("S-1+A+F", "mIoU val") == pct(_rows(run_b)["S-1+A+F"]["miou"])  # the rows it has are there


# ---- Table 4 ---------------------------------------------------------------------------------------------------------

def test_table4_one_column_per_run_numbers_from_ablation_json(run_a, run_b):
    t = compose([run_a, run_b], 4, ["val"])
    labels = [f"tiny_cnn ({run_a.name})", f"tiny_cnn ({run_b.name})"]  # the same backbone: the folder tells them apart
    assert [r[0] for r in t.rows] == ["Baseline (Grad-CAM)", STRONGEST, *TABLE4_ROWS[1:], WALL_TIME]
    for run, label in zip((run_a, run_b), labels):
        rows = _rows(run)
        strongest = rows["Grad-CAM"]["strongest_baseline"]
        assert t.cell("Baseline (Grad-CAM)", label) == pct(rows["Grad-CAM"]["miou"])
        assert t.cell("Baseline (Grad-CAM)", f"{label}: Δ vs Grad-CAM [95% CI]") == "baseline"
        assert t.cell(STRONGEST, label) == f"{pct(rows[strongest]['miou'])} ({strongest})"
        for method in TABLE4_ROWS[1:]:
            cell = t.cell(method, label)
            if method in rows:
                r = rows[method]
                assert cell == f"{100 * r['miou']:.2f}"
                assert t.cell(method, f"{label}: Δ vs Grad-CAM [95% CI]").startswith(
                    f"{100 * r['diff']:+.2f} [{100 * r['ci_low']:+.2f}, {100 * r['ci_high']:+.2f}]")
                if strongest != "Grad-CAM":
                    assert t.cell(method, f"{label}: Δ vs {strongest} (strongest baseline) [95% CI]").startswith(
                        f"{100 * r['diff_strongest']:+.2f} [{100 * r['ci_low_strongest']:+.2f}, {100 * r['ci_high_strongest']:+.2f}]")
            else:
                assert cell == "-"
        lacking = [m for m in TABLE4_ROWS if m not in rows]
        assert f"{label} ({run}/results/val/ablation.json): no {', '.join(lacking)} (printed as -)" in " ".join(t.notes)
        assert t.cell(WALL_TIME, label) == seconds(_total(run))  # "12.7 s", or minutes from 120 s
    present = {m for m in TABLE4_ROWS if t.cell(m if m != "Grad-CAM" else "Baseline (Grad-CAM)", labels[0]) != "-"}
    assert present == {"Grad-CAM", "Random+F", "Random+A+F", "S-1+F", "S-1+A+F"}
    md = t.markdown()
    assert md.startswith("## Table 4 layout: mIoU (%) on val") and "| Rank-a+F | - |" in md and "Notes:" in md
    csv_lines = t.csv().splitlines()
    assert csv_lines[0].startswith(f"Method,{labels[0]},") and len(csv_lines) == len(t.rows) + 1


def test_a_copy_of_the_three_files_tables_read_gives_the_same_table(run_a, tmp_path: Path):
    """benchmarks/run_config.sh keeps config.resolved.yaml, timings.json and results/<split>/ablation.json of each
    benchmark run under benchmarks/results/runs/, so that the tables can be rebuilt from the repository alone."""
    copy = tmp_path / run_a.name
    for rel in ("config.resolved.yaml", "timings.json", "results/val/ablation.json"):
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(run_a / rel, copy / rel)
    for n in (4, 5):
        full, kept = compose([run_a], n, ["val"]), compose([copy], n, ["val"])
        assert kept.rows == full.rows and kept.header == full.header
        assert kept.notes == [note.replace(str(run_a), str(copy)) for note in full.notes]


def _synthetic(rows: dict[str, dict], backbone: str = "vgg19", wall: float | None = 3725.0) -> RunResults:
    return RunResults(Path("/runs/x"), backbone, wall, {"val": {m: {"method": m, **r} for m, r in rows.items()}})


def test_table4_pure_function_formats_intervals_and_strongest_grad_cam():
    nan = float("nan")
    run = _synthetic({
        "Grad-CAM": {"miou": 0.2243, "strongest_baseline": "Grad-CAM"},
        "S-1+F": {"miou": 0.3354, "diff": 0.1111, "ci_low": 0.05, "ci_high": 0.17, "significant": True, "strongest_baseline": "Grad-CAM"},
        "S-1+A+F": {"miou": 0.2300, "diff": 0.0057, "ci_low": -0.01, "ci_high": 0.02, "significant": False},
        "S-2+F": {"miou": 0.25, "diff": 0.0257, "ci_low": nan, "ci_high": nan},  # too few images for an interval
    })
    t = table4([run], "val")
    assert t.header == ["Method", "vgg19", "vgg19: Δ vs Grad-CAM [95% CI]"]  # Grad-CAM strongest: no second Δ column
    assert t.cell("Baseline (Grad-CAM)", "vgg19") == "22.43" and t.cell(STRONGEST, "vgg19") == "22.43 (Grad-CAM)"
    assert t.cell("S-1+F", "vgg19: Δ vs Grad-CAM [95% CI]") == "+11.11 [+5.00, +17.00]"
    assert t.cell("S-1+A+F", "vgg19: Δ vs Grad-CAM [95% CI]") == "+0.57 [-1.00, +2.00] (n.s.)"
    assert t.cell("S-2+F", "vgg19: Δ vs Grad-CAM [95% CI]") == "+2.57"
    assert t.cell(WALL_TIME, "vgg19") == "62.1 min"
    assert any("Grad-CAM is the strongest baseline" in n for n in t.notes)
    bare = table4([run], "val", intervals=False)
    assert bare.header == ["Method", "vgg19"] and all(len(r) == 2 for r in bare.rows)
    assert math.isnan(run.rows["val"]["S-2+F"]["ci_low"])  # the inputs are not modified


def test_table4_labels_are_backbone_names_and_the_wall_time_may_be_unknown():
    a = _synthetic({"Grad-CAM": {"miou": 0.1}}, "resnet18", None)
    b = _synthetic({"Grad-CAM": {"miou": 0.2}}, "mobilenetv2_100")
    t = table4([a, b], "val", intervals=False)
    assert t.header == ["Method", "resnet18", "mobilenetv2_100"]
    assert t.cell(WALL_TIME, "resnet18") == "-" and t.cell(STRONGEST, "resnet18") == "-"
    assert any("do not name a strongest baseline" in n for n in t.notes)


# ---- errors: one line naming the directory ---------------------------------------------------------------------------

def test_not_a_finished_run_is_a_one_line_error_naming_it(run_a, tmp_path: Path):
    unfinished = tmp_path / "unfinished"
    shutil.copytree(run_a, unfinished, ignore=shutil.ignore_patterns("*.pt", "*.npz", "timings.json"))
    seeds = tmp_path / "seeds"
    (seeds / "seed-0").mkdir(parents=True)
    damaged = tmp_path / "damaged"
    shutil.copytree(run_a, damaged, ignore=shutil.ignore_patterns("*.pt", "*.npz"))
    (damaged / "results" / "val" / "ablation.json").write_text("{not json")
    cases = [
        (tmp_path / "nowhere", "nowhere: not a directory"),
        (tmp_path, f"{tmp_path}: not a repcam run directory (no config.resolved.yaml)"),
        (seeds, "seeds: a `--seeds` directory, not one run; pass its seed folders (seed-0)"),
        (unfinished, "unfinished: not a finished run (no timings.json"),
        (damaged, "ablation.json: not valid JSON"),
    ]
    for path, match in cases:
        with pytest.raises(PaperTableError) as err:
            compose([run_a, path], 4, ["val"])
        assert match in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(PaperTableError, match=r"no results for split 'train' \(evaluated splits: val\)$"):
        compose([run_a], 5, ["val", "train"])
    with pytest.raises(PaperTableError, match="Table 5 is the view of one run; got 2"):
        compose([run_a, run_a], 5, ["val"])
    with pytest.raises(PaperTableError, match="Table 4 is one split"):
        compose([run_a], 4, ["val", "train"])
    with pytest.raises(PaperTableError, match="--recommended is a Table 5 row"):
        compose([run_a], 4, ["val"], recommended="S-1+A+F")


# ---- the command line ------------------------------------------------------------------------------------------------

def test_cli_tables_prints_markdown_writes_csv_and_fails_in_one_line(run_a, run_b, tmp_path: Path):
    out = tmp_path / "t5.csv"
    res = CliRunner().invoke(app, ["tables", str(run_a), "--table", "5", "--recommended", "S-1+A+F", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "## Table 5 layout" in res.output and "| S-1+A+F (recommended) | Our | tiny_cnn |" in res.output
    expected = compose([run_a], 5, ["val"], "S-1+A+F").csv()
    assert out.read_text() == expected
    assert f"ACoL,ACoL [20],tiny_cnn,{pct(_rows(run_a)['ACoL']['miou'])}," in expected
    res = CliRunner().invoke(app, ["tables", str(run_a), str(run_b), "--table", "4", "--csv", "--no-intervals"])
    assert res.exit_code == 0, res.output
    assert f"Method,tiny_cnn ({run_a.name}),tiny_cnn ({run_b.name})" in res.output
    assert f"S-2+F,-,{pct(_rows(run_b)['S-2+F']['miou'])}" in res.output
    res = CliRunner().invoke(app, ["tables", str(run_a), str(tmp_path / "nope"), "--table", "4"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert f"error: {tmp_path / 'nope'}: not a directory" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["tables", str(run_a), "--table", "3"])
    assert res.exit_code == 2 and "--table must be 4 or 5, got 3" in res.output
