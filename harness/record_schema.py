"""The record's fields as types, each documented: the one place that says what a cell's record and a run's
run.json hold. docs/record.md is generated from these types (`dia-bench schema`), and the records a real
sweep writes are checked against them (`problems`), so the page, the types and the writer cannot drift.

Each TypedDict's fields carry a `Doc` through `Annotated`: what the field holds, its unit, and when it
is None. A TypedDict is split in two where some fields are not in every record: `...Base` holds those
always present, the class itself (total=False) those present only sometimes, with `Doc.present` saying
when. No `from __future__ import annotations` here: the docs and the checks read the annotations as
objects.

A change that makes an older record mean something else, or lack what readers need, bumps
SCHEMA_VERSION, says what changed in HISTORY, and adds a step to UPGRADES (`dia-bench upgrade` runs the
steps on run directories in place). Readers accept only the current version.
"""

import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict, Union

SCHEMA_VERSION = 3

# What each version changed, oldest first: docs/record.md and `dia-bench upgrade` show it.
HISTORY: tuple[tuple[int, str], ...] = (
    (1, "The first record: timings per stage and decode step, memory peaks, weights, machine and software."),
    (2, "Fidelity judged on the sampled distributions against a shared fp32 history (`fidelity.sampled`, "
        "`fidelity.history`); memory peaks per phase (`memory.phases`); long-form RTF and fixed cost per "
        "repeat (`long_form`); audio frames per second; energy per repeat run."),
    (3, "`roofline.fraction_of_bandwidth` counts the attention caches a decode step reads beside its weights "
        "(`roofline.cache_bytes_per_step`); the weights-only fraction, which schema 2 records first wrote "
        "under that name, is `roofline.weights_fraction_of_bandwidth`. `dia-bench upgrade` brings a schema 2 "
        "run forward: where its roofline has no `cache_bytes_per_step` (the caches were never counted), "
        "`fraction_of_bandwidth` moves to `weights_fraction_of_bandwidth`, and `fraction_of_bandwidth`, "
        "`fraction_range`, `achieved_bandwidth_gbps`, `floor_step_ms`, `cache_bytes_per_step` and "
        "`bytes_per_step`, which now count the caches, become None. Fields schema 2 records gained after its "
        "first records were written (`cell.warmup_seconds`, `worker_start.note`, `fidelity.history.sensitivity`, "
        "the roofline's bandwidth probes and `fraction_range`) are set to None where absent: not recorded."),
)

# Versions `dia-bench upgrade` can bring forward: schema 1 records lack what schema 2 added (the sampled
# fidelity, per-phase memory), which only measuring again provides.
OLDEST_UPGRADABLE = 2


@dataclass(frozen=True)
class Doc:
    """A field's documentation: `what` it holds, its `unit`, when it is `none` (None), and for fields
    not in every record, when it is `present`."""

    what: str
    unit: str | None = None
    none: str | None = None
    present: str | None = None


F = Annotated  # shorter field declarations: F[type, Doc(...)]

OK_ONLY = "ok records"
NOT_MEASURED = "the cell did not run to the end (failed or skipped)"


class Tool(TypedDict):
    name: F[str, Doc("`dia-bench`")]
    version: F[str, Doc("dia-bench's version (harness.__version__)")]


class ProcessTerm(TypedDict):
    """The between-process part of the noise on log times (`harness/stats.py`)."""
    variance: F[float, Doc("variance of a process's effect on log time")]
    df: F[float, Doc("degrees of freedom it rests on")]
    source: F[str, Doc("where it came from, in words")]


class CellSpecBase(TypedDict):
    """The configuration as the worker ran it (harness/cell.py's Cell.to_dict)."""

    preset: F[str, Doc("model preset: `dia-1.6b` or `dia-tiny`")]
    device: F[str, Doc("`cpu`, `cuda` or `cuda:N`")]
    plugins: F[list[str], Doc("optimization specs as the suite or command line wrote them, `name` or `name=value`")]
    text: F[str, Doc("the transcript, with [S1]/[S2] speaker tags")]
    seconds: F[float, Doc("audio asked for per request", "s")]
    batch: F[int, Doc("requests generated together")]
    batch_texts: F[list[str] | None, Doc("a batch of different texts: request i reads batch_texts[i % len]",
                                         none="every request reads `text`")]
    warmup: F[int, Doc("warmup requests before the measured repeats")]
    warmup_seconds: F[float | None, Doc("where no plugin needs a whole request: audio's worth of decode steps a "
                                        "warmup runs after the prefill (x 86.13 a second) before it stops", "s",
                                        none="a whole request of the cell's length")]
    repeats: F[int, Doc("measured repeats (the minimum, with a time budget or a CI target)")]
    time_budget_s: F[float | None, Doc("repeat until this much time is spent", "s", none="no budget")]
    target_ci_pct: F[float | None, Doc("repeat until the 95% interval is within +-this", "%", none="no target")]
    max_repeats: F[int | None, Doc("the most repeats a CI target may spend", none="no target")]
    seed: F[int, Doc("sampling seed")]
    weights_seed: F[int, Doc("seed of synthetic weights")]
    weights: F[str | None, Doc("the model's weights directory", none="synthetic or Hugging Face cache weights")]
    codec_weights: F[str | None, Doc("the codec's weights directory", none="synthetic or Hugging Face cache")]
    codec: F[str, Doc("codec backend: `transformers` or `descript`")]
    cfg_scale: F[float, Doc("classifier-free guidance scale")]
    temperature: F[float, Doc("sampling temperature")]
    top_p: F[float, Doc("nucleus sampling threshold")]
    top_k: F[int, Doc("top-k sampling")]
    fidelity: F[bool, Doc("whether fidelity against the fp32 reference is judged")]
    profile_dir: F[str | None, Doc("where `--profile` writes its trace", none="not profiled")]
    save_audio: F[str | None, Doc("WAV of the first request (`--save-audio`)", none="not asked for")]
    audio_dir: F[str | None, Doc("sweeps: where audio is kept when the weights are real", none="not a sweep")]
    fidelity_dir: F[str | None, Doc("where the fp32 reference's history lives", none="the cache")]
    label: F[str | None, Doc("the suite's name for the text (`short`, `medium`)", none="a text of its own")]
    gpu_model: F[str | None, Doc("CUDA cells: the GPU model they must run on", none="any GPU, or a CPU cell")]
    frames: F[int, Doc("audio frames per request (86.13 a second)")]
    cell_id: F[str, Doc("stable hash of what is measured (not where outputs go): resume and compare match on it")]


