"""Resident memory that a patched SmolLM2 adds by its first request, per ``compile`` setting (CPU).

    python -m bench.ops.step_memory true     # compile=True: frozen (packed) weights in the graph, the static cache
    python -m bench.ops.step_memory auto     # compile="auto": oneDNN-packed copies of the step's weights

Loads the demo with its token-aware head, reads the process's resident memory (``VmRSS``), patches,
runs ``specdec.warmup(model, rows=(1, 8))`` (what the first request would make: packs, or compiles)
and reads it again. One process per setting: memory is not given back between settings.
"""

import sys
import time

import specdec


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "true"
    if mode not in ("true", "auto"):
        raise SystemExit("usage: python -m bench.ops.step_memory true|auto")
    model, _, head = specdec.load_demo()
    base = rss_mb()
    specdec.patch(model, head, compile=True if mode == "true" else "auto")
    start = time.perf_counter()
    seconds = specdec.warmup(model, rows=(1, 8))
    took = time.perf_counter() - start
    after = rss_mb()
    steps = ", ".join(f"{rows} rows {1000 * s:.1f} ms" for rows, s in seconds.items())
    print(f"compile={mode}: model loaded {base:.0f} MB resident; after warmup {after:.0f} MB (+{after - base:.0f}); warmup {took:.1f} s; {steps}")


if __name__ == "__main__":
    main()
