"""What giving pseudo rows only to the likely end rows saves (``python -m bench.ops.pseudo_rows``).

``tree="auto"`` gives pseudo rows to the real rows where the walk is likely to end, and only when
the ranking they produce pays for them (see :mod:`specdec.decode.planner`). This benchmark runs it side by
side with the same planner forced to put ``k`` pseudo rows on every real row (what static trees
do), on the same held-out prompts, interleaved, medians over repeats: tokens/s, tau, rows per step.
"""

import argparse
import json
import statistics

import torch

from bench.common import RESULTS, device_names, environment, write_csv
from bench.e2e.run import heldout_prompts, timed_generate
from specdec import LookupDrafts, load_demo, patch, stats, unpatch
from specdec import patching
from specdec.decode.planner import AutoPlanner


class EveryRowPlanner(AutoPlanner):
    """``tree="auto"``'s trees, with pseudo rows on every real row."""

    def plan(self, cands):
        plan = super().plan(cands)
        real = plan.layout.num_real
        layout = self.layouts.get(plan.layout.parents, tuple(range(real)))
        plan.layout, plan.segments = layout, self.shape.segments(real, real)
        return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, tokenizer, predictor = load_demo(draft="firp")
    prompts = heldout_prompts(tokenizer, args.prompts, args.new_tokens, "cpu")
    chosen = patching._planner

    def every_row(model, state, parts, source, regime):
        planner = chosen(model, state, parts, source, regime)
        return EveryRowPlanner(planner.k, planner.fraction, planner.max_depth, planner.memory, planner.cost, planner.layouts)

    # (planner factory, source): the sources are equal (FIRP + lookup) but distinct objects, so each
    # variant keeps its own learned statistics.
    variants = {
        "pseudo rows where they pay (auto)": (chosen, LookupDrafts(predictor)),
        "pseudo rows on every real row": (every_row, LookupDrafts(predictor)),
    }
    rows = []
    plain_seconds = []
    for number, ids in enumerate(prompts):
        runs = {name: [] for name in variants}
        plain = []
        for _ in range(args.repeats + 1):  # the first round warms up and is dropped
            unpatch(model)
            plain.append(timed_generate(model, ids, args.new_tokens, {})[1])
            for name, (factory, source) in variants.items():
                patching._planner = factory
                patch(model, source)
                runs[name].append((timed_generate(model, ids, args.new_tokens, {})[1], stats(model)))
        patching._planner = chosen
        plain_seconds.append(statistics.median(plain[1:]))
        for name, timed in runs.items():
            seconds = statistics.median(t for t, _ in timed[1:])
            run = timed[-1][1]
            rows.append({"variant": name, "prompt": number, "seconds": seconds, "tau": run.tau, "rows_per_step": run.mean_rows,
                         "speedup": plain_seconds[-1] / seconds})
        print(f"prompt {number}: " + ", ".join(f"{r['variant']}: tau {r['tau']:.2f}, {r['rows_per_step']:.1f} rows/step, {r['speedup']:.2f}x" for r in rows[-2:]))
    unpatch(model)
    summary = []
    for name in variants:
        mine = [r for r in rows if r["variant"] == name]
        summary.append({"variant": name, "speedup": sum(plain_seconds) / sum(r["seconds"] for r in mine),
                        "tau": statistics.mean(r["tau"] for r in mine), "rows_per_step": statistics.mean(r["rows_per_step"] for r in mine)})
        print(f"{name}: {summary[-1]['speedup']:.2f}x plain, mean tau {summary[-1]['tau']:.2f}, {summary[-1]['rows_per_step']:.1f} rows/step")
    _, kind = device_names(torch.device("cpu"))
    stem = RESULTS / f"pseudo-rows-demo-{kind}"
    write_csv(stem.with_suffix(".csv"), rows)
    meta = {"device": "CPU", **environment(), "args": vars(args), "summary": summary}
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {stem}.csv, .json")


if __name__ == "__main__":
    main()
