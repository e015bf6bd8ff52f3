"""dia-bench harness: the Dia pipeline, the isolated worker, measurement, sweeps and results."""

__version__ = "0.1.0"
