"""Serving measurement: time to first audio and latency under load.

`loadgen` sends open-loop Poisson arrivals to a target that streams audio and records each request;
`records` holds the per-request record and the per-rate summary (quantiles with distribution-free
intervals, throughput, what did not complete); `targets` serves the pipeline in this process, or nothing
at all to measure the client. It imports the shared modules and the runtime, never the worker, the
driver or a plugin: whoever builds the pipeline applies the plugins before handing it over.
"""
