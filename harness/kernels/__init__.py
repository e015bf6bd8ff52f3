"""dia-bench's own CPU kernels: the C sources, the builder that compiles them on the machine that runs
them, and the `dia_bench` operator library that lets a compiled decode step trace through them.

decode_attention: one query a row of attention over the static engine's cache. w4a8: int4 weights with
int8 activations (int4=8da4w). int8_op: fbgemm's dynamic int8 Linear behind one operator. Imports only
the shared modules at harness/. Kept empty so that importing one module of this package loads no other.
"""
