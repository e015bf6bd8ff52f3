"""The real Dia pipeline: text -> DiaProcessor -> generate (CFG, delay pattern) -> codec -> waveform.

Every stage is timed. Per-step decode latencies come from a streamer, which `generate` calls once
after the encoder and once per decoder step, so no transformers internals are patched.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from dia_bench.harness.presets import DELAY_PATTERN, decode_steps
from dia_bench.harness.runtime.codec import Codec, decode_in_chunks

if TYPE_CHECKING:
    from dia_bench.harness.runtime.static_engine import StaticEngine

EOS, PAD, BOS = 1024, 1025, 1026


@dataclass
class SamplingParams:
    """Dia's defaults."""

    cfg_scale: float = 3.0
    temperature: float = 1.8
    top_p: float = 0.90
    top_k: int = 45


@dataclass
class StageTimes:
    tokenize_s: float = 0.0
    encoder_prefill_s: float = 0.0
    decode_s: float = 0.0
    codec_decode_s: float = 0.0
    generate_s: float = 0.0
    step_latencies_s: list[float] = field(default_factory=list)

    @property
    def end_to_end_s(self) -> float:
        return self.tokenize_s + self.generate_s + self.codec_decode_s


@dataclass
class PipelineOutput:
    audio: torch.Tensor  # (batch, samples) float32 at 44.1 kHz
    codes: torch.Tensor  # (batch, 9, frames), delay removed
    delayed: torch.Tensor  # (batch, steps, 9) as generate returned them
    times: StageTimes
    generation_batch_rows: int  # rows the decoder really ran (2x batch with CFG)
    text_positions: int = 0  # the encoder's positions, padded: what cross-attention reads per row
    cache_dtype: torch.dtype = torch.float32  # the attention caches' dtype


class StepClock:
    """A `generate` streamer that records when each step finished and, where `on_row` is given, hands it
    each step's delayed codes, (batch, channels), as they come.

    `generate` puts the decoder's start row first and then each step's tokens, flattened to batch x
    channels; the static engine stamps the clock itself and calls `on_row` with the same rows."""

    def __init__(self, on_row: Callable[[torch.Tensor], None] | None = None) -> None:
        self.stamps: list[float] = []
        self.on_row = on_row
        self._started = False

    def put(self, value: torch.Tensor) -> None:
        self.stamps.append(time.perf_counter())
        if self.on_row is None:
            return
        if not self._started:  # the start row is BOS, not a step
            self._started = True
            return
        self.on_row(value.reshape(-1, len(DELAY_PATTERN)))

    def end(self) -> None:
        pass