class CellSpec(CellSpecBase, total=False):
    process_term: F[ProcessTerm | None, Doc("the between-process term adaptive repeats include",
                                            none="the default prior", present="records since the term was added")]


class StepLatencyBase(TypedDict):
    count: F[int, Doc("decode steps timed, over all repeats")]


class StepLatency(StepLatencyBase, total=False):
    min: F[float, Doc("fastest step", "ms", present="at least one step timed")]
    p50: F[float, Doc("median step", "ms", present="at least one step timed")]
    mean: F[float, Doc("mean step", "ms", present="at least one step timed")]
    iqr: F[float | None, Doc("interquartile range", "ms", none="too few steps", present="at least one step timed")]
    p90: F[float, Doc("90th percentile", "ms", present="at least one step timed")]
    p99: F[float, Doc("99th percentile", "ms", present="at least one step timed")]
    max: F[float, Doc("slowest step", "ms", present="at least one step timed")]


class Stages(TypedDict, total=False):
    """Medians over the measured repeats."""

    tokenize_s: F[float | None, Doc("text to token ids", "s", none="not timed", present=OK_ONLY)]
    encoder_prefill_s: F[float | None, Doc("encoder and the decoder's prefill", "s", none="not timed",
                                           present=OK_ONLY)]
    decode_s: F[float | None, Doc("the decode loop", "s", none="not timed", present=OK_ONLY)]
    codec_decode_s: F[float | None, Doc("codes to waveform", "s", none="not timed", present=OK_ONLY)]
    generate_s: F[float | None, Doc("`model.generate`: encoder, prefill and decode loop", "s", none="not timed",
                                    present=OK_ONLY)]
    end_to_end_s: F[float | None, Doc("tokenize to waveform", "s", none="not timed", present=OK_ONLY)]
    step_latency_ms: F[StepLatency, Doc("every decode step of every repeat, summarized", present=OK_ONLY)]


class WeightsFile(TypedDict):
    kind: F[str, Doc("`model` or `codec`")]
    source: F[str, Doc("`local` (a directory), `hf-cache` (the Hugging Face cache) or `synthetic`")]
    path: F[str, Doc("the directory loaded")]
    content_hash: F[str, Doc("`sha256:` over the weight files' names and bytes")]
    seed: F[int | None, Doc("seed of synthetic weights", none="real weights")]
    repo_id: F[str | None, Doc("the Hugging Face repository", none="not from the hub")]


class Weights(TypedDict):
    source: F[str, Doc("the model's weights: `local`, `hf-cache` or `synthetic`")]
    audio_is_noise: F[bool, Doc("true where model or codec weights are synthetic: timings are real, audio is not")]
    model: F[WeightsFile, Doc("the model's weights")]
    codec: F[WeightsFile, Doc("the codec's weights")]


class CpuBase(TypedDict):
    model: F[str, Doc("the processor's brand string")]
    vendor: F[str | None, Doc("`GenuineIntel`, `AuthenticAMD`...", none="not reported")]
    arch: F[str, Doc("instruction set architecture")]
    physical_cores: F[int | None, Doc("cores", none="not reported")]
    logical_cores: F[int | None, Doc("hardware threads", none="not reported")]
    features: F[dict[str, bool], Doc("the CPU features that decide which optimizations can pay off")]
    flags: F[list[str], Doc("every flag the CPU reports")]
    memory_gb: F[float, Doc("installed memory", "GiB")]


class Cpu(CpuBase, total=False):
    usable_cores: F[int | None, Doc("the hardware threads the process could run on (its CPU affinity): fewer "
                                    "than logical_cores where it was pinned", none="not reported",
                                    present="records since pinned runs were told apart")]


class Gpu(TypedDict):
    index: F[int, Doc("NVML index")]
    name: F[str, Doc("the GPU's model name")]
    driver: F[str, Doc("driver version")]
    capability: F[str, Doc("CUDA compute capability, `9.0`")]
    memory_gb: F[float, Doc("device memory", "GiB")]


class Software(TypedDict):
    stack: F[str | None, Doc("the nox software stack (suites/stacks.toml)", none="any other environment")]
    packages: F[dict[str, str], Doc("versions of the optional packages some stacks have")]
    python: F[str, Doc("Python version")]
    torch: F[str, Doc("torch version")]
    transformers: F[str, Doc("transformers version")]
    cuda: F[str | None, Doc("the CUDA torch was built with", none="a CPU build")]
    cudnn: F[int | None, Doc("cuDNN version", none="no cuDNN")]
    dia_bench: F[str, Doc("dia-bench version")]
    git_commit: F[str | None, Doc("the checkout's commit, `-dirty` with uncommitted changes", none="not a checkout")]
    git_subject: F[str | None, Doc("first line of the commit's message", none="not a checkout")]


class EnvBase(TypedDict):
    hostname: F[str, Doc("host name")]
    platform: F[str, Doc("Python's platform.platform()")]


