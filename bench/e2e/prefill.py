"""The prompt pass: ``generate(max_new_tokens=1)`` plain and patched, on long prompts.

    python -m bench.e2e.prefill                          # SmolLM2-135M-Instruct, 2000 and 4000 prompt tokens
    python -m bench.e2e.prefill --lengths 4000 --new-tokens 64   # long prompts with a short answer
    python -m bench.e2e.prefill --lengths 1000 --repeats 5

Prompts are the first N tokens of held-out standard-library text; plain and patched (the defaults)
calls are interleaved, medians over repeats. Results: ``bench/results/prefill-{model}-{device}.json``.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch

from bench.common import RESULTS, device_names, environment
from bench.e2e.run import timed_generate
from specdec import load_demo, patch, unpatch
from specdec.demo import DEFAULT_DEMO, DEMOS
from specdec.training.corpus import read_texts, stdlib_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=DEMOS, default=DEFAULT_DEMO)
    parser.add_argument("--lengths", nargs="+", type=int, default=[2000, 4000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=1, help="max_new_tokens (1: the prompt pass alone)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model, tokenizer, predictor = load_demo(args.model, draft="firp")
    text = "".join(read_texts(stdlib_files("heldout")[:40]))
    ids = tokenizer(text, return_tensors="pt").input_ids
    rows = []
    for length in args.lengths:
        seconds = {"plain": [], "patched": []}
        for _ in range(args.repeats):
            for name in seconds:
                patch(model, predictor) if name == "patched" else unpatch(model)
                seconds[name].append(timed_generate(model, ids[:, :length], args.new_tokens, {})[1])
        plain, patched = statistics.median(seconds["plain"]), statistics.median(seconds["patched"])
        rows.append({"prompt_tokens": length, "new_tokens": args.new_tokens, "plain_s": plain, "patched_s": patched, "speedup": plain / patched})
        print(f"{length} prompt tokens, max_new_tokens={args.new_tokens}: plain {plain:.2f} s, patched {patched:.2f} s, {plain / patched:.2f}x", flush=True)
    unpatch(model)
    device_name, device_kind = device_names(model.device)
    suffix = "" if args.new_tokens == 1 else f"-{args.new_tokens}new"
    path = args.out / f"prefill-{args.model}-{device_kind}{suffix}.json"
    path.write_text(json.dumps({"device": device_name, **environment(), "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
