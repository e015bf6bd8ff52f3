"""channels_last memory format: only 4-D convolutions can use it."""

from __future__ import annotations

from dia_bench.optimizations.base import Expectation, Plugin


class ChannelsLast(Plugin):
    name = "channels-last"
    description = "channels_last memory format for 4-D convolutions (says so when there are none)"
    expectation = Expectation(section="CPU-Specific Optimizations / 5. Memory Layout Optimization",
                              note="for convolution-heavy models")
    order = 40

    def transform(self, pipeline, value: None) -> str:
        import torch

        targets = {"Dia": pipeline.model, "codec": getattr(pipeline.codec, "model", None)}
        acted = []
        for label, module in targets.items():
            if module is None:
                continue
            convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
            if convs:
                module.to(memory_format=torch.channels_last)
                acted.append(f"{len(convs)} Conv2d in {label}")
        if not acted:
            return ("nothing to act on: Dia has no convolutions and the DAC codec's are 1-D, so the memory "
                    "format is unchanged")
        return "channels_last applied to " + ", ".join(acted)


PLUGIN = ChannelsLast