class Env(EnvBase, total=False):
    """The machine and software: a failed record has only the host name and platform."""

    cpu: F[Cpu, Doc("the processor", present="the worker collected it (not in failed records)")]
    gpus: F[list[Gpu], Doc("every NVIDIA GPU NVML sees, empty without one", present="collected")]
    software: F[Software, Doc("versions", present="collected")]
    torch_threads: F[int, Doc("torch's intra-op threads", present="collected")]
    torch_interop_threads: F[int, Doc("torch's inter-op threads", present="collected")]
    thread_env: F[dict[str, str], Doc("the threads' environment where set: OMP_NUM_THREADS, MKL_NUM_THREADS, and "
                                      "how OpenMP's threads wait and are placed (OMP_WAIT_POLICY, GOMP_SPINCOUNT, "
                                      "KMP_BLOCKTIME, OMP_PROC_BIND, OMP_PLACES)", present="collected")]
    device: F[str, Doc("the device the cell ran on", present="collected")]
    device_name: F[str, Doc("the GPU's name on CUDA, the CPU's model otherwise", present="collected")]
    device_capability: F[str, Doc("CUDA compute capability", present="CUDA cells")]


class WorkerStart(TypedDict):
    process: F[str, Doc("`forked` (from the launcher's fork server: torch imported once) or `fresh` (a new "
                        "interpreter)")]
    note: F[str | None, Doc("why it started that way", none="not recorded (upgraded from 2)")]


class LongForm(TypedDict):
    """What a request costs per second of audio, apart from its fixed cost."""

    rtf_repeats: F[list[float], Doc("per repeat: mean decode step x 86.13 frames/s / batch", "ratio")]
    fixed_seconds_repeats: F[list[float], Doc("per repeat: generation minus frames x mean step (encoder, "
                                              "prefill, the delay pattern's 16 steps)", "s")]
    step_growth_us_per_step_repeats: F[list[float], Doc("per repeat: how much slower each step is than the one "
                                                        "before (slope of a line through its step times)", "us")]
    steps_per_request: F[int | None, Doc("decode steps a request ran", none="no repeat ran")]
    rtf: F[float | None, Doc("centre of `rtf_repeats` (geometric mean)", "ratio", none="no step timed")]
    fixed_seconds: F[float | None, Doc("centre of `fixed_seconds_repeats`", "s", none="no step timed")]
    method: F[str, Doc("how the figures are derived, in words")]


class PhasePeakBase(TypedDict):
    peak_rss_mb: F[float, Doc("host RSS high-water mark within the phase", "MiB")]
    peak_vram_mb: F[float | None, Doc("CUDA allocator's peak", "MiB", none="not CUDA")]
    peak_vram_reserved_mb: F[float | None, Doc("CUDA allocator's reserved peak", "MiB", none="not CUDA")]


class PhasePeak(PhasePeakBase, total=False):
    nvml_peak_used_mb: F[float, Doc("the whole device's peak use, sampled through NVML", "MiB",
                                    present="the measured repeats on CUDA with NVML")]


class Memory(TypedDict):
    window: F[str, Doc("the phase the top-level peaks come from (`the measured repeats`)")]
    rss_method: F[str, Doc("how RSS peaks are read")]
    phases: F[dict[str, PhasePeak], Doc("`load`, `transform`, `warmup` and `repeats`, each its own window")]


class Roofline(TypedDict):
    """How close a decode step came to the memory-bandwidth floor (harness/worker/roofline.py)."""

    weight_bytes_per_step: F[int, Doc("weights one decode step reads (decoder and logits head)", "bytes")]
    cache_bytes_per_step: F[int | None, Doc("attention caches a step must read: all cross-attention keys and "
                                            "values, and the self-attention positions attended, as a mean over "
                                            "the request", "bytes", none="a record upgraded from schema 2 that "
                                            "never counted the caches")]
    bytes_per_step: F[int | None, Doc("weights and caches", "bytes", none="caches not counted (upgraded from 2)")]
    measured_bandwidth_gbps: F[float | None, Doc("the machine's read bandwidth, scaled by the probes beside the "
                                                 "repeats", "GB/s", none="not measurable here")]
    bandwidth_method: F[str | None, Doc("how the bandwidth was measured", none="not measured")]
    bandwidth_kernels: F[dict[str, float | None] | None,
                         Doc("each read kernel's bandwidth (None: the kernel does not run here)", "GB/s",
                             none="not measured")]
    bandwidth_from_cache: F[bool, Doc("the bandwidth came from this machine's cache, measured by an earlier cell")]
    bandwidth_cached_gbps: F[float | None, Doc("the cached figure before scaling", "GB/s",
                                               none="not measured, or not recorded (upgraded from 2)")]
    bandwidth_drift: F[float | None, Doc("mean of the probes beside the repeats over the probe cached with the "
                                         "figure (1.0: unchanged)", "ratio", none="no probes were taken")]
    bandwidth_probes_gbps: F[list[float] | None, Doc("read bandwidth just before and just after the repeats",
                                                     "GB/s", none="no probes were taken")]
    bandwidth_unsteady: F[str | None, Doc("why the fraction is uncertain: the probes differ by over 10%",
                                          none="the probes agree, or none were taken")]
    bandwidth_cached_steady: F[bool | None, Doc("false where the machine's own measurement never saw its probes "
                                                "agree", none="not recorded (upgraded from 2)")]
    floor_step_ms: F[float | None, Doc("bytes_per_step over the bandwidth: the fastest step memory allows", "ms",
                                       none="no bandwidth, or caches not counted (upgraded from 2)")]
    achieved_bandwidth_gbps: F[float | None, Doc("bytes_per_step over the median step", "GB/s",
                                                 none="no step timed, or caches not counted (upgraded from 2)")]
    fraction_of_bandwidth: F[float | None, Doc("achieved over measured bandwidth, weights and caches", "fraction",
                                               none="no step or bandwidth, or caches not counted (upgraded from 2)")]
    weights_fraction_of_bandwidth: F[float | None, Doc("the same for the weights alone", "fraction",
                                                       none="no step or bandwidth")]
    fraction_range: F[list[float] | None, Doc("`fraction_of_bandwidth` under each probe alone: what an unsteady "
                                              "machine leaves open", "fraction",
                                              none="no probes were taken, or not recorded or caches not counted "
                                                   "(upgraded from 2)")]
    problem: F[str | None, Doc("a step read faster than the measured bandwidth: the figure is wrong, not the step "
                               "fast", none="no problem")]


