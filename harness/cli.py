"""The `dia-bench` command line."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from dia_bench.harness.errors import UsageError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_SKIPPED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, no usage block
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _argument(convert: Callable[[str], Any], accept: Callable[[Any], bool], need: str) -> Callable[[str], Any]:
    """An argparse type: `convert` the text, then refuse what `accept` rejects, saying what it `need`s."""
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            kind = "whole number" if convert is int else "number"
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{text} {need}")
        return value
    return parse


_number = _argument(float, lambda v: True, "")
_positive_float = _argument(float, lambda v: math.isfinite(v) and v > 0, "must be a finite number > 0")
_count = _argument(int, lambda v: v >= 1, "must be at least 1")
_percent = _argument(float, lambda v: math.isfinite(v) and v >= 0, "must be a percentage >= 0, such as 10")
_quality_bar = _argument(float, lambda v: 0 <= v <= 1,
                         "is not a total variation distance: give a number from 0 to 1, for example 0.05")


def _max_tv(args: argparse.Namespace) -> float:
    from dia_bench.harness.analysis.quality import DEFAULT_MAX_TOTAL_VARIATION

    return DEFAULT_MAX_TOTAL_VARIATION if args.max_tv is None else args.max_tv


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dia-bench", description="Measure what makes Dia text-to-speech fast.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="measure one configuration in an isolated worker")
    run.add_argument("--preset", default="dia-1.6b", help="dia-1.6b (default) or dia-tiny")
    run.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present, else cpu)")
    run.add_argument("--seconds", type=_number, default=1.0, help="audio to generate per request")
    run.add_argument("--text", default=None, help="the transcript, with [S1]/[S2] speaker tags")
    run.add_argument("--batch", type=int, default=1, help="requests generated together")
    run.add_argument("--repeats", type=int, default=3)
    run.add_argument("--warmup", type=int, default=1)
    run.add_argument("--warmup-seconds", type=float, default=None,
                     help="cut the warmup requests short: the prefill, then this much audio's worth of decode steps "
                          "(default: a whole request of the cell's length, which compile, codec-compile and "
                          "cudnn-benchmark always get)")
    run.add_argument("--seed", type=int, default=0, help="sampling seed")
    run.add_argument("--weights-seed", type=int, default=0, help="seed of synthetic weights")
    run.add_argument("--weights", default=None, help="a directory from DiaForConditionalGeneration.save_pretrained")
    run.add_argument("--codec-weights", default=None, help="a directory from DacModel.save_pretrained")
    run.add_argument("--codec", default="transformers", help="codec backend: transformers or descript")
    run.add_argument("--opt", action="append", default=[], metavar="NAME[=VALUE]",
                     help="an optimization plugin (repeatable; see `dia-bench plugins`)")
    run.add_argument("--cfg-scale", type=_number, default=3.0)
    run.add_argument("--temperature", type=_number, default=1.8)
    run.add_argument("--top-p", type=_number, default=0.90)
    run.add_argument("--top-k", type=int, default=45)
    run.add_argument("--json", dest="json_path", default=None, help="where to write the record")
    run.add_argument("--save-audio", default=None, help="write the first request's audio as WAV")
    run.add_argument("--profile", default=None, metavar="DIR", help="trace one extra repeat with torch.profiler")
    run.add_argument("--target-ci-pct", type=_number, default=None, metavar="PCT",
                     help="repeat until the 95%% interval is within +-PCT%% (needs --max-repeats)")
    run.add_argument("--max-repeats", type=int, default=None, help="the most repeats --target-ci-pct may spend")
    run.add_argument("--timeout", type=_positive_float, default=3600.0, help="seconds before the worker is killed")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument("--cold", action="store_true", help="compile from an empty cache (the cost a first run pays)")

    sweep = sub.add_parser("sweep", help="run a suite of cells, each in its own worker")
    sweep.add_argument("suite", help="a shipped suite (smoke, cpu, gpu, guide, scaling, default) or a .toml path")
    sweep.add_argument("--out", default=None, help="run directory (default: bench-results/<suite>-<time>)")
    sweep.add_argument("--resume", action="store_true", help="run only the cells missing from --out")
    sweep.add_argument("--only", default=None, metavar="PATTERN", help="cells whose description matches")
    sweep.add_argument("--list", action="store_true", help="print the cells and exit")
    sweep.add_argument("--quiet", action="store_true")
    sweep.add_argument("--cold", action="store_true",
                       help="compile from an empty cache in every cell (the cost a first run pays)")
    sweep.add_argument("--executor", default="local", choices=["local", "ray"],
                       help="where cells run: this machine, one at a time (default), or a Ray cluster")
    sweep.add_argument("--address", default=None, metavar="ADDR",
                       help="with --executor ray: `auto` (a running cluster this node is part of), ray://HOST:PORT, "
                            "or none for a Ray instance on this machine")
    sweep.add_argument("--retry-failed", action="store_true",
                       help="with --out RUN_DIR: measure its failed cells again, and any missing ones")

    cmp_ = sub.add_parser("compare", help="cells that got faster or slower between two runs")
    cmp_.add_argument("base")
    cmp_.add_argument("new")
    cmp_.add_argument("--max-regression", type=_percent, default=None, metavar="PCT",
                      help="exit 1 when a cell is significantly slower by more than PCT percent")
    cmp_.add_argument("--fail-on", choices=["regression", "any-change"], default=None,
                      help="what exits 1 (given this or --max-regression): `regression` (the default) a cell "
                           "significantly slower by more than --max-regression (default 0), or one that now fails; "
                           "`any-change` also a cell significantly faster by as much, or one that appeared or went")
    cmp_.add_argument("--format", choices=["text", "markdown", "json"], default="text",
                      help="the table on stdout: text (default), markdown (for a CI job summary) or json")

    hist = sub.add_parser("history", help="every configuration across runs in time order, with its change points")
    hist.add_argument("run_dirs", nargs="+", metavar="RUN_DIR_OR_PARENT",
                      help="run directories (sweep or load), or folders holding them at any depth")
    hist.add_argument("-o", "--output", default=None,
                      help="default: history.html (history.md with --markdown, history.json with --format json)")
    hist.add_argument("--markdown", action="store_true", help="a compact Markdown page instead (--format markdown)")
    hist.add_argument("--format", choices=FORMATS, default=None, help="html (default), markdown or json")
    hist.add_argument("--min-step", type=_percent, default=None, metavar="PCT",
                      help="the smallest change between runs called a step (default 5)")

    noise = sub.add_parser("noise", help="how much worker processes differ on a machine: what runs measured, the "
                                         "prior a new run starts from")
    noise.add_argument("run_dirs", nargs="*", metavar="RUN_DIR_OR_PARENT",
                       help="run directories, or folders holding them at any depth")
    noise.add_argument("--remember", action="store_true",
                       help="add the runs to their machine's history, from which later runs take their prior")

    export = sub.add_parser("export", help="write a run in another tool's format")
    export.add_argument("run_dir")
    export.add_argument("--format", choices=["pytest-benchmark"], default="pytest-benchmark")
    export.add_argument("-o", "--output", default=None)

    report = sub.add_parser("report", help="an HTML report of one or more runs, beside the guide's tables")
    report.add_argument("run_dirs", nargs="+")
    report.add_argument("-o", "--output", default=None)
    report.add_argument("--markdown", action="store_true", help="a compact Markdown summary (--format markdown)")
    report.add_argument("--format", choices=FORMATS, default=None,
                        help="html (default), markdown, or json: the tables and verdicts as data, with intervals "
                             "and the reason for each choice")
    report.add_argument("--max-tv", type=_quality_bar, default=None, metavar="TV",
                        help="quality bar: the largest mean total variation from the fp32 reference's sampled "
                             "distributions a recommended configuration may have (default 0.05)")

    rec = sub.add_parser("recommend", help="hardware recommendations merged from runs on many machines")
    rec.add_argument("run_dirs", nargs="+", metavar="RUN_DIR_OR_PARENT",
                     help="sweep and load run directories, or folders holding them at any depth")
    rec.add_argument("-o", "--output", default=None)
    rec.add_argument("--markdown", action="store_true", help="Markdown instead of HTML (--format markdown)")
    rec.add_argument("--format", choices=FORMATS, default=None, help="html (default), markdown or json")
    rec.add_argument("--max-tv", type=_quality_bar, default=None, metavar="TV",
                     help="quality bar (see `dia-bench report --help`; default 0.05)")

    check = sub.add_parser("crosscheck", help="compare the harness's generation time with a plain model.generate")
    check.add_argument("--preset", default="dia-1.6b")
    check.add_argument("--seconds", type=_number, default=1.0)
    check.add_argument("--repeats", type=_count, default=3)
    check.add_argument("--warmup", type=int, default=1)
    check.add_argument("--weights", default=None)
    check.add_argument("--tolerance", type=_percent, default=3.0, help="allowed difference in percent")
    check.add_argument("--rounds", type=_count, default=2, help="rounds of both, alternating which goes first")

    upgrade = sub.add_parser("upgrade", help="rewrite older run directories in place to the current record schema")
    upgrade.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                         help="run directories, or folders holding them at any depth")

    schema = sub.add_parser("schema", help="the record's fields and the schema's versions, as Markdown")
    schema.add_argument("-o", "--output", default=None, help="write it here (default: standard output)")

    readme = sub.add_parser("readme", help="a README.md for a run directory, or an index of run directories")
    readme.add_argument("run_dirs", nargs="*", metavar="RUN_DIR")
    readme.add_argument("--out", default=None, metavar="FILE",
                        help="with one RUN_DIR: write here instead of RUN_DIR/README.md; with --index: write here "
                             "instead of standard output, links relative to FILE's folder")
    readme.add_argument("--index", default=None, metavar="PARENT",
                        help="a Markdown list of the run directories directly in PARENT, each with a link to its "
                             "README.md")

    load = sub.add_parser("load", help="time to first audio and latency under open-loop Poisson load, and the "
                                       "highest rate that meets a TTFA target")
    _engine_arguments(load)
    load.add_argument("--url", default=None, help="load this POST endpoint (a `dia-bench serve` at "
                                                  "http://HOST:PORT/v1/speech) instead of a pipeline in this process")
    load.add_argument("--rates", required=True, metavar="R1,R2,...", help="offered rates in requests per second")
    load.add_argument("--requests", type=_count, default=None, metavar="N", help="requests per rate")
    load.add_argument("--duration", type=_positive_float, default=None, metavar="S",
                      help="seconds of arrivals per rate (instead of --requests)")
    load.add_argument("--seconds", type=_positive_float, default=1.0, help="audio asked for per request")
    load.add_argument("--texts", default="short,medium", metavar="LABELS",
                      help="the transcripts requests read, in a seeded order: short, medium, long")
    load.add_argument("--seed", type=int, default=0, help="seeds the arrivals, the texts and the sampling")
    load.add_argument("--timeout", type=_positive_float, default=60.0, metavar="S",
                      help="seconds a request may take before it counts as timed out")
    load.add_argument("--target-ttfa", type=_positive_float, default=1.0, metavar="S",
                      help="the p95 time to first audio the max-rate search holds each rate to")
    load.add_argument("--criterion", choices=["upper-bound", "estimate"], default="upper-bound",
                      help="what of p95 TTFA must meet the target: its 95%% interval's upper bound (the default; "
                           "it needs 72 requests a rate) or the estimate itself")
    load.add_argument("--out", required=True, metavar="DIR", help="where load.json goes")

    serve = sub.add_parser("serve", help="serve speech over HTTP (POST /v1/speech) with the plugins applied; "
                                         "needs the serve extra")
    _engine_arguments(serve)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000, help="0 takes a free port (the URL is printed)")

    env = sub.add_parser("env", help="what this machine offers")
    env.add_argument("--json", action="store_true")

    plugins = sub.add_parser("plugins", help="list optimization plugins and their availability here")
    plugins.add_argument("--device", default=None)
    plugins.add_argument("--json", action="store_true")
    return parser


def _engine_arguments(parser: argparse.ArgumentParser) -> None:
    """What builds a served pipeline, as `run` names it, and how requests are batched."""
    parser.add_argument("--preset", default=None, help="dia-1.6b (default) or dia-tiny")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if present, else cpu)")
    parser.add_argument("--opt", action="append", default=[], metavar="NAME[=VALUE]",
                        help="an optimization plugin (repeatable; see `dia-bench plugins`)")
    parser.add_argument("--weights", default=None, help="a directory from DiaForConditionalGeneration.save_pretrained")
    parser.add_argument("--codec-weights", default=None, help="a directory from DacModel.save_pretrained")
    parser.add_argument("--weights-seed", type=int, default=0, help="seed of synthetic weights")
    parser.add_argument("--batch", type=_count, default=None, metavar="B",
                        help="the most requests of one length decoded together (default 1)")
    parser.add_argument("--max-wait-ms", type=_argument(float, lambda v: math.isfinite(v) and v >= 0,
                                                        "must be a number of milliseconds >= 0"),
                        default=None, metavar="W", help="how long a batch waits to fill (default 0)")
    parser.add_argument("--chunk-frames", type=_count, default=None, metavar="F",
                        help="frames per streamed chunk (default 43, about half a second)")
    parser.add_argument("--first-chunk-frames", type=_count, default=None, metavar="F",
                        help="frames in the first chunk alone (default: --chunk-frames); fewer are heard sooner")


def _cell_from_args(args: argparse.Namespace):
    from dia_bench.harness.cell import DEFAULT_TEXT, Cell
    from dia_bench.harness.devices import check_device, default_device

    cell = Cell(
        preset=args.preset, device="cpu", plugins=list(args.opt),
        text=DEFAULT_TEXT if args.text is None else args.text, seconds=args.seconds, batch=args.batch,
        warmup=args.warmup, warmup_seconds=getattr(args, "warmup_seconds", None), repeats=args.repeats, seed=args.seed,
        weights_seed=args.weights_seed,
        weights=args.weights, codec_weights=args.codec_weights, codec=args.codec, cfg_scale=args.cfg_scale,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        target_ci_pct=args.target_ci_pct, max_repeats=args.max_repeats,
        profile_dir=str(Path(args.profile).resolve()) if args.profile else None,
        save_audio=str(Path(args.save_audio).resolve()) if args.save_audio else None,
    )
    cell.validate()
    cell.device = check_device(args.device) if args.device else default_device()
    if cell.target_ci_pct is not None:
        from dia_bench.harness import env, process_noise

        kind = process_noise.noise_kind(cell.device, cell.preset)
        cell.process_term = process_noise.as_dict(process_noise.prior_for(env.collect("cpu"), kind))
    return cell


def check_cell_inputs(cell) -> None:
    """Everything the parent can check before a worker starts; raises UsageError."""
    from dia_bench.harness.runtime.codec import CODEC_BACKENDS, import_descript
    from dia_bench.harness.weights_dir import check_weights_dir
    from dia_bench.optimizations.registry import resolve

    cell.validate()
    if cell.codec not in CODEC_BACKENDS:
        raise UsageError(f"unknown codec backend {cell.codec!r}: choose one of {', '.join(CODEC_BACKENDS)}")
    if cell.codec == "descript":
        import_descript()
    if cell.weights:
        cell.weights = str(check_weights_dir(cell.weights, "model").resolve())
    if cell.codec_weights and cell.codec == "transformers":
        cell.codec_weights = str(check_weights_dir(cell.codec_weights, "codec").resolve())
    resolve(cell.plugins, cell.device)


def cmd_run(args: argparse.Namespace) -> int:
    from dia_bench.harness.driver.outputs import AUDIO_SUFFIXES, output_dir, output_file
    from dia_bench.harness.jsonio import write_json_atomic
    from dia_bench.reports.summary import print_record

    cell = _cell_from_args(args)
    check_cell_inputs(cell)
    # Every output is checked before the worker starts: nothing measured may be lost to a bad path.
    json_path = output_file(args.json_path or f"bench-results/run-{dt.datetime.now():%Y%m%d-%H%M%S}.json",
                            "--json")
    if args.save_audio:
        output_file(args.save_audio, "--save-audio", AUDIO_SUFFIXES)
    if args.profile:
        output_dir(args.profile, "--profile")
    rec = _run_with_progress(cell, args.timeout, quiet=args.quiet, cold=args.cold)
    try:
        write_json_atomic(json_path, rec)
    except OSError as exc:
        # Never lose a measurement to a bad path: keep it somewhere that works and say where.
        fallback = Path(tempfile.gettempdir()) / json_path.name
        write_json_atomic(fallback, rec)
        print(f"dia-bench: could not write {json_path} ({exc.strerror}); record kept at {fallback}",
              file=sys.stderr)
        print_record(rec, fallback)
        return EXIT_FAILED
    print_record(rec, json_path)
    return {"ok": EXIT_OK, "skipped": EXIT_SKIPPED}.get(rec["status"], EXIT_FAILED)


def _run_with_progress(cell, timeout: float, quiet: bool, cold: bool = False) -> dict[str, Any]:
    from rich.console import Console

    from dia_bench.harness.caches import COLD_ENV
    from dia_bench.harness.driver.launcher import run_isolated

    extra_env = {COLD_ENV: "1"} if cold else {}
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        def plain(info: dict[str, Any]) -> None:
            if not quiet:
                detail = f" {info['i']}/{info['n']}" if "i" in info else ""
                console.print(f"[dim]{cell.preset} on {cell.device}: {info['phase']}{detail}[/dim]")
        return run_isolated(cell, timeout_s=timeout, on_progress=plain, extra_env=extra_env)
    with console.status(f"{cell.preset} on {cell.device}: starting worker") as status:
        def update(info: dict[str, Any]) -> None:
            detail = f" {info['i']}/{info['n']}" if "i" in info else ""
            status.update(f"{cell.preset} on {cell.device}: {info['phase']}{detail}")
        return run_isolated(cell, timeout_s=timeout, on_progress=update, extra_env=extra_env)


def cmd_crosscheck(args: argparse.Namespace) -> int:
    """Harness worker and a plain script, each in its own process, on the same inputs (CPU, fp32).

    Rounds alternate the order (harness-plain, then plain-harness) so a machine drifting during
    the check weighs on both sides alike.
    """
    import json
    import statistics
    import subprocess

    from dia_bench.harness.cell import Cell
    from dia_bench.harness.presets import get_preset
    from dia_bench.harness.runtime.weights import resolve as resolve_weights

    cell = Cell(preset=args.preset, device="cpu", seconds=args.seconds, repeats=args.repeats, warmup=args.warmup,
                weights=args.weights, fidelity=False)
    check_cell_inputs(cell)
    weights_dir = resolve_weights(get_preset(cell.preset), "model", cell.weights, cell.weights_seed).path
    harness_times: list[float] = []
    plain_times: list[float] = []

    def run_harness() -> None:
        rec = _run_with_progress(cell, 24 * 3600, quiet=False)
        if rec["status"] != "ok":
            raise UsageError(f"harness cell {rec['status']}: {rec['reason']}")
        harness_times.extend(rec["repeats_seconds"])
        print(f"harness: {rec['repeats_seconds']}", flush=True)

    def run_plain() -> None:
        plain = subprocess.run([sys.executable, "-m", "dia_bench.harness.worker.plain_generate",
                                "--weights", weights_dir, "--text", cell.text, "--frames", str(cell.frames),
                                "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--seed", str(cell.seed)],
                               capture_output=True, text=True, check=True)
        times = json.loads(plain.stdout.strip().splitlines()[-1])["repeats_seconds"]
        plain_times.extend(times)
        print(f"plain:   {times}", flush=True)

    for i in range(args.rounds):
        for step in ((run_harness, run_plain) if i % 2 == 0 else (run_plain, run_harness)):
            step()
    harness_s, plain_s = statistics.median(harness_times), statistics.median(plain_times)
    from dia_bench.harness.stats import ratio_ci

    ci = ratio_ci(plain_times, harness_times)  # > 1 would mean the harness reads faster than plain
    diff = (harness_s - plain_s) / plain_s * 100
    print(f"harness generation, median of {len(harness_times)}: {harness_s:.3f} s")
    print(f"plain model.generate, median of {len(plain_times)}: {plain_s:.3f} s")
    interval = (f"95% CI [{ci['low']:.3f}, {ci['high']:.3f}]" if ci["low"] is not None else ci["reason"])
    print(f"difference: {diff:+.2f}% (tolerance {args.tolerance:g}%); plain/harness ratio {ci['speedup']:.3f}, "
          f"{interval}")
    return EXIT_OK if abs(diff) <= args.tolerance else EXIT_FAILED


def cmd_sweep(args: argparse.Namespace) -> int:
    from dia_bench.harness.driver.expand import expand
    from dia_bench.harness.driver.outputs import output_dir
    from dia_bench.harness.driver.suite import find_suite, parse_suite
    from dia_bench.harness.driver.sweep import describe, run_suite, select
    from dia_bench.reports.summary import print_sweep

    suite = parse_suite(find_suite(args.suite))
    if args.list:
        # With Ray, what a machine lacks is for the node that runs the cell to say: listed as runnable.
        chosen = select(expand(suite, this_machine=args.executor == "local"), args.only)
        if not chosen:
            raise UsageError(f"--only {args.only!r} matches no cell of suite {suite.name!r} (see --list without it)")
        for p in chosen:
            print(f"{p.key:22} {describe(p)}" + (f"  [skipped: {p.skip_reason}]" if p.skip_reason else ""))
        return EXIT_OK
    if (args.resume or args.retry_failed) and not args.out:
        raise UsageError(f"{'--resume' if args.resume else '--retry-failed'} needs --out RUN_DIR, the run to finish")
    from dia_bench.harness.driver.executors import get

    executor = get(args.executor, args.address)  # first: a missing Ray leaves nothing behind
    try:
        if args.out:
            output_dir(args.out, "--out")
        out = Path(args.out or f"bench-results/{suite.name}-{dt.datetime.now():%Y%m%d-%H%M%S}")
        run_suite(suite, out, resume=args.resume, only=args.only, quiet=args.quiet, cold=args.cold,
                  executor=executor, retry_failed=args.retry_failed)
    finally:
        executor.close()
    print_sweep(out)
    from dia_bench.harness import rundir
    from dia_bench.reports.html import write as write_html
    from dia_bench.reports.markdown import write as write_markdown

    summary = write_markdown([out], out / "summary.md")
    report = write_html([out], out / "report.html")
    print(f"summary: {summary}")
    print(f"report: {report}")
    failed = [r for r in rundir.records(out) if r.get("status") == "failed"]
    if failed:
        print(f"dia-bench: {len(failed)} cell(s) failed; their records say why", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from dia_bench.harness.analysis import load_runs
    from dia_bench.harness.analysis.comparison import compare_runs, context_differences, gate, status_changes
    from dia_bench.reports.summary import print_compare

    loads = [load_runs.load_dir(p) is not None for p in (args.base, args.new)]
    if any(loads):
        return _compare_loads(args, loads)
    base, new = _run_dirs([args.base, args.new])
    if base.resolve() == new.resolve():
        raise UsageError(f"compare {base} {new}: the same run twice; give the run to compare against first, "
                         "then the new one")
    table = compare_runs(base, new)
    changes = status_changes(base, new)
    differences = context_differences(base, new)
    gating = args.fail_on is not None or args.max_regression is not None
    fail_on = args.fail_on or "regression"
    threshold = args.max_regression or 0.0
    failing = gate(table, changes, fail_on, threshold) if gating else []
    if args.format == "text":
        print_compare(table, changes)
        if not table.empty:
            print(f"intervals include the noise between processes: {table.iloc[0]['process_note']}")
    else:
        from dia_bench.reports.compare import render

        print(render(args.format, base, new, table, changes, differences,
                     {"fail_on": fail_on if gating else None, "threshold_pct": threshold if gating else None,
                      "failing": failing}), end="")
    if differences:
        print(f"dia-bench: the runs differ in more than the code ({'; '.join(differences)}): "
              "a change may come from that", file=sys.stderr)
    if failing:
        what = "changed" if fail_on == "any-change" else "regressed"
        print(f"dia-bench: {len(failing)} cell(s) {what} by more than {threshold:g}% beyond noise "
              f"(--fail-on {fail_on})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _compare_loads(args: argparse.Namespace, loads: list[bool]) -> int:
    from dia_bench.harness.analysis import load_runs
    from dia_bench.reports import load_compare

    if not all(loads):
        one, other = (args.base, args.new) if loads[0] else (args.new, args.base)
        raise UsageError(f"compare {args.base} {args.new}: {one} is a load run and {other} is not; compare two "
                         "load runs (dia-bench load) or two sweep runs")
    base, new = load_runs.read(Path(args.base)), load_runs.read(Path(args.new))
    if base.path.resolve() == new.path.resolve():
        raise UsageError(f"compare {args.base} {args.new}: the same run twice; give the run to compare against "
                         "first, then the new one")
    gating = args.fail_on is not None or args.max_regression is not None
    fail_on = (args.fail_on or "regression") if gating else None
    table, differences, gate = load_compare.compare(base, new, fail_on, args.max_regression or 0.0)
    print(load_compare.render(args.format, base, new, table, differences, gate), end="")
    if differences:
        print(f"dia-bench: the runs differ in more than the code ({'; '.join(differences)}): "
              "a change may come from that", file=sys.stderr)
    if gate["failing"]:
        print(f"dia-bench: {len(gate['failing'])} load figure(s) failed --fail-on {fail_on}: "
              f"{'; '.join(gate['failing'])}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from dia_bench.harness.analysis import load_runs
    from dia_bench.harness.analysis.changepoints import MIN_EFFECT
    from dia_bench.harness.driver.outputs import output_file
    from dia_bench.reports import history

    fmt = _format(args)
    dirs, loads = load_runs.find(args.run_dirs)
    for d in loads:
        load_runs.read(d)  # a one-line error for a damaged load.json before anything is written
    output = output_file(args.output or {"html": "history.html", "markdown": "history.md",
                                         "json": "history.json"}[fmt], "-o")
    min_effect = MIN_EFFECT if args.min_step is None else args.min_step / 100
    if fmt == "json":
        from dia_bench.reports import as_json

        out = as_json.write(as_json.plain(history.as_json(dirs, min_effect, loads)), output)
    else:
        out = history.write(dirs, output, markdown=fmt == "markdown", min_effect=min_effect, load_dirs=loads)
    print(f"history of {len(dirs)} run(s) and {len(loads)} load run(s): {out}")
    return EXIT_OK


def cmd_noise(args: argparse.Namespace) -> int:
    from dia_bench.harness import env, process_noise, rundir

    dirs = rundir.find(args.run_dirs) if args.run_dirs else []
    for line in process_noise.describe_runs(dirs):
        print(line)
    if args.remember:
        added = sum(process_noise.remember(d, list(rundir.records(d)), rundir.read_meta(d).get("machine") or {})
                    for d in dirs)
        print(f"remembered {added} measurement(s) in {_shown(process_noise.history_path())}")
    machine = env.collect("cpu")
    from dia_bench.harness.presets import PRESETS

    for kind in (process_noise.noise_kind(d, p) for d in ("cpu", "cuda") for p in PRESETS):
        prior = process_noise.prior_for(machine, kind)
        print(f"a new {kind} run on this machine starts from {prior.sd_pct:.1f}% a process ({prior.df:.1f} df): "
              f"{prior.source}")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from dia_bench.harness.driver.outputs import output_file
    from dia_bench.harness.jsonio import write_json_atomic
    from dia_bench.reports.export import to_pytest_benchmark

    (run_dir,) = _run_dirs([args.run_dir])
    output = output_file(args.output or run_dir / "pytest-benchmark.json", "-o")
    data = to_pytest_benchmark(run_dir)
    write_json_atomic(output, data)
    print(f"{len(data['benchmarks'])} benchmarks written to {output}")
    return EXIT_OK


def _run_dirs(paths: list[str]) -> list[Path]:
    """Run directories; a path to a run's own run.json stands for its directory."""
    from dia_bench.harness import rundir

    dirs = []
    for p in paths:
        d = Path(p)
        if d.name == rundir.RUN_FILE and d.is_file():
            d = d.parent
        rundir.read_meta(d)  # a one-line error for anything that is not a run directory
        dirs.append(d)
    return dirs


