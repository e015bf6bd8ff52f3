"""The ray executor: each cell a Ray task that runs the same isolated worker on a node that can run it.

Every node that takes dia-bench cells advertises the custom resource `dia_bench_node` = 1
(`ray start ... --resources='{"dia_bench_node": 1}'`). A CPU cell asks for all of it, so nothing else
runs on its node while it measures; a CUDA cell asks for one GPU and a sliver of it, so GPU cells share a
node (each with its own GPU) but never a CPU cell's; a suite's `gpu_model` becomes the task's Ray
accelerator type. Each node measures its own baselines, first and last, pinned to it: speedups compare a
cell with the node that ran it.

The driver decides only what holds everywhere (a plugin that cannot work on a device type); what a node
has (CUDA, a package, its GPU's model) its own worker checks, as for a local run. A node that does not
see the driver's run directory (no shared filesystem) keeps the cell's files (fidelity histories, audio)
in a folder of its own and sends each new one back with the record, to `RUN_DIR/nodes/NODE/`.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dia_bench.harness.driver.executors import Batch, Display
from dia_bench.harness.driver.expand import PlannedCell
from dia_bench.harness.errors import UsageError
from dia_bench.harness.jsonio import write_bytes_atomic
from dia_bench.harness.record import not_ok

NODE_RESOURCE = "dia_bench_node"
# A CUDA cell's share of its node: enough that a CPU cell (which wants all of it) waits, small enough that
# every GPU of a node can hold one.
GPU_CELL_SHARE = 0.001
BASELINE_ROLES = ("baseline-start", "baseline-mid", "baseline-end")
# In the run directory: a token a node reads to learn whether it sees the driver's run directory.
RUN_TOKEN = ".ray-run-token"
# "0" on a node: treat the run directory as unshared even where it is visible (what tests use).
SHARED_ENV = "DIA_BENCH_RAY_SHARED_RUN_DIR"


def this_node() -> dict[str, str]:
    return {"id": ray.get_runtime_context().get_node_id(), "ip": ray.util.get_node_ip_address(),
            "hostname": socket.gethostname()}


@ray.remote(num_cpus=0)
class _Started:
    """Which node each cell started on: a node that dies takes its task's answer with it, not this."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, str]] = {}

    def started(self, key: str, node: dict[str, str]) -> None:
        self.nodes[key] = node

    def node_of(self, key: str) -> dict[str, str] | None:
        return self.nodes.get(key)


def _node_files(run_dir: str | None, token: str | None) -> Path | None:
    """Where this node keeps a cell's files: None for the driver's run directory itself (a shared
    filesystem: the token there is the driver's), else a folder of this node's own for this run."""
    if run_dir is None or token is None:
        return None
    probe = Path(run_dir) / RUN_TOKEN
    if os.environ.get(SHARED_ENV) != "0" and probe.is_file() and probe.read_text().strip() == token:
        return None
    from dia_bench.harness.paths import cache_dir

    return cache_dir() / "ray-runs" / token


