"""The layout by role, held by the imports: which package may import which, with no cycle between them.

harness/ holds the shared modules (the cell, the record and run directory formats, presets, stats) and
one package per role: runtime/ (the model runtime: pipeline, codec, static engine, weights), kernels/
(the C kernels, their builder and operators), worker/ (what measures inside a cell's isolated process),
driver/ (what orchestrates cells from the parent), analysis/ (reading runs back), serving/ (load against a
streaming target: time to first audio and latency under load). harness/api.py is the guide's API for a
user's own process and harness/cli.py dispatches to all of them; nothing imports either. Plugins
(optimizations/) act on the runtime and may use the kernels, never the worker; reports/ read runs
through analysis/, never the driver. Read from the source with ast, so an import inside a function
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
# What every package may use. A new module at harness/ itself must be added here on purpose, which is the
# question to answer first: which role does it serve, or is it part of the cell or the record format?
SHARED = {f"{NS}.harness{m}" for m in ("", ".caches", ".cell", ".devices", ".env", ".errors", ".jsonio", ".paths",
                                         ".presets", ".process_noise", ".record", ".record_schema", ".rundir", ".stats",
                                         ".weights_dir",
                                         ".import_env", ".lifetime")}
ROLES = ("runtime", "kernels", "worker", "driver", "analysis", "serving")
FACADES = {f"{NS}.harness.cli": "cli", f"{NS}.harness.api": "api"}  # entry points; nothing imports them


def side(module: str) -> str | None:
    if not module.startswith(NS + "."):
        return None
    inner = module[len(NS) + 1:]
    for name, facade in FACADES.items():
        if module == name or module.startswith(name + "."):
            return facade
    for name in ROLES:
        if inner == f"harness.{name}" or inner.startswith(f"harness.{name}."):
            return name
    if inner == "harness" or inner.startswith("harness."):
        return "shared"
    return inner.split(".")[0]


# side -> the sides it may import besides itself.
ALLOWED = {
    "shared": set(),
    "kernels": {"shared"},
    "runtime": {"shared", "kernels"},
    "optimizations": {"shared", "kernels", "runtime"},
    "worker": {"shared", "kernels", "runtime", "optimizations"},
    "analysis": {"shared", "optimizations"},  # a cell's plugins, read back (quality's per-plugin verdicts)
    "serving": {"shared", "runtime"},  # the load generator and its targets: a pipeline built by its caller
    "driver": {"shared", "optimizations", "suites"},
    "reports": {"shared", "analysis", "optimizations", "suites"},
    "suites": set(),
    "api": {"shared", "kernels", "runtime", "optimizations"},
    "cli": {"shared", "kernels", "runtime", "optimizations", "worker", "driver", "analysis", "serving", "reports",
            "suites", "api"},
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
    return [*project_modules().values(), *sorted((REPO / "tests").rglob("*.py")), REPO / "noxfile.py"]


def test_the_layout_is_the_one_this_test_knows() -> None:
    """A test that checks nothing passes quietly; this one must see every side."""
    modules = project_modules()
    assert {m for m in modules if side(m) == "shared"} == SHARED, \
        "a module at harness/ itself is shared by every role: place it in one of harness/" + \
        ", harness/".join(ROLES) + ", or add it to SHARED if it is part of the cell or the record format"
    for expected in ("harness.worker.measure", "harness.runtime.pipeline", "harness.runtime.static_engine",
                     "harness.kernels.builder", "harness.analysis.results", "harness.driver.sweep",
                     "harness.driver.executors.raycluster", "harness.api", "reports.summary"):
        assert f"{NS}.{expected}" in modules
    assert {side(m) for m in modules} == set(ALLOWED)


def test_the_allowed_directions_have_no_cycle() -> None:
    """Each package can be read, tested and changed knowing only those below it."""
    done: set[str] = set()

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, "import cycle: " + " -> ".join((*path, node))
        if node not in done:
            for below in ALLOWED[node]:
                visit(below, (*path, node))
            done.add(node)

    for node in ALLOWED:
        visit(node, ())


@pytest.mark.parametrize("module", sorted(project_modules()))
def test_no_module_crosses_the_boundary(module: str) -> None:
    path = project_modules()[module]
    own = side(module)
    crossing = sorted(m for m in imported(ast.parse(path.read_text(), str(path)))
                      if side(m) not in (None, own) and side(m) not in ALLOWED[own])
    assert not crossing, f"{path.relative_to(REPO)} ({own}) imports {', '.join(crossing)}"


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


@pytest.mark.parametrize("script", sorted((REPO / "tests" / "bench").glob("[!_]*.py")), ids=lambda p: p.stem)
def test_each_bench_script_says_how_to_run_it_as_a_module(script: Path) -> None:
    """The scripts import dia_bench and each other as a package: run by path they would not."""
    tree = ast.parse(script.read_text())
    doc = ast.get_docstring(tree) or ""
    assert f"python -m tests.bench.{script.stem}" in doc
    assert any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)


# What the repository's top level holds: the four packages, their tests, the suites' data, user docs, the
# committed records, the build and CI files. A stray file there (a scratch suite, a log) is a mistake.
TOP_LEVEL = {"harness", "optimizations", "suites", "reports", "tests", "docs", "reference-results", ".ci", ".github",
             "noxfile.py", "pyproject.toml", "README.md", ".gitignore"}


def test_the_top_level_holds_only_what_the_layout_names() -> None:
    import shutil
    import subprocess

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout to list the tracked files")
    tracked = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True, text=True, check=True).stdout
    top = {line.split("/", 1)[0] for line in tracked.splitlines() if line}
    assert top <= TOP_LEVEL, f"not part of the layout at the top level: {sorted(top - TOP_LEVEL)}"
    assert {"harness", "optimizations", "suites", "reports", "tests"} <= top
