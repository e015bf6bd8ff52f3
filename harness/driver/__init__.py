"""The driver side: what orchestrates cells from the parent process.

Suites, their expansion into cells, the sweep, the executors and the launcher that starts each cell's
worker, output paths and overlap between cells. Nothing here imports the worker side: a cell crosses the
process boundary as a cell file and comes back as a record in a run directory (harness/rundir.py).
Kept empty so that importing one module of this package loads no other.
"""
