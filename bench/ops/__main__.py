"""``python -m bench.ops``: the kernel microbenchmarks (:mod:`bench.ops.micro`)."""

from bench.ops.micro import main

main()
