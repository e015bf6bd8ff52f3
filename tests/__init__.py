"""dia-bench tests: the real pipeline on the dia-tiny preset."""
