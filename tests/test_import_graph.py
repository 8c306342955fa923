"""repcam's module-level imports form no cycle, and the light entry points (``import repcam``, ``import repcam.cli``,
``repcam --help``) do not import torch.

Function-level (lazy) imports are allowed to point anywhere: they run only when a command needs them. A cycle of
module-level imports makes import order matter and drags heavy modules into light ones (issue 27).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import repcam

SRC = Path(repcam.__file__).parent


def _module_name(path: Path, root: Path = SRC) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports run when the module is imported: top level, and inside top-level if/try blocks (not under
    ``if TYPE_CHECKING``, not inside functions or classes)."""
    out: list[ast.Import | ast.ImportFrom] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            return
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                walk(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
            return
        for child in ast.iter_child_nodes(node):
            walk(child)

    walk(tree)
    return out


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    """repcam module -> the repcam modules it imports at module level (``from a import b`` counts ``a.b`` if it is a module)."""
    files = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in _module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            deps.add(target)
            deps.update(f"{target}.{a.name}" for a in node.names)
        # importing a.b.c also imports a and a.b (their __init__), which may import back
        closed = {d for dep in deps for d in _parents(dep)}
        graph[name] = {d for d in closed if d in files and d != name}
    return graph


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None (depth-first search, colouring nodes)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_finder_sees_a_cycle(tmp_path):
    pkg = tmp_path / "repcam"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from repcam.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    import repcam.a\n")  # lazy: allowed
    assert find_cycle(import_graph(pkg)) is None
    (pkg / "sub" / "b.py").write_text("from .. import a\n")  # relative, module level: a cycle
    assert find_cycle(import_graph(pkg)) == ["repcam.a", "repcam.sub.b", "repcam.a"]
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from repcam import a\n")
    assert find_cycle(import_graph(pkg)) is None


def test_repcam_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "module-level import cycle: " + " -> ".join(cycle)


HEAVY = ("torch", "timm", "torchvision", "matplotlib", "scipy")


def light_command(argv: list[str], exit_code: int = 0, prelude: str = "") -> subprocess.CompletedProcess:
    """``repcam ARGV`` in a fresh Python (after ``prelude``): it exits with ``exit_code`` and imports none of HEAVY."""
    code = (f"import sys, repcam, repcam.cli\n{prelude}"
            "try:\n"
            f"    repcam.cli.app({argv!r}, prog_name='repcam')\n"
            "except SystemExit as e:\n"
            f"    assert e.code == {exit_code}, e.code\n"
            f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_light_entry_points_do_not_import_torch():
    """``import repcam``, ``import repcam.cli`` and ``repcam --help`` answer without torch (issue 27: 7.5 s before)."""
    done = light_command(["--help"], prelude="assert 'torch' not in sys.modules, 'import'\ndir(repcam)\n"
                                              "assert 'torch' not in sys.modules, 'dir'\n")
    assert "Usage" in done.stdout


def test_a_tiny_cnn_run_does_not_import_timm_or_torchvision():
    """timm and torchvision are imported only for a model of theirs: together 2.5-3 s of every process's start (timm
    imports torchvision, which imports torch._dynamo), and the demo's tiny CNN, its run and its maps need neither."""
    lines = [
        "import sys, torch",
        "import repcam.pipeline.run, repcam.reporting.report",
        "from repcam.models.backbones import build_classifier, gap_fc_parts",
        "from repcam.engine.cam import MultiLayerGradCAM",
        "bb = build_classifier('tiny_cnn_s8', 3, weights=None, input_size=32)",
        "assert gap_fc_parts(bb.model) is not None",
        "MultiLayerGradCAM(bb.model.eval(), 'auto')(torch.zeros(1, 3, 32, 32), [0])",
        "assert not {'timm', 'torchvision'} & set(sys.modules), 'imported before a model of theirs was asked for'",
        "build_classifier('torchvision/resnet18', 2, weights=None)",
        "assert 'torchvision' in sys.modules",
    ]
    done = subprocess.run([sys.executable, "-c", "\n".join(lines)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("argv, message", [
    (["run", "{bad}", "--run-dir", "{tmp}/run"], "'data.options.num_images' must be int"),
    (["score", "--folder", "{tmp}", "--model", "tiny_cnn", "--method", "gradcm"], "unknown method 'gradcm' (did you mean 'gradcam'?)"),
    (["score", "--folder", "{tmp}", "--model", "tiny_cnn", "--method", "gradcam", "--metric", "road"], "unknown metric 'road'"),
])
def test_a_bad_config_or_name_is_refused_before_torch_is_imported(tmp_path, argv, message):
    """A refused command answers in a fraction of a second: loading and validating a config, and checking
    ``repcam score``'s method and metric names, import no torch (2-3 s of every refused command before;
    repcam.store.storage imports torch only to save or load a model)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  options: {num_images: abc}\n")
    done = light_command([a.format(bad=bad, tmp=tmp_path) for a in argv], exit_code=2)
    assert message in done.stdout + done.stderr
    assert not (tmp_path / "run").exists()


def test_a_report_without_figures_imports_neither_torch_nor_matplotlib(tiny_run, tmp_path):
    """``repcam report --no-figures`` reads tables and writes HTML: the row names it needs live in
    repcam.method.methods and repcam.reporting.tables, not in the evaluation code (torch) or the figure code
    (matplotlib), so it answers in well under a second more than Python's start."""
    import shutil

    run = shutil.copytree(tiny_run, tmp_path / "run")
    light_command(["report", str(run), "--no-figures"])
    page = (run / "report.html").read_text()
    assert "Grad-CAM" in page and "Results: val" in page
