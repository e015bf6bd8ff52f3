"""One file of transformed weights in the cache (int8's and 8da4w's): safetensors whose metadata holds a
format number and the layers it was written for, written atomically, and read so that any failure to
read it becomes StaleEntry: the caller deletes the entry and builds the weights again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class StaleEntry(Exception):
    """The entry cannot serve this model: rebuild it."""


def entry_path(weights_id: str, kind: str) -> Path:
    """Where the entry of the checkpoint `weights_id` lives; `kind` names what it holds."""
    from dia_bench.harness.caches import versions_key
    from dia_bench.harness.paths import cache_dir

    return cache_dir() / "quantized" / versions_key() / f"{weights_id.removeprefix('sha256:')}-{kind}.safetensors"


def write(tensors: dict[str, Any], layers: list, fmt: int, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": str(fmt), "layers": json.dumps(layers)})
    os.replace(tmp, path)


@contextmanager
def reading(path: Path, fmt: int) -> Iterator[tuple[Any, list]]:
    """(the open file, its layers) for an entry of format `fmt`; whatever goes wrong inside, in the file
    or in what the caller builds from it, leaves as StaleEntry."""
    from safetensors import safe_open

    from dia_bench.harness.weights_dir import check_safetensors

    try:
        check_safetensors(path)
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != str(fmt):
                raise StaleEntry(f"format {meta.get('format')!r}, this dia-bench writes {fmt}")
            yield fh, json.loads(meta["layers"])
    except StaleEntry:
        raise
    except Exception as exc:  # a file cut short or damaged: the safetensors reader says how
        raise StaleEntry(f"{type(exc).__name__}: {exc}") from None