FORMATS = ("html", "markdown", "json")


def _format(args: argparse.Namespace) -> str:
    if args.markdown and args.format not in (None, "markdown"):
        raise UsageError(f"--markdown and --format {args.format} ask for two formats: keep one")
    return "markdown" if args.markdown else (args.format or "html")


def cmd_report(args: argparse.Namespace) -> int:
    from dia_bench.harness.analysis import load_runs
    from dia_bench.harness.driver.outputs import output_file

    fmt = _format(args)
    loads = [d for d in map(load_runs.load_dir, args.run_dirs) if d is not None]
    if loads:
        return _report_load(args, fmt, loads)
    dirs = _run_dirs(args.run_dirs)
    if fmt == "json":
        from dia_bench.reports import as_json

        out = as_json.write(as_json.report(dirs, _max_tv(args)), output_file(args.output or "report.json", "-o"))
    elif fmt == "markdown":
        from dia_bench.reports.markdown import write as write_markdown

        out = write_markdown(dirs, output_file(args.output or "report.md", "-o"), _max_tv(args))
    else:
        from dia_bench.reports.html import write as write_html

        out = write_html(dirs, output_file(args.output or "report.html", "-o"), _max_tv(args))
    print(f"report: {out}")
    return EXIT_OK


def _report_load(args: argparse.Namespace, fmt: str, loads: list[Path]) -> int:
    """A load run's page (load.html), drawn again from its load.json."""
    from dia_bench.harness.analysis import load_runs
    from dia_bench.harness.driver.outputs import output_file
    from dia_bench.reports import load_page

    if len(loads) != 1 or len(args.run_dirs) != 1:
        raise UsageError("report draws one load run's page at a time: give one directory written by "
                         "`dia-bench load` (compare two with `dia-bench compare`)")
    if fmt != "html":
        raise UsageError(f"--format {fmt} of a load run: its page is HTML and its data is load.json already; "
                         "leave --format out")
    run = load_runs.read(loads[0])
    out = load_page.write(run.path / load_runs.LOAD_FILE, output_file(args.output or "load.html", "-o"))
    print(f"report: {out}")
    return EXIT_OK


