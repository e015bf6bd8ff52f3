"""channels_last memory format: the guide's layout for convolution-heavy models.

Dia itself has no convolutions; the DAC codec that turns its codes into audio is all convolutions, but 1-D
ones, for which torch has no channels_last format. So its decoder runs its 1-D layers as 2-D ones of height
1 in channels_last (`harness/runtime/codec_layout.py`), which is what the guide's `.to(memory_format=...)`
would do for a 2-D convolutional model. 4-D convolutions anywhere would be converted as the guide writes it.
"""

from __future__ import annotations

from typing import Any

from dia_bench.harness.runtime.codec import torch_decoder
from dia_bench.optimizations.base import Expectation, Plugin


class ChannelsLast(Plugin):
    name = "channels-last"
    description = ("channels_last memory format: the DAC codec's 1-D convolutions as 2-D ones of height 1 "
                   "(Dia has none)")
    expectation = Expectation(section="CPU-Specific Optimizations / 5. Memory Layout Optimization",
                              note="for convolution-heavy models")
    # After codec-dtype (the new layers take the weights' dtype) and codec-compile (which traces the decoder
    # at its first call, so it sees the converted layers).
    order = 40

    def transform(self, pipeline, value: None) -> str:
        import torch

        from dia_bench.harness.runtime import codec_layout

        acted = []
        for label, module in {"Dia": pipeline.model, "codec": getattr(pipeline.codec, "model", None)}.items():
            convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)] if module is not None else []
            if convs:
                module.to(memory_format=torch.channels_last)
                acted.append(f"{len(convs)} Conv2d in {label} in channels_last")
        decoder = torch_decoder(pipeline.codec)
        if decoder is None:
            left = f"the {pipeline.codec.name} codec has no torch decoder"
        else:
            try:
                converted = codec_layout.to_channels_last(decoder)
                acted.append(f"codec decoder in channels_last: {converted.describe()}")
                left = ""
            except ValueError as exc:
                left = f"the codec's decoder is left as it was: {exc}"
        if not acted:
            return f"nothing to act on: Dia has no convolutions and {left}"
        return "; ".join(acted) + (f" ({left})" if left else "")

    def report(self, pipeline, value: None) -> dict[str, Any]:
        from dia_bench.harness.runtime import codec_layout

        decoder = torch_decoder(pipeline.codec)
        return {"codec_decoder_channels_last": decoder is not None and codec_layout.is_channels_last(decoder)}


PLUGIN = ChannelsLast
