"""Benchmarks and build scripts for specdec (run as ``python -m bench.<name>``)."""
