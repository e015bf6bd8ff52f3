"""Optimizations as plugins: one module each, found through `dia_bench.optimizations.registry`.

Modules here must not import torch at import time: the worker applies process set-up (threads,
environment variables) before torch starts.
"""
