"""The worker side: what runs inside a cell's isolated process (`python -m dia_bench.harness.worker CELL RECORD`).

The pipeline, codec, weights, measurement and its trackers, fidelity, roofline and profiling. Nothing
here imports the driver side; the two share only the cell (harness/cell.py, harness/presets.py) and the
record format (harness/record.py, harness/env.py, harness/stats.py). Kept empty so that importing one
module of this package loads no other.
"""
