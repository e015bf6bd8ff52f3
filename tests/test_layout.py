"""The process boundary, held by the imports: the worker side and the driver side never import each other.

harness/worker/ runs inside a cell's isolated process, harness/driver/ orchestrates from the parent;
both import only the shared modules at harness/ itself (the cell and the record format), and nothing in
harness imports the outputs in reports/. Read from the source with ast, so an import inside a function
counts as much as one at the top. The four folders install as `dia_bench.<folder>`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
NS = "dia_bench"
FOLDERS = ("harness", "optimizations", "reports", "suites")
# What the two sides share. A new module at harness/ itself must be added here on purpose, which is the
# question to answer first: does it run in the worker, in the driver, or is it part of the contract?
SHARED = {f"{NS}.harness{m}" for m in ("", ".caches", ".cell", ".devices", ".env", ".errors", ".jsonio", ".paths",
                                         ".presets", ".record", ".stats", ".weights_dir", ".import_env",
                                         ".lifetime")}
CLI = f"{NS}.harness.cli"  # dispatches to both sides and to reports; nothing imports it


def side(module: str) -> str | None:
    if not module.startswith(NS + "."):
        return None
    inner = module[len(NS) + 1:]
    if module == CLI or module.startswith(CLI + "."):
        return "cli"
    for name in ("worker", "driver"):
        if inner == f"harness.{name}" or inner.startswith(f"harness.{name}."):
            return name
    if inner == "harness" or inner.startswith("harness."):
        return "shared"
    return inner.split(".")[0]


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
    return ".".join([NS, *parts])


def source_path(module: str) -> Path:
    return REPO.joinpath(*module.split(".")[1:])


def imported(tree: ast.AST) -> set[str]:
    """Every module an import names; `from dia_bench.harness import x` names dia_bench.harness.x where x is
    a module."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            for alias in node.names:
                candidate = source_path(f"{node.module}.{alias.name}")
                if node.module.startswith(NS) and (candidate.is_dir() or candidate.with_suffix(".py").is_file()):
                    found.add(f"{node.module}.{alias.name}")
    return found


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for folder in FOLDERS for p in sorted((REPO / folder).rglob("*.py"))}


def python_files() -> list[Path]:
    return [*project_modules().values(), *sorted((REPO / "tests").glob("*.py")), REPO / "noxfile.py"]


def test_the_layout_is_the_one_this_test_knows() -> None:
    """A test that checks nothing passes quietly; this one must see every side."""
    modules = project_modules()
    assert {m for m in modules if side(m) == "shared"} == SHARED, \
        "a module at harness/ itself is shared by both sides: place it in harness/worker/ or harness/driver/, " \
        "or add it to SHARED if it is part of the cell or the record format"
    for expected in ("harness.worker.measure", "harness.worker.pipeline", "harness.driver.sweep",
                     "harness.driver.launcher", "harness.driver.executors.raycluster", "reports.summary"):
        assert f"{NS}.{expected}" in modules


@pytest.mark.parametrize("module", sorted(project_modules()))
def test_no_module_crosses_the_boundary(module: str) -> None:
    path = project_modules()[module]
    own = side(module)
    crossing = sorted(m for m in imported(ast.parse(path.read_text(), str(path)))
                      if side(m) is not None and side(m) not in ALLOWED[own])
    assert not crossing, f"{path.relative_to(REPO)} ({own} side) imports {', '.join(crossing)}"


def test_nothing_imports_a_folder_by_its_bare_name() -> None:
    """pytest puts the repository root on sys.path, so `import harness` would work in tests and load a
    second copy of every module beside dia_bench.harness (two registries, two caches)."""
    bare = []
    for path in python_files():
        for name in imported(ast.parse(path.read_text(), str(path))):
            if name.split(".")[0] in FOLDERS:
                bare.append(f"{path.relative_to(REPO)}: {name}")
    assert not bare, "import these as dia_bench.<name>: " + "; ".join(bare)


def test_every_package_is_installed() -> None:
    """setuptools installs only the packages pyproject lists (a folder name is not a package name here)."""
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {module_name(p) for folder in FOLDERS for p in (REPO / folder).rglob("__init__.py")}
    assert listed == on_disk


def test_the_worker_runs_as_a_module() -> None:
    """The launcher starts `python -m dia_bench.harness.worker`: the name must stay a runnable package."""
    assert (REPO / "harness" / "worker" / "__main__.py").is_file()
    launcher = (REPO / "harness" / "driver" / "launcher.py").read_text()
    assert '"-m", "dia_bench.harness.worker"' in launcher
