"""Kernel and step microbenchmarks."""
