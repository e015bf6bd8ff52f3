"""nox sessions: tests, bench (the main job) and lint.

torch is installed first from DIA_BENCH_TORCH_SPEC (default `torch==2.13.0`, a CPU wheel on these
machines) so that resolving the project never pulls a multi-GB CUDA build by accident. On a GPU
machine set e.g. DIA_BENCH_TORCH_SPEC="torch==2.11.0" with the matching index in PIP_INDEX_URL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH_SPEC = os.environ.get("DIA_BENCH_TORCH_SPEC", "torch==2.13.0")
PYTHON = os.environ.get("DIA_BENCH_PYTHON") or None  # None: the interpreter running nox


def _install(session: nox.Session, *extras: str) -> None:
    target = ".[" + ",".join(extras) + "]" if extras else "."
    # A reused venv whose install came from the same pyproject, torch and extras is left as it is: the
    # install is editable, so code changes need none, and pip would spend about 10 s to change nothing.
    # DIA_BENCH_REINSTALL=1 installs anyway.
    location = getattr(session.virtualenv, "location", None)
    stamp = os.path.join(location, ".dia-bench-install") if location else None
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyproject.toml"), "rb") as fh:
        key = hashlib.sha256(fh.read() + f"\n{TORCH_SPEC}\n{target}".encode()).hexdigest()
    if stamp and os.path.isfile(stamp) and os.environ.get("DIA_BENCH_REINSTALL") != "1":
        with open(stamp) as fh:
            if fh.read() == key:
                session.log(f"{target} and {TORCH_SPEC} already installed from this pyproject (DIA_BENCH_REINSTALL=1 "
                            "to install again)")
                return
    # pip byte-compiles what it installs one file at a time (the tests' venv: about 50 of its 90 s on 2
    # cores); compileall does it on every core. Compiled it must be: where PYTHONDONTWRITEBYTECODE is set,
    # as on these machines, nothing else would, and every process would compile torch again as it imports.
    session.install("--no-compile", TORCH_SPEC)
    # Editable, so records can name the git commit of the code that measured them.
    session.install("--no-compile", "-e", target, f"--constraint={_torch_constraint(session)}")
    purelib = session.run_install("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                                  silent=True).strip()
    # Packages' own test folders are never imported. Exit status 1: a file in a syntax newer than this
    # Python (torch ships some), which pip's own compiling passes over too.
    session.run_install("python", "-m", "compileall", "-q", "-j", "0", "-x", r"site-packages/.*/tests?/", purelib,
                        silent=True, success_codes=[0, 1])
    if stamp:
        with open(stamp, "w") as fh:
            fh.write(key)


def _torch_constraint(session: nox.Session) -> str:
    path = os.path.join(session.create_tmp(), "torch-constraint.txt")
    with open(path, "w") as fh:
        fh.write(TORCH_SPEC + "\n")
    return path


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite on the dia-tiny preset (CUDA tests skip without a GPU)."""
    # ray: tests/test_ray.py starts a real two-node Ray cluster (about 240 MB; installs in about 11 s).
    # torchao (about 3 MB): its int8 weight-only layers inside the static engine's compiled step.
    _install(session, "test", "ray", "torchao")
    if os.environ.get("GITHUB_ACTIONS") == "true":
        # Its build downloads the actionlint binary from GitHub: only where GitHub is surely reachable.
        session.install("-e", ".[actionlint]", f"--constraint={_torch_constraint(session)}")
    # The slowest tests named in every log: the test command must stay within about 11 minutes on 2 cores,
    # and how far it is from that differs by CPU (a Zen 3 took half again a Zen 5's time).
    session.run("pytest", "-q", "--durations=40", *_parallel_args(), *session.posargs,
                env={"DIA_BENCH_CACHE": os.path.join(session.create_tmp(), "cache"),
                     # Tests time nothing, and OpenMP threads spinning while they wait would take the core
                     # the other test process needs (on 2 cores: 2.5x the CPU time, slower than one at a time).
                     "OMP_WAIT_POLICY": "passive"})


