"""Benchmarks that are not tests: each prints figures naming its machine. Run as `python -m tests.bench.<name>`."""
