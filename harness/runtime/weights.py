"""Which weights a run uses: a local directory, the offline Hugging Face cache, or synthetic ones.

Synthetic weights are seeded random weights at the preset's architecture, written once as
safetensors and then loaded through the same `from_pretrained` path as real weights, so the
timing is real while the audio is noise.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from dia_bench.harness.jsonio import read_json, write_json_atomic
from dia_bench.harness.paths import cache_dir
from dia_bench.harness.presets import Preset
from dia_bench.harness.weights_dir import check_weights_dir, weight_files


@dataclass
class WeightsSource:
    kind: str  # "model" or "codec"
    source: str  # "local", "hf-cache" or "synthetic"
    path: str
    content_hash: str
    seed: int | None = None
    repo_id: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def content_hash(directory: Path) -> str:
    """sha256 over the weight files (names and bytes), cached by size and mtime so 6 GB is read once."""
    files = weight_files(directory)
    stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    cache_file = cache_dir() / "hashes.json"
    key = str(directory.resolve())
    try:
        cached = read_json(cache_file)
    except (OSError, json.JSONDecodeError):
        cached = {}
    entry = cached.get(key)
    if entry and entry.get("stamp") == [list(s) for s in stamp]:
        return entry["sha256"]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(16 << 20):
                digest.update(chunk)
    value = "sha256:" + digest.hexdigest()
    cached[key] = {"stamp": stamp, "sha256": value}
    with contextlib.suppress(OSError):  # a read-only cache only costs a re-hash next time
        write_json_atomic(cache_file, cached)
    return value


def hf_cache_dir(repo_id: str | None) -> Path | None:
    """The snapshot of `repo_id` in the local Hugging Face cache, read strictly offline."""
    if repo_id is None:
        return None
    os.environ["HF_HUB_OFFLINE"] = "1"  # never wait on the network
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    if not (path / "config.json").is_file() or not weight_files(path):
        return None
    return path


def _arch_key(preset: Preset, seed: int) -> str:
    arch = json.dumps([preset.encoder, preset.decoder, preset.codec], sort_keys=True)
    return f"{preset.name}-seed{seed}-{hashlib.sha256(arch.encode()).hexdigest()[:10]}"


def synthetic_dir(preset: Preset, seed: int) -> Path:
    return cache_dir() / "synthetic" / _arch_key(preset, seed)


def ensure_synthetic(preset: Preset, seed: int, kind: str) -> WeightsSource:
    """Write seeded random weights once (under a lock, atomically) and describe them."""
    root = synthetic_dir(preset, seed)
    target = root / kind
    manifest = target / "dia-bench-synthetic.json"
    if not manifest.is_file():
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f".{kind}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not manifest.is_file():
                _write_synthetic(preset, seed, kind, target)
    info = read_json(manifest)
    return WeightsSource(kind=kind, source="synthetic", path=str(target), content_hash=info["content_hash"],
                         seed=seed)


def _write_synthetic(preset: Preset, seed: int, kind: str, target: Path) -> None:
    import torch
    from transformers import DacModel, DiaForConditionalGeneration

    torch.manual_seed(seed)
    model = DiaForConditionalGeneration(preset.dia_config()) if kind == "model" else DacModel(preset.dac_config())
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    del model
    digest = content_hash(tmp)
    write_json_atomic(tmp / "dia-bench-synthetic.json",
                      {"preset": preset.name, "seed": seed, "kind": kind, "content_hash": digest})
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def resolve(preset: Preset, kind: str, explicit: str | None, seed: int) -> WeightsSource:
    """Weights in order: an explicit directory, the offline HF cache, then synthetic."""
    if explicit:
        path = check_weights_dir(explicit, kind)
        return WeightsSource(kind=kind, source="local", path=str(path.resolve()), content_hash=content_hash(path))
    repo_id = preset.hf_model_id if kind == "model" else preset.hf_codec_id
    cached = hf_cache_dir(repo_id)
    if cached is not None:
        return WeightsSource(kind=kind, source="hf-cache", path=str(cached), content_hash=content_hash(cached),
                             repo_id=repo_id)
    return ensure_synthetic(preset, seed, kind)


def describe_local_weights(presets: dict[str, Preset]) -> list[dict]:
    """What weights this machine already has, for `dia-bench env`."""
    rows = []
    for preset in presets.values():
        for kind, repo in (("model", preset.hf_model_id), ("codec", preset.hf_codec_id)):
            if repo:
                found = hf_cache_dir(repo)
                rows.append({"preset": preset.name, "kind": kind, "source": "hf-cache", "repo_id": repo,
                             "available": found is not None, "path": str(found) if found else None})
        synth_root = cache_dir() / "synthetic"
        if synth_root.is_dir():
            for d in sorted(synth_root.glob(f"{preset.name}-seed*")):
                kinds = [k for k in ("model", "codec") if (d / k / "dia-bench-synthetic.json").is_file()]
                rows.append({"preset": preset.name, "kind": "+".join(kinds) or "incomplete",
                             "source": "synthetic", "available": bool(kinds), "path": str(d)})
    return rows