def _parallel_args() -> list[str]:
    """pytest-xdist's processes for the tests: a test's cell mostly keeps one core busy (tiny matrices, a
    process starting, a compiler), so two test processes on 2 cores take about half the time of one. A file
    stays in one process, so a module's fixtures (the Ray cluster, a long-form run) are made once;
    DIA_BENCH_CACHE is shared, and every write to it is atomic or locked, as it is for a sweep's workers.
    One process where an NVIDIA GPU is present: its tests read the GPU's memory through NVML, which counts
    every process on the GPU, and would count the other test process's."""
    if os.path.exists("/dev/nvidiactl"):
        return []
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return ["-n", str(min(cores, 4)), "--dist", "loadfile"] if cores >= 2 else []


@nox.session(name="tests-slow", python=PYTHON)
def tests_slow(session: nox.Session) -> None:
    """The tests marked slow: the real-size model (dia-1.6b, synthetic weights unless real ones are on
    disk), about 8 minutes on 2 cores, the Ray executor's failure cases (a node or the driver killed
    mid-sweep), about 1, and int8 (torchao's) and int4 (torch's) inside the compiled static step, about 1
    each; not part of `nox` by default nor of CI."""
    _install(session, "test", "ray", "torchao")
    cache = os.environ.get("DIA_BENCH_CACHE") or os.path.join(session.create_tmp(), "cache")
    session.run("pytest", "-q", "-m", "slow", *session.posargs, env={"DIA_BENCH_CACHE": cache})


def _suite_args(args: list[str], default: str) -> tuple[str, list[str]]:
    args = list(args)
    suite = default
    if "--suite" in args:
        i = args.index("--suite")
        suite = args[i + 1]
        del args[i:i + 2]
    return suite, args