def cmd_recommend(args: argparse.Namespace) -> int:
    from dia_bench.harness.analysis import load_runs
    from dia_bench.harness.driver.outputs import output_file
    from dia_bench.reports.recommend import write

    fmt = _format(args)
    dirs, loads = load_runs.find(args.run_dirs)
    dirs = _run_dirs([str(d) for d in dirs])
    for d in loads:
        load_runs.read(d)  # a one-line error for a damaged load.json before anything is written
    output = output_file(args.output or {"html": "recommend.html", "markdown": "recommend.md",
                                         "json": "recommend.json"}[fmt], "-o")
    if fmt == "json":
        from dia_bench.reports import as_json

        out = as_json.write(as_json.recommendations(dirs, _max_tv(args), loads), output)
    else:
        out = write(dirs, output, markdown=fmt == "markdown", max_tv=_max_tv(args), load_dirs=loads)
    print(f"recommendations: {out}")
    return EXIT_OK


def _shown(path: Path) -> str:
    """A path as the user would type it here: relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def cmd_upgrade(args: argparse.Namespace) -> int:
    from dia_bench.harness import rundir

    for d in rundir.find(args.run_dirs):
        print(rundir.upgrade(d).line(_shown(d)), flush=True)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from dia_bench.harness.driver.outputs import output_file
    from dia_bench.harness.record_schema import markdown

    if args.output:
        out = output_file(args.output, "-o")
        out.write_text(markdown())
        print(f"record schema: {out}")
    else:
        print(markdown(), end="")
    return EXIT_OK


def cmd_readme(args: argparse.Namespace) -> int:
    from dia_bench.harness.driver.outputs import output_file
    from dia_bench.reports import readme

    if args.index is not None:
        if args.run_dirs:
            raise UsageError("--index PARENT lists the run directories in PARENT: give no RUN_DIR with it")
        parent = Path(args.index)
        if not parent.is_dir():
            raise UsageError(f"--index {parent}: no such directory; give the folder that holds the run directories")
        if args.out:
            out = output_file(args.out, "--out")
            out.write_text(readme.index(parent, out.resolve().parent))
            print(f"index: {out}")
        else:
            print(readme.index(parent, Path.cwd()), end="")
        return EXIT_OK
    if not args.run_dirs:
        raise UsageError("give a RUN_DIR (or --index PARENT); see `dia-bench readme --help`")
    if args.out and len(args.run_dirs) > 1:
        raise UsageError(f"--out names one file, and {len(args.run_dirs)} run directories were given: "
                         "leave --out out to write each RUN_DIR/README.md")
    from dia_bench.harness.analysis import load_runs
    from dia_bench.reports import load_readme

    for given in args.run_dirs:
        loaded = load_runs.load_dir(given)
        d = loaded or _run_dirs([given])[0]
        text = load_readme.render(d) if loaded else readme.render(d)
        out = output_file(args.out, "--out") if args.out else d / "README.md"
        out.write_text(text)
        print(f"readme: {out}")
    return EXIT_OK


class _Skip(Exception):
    """This machine cannot run the plugins asked for: the command exits 3 with the reason."""


def _serving_cell(args: argparse.Namespace, texts: list[str], seconds: float):
    from dia_bench.harness.cell import Cell
    from dia_bench.harness.devices import check_device, default_device

    cells = [Cell(preset=args.preset or "dia-1.6b", device="cpu", plugins=list(args.opt), text=text,
                  seconds=seconds, weights=args.weights, codec_weights=args.codec_weights,
                  weights_seed=args.weights_seed) for text in texts]
    for cell in cells:  # each text against Dia's encoder, each length against its decoder
        cell.validate()
    cell = cells[0]
    cell.device = check_device(args.device) if args.device else default_device()
    check_cell_inputs(cell)
    return cell


def _served_pipeline(cell):
    """The pipeline with the cell's plugins applied, loaded and transformed as the worker does for `run`
    (harness/worker/measure.py), but in this process: a server keeps its pipeline for its lifetime."""
    import os

    from dia_bench.optimizations.registry import apply_plan, resolve

    plan = resolve(cell.plugins, cell.device)
    for step in plan.steps:
        os.environ.update(step.plugin.process_env(step.value))
    reasons = plan.unavailable(cell.device)
    if reasons:
        raise _Skip("; ".join(reasons))
    import torch

    from dia_bench.harness.worker.measure import load_pipeline, sampling_of

    for step in plan.steps:
        step.plugin.configure_torch(step.value)
    index = torch.device(cell.device).index
    if cell.device.startswith("cuda") and index is not None:
        torch.cuda.set_device(index)
    pipe, weights = load_pipeline(cell, plan.load_dtype() or torch.float32)
    notes, _ = apply_plan(pipe, plan, cell.device)
    return pipe, sampling_of(cell), {"plugins": plan.specs, "plugin_notes": notes, "weights": weights}


def _engine_options(args: argparse.Namespace) -> dict[str, Any]:
    from dia_bench.harness.runtime.streaming import CHUNK_FRAMES

    return {"max_batch": args.batch or 1, "max_wait_s": (args.max_wait_ms or 0.0) / 1000,
            "chunk_frames": args.chunk_frames or CHUNK_FRAMES,
            "first_chunk_frames": args.first_chunk_frames or args.chunk_frames or CHUNK_FRAMES}


def _web(flag: str):
    import importlib

    # The extra's packages by name first: importing web.py alone can succeed from a half-removed install.
    for name in ("starlette", "uvicorn", "httpx"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise UsageError(f"{flag} needs the serve extra ({name} is missing): pip install 'dia-bench[serve]'") \
                from None
    from dia_bench.harness.serving import web

    return web


def _check_reachable(url: str) -> None:
    import httpx

    try:
        httpx.get(url, timeout=5.0)  # any answer, even 405 for a GET, says a server is there
    except httpx.InvalidURL as exc:
        raise UsageError(f"--url {url}: {exc}; give http://HOST:PORT/v1/speech") from None
    except (httpx.HTTPError, ValueError) as exc:
        raise UsageError(f"--url {url} is unreachable ({type(exc).__name__}); start `dia-bench serve` there "
                         "first, or check the host and port") from None


def cmd_load(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from dia_bench.harness import env
    from dia_bench.harness.driver.outputs import output_dir
    from dia_bench.harness.jsonio import write_bytes_atomic
    from dia_bench.harness.serving import loadtest

    rates = loadtest.parse_rates(args.rates)
    labels = loadtest.parse_texts(args.texts)
    if (args.requests is None) == (args.duration is None):
        raise UsageError("give exactly one of --requests N (requests per rate) or --duration S (seconds of "
                         "arrivals per rate)")
    out = output_dir(args.out, "--out")
    texts = [loadtest.TEXTS[label] for label in labels]
    engine = _engine_options(args)
    if args.url:
        given = [f for f, v in (("--preset", args.preset), ("--opt", args.opt), ("--batch", args.batch),
                                ("--max-wait-ms", args.max_wait_ms), ("--chunk-frames", args.chunk_frames),
                                ("--first-chunk-frames", args.first_chunk_frames),
                                ("--weights", args.weights), ("--device", args.device)) if v]
        if given:
            raise UsageError(f"{given[0]} with --url: the server's own flags set that; give it to `dia-bench serve`")
        web = _web("--url")
        _check_reachable(args.url)
        cell = None
    else:
        cell = _serving_cell(args, texts, args.seconds)
    configuration: dict[str, Any] = {
        "rates": rates, "requests": args.requests, "duration_s": args.duration, "seconds": args.seconds,
        "texts": dict(zip(labels, texts, strict=True)), "seed": args.seed, "timeout_s": args.timeout,
        "target_ttfa_s": args.target_ttfa, "criterion": args.criterion,
        "arrivals": "open-loop Poisson, drawn ahead from the seed",
    }

    import datetime as dt

    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")

    def progress(run: Any) -> None:
        s = run.summary()
        print(f"{run.offered_rps:g} req/s: {s.counts['ok']}/{s.requests} ok", file=sys.stderr, flush=True)

    async def against(target: Any, warmup: Any) -> Any:
        await warmup()
        return await loadtest.run_rates(target, texts, rates, requests=args.requests, duration_s=args.duration,
                                        seconds=args.seconds, seed=args.seed, timeout_s=args.timeout,
                                        target_ttfa_s=args.target_ttfa, criterion=args.criterion,
                                        progress=progress)

    if args.url:
        import httpx

        from dia_bench.harness.serving.loadgen import Request

        configuration.update(target="http", url=args.url)
        includes = {"codec": True, "network": "HTTP to the server, whose batching and chunking are its own",
                    "warmup": "one request before the first rate, outside every measurement"}

        async def over_http() -> Any:
            # No pool limit and no client timeout: a request waiting for a connection would close the loop.
            async with httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None)) as client:
                target = web.http_target(client, args.url)

                async def warmup() -> None:
                    async for _ in target(Request(-1, texts[0], args.seconds, seed=0)):
                        pass
                return await against(target, warmup)
        # Before the load: the commit and versions as they were when it ran, not after.
        machine = env.collect("cpu")
        test = asyncio.run(over_http())
    else:
        from dia_bench.harness.serving.targets import EngineTarget, engine_thread

        thread = engine_thread()  # builds and decodes: see EngineTarget's executor
        try:
            pipe, sampling, built = thread.submit(_served_pipeline, cell).result()
        except _Skip as exc:
            print(f"dia-bench: skipped: {exc}", file=sys.stderr)
            return EXIT_SKIPPED
        configuration.update(target="engine", preset=cell.preset, device=cell.device, **built, **engine)
        includes = {"codec": True, "chunk_frames": engine["chunk_frames"],
                    "first_chunk_frames": engine["first_chunk_frames"],
                    "batch_policy": f"up to {engine['max_batch']} request(s) of one length, waiting up to "
                                    f"{engine['max_wait_s'] * 1000:g} ms for a batch to fill",
                    "network": False,
                    "warmup": "one request before the first rate, outside every measurement"
                    + (f", then a batch of {engine['max_batch']}" if engine["max_batch"] > 1 else "")}

        async def in_process() -> Any:
            async with EngineTarget(pipe, sampling=sampling, executor=thread, **engine) as target:
                return await against(target, lambda: target.warmup(texts[0], args.seconds))
        machine = env.collect(cell.device)
        test = asyncio.run(in_process())
    from dia_bench.harness import process_noise

    kind = process_noise.noise_kind(configuration.get("device"), configuration.get("preset") or "")
    doc = loadtest.document(test, machine, configuration, includes, started_at,
                            process_noise.as_dict(process_noise.prior_for(machine, kind)))
    path = write_bytes_atomic(out / "load.json", (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())
    print(f"{machine.get('device_name') or machine['cpu'].get('model')}: "
          f"{configuration.get('preset') or configuration['url']}")
    from dia_bench.reports import load_page

    print(load_page.table(doc))
    page = load_page.write(path, out / "load.html")
    print(f"load: {path}\npage: {page}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    web = _web("dia-bench serve")
    from dia_bench.harness.cell import DEFAULT_TEXT
    from dia_bench.harness.serving.targets import EngineTarget, engine_thread

    cell = _serving_cell(args, [DEFAULT_TEXT], 1.0)
    thread = engine_thread()  # builds and decodes: see EngineTarget's executor
    try:
        pipe, sampling, built = thread.submit(_served_pipeline, cell).result()
    except _Skip as exc:
        print(f"dia-bench: skipped: {exc}", file=sys.stderr)
        return EXIT_SKIPPED
    engine = _engine_options(args)

    async def forever() -> None:
        async with EngineTarget(pipe, sampling=sampling, executor=thread, **engine) as target:
            await target.warmup()
            async with web.serve(web.create_app(target), args.host, args.port) as base:
                print(f"serving {cell.preset} ({', '.join(built['plugins']) or 'no plugins'}) on {cell.device} at "
                      f"{base}/v1/speech; Ctrl-C stops", flush=True)
                await asyncio.Event().wait()
    asyncio.run(forever())
    return EXIT_OK


def cmd_env(args: argparse.Namespace) -> int:
    import torch

    from dia_bench.harness import env
    from dia_bench.harness.presets import PRESETS
    from dia_bench.harness.runtime.weights import describe_local_weights
    from dia_bench.reports.summary import print_env

    # Collected here, not in the summary: describing the weights is the worker side's knowledge,
    # and outputs only print what they are given.
    info = env.collect("cuda" if torch.cuda.is_available() else "cpu")
    info["weights"] = describe_local_weights(PRESETS)
    print_env(info, as_json=args.json)
    return EXIT_OK


def cmd_plugins(args: argparse.Namespace) -> int:
    from dia_bench.harness.devices import check_device, default_device
    from dia_bench.reports.summary import print_plugins

    device = check_device(args.device) if args.device else default_device()
    print_plugins(device, as_json=args.json)
    return EXIT_OK


COMMANDS = {"run": cmd_run, "sweep": cmd_sweep, "compare": cmd_compare, "history": cmd_history, "export": cmd_export,
            "report": cmd_report, "recommend": cmd_recommend,
            "upgrade": cmd_upgrade, "schema": cmd_schema, "noise": cmd_noise, "readme": cmd_readme,
            "crosscheck": cmd_crosscheck, "env": cmd_env, "plugins": cmd_plugins, "load": cmd_load,
            "serve": cmd_serve}


def _interrupt(signum: int, frame: Any) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    import signal

    # A job runner's `timeout` or a CI cancel sends SIGTERM: unwind as for Ctrl-C, so the running
    # worker (in its own process group, out of the signal's reach) is killed rather than orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as exc:
        print(f"dia-bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dia-bench: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
