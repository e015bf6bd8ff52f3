"""The DAC decoder in channels_last: its 1-D layers as 2-D ones of height 1, so every activation is laid out
(batch, time, channels) in memory.

torch has no channels_last format for the 3-D tensors of a 1-D convolution, so a `Conv1d` runs in (batch,
channels, time) and oneDNN reorders it into a blocked layout and back around each call. Where the codec's
channels are few and its activations long (its last two blocks: 192 and 96 channels over 44k and 88k samples
a second of audio) that reordering costs more than the arithmetic. Run as a height-1 2-D convolution in
channels_last, oneDNN computes on (batch, time, channels) directly (`tests/bench/codec.py` times both).

The layers' weights are the same numbers; only how oneDNN orders its sums differs, so the audio changes by
rounding. Both DAC implementations (transformers' and descript's) build their decoders from the same parts:
1-D convolutions and transposed convolutions, Snake activations, a final tanh, and residual units that crop
the time axis, which is last in either layout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dia_bench.harness.runtime.codec import snr_db


class Snake2d(nn.Module):
    """DAC's Snake activation, x + sin(alpha x)^2 / alpha with its arithmetic as written there, on (batch,
    channels, 1, time): an alpha per channel broadcast along time keeps channels_last."""

    def __init__(self, alpha: torch.Tensor):
        super().__init__()
        self.alpha = nn.Parameter(alpha.detach().reshape(1, -1, 1, 1).clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + (self.alpha + 1e-9).reciprocal() * torch.sin(self.alpha * x).pow(2)


class EnterChannelsLast(nn.Module):
    """The decoder's first layer, taking the latents as (batch, channels, time)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.unsqueeze(2).contiguous(memory_format=torch.channels_last))


class LeaveChannelsLast(nn.Module):
    """The decoder's last convolution, giving back (batch, channels, samples)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).squeeze(2)


def _effective_weight(conv: nn.Module) -> torch.Tensor:
    """The weight a (possibly weight-normalized) convolution computes with."""
    from torch.nn.utils.weight_norm import WeightNorm

    for hook in conv._forward_pre_hooks.values():  # torch.nn.utils.weight_norm recomputes `weight` only in forward
        if isinstance(hook, WeightNorm) and hook.name == "weight":
            return hook.compute_weight(conv)
    return conv.weight  # plain, or parametrized (computed on access)


def _as_2d(conv: nn.Module) -> nn.Module:
    if conv.padding_mode != "zeros":
        raise ValueError(f"a {type(conv).__name__} pads with {conv.padding_mode!r}")
    k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    common = dict(stride=(1, s), padding=(0, p), dilation=(1, d), groups=conv.groups, bias=conv.bias is not None)
    weight = _effective_weight(conv).detach()
    if isinstance(conv, nn.ConvTranspose1d):
        new = nn.ConvTranspose2d(conv.in_channels, conv.out_channels, (1, k),
                                 output_padding=(0, conv.output_padding[0]), **common)
    else:
        new = nn.Conv2d(conv.in_channels, conv.out_channels, (1, k), **common)
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight.unsqueeze(2))
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach())
    new.requires_grad_(False)
    return new.to(memory_format=torch.channels_last)


def _is_snake(module: nn.Module) -> bool:
    alpha = getattr(module, "alpha", None)
    return type(module).__name__ == "Snake1d" and alpha is not None and alpha.dim() == 3 and alpha.shape[-1] == 1


_CONVS = (nn.Conv1d, nn.ConvTranspose1d)
_POINTWISE = (nn.Tanh, nn.Identity)


@dataclass(frozen=True)
class Converted:
    convolutions: int
    transposed: int
    activations: int

    def describe(self) -> str:
        return (f"{self.convolutions} Conv1d, {self.transposed} ConvTranspose1d and {self.activations} Snake "
                "activations as 2-D layers of height 1")


def _walk(module: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, module) of every module under `module` in the order it builds them, not looking
    inside a convolution (a weight-normalized one keeps its parametrization there) or an activation."""
    out = []
    for name, child in module.named_children():
        out.append((module, name, child))
        if not (isinstance(child, _CONVS) or _is_snake(child)):
            out.extend(_walk(child))
    return out


