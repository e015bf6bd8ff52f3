"""A/A: one configuration in many worker processes. How many pairs of processes does dia-bench call
different, with the noise between processes in the interval and with the repeats alone?

    dia-bench sweep aa-tiny --out runs/aa-tiny && python -m tests.bench.aa runs/aa-tiny
    dia-bench sweep aa --out runs/aa && python -m tests.bench.aa runs/aa [--json out.json]

Every pair is a false alarm if marked. Two counts per preset: dia-bench's own marks on the run (each
later process of the baseline against the first, as the report shows them), and every pair of
processes, each tested with a process term estimated from the other processes (and the run's
prior), so the pair never judges itself. Given several runs, every pair is tested once more with the
prior the machine's history would hold after the other runs (their processes pooled), which is how a
run measures once a machine has run this suite before. The goal is at most 1 pair in 20. Not a unit test.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

from dia_bench.harness import env, process_noise, rundir, stats
from dia_bench.harness.analysis import results


def _processes(run: Path) -> dict[str, list[list[float]]]:
    """Per preset and device: the baseline's RTF repeats in each process, in the order they ran."""
    out: dict[str, list[list[float]]] = {}
    records = sorted(rundir.records(run), key=lambda r: r.get("measured_from") or "")
    for rec in records:
        if rec.get("status") == "ok" and rec.get("role", "").startswith("baseline"):
            out.setdefault(f"{rec['preset']} {rec['device']}", []).append(process_noise.rtf_repeats(rec))
    return out


def _marked(procs: list[list[float]], prior: stats.ProcessNoise) -> int:
    """Pairs of processes called different, each with a term from the other processes and `prior`."""
    marked = 0
    for i, j in itertools.combinations(range(len(procs)), 2):
        others = [p for k, p in enumerate(procs) if k not in (i, j)]
        term = stats.moderate(stats.process_anova(others).estimate("the other processes"), prior)
        marked += bool(stats.ratio_ci(procs[i], procs[j], process=term)["significant"])
    return marked


def pairs(run: Path, history: dict[str, stats.ProcessNoise] | None = None) -> list[dict]:
    """Per preset: the counts; `history`, per preset and device, is a prior standing for the machine's history."""
    meta = rundir.read_meta(run)
    df = results.load(run)
    rows = []
    for key, procs in _processes(run).items():
        preset, device = key.split()
        prior = process_noise.run_prior(meta, process_noise.noise_kind(device, preset))
        marked = _marked(procs, prior)
        with_history = _marked(procs, history[key]) if history and key in history else None
        within_marked = 0
        for i, j in itertools.combinations(range(len(procs)), 2):
            within_marked += bool(stats.ratio_ci(procs[i], procs[j])["significant"])
        again = df[(df["preset"] == preset) & df["role"].isin(results.REPEATED_BASELINE_ROLES) & (df["status"] == "ok")]
        own = [bool(s) for s in again["significant"]]
        bounds = zip(again["speedup_within_low"], again["speedup_within_high"], strict=True)
        own_within = [bool(lo > 1 or hi < 1) for lo, hi in bounds]
        est = stats.process_anova(procs).estimate("all processes")
        n_pairs = len(procs) * (len(procs) - 1) // 2
        rows.append({"preset": preset, "device": device, "processes": len(procs), "pairs": n_pairs,
                     "pairs_marked": marked, "pairs_marked_repeats_only": within_marked,
                     "pairs_marked_with_history": with_history,
                     "history_prior": history[key].describe() if with_history is not None else None,
                     "report_marked": sum(own), "report_rows": len(own),
                     "report_marked_repeats_only": sum(own_within),
                     "process_sd_pct": est.sd_pct if est else None, "process_df": est.df if est else None,
                     "prior": prior.source, "gm_rtf_per_process": [stats.location_ci(p)["center"] for p in procs]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()
    every = []
    print(f"cpu: {env.cpu_info()['model']}")
    print("| run | preset | processes | process sd | pairs marked (with the process term) | pairs marked, prior "
          "from the other runs | pairs marked (repeats only) | report's marks (with) | report's marks (repeats only) |")
    print("|---|---|---|---|---|---|---|---|---|")
    processes = {run: _processes(run) for run in args.run_dirs}
    totals: dict[str, list[int]] = {}
    for run in args.run_dirs:
        history = {}
        for key in processes[run]:
            pooled = sum((stats.process_anova(procs[key]) for other, procs in processes.items()
                          if other != run and key in procs), stats.ProcessAnova())
            if (est := pooled.estimate(f"the other {len(processes) - 1} runs")) is not None:
                history[key] = est
        for r in pairs(run, history):
            every.append({"run": str(run), **r})
            sd = "-" if r["process_sd_pct"] is None else f"{r['process_sd_pct']:.1f}% ({r['process_df']:.1f} df)"
            marked = r["pairs_marked_with_history"]
            hist = "-" if marked is None else f"{marked} of {r['pairs']}"
            print(f"| {run.name} | {r['preset']} {r['device']} | {r['processes']} | {sd} | "
                  f"{r['pairs_marked']} of {r['pairs']} | {hist} | {r['pairs_marked_repeats_only']} of {r['pairs']} | "
                  f"{r['report_marked']} of {r['report_rows']} | {r['report_marked_repeats_only']} of "
                  f"{r['report_rows']} |")
            t = totals.setdefault(r["preset"], [0, 0, 0, 0])
            t[0] += r["pairs"]
            t[1] += r["pairs_marked"]
            t[2] += r["pairs_marked_with_history"] or 0
            t[3] += r["pairs_marked_repeats_only"]
    for preset, (n, marked, history, within) in totals.items():
        print(f"{preset}, all runs: {marked} of {n} pairs marked with the process term, {history} with the prior "
              f"from the other runs, {within} with repeats only")
    if args.json:
        args.json.write_text(json.dumps(every, indent=1))


if __name__ == "__main__":
    main()
