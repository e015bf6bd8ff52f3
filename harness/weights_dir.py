"""What a weights directory must hold, checked without torch.

The parent checks a directory the user names (command line, suite) before any cell starts, and the
worker checks it again before loading: one set of rules on both sides of the process boundary. Which
weights a cell then uses (local, the Hugging Face cache, synthetic) is the worker's `weights` module.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from dia_bench.harness.errors import UsageError
from dia_bench.harness.jsonio import read_json

WEIGHT_SUFFIXES = (".safetensors", ".bin")
# What turns synthetic into real weights: huggingface_hub's own command on a machine with network,
# then the cache copied over (dia-bench reads it offline).
REAL_WEIGHTS_HINT = ("for real weights, on a machine with network run `hf download nari-labs/Dia-1.6B-0626` and "
                     "`hf download descript/dac_44khz`, then copy ~/.cache/huggingface/hub to this machine "
                     "(or pass --weights DIR --codec-weights DIR)")


def weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def check_safetensors(path: Path) -> None:
    """Cheap integrity check: the header parses and the file holds every byte it promises."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise ValueError("file shorter than a safetensors header")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise ValueError("header length points past the end of the file")
        header = json.loads(fh.read(header_len))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + header_len + end != size:
        raise ValueError(f"holds {size} bytes but its header describes {8 + header_len + end} (truncated?)")


def check_weights_dir(directory: str | Path, kind: str) -> Path:
    """Validate a directory written by `save_pretrained`; raise UsageError naming the fix."""
    expected = {"model": ("dia", "DiaForConditionalGeneration"), "codec": ("dac", "DacModel")}[kind]
    flag = "--weights" if kind == "model" else "--codec-weights"
    path = Path(directory).expanduser()
    fix = f"pass a directory written by {expected[1]}.save_pretrained"
    if not path.is_dir():
        raise UsageError(f"{flag} {directory}: no such directory; {fix}")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise UsageError(f"{flag} {directory}: no config.json in it; {fix}")
    try:
        model_type = read_json(config_path).get("model_type")
    except (json.JSONDecodeError, OSError, AttributeError) as exc:
        raise UsageError(f"{flag} {directory}: config.json is not valid JSON ({exc}); {fix}") from None
    if model_type != expected[0]:
        raise UsageError(
            f"{flag} {directory}: config.json is for model_type {model_type!r}, not {expected[0]!r}; {fix}"
        )
    files = weight_files(path)
    if not files:
        raise UsageError(f"{flag} {directory}: no *.safetensors or *.bin weight files; {fix}")
    for file in files:
        if file.suffix == ".safetensors":
            try:
                check_safetensors(file)
            except (ValueError, json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
                raise UsageError(f"{flag} {directory}: {file.name} is corrupt ({exc}); {fix}") from None
    return path
