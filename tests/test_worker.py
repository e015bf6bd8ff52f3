"""The isolated worker: records, crashes survived, no state leaking between cells."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import torch

from dia_bench.harness.driver.launcher import run_isolated
from dia_bench.harness.env import THREAD_ENV
from dia_bench.harness.record import SCHEMA_VERSION, TRACEBACK_CHARS, exception_reason
from tests.conftest import run_cli, tiny_cell

REQUIRED = ("schema_version", "status", "rtf", "xrt", "audio_seconds", "frames", "generation_seconds",
            "repeats_seconds", "stages", "peak_rss_mb", "peak_vram_mb", "weights", "env")


def test_record_has_the_documented_fields(tmp_path):
    rec = run_isolated(tiny_cell(repeats=2, warmup=1, warmup_seconds=0.02, profile_dir=str(tmp_path / "prof")),
                       timeout_s=300)
    assert rec["status"] == "ok", rec.get("reason")
    for key in REQUIRED:
        assert key in rec, key
    assert rec["schema_version"] == SCHEMA_VERSION
    assert len(rec["repeats_seconds"]) == 2 and len(rec["warmup_seconds"]) == 1
    assert rec["warmup_frames"] == 0 < rec["frames"]  # the warmup cut short, before its first frame
    assert rec["rtf"] == pytest.approx(rec["generation_seconds"] / rec["audio_seconds"])
    assert rec["xrt"] == pytest.approx(1 / rec["rtf"])
    assert rec["peak_vram_mb"] is None  # CPU cell
    assert rec["peak_rss_mb"] > 100
    steps = rec["stages"]["step_latency_ms"]
    assert steps["count"] == 2 * (rec["frames"] + 15)
    assert steps["p50"] <= steps["p90"] <= steps["p99"]
    roof = rec["roofline"]
    assert roof["weight_bytes_per_step"] > 0 and 0 < roof["fraction_of_bandwidth"] < 1.5
    assert len(roof["bandwidth_probes_gbps"]) == 2 and min(roof["bandwidth_probes_gbps"]) > 0
    assert rec["env"]["software"]["torch"] and rec["env"]["cpu"]["logical_cores"] >= 1
    # The profiled repeat left a Chrome trace and the ten operators with the most self time.
    with open(rec["profile"]["trace"]) as fh:
        trace = json.load(fh)
    assert trace["traceEvents"]
    assert 1 <= len(rec["profile"]["top_ops"]) <= 10


@pytest.mark.parametrize("fault, reason", [
    ("abort", "SIGABRT"),
    ("kill", "SIGKILL (out of memory?)"),
    ("exit", "exited with status 3"),
    ("raise", "RuntimeError: injected fault"),
])
def test_a_dying_worker_is_recorded_as_failed_and_the_parent_goes_on(fault, reason):
    rec = run_isolated(tiny_cell(), timeout_s=300, extra_env={"DIA_BENCH_INJECT_FAULT": fault})
    assert rec["status"] == "failed"
    assert reason in rec["reason"]
    assert rec["cell"]["preset"] == "dia-tiny"


def test_a_hanging_worker_is_killed_at_its_timeout_and_the_next_cell_runs():
    rec = run_isolated(tiny_cell(), timeout_s=8, extra_env={"DIA_BENCH_INJECT_FAULT": "hang"})
    assert rec["status"] == "failed" and rec["reason"] == "timed out after 8 s"
    assert run_isolated(tiny_cell(), timeout_s=300)["status"] == "ok"


def test_how_openmp_threads_wait_is_recorded_where_set():
    """The wait policy moves a decode step's many small parallel regions (harness/env.py), so a record names it;
    a worker whose environment differs at import gets its own interpreter, where the setting takes effect."""
    rec = run_isolated(tiny_cell(), timeout_s=300, extra_env={"OMP_WAIT_POLICY": "active", "GOMP_SPINCOUNT": "10000"})
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["env"]["thread_env"]["OMP_WAIT_POLICY"] == "active"
    assert rec["env"]["thread_env"]["GOMP_SPINCOUNT"] == "10000"


def test_a_global_setting_in_one_cell_does_not_leak_into_the_next():
    import torch

    parent_threads = torch.get_num_threads()
    first = run_isolated(tiny_cell(plugins=["threads=1"]), timeout_s=300)
    second = run_isolated(tiny_cell(), timeout_s=300)
    assert first["status"] == second["status"] == "ok"
    assert first["env"]["torch_threads"] == 1
    # How OpenMP waits, as this process's environment sets it (the tests session sets it), rides along.
    ambient = {k: os.environ[k] for k in THREAD_ENV if k in os.environ and not k.endswith("_NUM_THREADS")}
    assert first["env"]["thread_env"] == {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **ambient}
    assert second["env"]["torch_threads"] == parent_threads
    assert second["env"]["thread_env"] == ambient
    assert torch.get_num_threads() == parent_threads
    # OpenMP reads its thread count at import, which the fork server did before the plugin set it: that
    # cell replaced its fork with a fresh interpreter. The next cell was forked, with torch's defaults.
    assert first["worker_start"]["process"] == "fresh"
    assert "OMP_NUM_THREADS" in first["worker_start"]["note"]
    assert second["worker_start"]["process"] == "forked"


def test_a_forked_worker_measures_what_a_fresh_interpreter_does():
    forked = run_isolated(tiny_cell(repeats=1), timeout_s=300)
    fresh = run_isolated(tiny_cell(repeats=1), timeout_s=300, extra_env={"DIA_BENCH_FORK": "0"})
    assert forked["status"] == fresh["status"] == "ok"
    assert forked["worker_start"]["process"] == "forked"
    assert fresh["worker_start"] == {"process": "fresh", "note": "a new interpreter: DIA_BENCH_FORK=0"}
    from dia_bench.harness import record_schema

    assert record_schema.problems(fresh) == [] and record_schema.problems(forked) == []
    # The same seeded weights and sampling give the same audio; how much the fork saves is shown by
    # `python -m tests.bench.fork`, not asserted on a timer.
    assert forked["audio_sha256"] == fresh["audio_sha256"]
    assert forked["env"]["torch_threads"] == fresh["env"]["torch_threads"]
    assert forked["graphs_compiled_in_repeats"] in (0, None) and fresh["graphs_compiled_in_repeats"] in (0, None)


def test_only_variables_read_later_may_differ_from_the_fork_servers():
    from dia_bench.harness.worker.forked import differs_at_import

    server = {"PATH": "/bin", "OMP_NUM_THREADS": "2", "DIA_BENCH_CACHE": "/a"}
    assert differs_at_import(server, {**server, "DIA_BENCH_CACHE": "/b", "TORCHINDUCTOR_CACHE_DIR": "/c"}) == []
    assert differs_at_import(server, {**server, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}) == \
        ["MKL_NUM_THREADS", "OMP_NUM_THREADS"]
    assert differs_at_import(server, {"OMP_NUM_THREADS": "2", "DIA_BENCH_CACHE": "/a"}) == ["PATH"]


def test_run_command_prints_a_summary_and_writes_the_record(tmp_path):
    out = tmp_path / "r.json"
    wav = tmp_path / "a.wav"
    result = run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--seconds", "0.2", "--repeats", "1",
                     "--warmup", "0", "--json", str(out), "--save-audio", str(wav))
    assert result.returncode == 0, result.stderr
    assert "RTF (compute/audio, lower is better)" in result.stdout
    assert "x real time (audio/compute)" in result.stdout
    assert "timings are real, audio is noise" in result.stdout
    rec = json.loads(out.read_text())
    assert rec["status"] == "ok"
    import soundfile

    audio, rate = soundfile.read(wav)
    assert rate == 44100 and len(audio) == rec["frames"] * 512


def test_device_busy_counts_each_microsecond_of_device_work_once():
    # Real profiler event objects, laid out as a CUDA profile records them: a GPU annotation spanning
    # the step, two overlapping kernels, a copy, a runtime record and the CPU operator that launched them.
    from torch.autograd.profiler_util import FunctionEvent

    from dia_bench.harness.worker.profiling import device_busy

    def event(name, start, end, activity):
        return FunctionEvent(id=0, name=name, thread=0, start_us=start, end_us=end, activity_type=activity)

    events = [event("decode step", 0, 100, "gpu_user_annotation"), event("aten::mm", 0, 30, "cpu_op"),
              event("gemm", 5, 15, "kernel"), event("norm", 10, 20, "kernel"),
              event("Memcpy HtoD", 40, 45, "gpu_memcpy"), event("Command Buffer Full", 0, 90, "cuda_runtime")]
    assert device_busy(events) == (20.0, 3)
    assert device_busy([]) == (0.0, 0)
    # As torch 2.11 records them, with no activity named: what ran on the device, less its annotations.
    cuda = torch.autograd.DeviceType.CUDA
    older = [FunctionEvent(id=0, name="decode step", thread=0, start_us=0, end_us=100, device_type=cuda,
                           is_user_annotation=True),
             FunctionEvent(id=0, name="aten::mm", thread=0, start_us=0, end_us=30),
             FunctionEvent(id=0, name="gemm", thread=0, start_us=5, end_us=15, device_type=cuda),
             FunctionEvent(id=0, name="norm", thread=0, start_us=10, end_us=20, device_type=cuda)]
    assert device_busy(older) == (15.0, 2)


def test_cells_on_a_gpu_or_with_forking_off_start_fresh():
    from dia_bench.harness.driver.launcher import forkable

    assert forkable(tiny_cell(), {})
    assert not forkable(tiny_cell(device="cuda:0"), {})
    assert not forkable(tiny_cell(), {"DIA_BENCH_FORK": "0"})


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_a_failed_compile_keeps_the_compilers_error_among_its_warnings(tmp_path):
    # An inductor or kernel build failure carries the compiler's whole output: a few thousand lines of
    # warnings around one error, which the traceback's tail would keep in place of the error.
    source = tmp_path / "broken.c"
    source.write_text("".join(f"int f{i}(void) {{ char c = 255 + {i}; return c; }}\n" for i in range(300))
                      + "int main(void) { return undefined_name; }\n")
    out = subprocess.run(["gcc", "-c", "-Woverflow", str(source), "-o", str(tmp_path / "broken.o")],
                         capture_output=True, text=True, check=False)
    assert out.returncode != 0 and len(out.stderr) > TRACEBACK_CHARS
    try:
        raise RuntimeError("C++ compile error\n" + out.stderr)
    except RuntimeError as exc:
        reason, tb = exception_reason(exc)
    assert reason.startswith("RuntimeError: C++ compile error (") and "undefined_name" in reason, reason
    assert "undefined_name" in tb.split("\n\n")[0] and len(tb) <= TRACEBACK_CHARS
    assert "warning" in tb  # the tail is still there after the errors
