"""The worker side: what runs inside a cell's isolated process (`python -m dia_bench.harness.worker CELL RECORD`).

Measurement and its trackers, fidelity, roofline, profiling and the fork server's child side. The model
it measures is the runtime's (harness/runtime/), with plugins applied. Nothing here imports the driver
side; the two share only the cell and the record format. Kept empty so that importing one module of
this package loads no other.
"""
