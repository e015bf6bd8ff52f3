"""The model runtime: what generates speech, in a measured worker and in a user's own process alike.

The pipeline (text, tokenizer, encoder/decoder with CFG and the delay pattern, codec, waveform), the
codec backends, dia-bench's static decode loop, where weights come from, and transparent huge pages.
It imports the shared modules at harness/ and the kernels, never the worker, the driver or a plugin:
plugins act on it. Kept empty so that importing one module of this package loads no other.
"""