class ProcessSums(TypedDict):
    """Sums of squares of log RTF over the configurations a run measured in several processes."""
    ss_between: F[float, Doc("between processes")]
    df_between: F[int, Doc("their degrees of freedom")]
    ss_within: F[float, Doc("within processes")]
    df_within: F[int, Doc("their degrees of freedom")]
    n0_weight: F[float, Doc("sum of N - sum(n_i^2)/N over configurations (the expected mean square's weight)")]
    processes: F[int, Doc("processes counted")]


class AdaptiveBase(TypedDict):
    target_ci_pct: F[float, Doc("the interval asked for", "%")]
    achieved_ci_pct: F[float | None, Doc("half-width of the 95% interval reached, the between-process term "
                                         "included", "%", none="too few repeats")]
    target_met: F[bool, Doc("whether it was reached")]
    repeats_run: F[int, Doc("repeats it took")]
    min_repeats: F[int, Doc("the cell's `repeats`")]
    max_repeats: F[int | None, Doc("the most it could spend", none="no limit given")]


class Adaptive(AdaptiveBase, total=False):
    within_ci_pct: F[float | None, Doc("half-width of the repeats-only interval", "%", none="too few repeats",
                                       present="records since the between-process term was added")]
    process_term: F[ProcessTerm, Doc("the between-process term the interval included",
                                     present="records since the term was added")]
    unreachable: F[str | None, Doc("why more repeats could not reach the target (the between-process term alone "
                                   "is wider)", none="reachable", present="records since the term was added")]


class Sampled(TypedDict):
    """The cell's sampling distributions against the reference's, over every token that became audio."""

    total_variation: F[float, Doc("mean total variation distance: 0 the same distribution, 1 disjoint", "fraction")]
    total_variation_p95: F[float, Doc("95th percentile of it", "fraction")]
    total_variation_max: F[float, Doc("its maximum", "fraction")]
    total_variation_per_channel: F[list[float | None], Doc("mean per codebook channel (None: no token)",
                                                           "fraction")]
    top1_agreement: F[float, Doc("share of tokens whose most likely token is the reference's", "fraction")]
    top1_agreement_per_channel: F[list[float | None], Doc("the same per channel", "fraction")]
    all_channels_top1_agreement: F[float | None, Doc("share of steps where all 9 channels agree", "fraction",
                                                     none="no step with all channels")]
    positions: F[int, Doc("tokens compared")]
    steps_all_channels: F[int, Doc("steps where all 9 channels produce audio")]


class Logits(TypedDict):
    """The raw conditional logits against the reference's: numerics alone."""

    top1_agreement: F[float, Doc("share of argmax agreement", "fraction")]
    max_abs_error: F[float, Doc("largest absolute difference", "logit")]
    mean_abs_error: F[float, Doc("mean absolute difference", "logit")]
    cosine: F[float, Doc("mean cosine similarity", "cosine")]
    min_cosine: F[float, Doc("lowest cosine similarity", "cosine")]


class SensitivityBase(TypedDict):
    linear_output_noise: F[float, Doc("relative noise put on every Linear output of the reference", "fraction")]
    total_variation: F[float, Doc("how far that moved the reference's sampled distributions: the largest over "
                                  "the draws", "fraction")]
    top1_agreement: F[float, Doc("how many of its top-1 tokens stayed (the fewest over the draws)", "fraction")]


class Sensitivity(SensitivityBase, total=False):
    total_variation_draws: F[list[float], Doc("the total variation of each draw of the noise: their spread says "
                                              "how sure the sensitivity is", "fraction",
                                              present="histories measured over several draws")]


class Sampling(TypedDict):
    cfg_scale: F[float, Doc("guidance scale")]
    temperature: F[float, Doc("temperature")]
    top_p: F[float, Doc("nucleus threshold")]
    top_k: F[int, Doc("top-k")]


class FidelityHistoryBase(TypedDict):
    id: F[str, Doc("hash of everything below that decides what the reference generates")]
    path: F[str | None, Doc("the history's safetensors file", none="not saved")]
    preset: F[str, Doc("model preset")]
    device_type: F[str, Doc("`cpu` or `cuda`")]
    model_weights: F[str, Doc("content hash of the model weights")]
    codec_weights: F[str, Doc("content hash of the codec weights")]
    codec: F[str, Doc("codec backend")]
    text: F[str, Doc("the transcript")]
    seed: F[int, Doc("sampling seed")]
    frames: F[int, Doc("audio frames generated")]
    sampling: F[Sampling, Doc("the reference's sampling")]
    torch: F[str, Doc("torch version that generated it")]
    transformers: F[str, Doc("transformers version that generated it")]
    sensitivity: F[Sensitivity | None, Doc("how far the reference itself moves under noise a fraction of bf16's "
                                           "rounding", none="not measured (upgraded from 2)")]


