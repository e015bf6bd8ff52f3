"""What a forked worker finds already imported: torch, transformers' Dia and DAC, dia-bench's worker.

Importing them takes about 5 s of one core per process on the machines dia-bench runs on, against
well under a second for a dia-tiny cell's repeats. The launcher's fork server (harness/worker/forked.py)
imports this module once and forks each cell from it; that module also says when a cell gets a fresh
interpreter instead.

Nothing here may start a thread pool, touch a GPU or read a setting from the environment that a cell
could change: the forked children inherit all of it.
"""

from __future__ import annotations

import torch  # noqa: F401
import transformers  # noqa: F401
from transformers import (  # noqa: F401
    DacModel,
    DiaFeatureExtractor,
    DiaForConditionalGeneration,
    DiaProcessor,
    DiaTokenizer,
    LogitsProcessor,
)

from dia_bench.harness import env  # noqa: F401
from dia_bench.harness.runtime import pipeline, static_engine  # noqa: F401
from dia_bench.harness.worker import fidelity, measure  # noqa: F401
