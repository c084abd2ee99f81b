"""What ``make demo`` prints, run after run: ``python -m specdec demo`` in fresh processes.

    python -m bench.e2e.demo_repeats                      # SmolLM2, trained and lookup-only, 3 runs each
    python -m bench.e2e.demo_repeats --model stdlib-9m --runs 2

Each run is a fresh process, as a user starts it; its "overall:" line (plain and specdec tokens/s,
tau, speedup, identical outputs) is parsed. Runs alternate between the sources. Results:
``bench/results/demo-repeats-{model}-{device}.json``, with the spread of the speedups.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import torch

from bench.common import RESULTS, device_names, environment
from specdec.demo import DEFAULT_DEMO, DEMOS
from specdec.demo.run import SOURCES

OVERALL = re.compile(
    r"overall: plain (?P<plain>[\d.]+) tok/s, specdec (?P<specdec>[\d.]+) tok/s, tau (?P<tau>[\d.]+), "
    r"speedup (?P<speedup>[\d.]+)x, outputs identical: (?P<identical>yes|NO)"
)


def one_demo(model: str, source: str) -> dict:
    """The figures of one ``python -m specdec demo`` process."""
    done = subprocess.run([sys.executable, "-m", "specdec", "demo", "--model", model, "--source", source],
                          capture_output=True, text=True, check=True)
    match = OVERALL.search(done.stdout)
    if match is None:
        raise RuntimeError(f"no overall line in the demo's output:\n{done.stdout[-2000:]}")
    figures = {key: float(value) for key, value in match.groupdict().items() if key != "identical"}
    return {**figures, "identical": match["identical"] == "yes"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=DEMOS, default=DEFAULT_DEMO)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = {source: [] for source in args.sources}
    for number in range(args.runs):
        for source in args.sources:
            runs[source].append(one_demo(args.model, source))
            print(f"run {number} {source}: {runs[source][-1]}", flush=True)
    summary = {source: {"speedups": [r["speedup"] for r in done], "taus": [r["tau"] for r in done],
                        "all_identical": all(r["identical"] for r in done)} for source, done in runs.items()}
    device_name, device_kind = device_names(torch.device("cpu"))
    path = args.out / f"demo-repeats-{args.model}-{device_kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device_name, **environment(), "model": args.model, "runs": runs, "summary": summary}, indent=2) + "\n")
    for source, figures in summary.items():
        speedups = figures["speedups"]
        print(f"{source}: speedup {min(speedups):.2f}-{max(speedups):.2f}x over {len(speedups)} runs, "
              f"tau {min(figures['taus']):.2f}-{max(figures['taus']):.2f}, identical: {figures['all_identical']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