class FidelityHistory(FidelityHistoryBase, total=False):
    created_by_this_cell: F[bool, Doc("this cell generated it", present="in a record's fidelity")]
    source: F[str, Doc("`created`, `run` (already in the run directory) or `cache` (copied from the cache)",
                       present="in a record's fidelity")]


class FidelityBase(TypedDict):
    compared: F[bool, Doc("whether the cell was compared with the reference")]


class Fidelity(FidelityBase, total=False):
    """The cell's output against the unoptimized fp32 reference, teacher-forced on the run's shared history."""

    reason: F[str, Doc("why not compared", present="not compared: the reference cell itself")]
    error: F[str, Doc("the exception that stopped the comparison, one line", present="the comparison failed")]
    traceback: F[str, Doc("its traceback (the last 4000 characters)", present="the comparison failed")]
    method: F[str, Doc("what was compared, in words", present="compared")]
    history: F[FidelityHistory, Doc("the reference's history the cell was judged on",
                                    present="compared, or the reference cell")]
    teacher_forced_through: F[str, Doc("the path the teacher-forced pass took (`forward`, the static engine's "
                                       "step, `generate`)", present="compared")]
    graphs_compiled: F[int, Doc("graphs torch.compile compiled for the teacher-forced pass (0: it reused the "
                                "measured ones)", present="compared")]
    sampled: F[Sampled, Doc("the sampled distributions against the reference's", present="compared")]
    logits: F[Logits, Doc("the raw logits against the reference's", present="compared")]
    codec_same_codes_snr_db: F[float | None, Doc("the cell's codec on the reference's codes against the fp32 "
                                                 "codec's audio", "dB", none="bit-identical",
                                                 present="compared")]
    codec_same_codes_identical: F[bool, Doc("the codec's audio was bit-identical", present="compared")]
    free_running_audio_snr_db: F[float | None, Doc("the cell's own audio against the reference's", "dB",
                                                   none="not compared (see free_running_audio) or identical",
                                                   present="compared")]
    free_running_audio: F[str, Doc("`compared`, `identical`, or why not compared", present="compared")]


class Profile(TypedDict):
    trace: F[str, Doc("the Chrome/Perfetto trace file")]
    sorted_by: F[str, Doc("the profiler column operators are ranked by")]
    top_ops: F[list[dict[str, Any]], Doc("the operators with the most self time: name, calls, self_cpu_ms, "
                                         "self_device_ms")]
    all_op_names: F[list[str], Doc("every operator the profiled repeat ran")]
    wall_ms: F[float, Doc("the profiled repeat's wall time", "ms")]
    device_busy_ms: F[float | None, Doc("time at least one kernel, copy or memset ran", "ms", none="not CUDA")]
    device_busy_fraction: F[float | None, Doc("device busy time over wall time", "fraction", none="not CUDA")]
    device_kernels: F[int | None, Doc("kernels, copies and memsets run", none="not CUDA")]


class Node(TypedDict, total=False):
    id: F[str, Doc("Ray node id", present="always in a node")]
    ip: F[str, Doc("node address (`?` when lost)", present="the node was reached")]
    hostname: F[str, Doc("node host name (`?` when lost)", present="the node was reached")]


class GpuAssignment(TypedDict):
    ray_gpu_ids: F[list[str], Doc("the GPUs Ray gave the task")]
    cuda_visible_devices: F[str | None, Doc("CUDA_VISIBLE_DEVICES in the task", none="unset")]
    ran_as: F[str, Doc("the device the worker used (`cuda:0`)")]


Status = Literal["ok", "failed", "skipped", "running"]


class RecordBase(TypedDict):
    """Fields every record has, whatever its status."""

    schema_version: F[int, Doc("this schema's version (see the history below)")]
    tool: F[Tool, Doc("what wrote the record")]
    cell_id: F[str, Doc("stable hash of what is measured (`cell.cell_id`)")]
    status: F[Status, Doc("`ok` measured; `failed` (the error, the signal, the timeout: `reason`); `skipped` (why "
                          "this machine cannot run it: `reason`); `running` only inside the worker")]
    reason: F[str | None, Doc("why it failed or was skipped, one line", none="ok")]
    cell: F[CellSpec, Doc("the configuration as run")]
    preset: F[str, Doc("model preset")]
    device: F[str, Doc("device")]
    plugins: F[list[str], Doc("plugin specs in the order applied (a bare spec as the variant it became)")]
    frames: F[int, Doc("audio frames per request")]
    batch: F[int, Doc("requests generated together")]
    started_at: F[str, Doc("when the worker started, UTC, ISO 8601 with milliseconds")]
    finished_at: F[str | None, Doc("when the worker finished, UTC; tables list cells in this order",
                                   none="still running")]
    rtf: F[float | None, Doc("generation_seconds / audio_seconds: compute per second of audio (lower is better)",
                             "ratio", none=NOT_MEASURED)]
    xrt: F[float | None, Doc("audio_seconds / generation_seconds: times real time (higher is better)", "ratio",
                             none=NOT_MEASURED)]
    audio_seconds: F[float | None, Doc("audio produced per repeat, all requests together", "s", none=NOT_MEASURED)]
    generation_seconds: F[float | None, Doc("median over the repeats of `model.generate` (encoder, prefill, decode "
                                            "loop)", "s", none=NOT_MEASURED)]
    repeats_seconds: F[list[float], Doc("every measured repeat's generation time (empty: not measured)", "s")]
    stages: F[Stages, Doc("time per stage (empty: not measured)")]
    peak_rss_mb: F[float | None, Doc("host RSS high-water mark during the measured repeats", "MiB",
                                     none=NOT_MEASURED)]
    peak_vram_mb: F[float | None, Doc("CUDA allocator's peak during the measured repeats", "MiB",
                                      none="not CUDA, or not measured")]
    weights: F[Weights | None, Doc("the weights loaded", none=NOT_MEASURED)]
    env: F[Env, Doc("the machine and software")]