def undelay_frames(delayed: torch.Tensor, start: int, stop: int, delays: list[int] = DELAY_PATTERN) -> torch.Tensor:
    """Aligned codes (batch, channels, stop - start) of frames [start, stop) from delayed codes (batch, steps,
    channels) as `generate` returns them, row 0 the start row; only the rows those frames need must be
    filled, so a stream can undelay frames while later steps are still to come (`frames_complete`)."""
    frames = torch.arange(start, stop, device=delayed.device)[:, None]
    rows = frames + 1 + torch.tensor(delays, device=delayed.device)[None, :]  # (frames, channels)
    return delayed.gather(1, rows[None].expand(delayed.shape[0], -1, -1)).transpose(1, 2)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DiaPipeline:
    def __init__(self, model, processor, codec: Codec, device: str):
        self.model = model
        self.processor = processor
        self.codec = codec
        self.device = torch.device(device)
        # Plugins may replace how the model's forward runs (compile) or add generate kwargs (cfg).
        self.generate_kwargs: dict[str, Any] = {}
        self.forward_compiled = False  # set by the compile plugin on the hf path
        self.generation_contexts: list[Callable[[], contextlib.AbstractContextManager]] = []
        # Rows the decoder really runs: 2x the requests with CFG, 1x without. Seen, not assumed.
        self.decoder_rows = 0
        # The attention caches' dtype in the last generation: the engine's own, or what `generate`'s
        # projections produced (the model's dtype, or autocast's).
        self.cache_dtype: torch.dtype = torch.float32
        # The loaded checkpoint's digest, where known: plugins key caches of transformed weights by it.
        self.weights_id: str | None = None
        # `engine=static` puts dia-bench's own decode loop here (harness/runtime/static_engine.py); None is
        # transformers' `generate`.
        self.engine: StaticEngine | None = None
        # The one SDPA backend the sdpa plugin allows, where it is in the plan: the static engine then
        # attends through SDPA as asked, rather than through its own CPU path.
        self.sdpa_backend: str | None = None
        # (frames a chunk, frames of context either side) where the codec-chunks plugin decodes in chunks.
        self.codec_chunks: tuple[int, int] | None = None
        model.model.decoder.register_forward_pre_hook(self._count_rows, with_kwargs=True)

    def _count_rows(self, _module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            self.decoder_rows = int(ids.shape[0])

    @classmethod
    def load(cls, model_path: str, codec: Codec, device: str, dtype: torch.dtype = torch.float32) -> DiaPipeline:
        from transformers import DiaFeatureExtractor, DiaForConditionalGeneration, DiaProcessor, DiaTokenizer

        model = DiaForConditionalGeneration.from_pretrained(model_path, dtype=dtype).eval().to(device)
        # transformers 4.x's Dia generate reads the special tokens from the top-level config, 5.x from
        # the decoder's, and configs written by 5.x leave the top level empty (the IPEX stack runs 4.x).
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            if getattr(model.config, name, None) is None:
                setattr(model.config, name, getattr(model.config.decoder_config, name))
        # The codec lives apart (it may be descript's); the processor only tokenizes and delays.
        processor = DiaProcessor(DiaFeatureExtractor(sampling_rate=44100, hop_length=512), DiaTokenizer(), None)
        return cls(model, processor, codec, device)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        with warnings.catch_warnings():
            # DiaProcessor passes a max_length the tokenizer ignores when padding; harmless.
            warnings.filterwarnings("ignore", message=".*max_length.*is ignored")
            inputs = self.processor(text=texts, padding=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in inputs.items()}

    @contextlib.contextmanager
    def generation_context(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for make in self.generation_contexts:
                stack.enter_context(make())
            yield

    @staticmethod
    def sampling_kwargs(frames: int, sampling: SamplingParams) -> dict[str, Any]:
        """`generate` arguments for exactly `frames` audio frames with Dia's sampling, no plugin's changes."""
        return dict(
            max_new_tokens=decode_steps(frames),
            guidance_scale=sampling.cfg_scale,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            do_sample=True,
            # Random or real weights may stop early; equal work needs equal length.
            suppress_tokens=[EOS],
        )

    def generation_kwargs(self, frames: int, sampling: SamplingParams) -> dict[str, Any]:
        """What this pipeline's `generate` really passes: the sampling, then what plugins changed (cfg...)."""
        return {**self.sampling_kwargs(frames, sampling), **self.generate_kwargs}

    def generate(self, inputs: dict[str, torch.Tensor], frames: int, sampling: SamplingParams, seed: int,
                 streamer: StepClock | None = None, max_steps: int | None = None) -> torch.Tensor:
        """Delayed codes (batch, steps, 9) for exactly `frames` audio frames (EOS suppressed); `max_steps`
        stops the request after that many decoder steps, the prefill's included, its rows unchanged."""
        torch.manual_seed(seed)
        kwargs = self.generation_kwargs(frames, sampling)
        with torch.inference_mode(), self.generation_context():
            if self.engine is not None:
                # The engine sets cache_dtype from the caches it allocated.
                return self.engine.generate(inputs, frames, kwargs, streamer, max_steps)
            if max_steps is not None:
                kwargs["max_new_tokens"] = max(1, min(kwargs["max_new_tokens"], max_steps))
            kind = self.device.type
            self.cache_dtype = (torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind)
                                else next(self.model.model.decoder.embeddings.parameters()).dtype)
            return self.model.generate(**inputs, **kwargs, streamer=streamer)

    def undelay(self, delayed: torch.Tensor) -> torch.Tensor:
        """(batch, steps, 9) delayed codes -> (batch, 9, frames) aligned codes."""
        bsz, seq_len, channels = delayed.shape
        idx = self.processor.build_indices(bsz=bsz, seq_len=seq_len, num_channels=channels,
                                           delay_pattern=DELAY_PATTERN, revert=True)
        aligned = self.processor.apply_audio_delay(audio=delayed, pad_token_id=-1, bos_token_id=-1,
                                                   precomputed_idx=idx).transpose(1, 2)
        start = int((delayed[0, :, 0] == BOS).sum())
        end = seq_len - int((delayed[0, :, 0] == PAD).sum()) - 1
        return aligned[:, :, start:end]

    def decode_audio(self, codes: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self.generation_context():
            codes = codes.to(self.device)
            if self.codec_chunks is not None:
                return decode_in_chunks(self.codec.decode, codes, *self.codec_chunks).float()
            return self.codec.decode(codes).float()

    def warm(self, texts: list[str], steps: int, sampling: SamplingParams, seed: int) -> float:
        """A warmup request cut short: the encoder, the prefill and the decode steps up to `steps`, then the
        codec on one frame; its generation's seconds. Each step reads every weight, as a full request's do,
        without the delay pattern's last steps, which a request of any length runs before its first frame
        is complete. No audio comes of it."""
        inputs = self.tokenize(texts)
        _sync(self.device)
        t0 = time.perf_counter()
        self.generate(inputs, 1, sampling, seed, max_steps=steps)
        _sync(self.device)
        seconds = time.perf_counter() - t0
        self.decode_audio(torch.zeros((len(texts), len(DELAY_PATTERN), 1), dtype=torch.long))
        return seconds

    def run(self, texts: list[str], frames: int, sampling: SamplingParams, seed: int) -> PipelineOutput:
        times = StageTimes()
        clock = StepClock()
        dev = self.device

        _sync(dev)
        t0 = time.perf_counter()
        inputs = self.tokenize(texts)
        _sync(dev)
        t1 = time.perf_counter()
        if dev.type == "cuda":
            start_ev, end_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start_ev.record()
        delayed = self.generate(inputs, frames, sampling, seed, streamer=clock)
        if dev.type == "cuda":
            end_ev.record()
        _sync(dev)
        t2 = time.perf_counter()
        codes = self.undelay(delayed)
        audio = self.decode_audio(codes)
        _sync(dev)
        t3 = time.perf_counter()

        times.tokenize_s = t1 - t0
        times.generate_s = start_ev.elapsed_time(end_ev) / 1000 if dev.type == "cuda" else t2 - t1
        times.codec_decode_s = t3 - t2
        # stamps[0]: encoder done; stamps[1]: prefill step done; each later stamp: one decode step.
        stamps = clock.stamps
        if len(stamps) >= 2:
            times.encoder_prefill_s = stamps[1] - t1
            times.decode_s = t2 - stamps[1]
            times.step_latencies_s = [b - a for a, b in itertools.pairwise(stamps[1:])]
        return PipelineOutput(audio=audio.cpu(), codes=codes.cpu(), delayed=delayed.cpu(), times=times,
                              generation_batch_rows=self.decoder_rows,
                              text_positions=int(inputs["input_ids"].shape[-1]), cache_dtype=self.cache_dtype)
