"""Replace the Dia model's nn.Linear layers one by one with a packed equivalent.

The codec is a separate module of the pipeline, never reached from here: only the encoder, the
decoder and the logits head are swapped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def swap_linears(model: Any, make: Callable[[str, Any, Any], Any | None],
                 prepare: Callable[[Any], Any] | None = None) -> tuple[int, int]:
    """Call `make(name, linear, prepared)` for every plain nn.Linear; where it returns a module, put that in
    the linear's place. Returns (replaced, total); `make` returns None to leave a layer as it is.

    `prepare(linear)`, where given, is the costly part of a layer's conversion (packing its weight): it
    must touch nothing but the layer, for it runs on a thread a core before `make`, which then runs in
    order, on this thread. Packing is mostly single-threaded and frees the GIL: dia-1.6b's 8da4w packing
    took 12 s instead of 20 on 2 cores.
    """
    import torch

    targets = [(name, m) for name, m in model.named_modules() if type(m) is torch.nn.Linear]
    prepared: list[Any] = [None] * len(targets)
    if prepare is not None:
        with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
            prepared = list(pool.map(lambda target: prepare(target[1]), targets))
    replaced = 0
    for (name, linear), ready in zip(targets, prepared, strict=True):
        new = make(name, linear, ready)
        if new is None:
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, new)
        replaced += 1
    return replaced, len(targets)


def linear_kinds(model: Any) -> dict[str, int]:
    """How many Linear-like modules of each class the model holds: the evidence of a swap."""
    import torch

    kinds: Counter[str] = Counter()
    for m in model.modules():
        if isinstance(m, torch.nn.Linear) or "Linear" in type(m).__name__:
            kinds[f"{type(m).__module__}.{type(m).__name__}"] += 1
    return dict(sorted(kinds.items()))