def _leaves(decoder: nn.Module) -> list[tuple[nn.Module, str, nn.Module]]:
    """The layers: convolutions, activations and whatever else has no children."""
    return [(p, n, m) for p, n, m in _walk(decoder)
            if isinstance(m, _CONVS) or _is_snake(m) or not any(True for _ in m.children())]


def unsupported(decoder: nn.Module) -> str | None:
    """Why this decoder cannot be converted (a layer whose layout is not known here), else None."""
    leaves = _leaves(decoder)
    for _, name, m in leaves:
        if not (isinstance(m, _CONVS + _POINTWISE) or _is_snake(m)):
            return f"its layer {name!r} ({type(m).__name__}) is not one whose layout is known here"
    for m in [decoder] + [m for _, _, m in _walk(decoder)]:
        if not (isinstance(m, _CONVS) or _is_snake(m)) and any(True for _ in m.parameters(recurse=False)):
            return f"its {type(m).__name__} holds weights of its own"
    convs = [m for _, _, m in leaves if isinstance(m, _CONVS)]
    if not convs or not isinstance(leaves[0][2], _CONVS):
        return "its first layer is not a convolution"
    after_last = leaves[[m for _, _, m in leaves].index(convs[-1]) + 1:]
    if any(not isinstance(m, _POINTWISE) for _, _, m in after_last):
        return "something other than a pointwise activation follows its last convolution"
    if any(c.padding_mode != "zeros" for c in convs):
        return "a convolution pads with something other than zeros"
    return None


# How close a short decode after the conversion must stay to the one before. A layer converted wrongly gives
# another signal (near 0 dB); the same layers summing in another order give rounding: over 100 dB in fp32,
# about 45 in bf16.
PROBE_MIN_SNR_DB = 30.0


def to_channels_last(decoder: nn.Module, min_snr_db: float = PROBE_MIN_SNR_DB) -> Converted:
    """Convert `decoder` in place; it keeps taking (batch, channels, frames) and giving (batch, 1, samples).

    A short decode before and after must agree to `min_snr_db`, else the decoder is put back as it was and
    ValueError says why. Its uncompiled forward is run, so a decoder already set to compile is not compiled
    here."""
    reason = unsupported(decoder)
    if reason:
        raise ValueError(reason)
    leaves = _leaves(decoder)
    first = leaves[0][2]
    weight = _effective_weight(first)
    probe = torch.randn(1, first.in_channels, 4, generator=torch.Generator().manual_seed(0))
    probe = probe.to(device=weight.device, dtype=weight.dtype)
    with torch.inference_mode():
        before = decoder.forward(probe)
    convs = [(p, n, m) for p, n, m in leaves if isinstance(m, _CONVS)]
    swapped = []
    counts = Converted(sum(not isinstance(m, nn.ConvTranspose1d) for _, _, m in convs),
                       sum(isinstance(m, nn.ConvTranspose1d) for _, _, m in convs),
                       sum(_is_snake(m) for _, _, m in leaves))
    for parent, name, m in leaves:
        if isinstance(m, _CONVS):
            new = _as_2d(m)
            if m is first:
                new = EnterChannelsLast(new)
            if m is convs[-1][2]:
                new = LeaveChannelsLast(new)
        elif _is_snake(m):
            new = Snake2d(m.alpha)
        else:
            continue
        setattr(parent, name, new.train(m.training))
        swapped.append((parent, name, m))
    try:
        with torch.inference_mode():
            after = decoder.forward(probe)
        if after.shape != before.shape:
            problem = f"gave shape {tuple(after.shape)} for {tuple(before.shape)}"
        elif (snr := snr_db(after, before)) is not None and snr < min_snr_db:  # None: the same bits
            problem = f"gave audio {snr:.1f} dB from its own, under the {min_snr_db:.0f} dB floor"
        else:
            return counts
    except RuntimeError as exc:
        problem = f"failed ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    for parent, name, m in swapped:
        setattr(parent, name, m)
    raise ValueError(f"converted, it {problem} on a probe")


def is_channels_last(decoder: nn.Module) -> bool:
    """Whether `to_channels_last` converted this decoder."""
    return any(isinstance(m, EnterChannelsLast) for m in decoder.modules())