def _option(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` among `args`, else None."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def append_step_summary(summary: str, target: str | None) -> bool:
    """Append a run's Markdown summary to a CI job summary file (GitHub's `GITHUB_STEP_SUMMARY`),
    where the CI system provides one and the run wrote a summary."""
    if not target or not os.path.isfile(summary):
        return False
    with open(summary, encoding="utf-8") as src, open(target, "a", encoding="utf-8") as dst:
        dst.write("\n" + src.read())
    return True


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The main job: the `default` suite (gpu with CUDA, else cpu) on this machine.

    `nox -s bench -- --suite smoke` picks another suite; other arguments go to `dia-bench sweep`.
    Where `GITHUB_STEP_SUMMARY` is set, the run's summary.md is appended to it, failed cells or not.
    """
    _install(session)
    suite, args = _suite_args(session.posargs, "default")
    # The run directory is chosen here, so that the summary can be found after the sweep.
    out = _option(args, "--out")
    if out is None and "--list" not in args:
        out = f"bench-results/{os.path.basename(suite).removesuffix('.toml')}-{dt.datetime.now():%Y%m%d-%H%M%S}"
        args += ["--out", out]
    session.run("dia-bench", "env")
    try:
        session.run("dia-bench", "sweep", suite, *args)
    finally:
        if out and append_step_summary(os.path.join(out, "summary.md"), os.environ.get("GITHUB_STEP_SUMMARY")):
            session.log(f"summary appended to {os.environ['GITHUB_STEP_SUMMARY']}")


def _load_stacks() -> list[dict]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "suites", "stacks.toml"), "rb") as fh:
        return tomllib.load(fh)["stack"]


# Software stacks (suites/stacks.toml): one venv each, with its own torch. Opt-in: none is a default
# session or part of .ci/run, since each venv costs gigabytes.
STACKS = _load_stacks()


def _install_stack(session: nox.Session, stack: dict, *extras: str) -> None:
    """The stack's torch first and pinned, then its packages, so dia-bench's own install moves neither."""
    session.install(*stack["torch"])
    path = os.path.join(session.create_tmp(), "stack-constraint.txt")
    with open(path, "w") as fh:
        fh.write("\n".join(stack["torch"]) + "\n")
    if stack.get("packages"):
        session.install(*stack["packages"], f"--constraint={path}")
        with open(path, "a") as fh:
            fh.write("\n".join(p for p in stack["packages"] if "==" in p) + "\n")
    wanted = sorted({*stack.get("extras", []), *extras})
    session.install("-e", ".[" + ",".join(wanted) + "]" if wanted else ".", f"--constraint={path}")


def _make_stack_session(stack: dict) -> None:
    def bench_stack(session: nox.Session) -> None:
        # One venv a stack (several GB each), so its tests run here too: `-- --tests-only` stops after them.
        _install_stack(session, stack, "test")
        suite, args = _suite_args(session.posargs, "stacks-cpu")
        tests_only = "--tests-only" in args
        args = [a for a in args if a != "--tests-only"]
        # Records name the stack they ran under, so a report over sibling runs can label its columns.
        env = {"DIA_BENCH_STACK": stack["name"]}
        if stack.get("tests"):
            cache = os.environ.get("DIA_BENCH_CACHE") or os.path.join(session.create_tmp(), "cache")
            session.run("pytest", "-q", "-rs", *stack["tests"], env={**env, "DIA_BENCH_CACHE": cache})
        if tests_only:
            return
        session.run("dia-bench", "env", env=env)
        session.run("dia-bench", "sweep", suite, *args, env=env)

    bench_stack.__doc__ = (f"Its tests, then a suite (default stacks-cpu), under the {stack['name']} stack: "
                           f"{stack.get('note', '')}")
    nox.session(name=f"bench-stack-{stack['name']}", python=PYTHON)(bench_stack)


for _stack in STACKS:
    _make_stack_session(_stack)


@nox.session(python=False)  # it only queues other sessions: no venv of its own
def stacks(session: nox.Session) -> None:
    """One suite under every stack into sibling run directories, then one report over them.

    `nox -s stacks -- --suite SUITE [--stacks a,b] [--out PARENT] [sweep arguments]`.
    """
    import time

    suite, args = _suite_args(session.posargs, "stacks-cpu")
    names = [s["name"] for s in STACKS]
    if "--stacks" in args:
        i = args.index("--stacks")
        names = [n for n in args[i + 1].split(",") if n]
        del args[i:i + 2]
        unknown = sorted(set(names) - {s["name"] for s in STACKS})
        if unknown:
            session.error(f"unknown stack(s) {', '.join(unknown)}; suites/stacks.toml has "
                          f"{', '.join(s['name'] for s in STACKS)}")
    parent = os.path.join("bench-results", f"stacks-{suite}-{time.strftime('%Y%m%d-%H%M%S')}")
    if "--out" in args:
        i = args.index("--out")
        parent = args[i + 1]
        del args[i:i + 2]
    # Sessions run in the order notified: each stack's sweep, then the report over all of them.
    for name in names:
        session.notify(f"bench-stack-{name}", ["--suite", suite, "--out", os.path.join(parent, name), *args])
    session.notify("stacks-report", [parent, *names])


@nox.session(name="stacks-report", python=PYTHON)
def stacks_report(session: nox.Session) -> None:
    """The report over a `stacks` run: `nox -s stacks-report -- PARENT [STACK...]` (stack order = column order)."""
    if not session.posargs:
        session.error("give the parent directory of a stacks run: nox -s stacks-report -- PARENT")
    parent, *names = session.posargs
    names = names or [s["name"] for s in STACKS if os.path.isdir(os.path.join(parent, s["name"]))]
    runs = [os.path.join(parent, n) for n in names if os.path.isfile(os.path.join(parent, n, "run.json"))]
    missing = [n for n in names if os.path.join(parent, n) not in runs]
    if missing:
        session.warn(f"no run for stack(s) {', '.join(missing)} under {parent}: their sweeps did not start")
    if not runs:
        session.error(f"no stack runs under {parent}")
    _install(session)
    session.run("dia-bench", "report", *runs, "-o", os.path.join(parent, "report.html"))
    session.run("dia-bench", "report", "--markdown", *runs, "-o", os.path.join(parent, "report.md"))


@nox.session(python=False)
def descript(session: nox.Session) -> None:
    """The descript codec backend against transformers' DacModel (the descript stack's tests)."""
    session.notify("bench-stack-descript", ["--tests-only", *session.posargs])


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "harness", "optimizations", "reports", "suites", "tests", "noxfile.py")
