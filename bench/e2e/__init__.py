"""End-to-end benchmarks (``python -m bench.e2e``) and exactness fuzzing."""
