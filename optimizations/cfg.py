"""Classifier-free guidance scale: lower is cheaper only when guidance is really switched off."""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin


class Cfg(Plugin):
    name = "cfg"
    description = "CFG scale (Dia: cond + scale x (cond - uncond)); 0 turns guidance off and halves the batch"
    expectation = Expectation(section="5. Reduce CFG Overhead", note="CFG doubles the computation")
    values = ()
    default = "3.0"

    def parse(self, value: str | None) -> float:
        try:
            scale = float(value if value is not None else self.default)
        except ValueError:
            raise ValueError(f"plugin 'cfg' takes a scale such as 3.0, 1.5 or 0 (got {value!r})") from None
        if scale < 0:
            raise ValueError(f"plugin 'cfg' needs a scale >= 0 (got {scale})")
        if 0 < scale <= 1:
            # transformers treats 1 as "no CFG" and rejects (0, 1), although Dia's formula makes them real
            # guidance; measuring them would time a different computation than the name says.
            raise ValueError(f"cfg={scale:g} cannot be run faithfully by transformers' Dia (it treats 1 as 'off' "
                             "and rejects scales below 1): use 0 to turn guidance off, or a scale above 1")
        return scale

    def changes_output(self, value: float) -> bool:
        return value != float(self.default)

    def generate_kwargs(self, value: float) -> dict[str, Any]:
        # Scale 0 leaves only the conditional logits; guidance_scale=1 makes transformers drop the
        # unconditional rows instead of computing and discarding them.
        return {"guidance_scale": 1.0 if value == 0 else value}

    def transform(self, pipeline, value: float) -> str:
        if value == 0:
            return "guidance off: the unconditional rows are dropped, the decoder runs half the batch"
        return f"guidance scale {value:g}: conditional and unconditional rows, the same work as scale 3.0"

    def spec(self, value: Any) -> str:
        return f"{self.name}={value:g}"


PLUGIN = Cfg