class Record(RecordBase, total=False):
    # Sweeps add these to every record they write.
    key: F[str, Doc("the record's file name in cells/: the cell id, with `@end` or `@N` for repeated baselines "
                    "and `@pN` for a cell's process N", present="sweeps")]
    role: F[str, Doc("`cell`, or `baseline-start`, `baseline-mid`, `baseline-end` (the baseline measured "
                     "again: a check on the machine), or `cell-process` (another process of a cell, where the "
                     "suite sets `processes`)", present="sweeps")]
    description: F[str, Doc("preset/device/plugins/text/seconds/batch, as tables name the cell", present="sweeps")]
    suite: F[str, Doc("the suite's name", present="sweeps")]
    executor: F[str, Doc("`local` or `ray`", present="sweeps")]
    # The launcher's.
    worker_wall_seconds: F[float, Doc("the worker process's wall time", "s", present="the cell ran in a worker")]
    worker_exit_code: F[int, Doc("its exit status (negative: the signal)", present="the cell ran in a worker")]
    stderr_tail: F[str, Doc("the worker's last output lines", present="the worker died without a record")]
    traceback: F[str, Doc("the worker's traceback (the last 4000 characters; after a failed compile, the "
                          "compiler's error lines first)", present="the worker raised")]
    worker_start: F[WorkerStart, Doc("how the worker process started", present="the worker got that far")]
    plugin_defaults: F[dict[str, str], Doc("bare plugin specs and the variant each became on this machine",
                                           present="the worker got that far")]
    # A measured cell's.
    dtype: F[str, Doc("dtype the model was loaded in (`float32`, `bfloat16`)", present=OK_ONLY)]
    plugin_notes: F[dict[str, Any], Doc("what each plugin says it did, or that it had nothing to act on",
                                        present=OK_ONLY)]
    transform_seconds: F[dict[str, float], Doc("time each plugin took to transform the pipeline", "s",
                                               present=OK_ONLY)]
    load_seconds: F[float, Doc("loading weights and codec", "s", present=OK_ONLY)]
    warmup_seconds: F[list[float], Doc("each warmup request's generation time (compilation lands here)", "s",
                                       present=OK_ONLY)]
    warmup_frames: F[int, Doc("audio frames of a warmup request: 0 where it stopped after the prefill and "
                              "`cell.warmup_seconds` of decode steps, before its first frame was complete",
                              present=OK_ONLY)]
    graphs_compiled_in_repeats: F[int | None, Doc("graphs torch.compile compiled inside the timed repeats: 0 where "
                                                  "compilation stayed in the warmup, as it must",
                                                  none="torch.compile was never loaded", present=OK_ONLY)]
    measured_from: F[str, Doc("UTC time the measured repeats began: speedups interpolate the baseline to here",
                              present=OK_ONLY)]
    measured_until: F[str, Doc("UTC time they ended", present=OK_ONLY)]
    end_to_end_repeats_seconds: F[list[float], Doc("every repeat from text to waveform", "s", present=OK_ONLY)]
    generation_iqr_seconds: F[float | None, Doc("interquartile range of repeats_seconds", "s",
                                                none="too few repeats", present=OK_ONLY)]
    end_to_end_seconds: F[float, Doc("median of end_to_end_repeats_seconds", "s", present=OK_ONLY)]
    audio_seconds_per_request: F[float, Doc("audio per request", "s", present=OK_ONLY)]
    samples: F[int, Doc("waveform samples of the last repeat's first request", present=OK_ONLY)]
    sample_rate: F[int, Doc("waveform sample rate", "Hz", present=OK_ONLY)]
    rtf_end_to_end: F[float, Doc("end_to_end_seconds / audio_seconds", "ratio", present=OK_ONLY)]
    xrt_end_to_end: F[float, Doc("its inverse", "ratio", present=OK_ONLY)]
    long_form: F[LongForm, Doc("the cost of a second more audio, apart from a request's fixed cost",
                               present=OK_ONLY)]
    codec_seconds_per_audio_second: F[float | None, Doc("codec decode time per second of audio", "s/s",
                                                        none="not timed", present=OK_ONLY)]
    decode_steps_per_second: F[float | None, Doc("decode loop speed (the delay pattern adds 16 steps a request)",
                                                 "steps/s", none="not timed", present=OK_ONLY)]
    audio_frames_per_second: F[float, Doc("audio frames delivered per second of generation, all requests together",
                                          "frames/s", present=OK_ONLY)]
    decoder_batch_rows: F[int, Doc("rows the decoder ran: 2 per request with CFG, 1 without", present=OK_ONLY)]
    step_latencies_ms: F[list[float], Doc("every decode step of every repeat, in order", "ms", present=OK_ONLY)]
    peak_vram_reserved_mb: F[float | None, Doc("CUDA allocator's reserved peak during the repeats", "MiB",
                                               none="not CUDA", present=OK_ONLY)]
    nvml_peak_used_mb: F[float | None, Doc("the whole device's peak use during the repeats, through NVML", "MiB",
                                           none="not CUDA, or no NVML", present=OK_ONLY)]
    memory: F[Memory, Doc("peaks per phase", present=OK_ONLY)]
    roofline: F[Roofline, Doc("the decode step against the memory-bandwidth floor", present=OK_ONLY)]
    codec: F[str, Doc("codec backend", present=OK_ONLY)]
    adaptive: F[Adaptive, Doc("how adaptive repeats went", present="ok records with --target-ci-pct")]
    energy_joules_per_audio_second: F[float, Doc("NVML's energy counter over the repeats run, per second of audio",
                                                 "J/s", present="ok CUDA records with NVML")]
    profile: F[Profile, Doc("one extra profiled repeat", present="ok records with --profile")]
    plugin_reports: F[dict[str, Any], Doc("each plugin's evidence (dynamo counters, Linear kinds, cache hits)",
                                          present=OK_ONLY)]
    fidelity: F[Fidelity, Doc("the output against the fp32 reference", present="ok records with fidelity on")]
    audio_path: F[str, Doc("the WAV written", present="--save-audio, or a sweep with real weights")]
    output_errors: F[dict[str, str], Doc("optional outputs that could not be written (`profile`, `audio`), and "
                                         "why: the measurement stands", present="such an output failed")]
    audio_sha256: F[str, Doc("sha256 of the last repeat's waveform", present=OK_ONLY)]
    # Ray's.
    node: F[Node, Doc("the Ray node that ran the cell", present="ray sweeps")]
    ran_from: F[float, Doc("when the task started on its node, Unix time", "s", present="ray sweeps")]
    ran_until: F[float, Doc("when it ended there, Unix time", "s", present="ray sweeps")]
    cores: F[list[int], Doc("the CPU cores the cell owned on its node", present="ray sweeps")]
    gpu: F[GpuAssignment, Doc("the GPU Ray gave the cell", present="ray sweeps of CUDA cells")]
    beside: F[list[str], Doc("keys of cells that ran on the same node at the same time: this cell's time is not "
                             "the node's alone", present="ray sweeps where cells overlapped")]


