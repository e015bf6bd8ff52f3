"""Optimizations as plugins: one module each, found through `optimizations.registry`.

Modules here must not import torch at import time: the worker applies process set-up (threads,
environment variables) before torch starts.
"""
