"""The process boundary, held by the imports: the worker side and the driver side never import each other.

harness/worker/ runs inside a cell's isolated process, harness/driver/ orchestrates from the parent;
both import only the shared modules at harness/ itself (the cell and the record format), and nothing in
harness imports the outputs in reports/. Read from the source with ast, so an import inside a function
counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "optimizations", "reports", "suites")
# What the two sides share. A new module at harness/ itself must be added here on purpose, which is the
# question to answer first: does it run in the worker, in the driver, or is it part of the contract?
SHARED = {"harness", "harness.caches", "harness.cell", "harness.env", "harness.errors", "harness.jsonio",
          "harness.paths", "harness.presets", "harness.record", "harness.stats", "harness.weights_dir"}
CLI = "harness.cli"  # dispatches to both sides and to reports; nothing imports it


def side(module: str) -> str | None:
    if module == CLI or module.startswith(CLI + "."):
        return "cli"
    for name in ("worker", "driver"):
        if module == f"harness.{name}" or module.startswith(f"harness.{name}."):
            return name
    if module == "harness" or module.startswith("harness."):
        return "shared"
    top = module.split(".")[0]
    return top if top in PACKAGES else None


# side -> the sides it may import. optimizations are plugins: they run in the worker, on the pipeline.
ALLOWED = {
    "shared": {"shared"},
    "worker": {"shared", "worker", "optimizations"},
    "driver": {"shared", "driver", "optimizations"},
    "optimizations": {"shared", "worker", "optimizations"},
    "reports": {"shared", "driver", "optimizations", "reports", "suites"},
    "suites": set(),
    "cli": {"shared", "worker", "driver", "optimizations", "reports", "cli"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(tree: ast.AST) -> set[str]:
    """Every module an import names; `from harness import x` names harness.x where x is a module."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if (REPO / candidate.replace(".", "/")).is_dir() or \
                        (REPO / (candidate.replace(".", "/") + ".py")).is_file():
                    found.add(candidate)
    return found


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def test_the_layout_is_the_one_this_test_knows() -> None:
    """A test that checks nothing passes quietly; this one must see every side."""
    modules = project_modules()
    assert {m for m in modules if side(m) == "shared"} == SHARED, \
        "a module at harness/ itself is shared by both sides: place it in harness/worker/ or harness/driver/, " \
        "or add it to SHARED if it is part of the cell or the record format"
    for expected in ("harness.worker.measure", "harness.worker.pipeline", "harness.driver.sweep",
                     "harness.driver.launcher", "harness.driver.executors.raycluster", "reports.summary"):
        assert expected in modules


@pytest.mark.parametrize("module", sorted(project_modules()))
def test_no_module_crosses_the_boundary(module: str) -> None:
    path = project_modules()[module]
    own = side(module)
    crossing = sorted(m for m in imported(ast.parse(path.read_text(), str(path)))
                      if side(m) is not None and side(m) not in ALLOWED[own])
    assert not crossing, f"{path.relative_to(REPO)} ({own} side) imports {', '.join(crossing)}"


def test_the_worker_runs_as_a_module() -> None:
    """The launcher starts `python -m harness.worker`: the name must stay a runnable package."""
    assert (REPO / "harness" / "worker" / "__main__.py").is_file()
    launcher = (REPO / "harness" / "driver" / "launcher.py").read_text()
    assert '"-m", "harness.worker"' in launcher