class SuiteMeta(TypedDict):
    name: F[str, Doc("the suite's name (its file name without .toml)")]
    path: F[str, Doc("the suite file as given to `dia-bench sweep`")]
    text_hash: F[str, Doc("sha256 of the suite file's bytes, first 16 hex digits: --resume refuses another suite")]
    text: F[str, Doc("the suite file's text, as run")]


class RunMetaBase(TypedDict):
    schema_version: F[int, Doc("the schema of the run's records")]
    kind: F[Literal["dia-bench-run"], Doc("`dia-bench-run`")]
    started_at: F[str, Doc("when the sweep started, UTC")]
    finished_at: F[str | None, Doc("when it last finished, UTC", none="running, or stopped before the end")]
    suite: F[SuiteMeta, Doc("the suite run")]
    machine: F[Env, Doc("the machine the sweep ran from, collected for `cpu`")]
    pytest_benchmark_machine_info: F[dict[str, Any], Doc("pytest-benchmark's own view of the machine, for "
                                                         "`dia-bench export`")]


class RunMeta(RunMetaBase, total=False):
    cells_total: F[int, Doc("cells the suite planned", present="the sweep reached its end once")]
    process_noise_prior: F[dict[str, ProcessTerm], Doc(
        "per device kind and preset (`cpu dia-1.6b`): the between-process term assumed before the run measured its "
        "own, from this machine's history or the default", present="sweeps that record it")]
    process_noise: F[dict[str, ProcessSums], Doc(
        "per device kind and preset: what the run itself measured of the noise between processes",
        present="sweeps with a configuration measured in two or more processes")]


# ---------------------------------------------------------------------------------------------------
# Reading the types: documentation and checks.

def _hints(td: type) -> dict[str, Any]:
    return typing.get_type_hints(td, include_extras=True)


def _doc(hint: Any) -> Doc:
    for meta in getattr(hint, "__metadata__", ()):
        if isinstance(meta, Doc):
            return meta
    raise TypeError(f"field without a Doc: {hint!r}")


def _bare(hint: Any) -> Any:
    return typing.get_args(hint)[0] if typing.get_origin(hint) is Annotated else hint


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and typing.is_typeddict(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def fields(td: type) -> list[tuple[str, Any, Doc, bool]]:
    """(name, type, Doc, required) of each field of `td`, in declaration order (base classes first)."""
    required = td.__required_keys__  # type: ignore[attr-defined]
    return [(name, _bare(hint), _doc(hint), name in required) for name, hint in _hints(td).items()]


def _nested(tp: Any) -> list[type]:
    """The TypedDicts a type names, at any depth."""
    if _is_typeddict(tp):
        return [tp]
    return [t for arg in typing.get_args(tp) for t in _nested(arg)]


def type_text(tp: Any, link: Callable[[type], str] = lambda t: t.__name__) -> str:
    """A field's type as JSON names it: `number | null`, `list[string]`, `{string: number}`, a section link."""
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if _is_typeddict(tp):
        return link(tp)
    if _is_union(tp):
        return " \\| ".join(type_text(a, link) for a in typing.get_args(tp))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is list:
        return f"list[{type_text(args[0], link)}]"
    if origin is dict:
        return "{" + f"{type_text(args[0], link)}: {type_text(args[1], link)}" + "}"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}[tp]


def _anchor(td: type) -> str:
    return f"[{td.__name__}](#{td.__name__.lower()})"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section(td: type, where: str) -> list[str]:
    own = " ".join(td.__doc__.split()) if td.__doc__ else ""
    lines = [f"### {td.__name__}", "", f"In {where}." + (f" {own}" if own else ""), "",
             "| field | type | unit | what it holds | None when | present |", "|---|---|---|---|---|---|"]
    for name, tp, doc, required in fields(td):
        lines.append(f"| `{name}` | {type_text(tp, _anchor)} | {doc.unit or ''} | {_cell(doc.what)} | "
                     f"{_cell(doc.none or '')} | {_cell('always' if required else doc.present or 'sometimes')} |")
    return [*lines, ""]


