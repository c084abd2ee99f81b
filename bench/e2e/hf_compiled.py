"""The strongest plain decoding a user can switch on: Hugging Face ``generate`` with a static cache
and ``torch.compile``, against eager plain greedy and specdec, warm.

    python -m bench.e2e.hf_compiled                        # SmolLM2, 4 chat and 4 code prompts, 128 tokens
    python -m bench.e2e.hf_compiled --prompts 8 --repeats 2

Hugging Face documents a static cache with a compiled forward as its fast path. Here a second copy
of the model gets ``model.forward = torch.compile(model.forward)`` (inductor, default dynamism)
and generates with ``cache_implementation="static"``; the first copy runs eager plain greedy and
specdec (patching switches the attention implementation, which a compiled forward would recompile
for). Every prompt is run once through the compiled model before timing (compilation, and
recompilation for new shapes, are reported, not timed); then the methods run as in ``bench.e2e``
(:func:`bench.e2e.run.run_generation`: interleaved per prompt, medians over repeats). Results:
``bench/results/hf-compiled-{model}-{device}.json``.
"""

import argparse
import json
import time
from pathlib import Path

import torch

from bench.common import RESULTS, device_names, environment
from bench.e2e.run import class_prompts, run_generation
from specdec import load_demo, patch, unpatch
from specdec.demo import DEFAULT_DEMO, DEMOS

EAGER, COMPILED = "plain greedy", "HF static cache + torch.compile"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=DEMOS, default=DEFAULT_DEMO)
    parser.add_argument("--classes", nargs="+", choices=("chat", "code"), default=["chat", "code"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model, tokenizer, predictor = load_demo(args.model, draft="firp")
    compiled, _, _ = load_demo(args.model, draft="firp")
    compiled.forward = torch.compile(compiled.forward)
    static = {"cache_implementation": "static"}
    table = {  # name -> (set-up returning the model to generate with, generate kwargs)
        EAGER: (lambda: unpatch(model), {}),
        COMPILED: (lambda: compiled, static),
        "specdec defaults": (lambda: patch(model, predictor), {}),
        "specdec, no predictor": (lambda: patch(model), {}),
    }
    results = {"compile_seconds": [], "classes": {}}
    for name in args.classes:
        prompts = class_prompts(name, tokenizer, args.prompts, args.new_tokens, "cpu")
        for ids in prompts:  # compile (and recompile for new shapes) before anything is timed
            start = time.perf_counter()
            compiled.generate(ids, max_new_tokens=args.new_tokens, do_sample=False, **static)
            results["compile_seconds"].append(time.perf_counter() - start)
            print(f"{name}: compiled-model warm-up {results['compile_seconds'][-1]:.1f} s", flush=True)
        rows, summary = run_generation(args, model, predictor, prompts, table)
        unpatch(model)
        speed = {s["method"]: s["tokens_per_s"] for s in summary}
        for s in summary:
            s["vs_hf_compiled"] = speed[s["method"]] / speed[COMPILED]
        results["classes"][name] = {"rows": rows, "summary": summary}
        print(f"\n{name}\n| method | tokens/s | vs eager plain | vs HF static + compile | tau | exact match |\n| --- | --- | --- | --- | --- | --- |")
        for s in summary:
            tau = "-" if s["tau"] is None else f"{s['tau']:.2f}"
            print(f"| {s['method']} | {s['tokens_per_s']:.1f} | {s['speedup']:.2f}x | {s['vs_hf_compiled']:.2f}x | {tau} | {s['exact_match']:.0%} |")
    device_name, device_kind = device_names(torch.device("cpu"))
    path = args.out / f"hf-compiled-{args.model}-{device_kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device_name, **environment(), "args": vars(args) | {"out": str(args.out)}, **results}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
