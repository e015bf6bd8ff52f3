"""The ray executor on a real Ray cluster: a head and a second node on this machine, each with a custom
resource standing for a machine type. No part of Ray is mocked; the tests skip where Ray is not installed
(`pip install -e '.[ray]'`)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dia_bench.harness import rundir
from dia_bench.harness.analysis import results
from tests.conftest import run_cli
from tests.test_sweep import write_suite

ROOT = Path(__file__).resolve().parents[1]
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed (pip install -e '.[ray]')")
# No token, no usage report, and dia-bench importable in every worker the nodes start. The nodes share
# this machine's cores, so two cells run side by side on them: OpenMP threads that sleep while they wait
# let both go on, where spinning ones would leave each cell waiting out the other's (these tests time nothing).
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "OMP_WAIT_POLICY": "passive",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_processes(temp_dir: str) -> list:
    """The processes of this cluster only (their command lines name its temp dir), never another's."""
    import psutil

    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(temp_dir in a for a in (p.info["cmdline"] or [])):
            found.append(p)
            found.extend(p.children(recursive=True))
    return found


class Cluster:
    def __init__(self, temp_dir: str, port: int):
        self.temp_dir, self.address = temp_dir, f"127.0.0.1:{port}"
        self.env = {**os.environ, **RAY_ENV}

    def start_node(self, resources: dict[str, float], head: bool = False, gpus: int = 0,
                   env: dict[str, str] | None = None) -> None:
        """gpus: GPUs the node declares (Ray takes the count on trust: a CPU machine can stand for a GPU node)."""
        ray = str(Path(sys.executable).with_name("ray"))
        where = ["--head", f"--port={self.address.rsplit(':', 1)[1]}", "--include-dashboard=false",
                 f"--temp-dir={self.temp_dir}"] if head else [f"--address={self.address}"]
        subprocess.run([ray, "start", *where, "--node-ip-address=127.0.0.1", "--num-cpus=1", f"--num-gpus={gpus}",
                        f"--resources={json.dumps(resources)}", "--disable-usage-stats"],
                       check=True, env={**self.env, **(env or {})}, capture_output=True, timeout=120)

    def nodes(self) -> dict[str, dict[str, float]]:
        """Live node id -> its resources, as the cluster sees them."""
        code = (f"import json, ray; ray.init(address={self.address!r}, logging_level='ERROR'); "
                "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))")
        out = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout.strip().splitlines()[-1])

    def stop(self) -> None:
        for p in _ray_processes(self.temp_dir):
            with contextlib.suppress(Exception):  # already gone
                p.kill()


@pytest.fixture(scope="module")
def cluster():
    # Unix socket paths have a 107-byte limit: a short temp dir of its own.
    temp_dir = tempfile.mkdtemp(prefix="/tmp/dbray-")
    c = Cluster(temp_dir, _free_port())
    try:
        c.start_node({"dia_bench_node": 1, "machine_a": 1}, head=True)
        c.start_node({"dia_bench_node": 1, "machine_b": 1})
        yield c
    finally:
        c.stop()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def local_and_ray_runs(cluster, tiny_run, tmp_path_factory) -> tuple[Path, Path]:
    # The local run is the session's sweep of the same suite (tests/conftest.py).
    tmp = tmp_path_factory.mktemp("ray-sweep")
    suite = write_suite(tmp)
    local, on_ray = tiny_run, tmp / "ray"
    result = run_cli("sweep", str(suite), "--out", str(on_ray), "--quiet", "--executor", "ray",
                     "--address", cluster.address, env=RAY_ENV)
    assert result.returncode == 0, result.stderr
    return local, on_ray


@needs_ray
def test_ray_sweep_runs_the_same_cells_as_local_and_names_each_node(cluster, local_and_ray_runs):
    local, on_ray = local_and_ray_runs
    nodes = cluster.nodes()
    assert len(nodes) == 2
    by_local, by_ray = rundir.records(local), rundir.records(on_ray)
    assert {r["cell_id"] for r in by_local} == {r["cell_id"] for r in by_ray}
    assert ({r["key"] for r in by_local if r["role"] == "cell"} == {r["key"] for r in by_ray if r["role"] == "cell"})
    ran = [r for r in by_ray if r["status"] == "ok"]
    assert all(r["executor"] == "ray" and r["node"]["id"] in nodes for r in ran)
    # The same threads as a local run: Ray's own OMP_NUM_THREADS (1 for these tasks) must not reach a cell.
    threads = {(r["env"]["torch_threads"], json.dumps(r["env"]["thread_env"])) for r in by_local if r["status"] == "ok"}
    assert {(r["env"]["torch_threads"], json.dumps(r["env"]["thread_env"])) for r in ran} == threads
    assert all(r["worker_start"]["process"] == "forked" for r in ran)  # from a server that dies with its Ray worker
    # Each node measured its own baseline, first and last.
    for role in ("baseline-start", "baseline-end"):
        assert sorted(r["node"]["id"] for r in ran if r["role"] == role) == sorted(nodes)


