"""Randomized end-to-end fuzzing on demand: patched generate against plain greedy, case by case.

    python -m bench.e2e.fuzz                          # 1000 cases, seeds 0..999
    python -m bench.e2e.fuzz --cases 200 --first 5000  # seeds 5000..5199
    python -m bench.e2e.fuzz --seeds 17 912           # just these seeds (reproduce a failure)
    python -m bench.e2e.fuzz --cases 300 --compiled    # the seeds whose source compile=True covers, compiled

The cases are those of ``tests/fuzzing.py`` (the suite runs the first few dozen seeds):
architecture, sizes, sliding window, dtype, attention implementation, k, transfer layer,
tree, draft source, prompt, EOS, logits processors, Triton interpreter, and a change to
the model after ``patch()``. Models run on the CPU, with Triton's interpreter for the
Triton cases. ``--compiled`` keeps the seeds whose draft source the compiled step covers (the
token-aware head, alone or with lookup) and decodes them with ``compile=True`` (each case is a new
model: it compiles, 10-20 s on 2 cores). Prints every failure (seed, case, error), then the count, the failures
and the time; exits 1 if any case failed.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before specdec imports its kernels; models stay on the CPU

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))

import torch  # noqa: E402
import transformers  # noqa: E402
from fuzzing import run_case, sample_case  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=1000, help="number of consecutive seeds (default 1000)")
    parser.add_argument("--first", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--seeds", type=int, nargs="+", help="run exactly these seeds instead")
    parser.add_argument("--compiled", action="store_true", help="only the seeds compile=True covers, with compile=True")
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds else range(args.first, args.first + args.cases)
    cases = [sample_case(seed) for seed in seeds]
    if args.compiled:
        cases = [dataclasses.replace(case, compile=True) for case in cases if case.head and case.drafts in ("firp", "lookup")]

    torch.set_num_threads(1)  # tiny models: a second thread only adds contention
    warnings.simplefilter("ignore")  # transformers' notices about tiny random models
    transformers.logging.set_verbosity_error()
    failures = []
    start = time.perf_counter()
    for done, case in enumerate(cases, 1):
        seed = case.seed
        try:
            run_case(case)
        except Exception:  # noqa: BLE001 - every failure is reported, none stops the run
            failures.append(seed)
            print(f"FAIL seed {seed}: {case}\n{traceback.format_exc()}", flush=True)
        if done % 50 == 0:
            print(f"{done} cases, {len(failures)} failed, {time.perf_counter() - start:.0f} s", flush=True)
    elapsed = time.perf_counter() - start
    listed = f" (seeds {', '.join(map(str, failures))})" if failures else ""
    print(f"{len(cases)} cases, {len(failures)} failed{listed}, {elapsed:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