def _snapshot(base: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in base.rglob("*"):
        if p.is_file() and not p.name.startswith(".") and p.suffix != ".lock":
            st = p.stat()
            out[str(p.relative_to(base))] = (st.st_size, st.st_mtime_ns)
    return out


def _ray_set_omp() -> bool:
    """Whether OMP_NUM_THREADS came from Ray (the task's CPU count, at least 1) rather than the node's own
    environment, which /proc/self/environ still shows as this worker process started."""
    if "OMP_NUM_THREADS" not in os.environ:
        return False
    try:
        initial = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:  # not Linux: Ray's value is what a task of this many CPUs gets
        return True
    return not any(e.startswith(b"OMP_NUM_THREADS=") for e in initial)


def _affinity() -> set[int]:
    # Linux only; elsewhere (a macOS node) every core, and nothing is pinned.
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def _cores(gpu_slot: int | None, gpus_on_node: int) -> list[int]:
    """The cores a cell may use: all of them for a CPU cell (it has the node to itself), else the GPU's
    equal share, so GPU cells side by side on one node never share a core."""
    cores = sorted(_affinity())
    if gpu_slot is None or gpus_on_node <= 1:
        return cores
    share = max(1, len(cores) // gpus_on_node)
    start = (gpu_slot % gpus_on_node) * share
    return cores[start:start + share] or cores


def _run_cell(cell: Any, key: str, timeout_s: float, extra_env: dict[str, str], started: Any,
              run_dir: str | None = None, token: str | None = None) -> dict[str, Any]:
    from dia_bench.harness.driver.launcher import run_isolated

    node = this_node()
    ray.get(started.started.remote(key, node))
    asked = cell
    gpu: dict[str, Any] = {}
    gpu_slot = None
    if cell.device.startswith("cuda"):
        # Ray shows the task only the GPU it gave it, as cuda:0; a suite's cuda:N names no GPU of a node.
        ids = [str(g) for g in ray.get_gpu_ids()]
        gpu = {"ray_gpu_ids": ids, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "ran_as": "cuda:0"}
        gpu_slot = int(ids[0]) if ids and ids[0].isdigit() else 0
        cell = dataclasses.replace(cell, device="cuda:0")
    base = _node_files(run_dir, token)
    if base is not None:
        cell = dataclasses.replace(cell, fidelity_dir=str(base / "fidelity"), audio_dir=str(base / "audio"))
        before = _snapshot(base) if base.is_dir() else {}
    # Ray pins OMP_NUM_THREADS to the task's CPU count (1 here) where the node did not set it: a CPU cell
    # would measure on one core where a local run uses them all. Threads follow the cores the cell owns.
    node_gpus = int(next((n["Resources"].get("GPU", 0) for n in ray.nodes() if n["NodeID"] == node["id"]), 0))
    cores = _cores(gpu_slot, node_gpus)
    env = dict(extra_env)
    if _ray_set_omp():  # the worker then picks its threads as a local run does (Ray drops it after the task)
        os.environ.pop("OMP_NUM_THREADS")
        if len(cores) < len(_affinity()):
            env["OMP_NUM_THREADS"] = str(len(cores))
    pin = hasattr(os, "sched_setaffinity")
    saved = _affinity()
    if pin:
        os.sched_setaffinity(0, cores)  # the worker inherits it; this Ray worker gets its own back below
    try:
        ran_from = time.time()
        rec = run_isolated(cell, timeout_s=timeout_s, extra_env=env, die_with_parent=True)
    finally:
        if pin:
            os.sched_setaffinity(0, saved)
    rec.update(node=node, ran_from=ran_from, ran_until=time.time(), cores=cores)
    if gpu:
        rec.update(cell=asked.to_dict(), cell_id=asked.cell_id, device=asked.device, gpu=gpu)
    if base is not None:
        after = _snapshot(base) if base.is_dir() else {}
        rec["_node_files"] = {"base": str(base), "files": {
            rel: (base / rel).read_bytes() for rel, stamp in after.items() if before.get(rel) != stamp}}
    return rec


# A measurement is never silently retried elsewhere: a lost node is a failed record (--retry-failed).
_run_cell_task = ray.remote(max_retries=0, retry_exceptions=False)(_run_cell)


class RayExecutor:
    name = "ray"
    runs_here = False

    def __init__(self, address: str | None) -> None:
        # No runtime_env: a node's workers import dia_bench from the package installed beside its Ray (a
        # source tree on PYTHONPATH cannot provide the dia_bench namespace).
        kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:  # a Ray instance of its own on this machine: one node that takes cells
            kwargs["resources"] = {NODE_RESOURCE: 1}
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"--address {address}: cannot connect to a Ray cluster ({first}); give `auto` on a "
                             "node of a running cluster, ray://HOST:10001, or no --address for a local one") from None
        if not self.nodes("cpu"):
            ray.shutdown()
            raise UsageError(f"no node of the Ray cluster at {address or 'this machine'} offers the resource "
                             f"{NODE_RESOURCE!r}: start each node with --resources='{{\"{NODE_RESOURCE}\": 1}}'")
        # On the driver's own node, hard: a soft affinity let Ray place it on any node (seen on Ray 2.60), and
        # a lost node then took the answer to "where did this cell start" with it.
        self.started = _Started.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)).remote()

    @staticmethod
    def nodes(device: str, gpu_model: str | None = None) -> list[str]:
        """Live nodes that can run a cell on `device` (of that GPU model, if named), by node id."""
        out = []
        for n in ray.nodes():
            res = n.get("Resources") or {}
            if not n.get("Alive") or res.get(NODE_RESOURCE, 0) < 1:
                continue
            if device == "cpu" or (res.get("GPU", 0) >= 1 and (
                    not gpu_model or res.get(f"accelerator_type:{gpu_model}", 0) > 0)):
                out.append(n["NodeID"])
        return sorted(out)

    @staticmethod
    def _wants(p: PlannedCell) -> tuple[str, str | None]:
        return ("cpu", None) if p.cell.device == "cpu" else ("cuda", p.cell.gpu_model)

    def plan(self, planned: list[PlannedCell]) -> list[PlannedCell]:
        """Every baseline once per node that can run it, pinned there; other cells go wherever there is room."""
        out: list[PlannedCell] = []
        for p in planned:
            if p.role not in BASELINE_ROLES:
                out.append(p)
                continue
            out.extend(dataclasses.replace(p, key=f"{p.key}~{node[:12]}", node=node)
                       for node in self.nodes(*self._wants(p)))
        return out

    def _submit(self, p: PlannedCell, batch: Batch, token: str | None) -> Any:
        if p.cell.device == "cpu":
            opts: dict[str, Any] = {"num_cpus": 0, "resources": {NODE_RESOURCE: 1}}
        else:
            opts = {"num_cpus": 1, "num_gpus": 1, "resources": {NODE_RESOURCE: GPU_CELL_SHARE}}
            if p.cell.gpu_model:
                opts["accelerator_type"] = p.cell.gpu_model
        if p.node:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(p.node, soft=False)
        run_dir = str(batch.run_dir.resolve()) if batch.run_dir else None
        return _run_cell_task.options(**opts).remote(p.cell, p.key, batch.timeout_for(p), batch.extra_env, self.started,
                                                     run_dir, token)

    def run(self, batch: Batch, display: Display) -> Iterator[tuple[PlannedCell, dict[str, Any]]]:
        # A task no node can take would wait forever: say so instead.
        homeless = {w: not self.nodes(*w) for w in {self._wants(p) for p in batch.cells}}
        for p in batch.cells:
            if p.skip_reason:
                yield p, not_ok(p.cell, "skipped", p.skip_reason)
            elif homeless[self._wants(p)]:
                device, model = self._wants(p)
                what = "" if device == "cpu" else f"and a GPU{f' of type {model}' if model else ''}"
                yield p, not_ok(p.cell, "skipped",
                                f"no node of the Ray cluster offers {NODE_RESOURCE!r} {what}".strip())
        runnable = [p for p in batch.cells if not p.skip_reason and not homeless[self._wants(p)]]
        token = self._token(batch.run_dir)
        # Each node's starting baselines before any cell, its closing ones after all of them.
        phases = [[p for p in runnable if p.role == "baseline-start"],
                  [p for p in runnable if p.role not in ("baseline-start", "baseline-end")],
                  [p for p in runnable if p.role == "baseline-end"]]
        for phase in phases:
            alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
            for p in phase:
                if p.node and p.node not in alive:  # pinned to a node the cluster has lost since
                    rec = not_ok(p.cell, "failed", f"node {p.node[:12]} left the cluster before this cell ran there")
                    yield p, {**rec, "node": {"id": p.node}}
            pending = {self._submit(p, batch, token): p for p in phase if not p.node or p.node in alive}
            while pending:
                display.start(f"{len(pending)} cell(s) in flight on the Ray cluster")
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    p = pending.pop(ref)
                    yield p, _store_node_files(self._result(p, ref), batch.run_dir)

    @staticmethod
    def _token(run_dir: Path | None) -> str | None:
        """The run's token, made once and kept, so a resumed run's nodes find their files again."""
        if run_dir is None:
            return None
        path = run_dir / RUN_TOKEN
        if not path.is_file():
            write_bytes_atomic(path, secrets.token_hex(8).encode())
        return path.read_text().strip()

    def _result(self, p: PlannedCell, ref: Any) -> dict[str, Any]:
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            try:
                node = ray.get(self.started.node_of.remote(p.key))
            except ray.exceptions.RayError:  # the driver's node is failing too: a pinned cell still names its own
                node = {"id": p.node, "ip": "?", "hostname": "?"} if p.node else None
            where = (f"node {node['hostname']} {node['ip']} ({node['id'][:12]})" if node
                     else "the cluster before it started on any node")
            # RayTaskError: the task itself raised (dia-bench missing on that node?); anything else: Ray lost it.
            what = "raised on" if isinstance(exc, ray.exceptions.RayTaskError) else "lost on"
            rec = not_ok(p.cell, "failed", f"{what} {where}: {type(exc).__name__}: "
                                           f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:500])
            if node:
                rec["node"] = node
            return rec

    def close(self) -> None:
        ray.shutdown()


def _store_node_files(rec: dict[str, Any], run_dir: Path | None) -> dict[str, Any]:
    """The files a node without the run directory sent back, written to RUN_DIR/nodes/NODE/, and the
    record's paths into that node's folder rewritten to where they now are."""
    sent = rec.pop("_node_files", None)
    if not sent or run_dir is None:
        return rec
    here = run_dir / "nodes" / rec.get("node", {}).get("id", "unknown")[:12]
    for rel, data in sent["files"].items():
        write_bytes_atomic(here / rel, data)
    base = sent["base"].rstrip("/") + "/"

    def moved(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(base):
            return str(here / value[len(base):])
        if isinstance(value, dict):
            return {k: moved(v) for k, v in value.items()}
        if isinstance(value, list):
            return [moved(v) for v in value]
        return value

    return moved(rec)