@needs_ray
def test_a_cpu_cell_never_shares_its_node(local_and_ray_runs):
    ran = [r for r in rundir.records(local_and_ray_runs[1]) if r["status"] == "ok"]
    for r in ran:
        assert r["beside"] == []
        for o in ran:
            if o is not r and o["node"]["id"] == r["node"]["id"]:
                assert o["ran_until"] <= r["ran_from"] or r["ran_until"] <= o["ran_from"], (r["key"], o["key"])


@needs_ray
def test_speedups_compare_with_the_baseline_of_the_node_that_ran_the_cell(local_and_ray_runs):
    df = results.load(local_and_ray_runs[1])
    ok = df[df["status"] == "ok"]
    cell = ok[ok["role"] == "cell"].iloc[0]
    assert cell["speedup"] is not None
    # The node's own baselines bracket it: its drift is one line a node.
    assert len(results.baseline_drift(df)) == 2
    starts = ok[ok["role"] == "baseline-start"]
    assert set(starts["node"]) == set(ok["node"]) and len(starts) == 2


def test_executor_ray_without_ray_is_one_line_and_exit_2(tmp_path):
    # sys.modules['ray'] = None makes `import ray` raise ImportError, exactly as where it is not installed.
    code = ("import sys; sys.modules['ray'] = None; from dia_bench.harness.cli import main; "
            f"sys.exit(main(['sweep', {str(write_suite(tmp_path))!r}, '--out', {str(tmp_path / 'run')!r}, "
            "'--executor', 'ray']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "pip install 'dia-bench[ray]'" in lines[0], result.stderr
    assert not (tmp_path / "run").exists()


@needs_ray
def test_recommend_over_a_cluster_run_gives_one_row_per_node(cluster, local_and_ray_runs, tmp_path):
    from dia_bench.reports.recommend import recommendations

    rows = recommendations(results.load(local_and_ray_runs[1]))
    assert len(rows) == 2
    assert len({r["machine"] for r in rows}) == 2
    result = run_cli("recommend", str(local_and_ray_runs[1]), "--markdown", "-o", str(tmp_path / "rec.md"))
    assert result.returncode == 0, result.stderr
    table = [ln for ln in (tmp_path / "rec.md").read_text().splitlines() if ln.startswith("| ") and " on " in ln]
    assert len(table) == 2


def _wait_for(condition, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


# The two failure cases (a driver killed, a node lost) take about a minute of CI between them, most of it
# waiting on Ray; they run with the slow tests (`nox -s tests-slow`), the rest of this file in CI.
@needs_ray
@pytest.mark.slow
def test_a_driver_killed_mid_sweep_resumes_to_a_complete_run_without_duplicates(cluster, tmp_path):
    suite = write_suite(tmp_path)
    out = tmp_path / "killed"
    args = ["sweep", str(suite), "--out", str(out), "--quiet", "--executor", "ray", "--address", cluster.address]
    proc = subprocess.Popen([sys.executable, "-m", "dia_bench.harness.cli", *args], env={**os.environ, **RAY_ENV},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_for(lambda: any((out / "cells").glob("*~*.json")), "the first measured record")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for p in (out / "cells").glob("*.json"):
        json.loads(p.read_text())  # every record on disk is whole
    result = run_cli(*args, "--resume", env=RAY_ENV)
    assert result.returncode == 0, result.stderr
    df = results.load(out)
    # 2 nodes x (start + end baseline), cfg=0, and tf32 skipped on the CPU.
    assert len(df) == 6 and df["key"].is_unique and set(df["status"]) == {"ok", "skipped"}


GPU_SUITE = """
[suite]
presets = ["dia-tiny"]
devices = ["cpu", "cuda:1"]
gpu_model = "H100"
texts = ["short"]
seconds = [0.2]
warmup = 0
repeats = 2
design = "explicit"
cells = [[]]
"""


@needs_ray
def test_gpu_cells_go_to_their_gpu_model_and_a_node_without_the_run_dir_sends_its_files_back(cluster, tmp_path):
    # A node that declares one GPU of type H100 (this machine has none: its worker must say so) and does
    # not share the run directory; the driver, on a CPU machine, must not skip the CUDA cells itself.
    before = set(cluster.nodes())
    cluster.start_node({"dia_bench_node": 1, "accelerator_type:H100": 1}, gpus=2,
                       env={"DIA_BENCH_RAY_SHARED_RUN_DIR": "0"})
    nodes = cluster.nodes()
    gpu_node = (set(nodes) - before).pop()
    out = tmp_path / "run"
    result = run_cli("sweep", str(write_suite(tmp_path, GPU_SUITE, "gpu-h100")), "--out", str(out), "--quiet",
                     "--executor", "ray", "--address", cluster.address, env=RAY_ENV)
    recs = rundir.records(out)
    cuda = [r for r in recs if r["device"] == "cuda:1"]
    # Start and end baselines, pinned to the one node with an H100, skipped there by its worker.
    assert len(cuda) == 2 and all(r["node"]["id"] == gpu_node for r in cuda), [(r["key"], r.get("node")) for r in cuda]
    assert all(r["status"] == "skipped" and "no CUDA GPU" in r["reason"] for r in cuda), [r["reason"] for r in cuda]
    # Ray gave the task its GPU as cuda:0; the record keeps the cell as the suite wrote it.
    assert all(r["cell"]["device"] == "cuda:1" and r["gpu"]["ran_as"] == "cuda:0" and r["gpu"]["ray_gpu_ids"]
               for r in cuda)
    # Two GPUs on a node of two cores: each GPU cell owns one core, and its threads follow.
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        assert all(len(r["cores"]) == len(cores) // 2 for r in cuda), [r["cores"] for r in cuda]
        assert all(r["env"]["thread_env"].get("OMP_NUM_THREADS") == str(len(cores) // 2) for r in cuda)
    cpu = [r for r in recs if r["device"] == "cpu"]
    assert {r["node"]["id"] for r in cpu} == before | {gpu_node} and all(r["status"] == "ok" for r in cpu)
    assert all(r["cores"] == cores and "OMP_NUM_THREADS" not in r["env"]["thread_env"] for r in cpu)
    assert result.returncode == 0, result.stderr
    # Every node's baseline made its fp32 history; the one without the run directory sent it back.
    mine = [r for r in cpu if r["node"]["id"] == gpu_node and r["role"] == "baseline-start"]
    path = Path(mine[0]["fidelity"]["history"]["path"])
    assert path.is_file() and path.is_relative_to(out / "nodes" / gpu_node[:12]), path
    shared = [r for r in cpu if r["node"]["id"] != gpu_node]
    assert all(Path(r["fidelity"]["history"]["path"]).parent == (out / "fidelity").resolve() for r in shared)


def _raylet_of(resource: str):
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if cmd and cmd[0].endswith("raylet") and any(resource in a for a in cmd):
            return p
    return None


@needs_ray
@pytest.mark.slow
def test_a_node_lost_mid_cell_gives_a_failed_record_naming_it_and_the_sweep_goes_on(cluster, tmp_path):
    # Last in this file: it adds a third node and kills it.
    before = set(cluster.nodes())
    cluster.start_node({"dia_bench_node": 1, "machine_c": 1})
    doomed = (set(cluster.nodes()) - before).pop()
    raylet = _raylet_of("machine_c")
    assert raylet is not None
    suite = write_suite(tmp_path)
    out = tmp_path / "lost"
    proc = subprocess.Popen([sys.executable, "-m", "dia_bench.harness.cli", "sweep", str(suite), "--out", str(out),
                             "--quiet", "--executor", "ray", "--address", cluster.address],
                            env={**os.environ, **RAY_ENV},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Its own baseline is pinned to it: kill the node once that cell's worker runs there.
    _wait_for(lambda: any("dia_bench.harness.worker" in " ".join(c.cmdline()) for c in raylet.children(recursive=True)),
              "a cell on the third node")
    for p in [*raylet.children(recursive=True), raylet]:
        with contextlib.suppress(Exception):
            p.kill()
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 1, stderr  # finished, with failed cells
    recs = {r["key"]: r for r in rundir.records(out)}
    lost = [r for r in recs.values() if r["status"] == "failed" and r.get("node", {}).get("id") == doomed]
    assert lost and all(doomed[:12] in r["reason"] for r in lost), ([r.get("reason") for r in recs.values()], stderr)
    survivors = [r for r in recs.values() if r["status"] == "ok"]
    assert {r["node"]["id"] for r in survivors} == before
    assert any(r["role"] == "cell" for r in survivors)