def markdown() -> str:
    """docs/record.md: every type reachable from a record and from run.json, and the version history."""
    order: list[tuple[type, str]] = []
    seen: set[type] = set()

    def walk(td: type, where: str) -> None:
        if td in seen:
            return
        seen.add(td)
        order.append((td, where))
        for name, tp, _, _ in fields(td):
            for inner in _nested(tp):
                walk(inner, f"`{td.__name__}.{name}`")

    walk(Record, "each `cells/<key>.json` of a run directory, and the file `dia-bench run --json` writes")
    walk(RunMeta, "`run.json`, one per run directory")
    lines = [
        "<!-- Generated by `dia-bench schema` from harness/record_schema.py: edit the types there, not this "
        "page. -->",
        "",
        f"# The record (schema_version {SCHEMA_VERSION})",
        "",
        "A run directory holds `run.json` (the suite, the machine, the versions) and `cells/<key>.json`, one "
        "record per cell, each a JSON object written atomically as its cell finishes. Readers accept the "
        f"current schema only: `dia-bench upgrade RUN_DIR` brings a run written with schema "
        f"{OLDEST_UPGRADABLE} or later forward in place, keeping the originals in `RUN_DIR/.backup-vN/`.",
        "",
        "A field whose *present* column says always is in every object of its type (a nested type is itself "
        "present as its parent's field says); the others only when the column says. Units: s seconds, "
        "ms milliseconds, us microseconds, MiB 2^20 bytes, GiB 2^30 bytes, "
        "GB/s 10^9 bytes a second; *ratio* and *fraction* have none.",
        "",
        "## Versions",
        "",
        *[f"- **{v}**: {text}" for v, text in HISTORY],
        "",
        "## Types",
        "",
    ]
    for td, where in order:
        lines += _section(td, where)
    return "\n".join(lines).rstrip() + "\n"


def problems(value: Any, tp: Any = Record, where: str = "record") -> list[str]:
    """How `value` differs from type `tp`: fields the type does not know, required fields missing, values of
    another type. Empty when it conforms."""
    if tp is Any:
        return []
    if _is_typeddict(tp):
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        hints = {name: _bare(h) for name, h in _hints(tp).items()}
        out = [f"{where}.{k}: not a field of {tp.__name__}" for k in value if k not in hints]
        out += [f"{where}.{k}: missing" for k in sorted(tp.__required_keys__) if k not in value]  # type: ignore
        for k, v in value.items():
            if k in hints:
                out += problems(v, hints[k], f"{where}.{k}")
        return out
    if _is_union(tp):
        tries = [problems(value, a, where) for a in typing.get_args(tp)]
        return [] if any(not t for t in tries) else min(tries, key=len)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return [] if value in args else [f"{where}: {value!r}, not one of {', '.join(map(repr, args))}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{where}: {type(value).__name__}, not a list"]
        return [p for i, v in enumerate(value) for p in problems(v, args[0], f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(value, dict):
            return [f"{where}: {type(value).__name__}, not an object"]
        return [p for k, v in value.items() for p in problems(v, args[1], f"{where}.{k}")]
    if tp is type(None):
        return [] if value is None else [f"{where}: {value!r}, not null"]
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, tp)
    return [] if ok else [f"{where}: {type(value).__name__} {value!r:.60}, not {type_text(tp)}"]


# ---------------------------------------------------------------------------------------------------
# Upgrades: each takes a document of version N (a record or run.json) and returns what changed in it.

# Fields schema 2 records gained after its first records were written, with no version of their own: an
# older record says nothing of them, and None says so where the current type expects the field.
_LATE_IN_2 = {
    ("cell",): ("warmup_seconds",),
    ("worker_start",): ("note",),
    ("fidelity", "history"): ("sensitivity",),
    ("roofline",): ("bandwidth_cached_gbps", "bandwidth_drift", "bandwidth_probes_gbps", "bandwidth_unsteady",
                    "bandwidth_cached_steady", "fraction_range"),
}


def _record_2_to_3(rec: dict[str, Any]) -> list[str]:
    changes = []
    for path, names in _LATE_IN_2.items():
        parent: Any = rec
        for step in path:
            parent = parent.get(step) if isinstance(parent, dict) else None
        missing = [n for n in names if isinstance(parent, dict) and n not in parent]
        for name in missing:
            parent[name] = None
        if missing:
            changes.append(f"{'.'.join(path)}: {', '.join(missing)} not recorded (None)")
    roof = rec.get("roofline")
    if not isinstance(roof, dict) or "cache_bytes_per_step" in roof:
        return changes
    # Every figure below counted the weights alone in schema 2 and counts weights and caches in 3: a
    # weights-only number under a name that now means both would overstate how close the step came.
    roof["weights_fraction_of_bandwidth"] = roof.get("fraction_of_bandwidth")
    for name in ("fraction_of_bandwidth", "fraction_range", "achieved_bandwidth_gbps", "floor_step_ms",
                 "cache_bytes_per_step", "bytes_per_step"):
        roof[name] = None
    return [*changes, "roofline.fraction_of_bandwidth -> weights_fraction_of_bandwidth (caches not counted)"]


UPGRADES: dict[int, dict[str, Callable[[dict[str, Any]], list[str]]]] = {
    # from version: {"record": step, "run": step}; run.json's own fields did not change.
    2: {"record": _record_2_to_3, "run": lambda meta: []},
}


def upgrade(doc: dict[str, Any], kind: Literal["record", "run"]) -> list[str]:
    """Brings `doc` (a record, or run.json's contents) to SCHEMA_VERSION in place; returns what each step
    changed. Raises ValueError for a version no step starts from."""
    changes: list[str] = []
    version = doc.get("schema_version")
    while version != SCHEMA_VERSION:
        if not isinstance(version, int) or version not in UPGRADES:
            raise ValueError(f"schema {version!r}")
        changes += UPGRADES[version][kind](doc)
        version += 1
        doc["schema_version"] = version
    return changes
