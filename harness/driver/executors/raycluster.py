"""The ray executor: each cell a Ray task that runs the same isolated worker on a node that can run it.

Every node that takes dia-bench cells advertises the custom resource `dia_bench_node` = 1
(`ray start ... --resources='{"dia_bench_node": 1}'`). A CPU cell asks for all of it, so nothing else
runs on its node while it measures; a CUDA cell asks for one GPU and a sliver of it, so GPU cells share a
node (each with its own GPU) but never a CPU cell's. Each node measures its own baselines, first and
last, pinned to it: speedups compare a cell with the node that ran it.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dia_bench.harness.driver.executors import Batch, Display
from dia_bench.harness.driver.expand import PlannedCell
from dia_bench.harness.errors import UsageError
from dia_bench.harness.record import not_ok

NODE_RESOURCE = "dia_bench_node"
# A CUDA cell's share of its node: enough that a CPU cell (which wants all of it) waits, small enough that
# every GPU of a node can hold one.
GPU_CELL_SHARE = 0.001
BASELINE_ROLES = ("baseline-start", "baseline-mid", "baseline-end")


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


def _run_cell(cell: Any, key: str, timeout_s: float, extra_env: dict[str, str], started: Any) -> dict[str, Any]:
    from dia_bench.harness.driver.launcher import run_isolated

    node = this_node()
    ray.get(started.started.remote(key, node))
    ran_from = time.time()
    rec = run_isolated(cell, timeout_s=timeout_s, extra_env=extra_env, die_with_parent=True)
    rec.update(node=node, ran_from=ran_from, ran_until=time.time())
    return rec


# A measurement is never silently retried elsewhere: a lost node is a failed record (--retry-failed).
_run_cell_task = ray.remote(max_retries=0, retry_exceptions=False)(_run_cell)


class RayExecutor:
    name = "ray"

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
    def nodes(device: str) -> list[str]:
        """Live nodes that can run a cell on `device`, by node id."""
        out = []
        for n in ray.nodes():
            res = n.get("Resources") or {}
            if n.get("Alive") and res.get(NODE_RESOURCE, 0) >= 1 and (device == "cpu" or res.get("GPU", 0) >= 1):
                out.append(n["NodeID"])
        return sorted(out)

    def plan(self, planned: list[PlannedCell]) -> list[PlannedCell]:
        """Every baseline once per node that can run it, pinned there; other cells go wherever there is room."""
        out: list[PlannedCell] = []
        for p in planned:
            if p.role not in BASELINE_ROLES:
                out.append(p)
                continue
            device = "cpu" if p.cell.device == "cpu" else "cuda"
            out.extend(dataclasses.replace(p, key=f"{p.key}~{node[:12]}", node=node) for node in self.nodes(device))
        return out

    def _submit(self, p: PlannedCell, batch: Batch) -> Any:
        if p.cell.device == "cpu":
            opts: dict[str, Any] = {"num_cpus": 0, "resources": {NODE_RESOURCE: 1}}
        else:
            opts = {"num_cpus": 1, "num_gpus": 1, "resources": {NODE_RESOURCE: GPU_CELL_SHARE}}
        if p.node:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(p.node, soft=False)
        return _run_cell_task.options(**opts).remote(p.cell, p.key, batch.timeout_s, batch.extra_env, self.started)

    def run(self, batch: Batch, display: Display) -> Iterator[tuple[PlannedCell, dict[str, Any]]]:
        # A task no node can take would wait forever: say so instead.
        homeless = {"cpu": not self.nodes("cpu"), "cuda": not self.nodes("cuda")}
        for p in batch.cells:
            if p.skip_reason:
                yield p, not_ok(p.cell, "skipped", p.skip_reason)
            elif homeless["cpu" if p.cell.device == "cpu" else "cuda"]:
                yield p, not_ok(p.cell, "skipped", f"no node of the Ray cluster offers {NODE_RESOURCE!r} "
                                                   f"{'' if p.cell.device == 'cpu' else 'and a GPU'}".strip())
        runnable = [p for p in batch.cells
                    if not p.skip_reason and not homeless["cpu" if p.cell.device == "cpu" else "cuda"]]
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
            pending = {self._submit(p, batch): p for p in phase if not p.node or p.node in alive}
            while pending:
                display.start(f"{len(pending)} cell(s) in flight on the Ray cluster")
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in ready:
                    p = pending.pop(ref)
                    yield p, self._result(p, ref)

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
