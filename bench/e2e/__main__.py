"""``python -m bench.e2e``: the end-to-end benchmark (:mod:`bench.e2e.run`)."""

from bench.e2e.run import main

main()
