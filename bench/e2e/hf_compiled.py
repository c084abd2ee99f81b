"""The strongest plain decoding a user can switch on: Hugging Face ``generate`` with a static cache
and ``torch.compile``, against eager plain greedy and specdec, warm.

    python -m bench.e2e.hf_compiled                        # SmolLM2, 4 chat and 4 code prompts, 128 tokens
    python -m bench.e2e.hf_compiled --prompts 8 --repeats 2

Hugging Face documents a static cache with a compiled forward as its fast path. Here a second copy
of the model gets ``model.forward = torch.compile(model.forward)`` (inductor, default dynamism)
and generates with ``cache_implementation="static"``; the first copy runs eager plain greedy and
specdec (patching switches the attention implementation, which a compiled forward would recompile
for). Every prompt is run once through the compiled model before timing (compilation, and
recompilation for new shapes, are reported, not timed); then methods are interleaved per prompt,
medians over repeats. Results: ``bench/results/hf-compiled-{model}-{device}.json``.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.common import RESULTS, device_names, environment
from bench.e2e.run import class_prompts, timed_generate
from specdec import load_demo, patch, stats, unpatch
from specdec.demo import DEFAULT_DEMO, DEMOS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=DEMOS, default=DEFAULT_DEMO)
    parser.add_argument("--classes", nargs="+", default=["chat", "code"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model, tokenizer, predictor = load_demo(args.model)
    compiled, _, _ = load_demo(args.model)
    compiled.forward = torch.compile(compiled.forward)
    static = {"cache_implementation": "static"}
    methods = {
        "plain greedy (eager)": (model, lambda: unpatch(model), {}),
        "HF static cache + torch.compile": (compiled, lambda: None, static),
        "specdec defaults": (model, lambda: patch(model, predictor), {}),
        "specdec, no predictor": (model, lambda: patch(model), {}),
    }
    results = {"compile_seconds": [], "classes": {}}
    for name in args.classes:
        prompts = class_prompts(name, tokenizer, args.prompts, args.new_tokens, "cpu")
        for ids in prompts:  # compile (and recompile for new shapes) before anything is timed
            start = time.perf_counter()
            compiled.generate(ids, max_new_tokens=args.new_tokens, do_sample=False, **static)
            results["compile_seconds"].append(time.perf_counter() - start)
            print(f"{name}: compiled-model warm-up {results['compile_seconds'][-1]:.1f} s", flush=True)
        for target, setup, kwargs in methods.values():  # warm-up of the eager methods
            setup()
            timed_generate(target, prompts[0], 16, kwargs)
        rows = []
        for number, ids in enumerate(prompts):
            seconds, outputs, taus = {m: [] for m in methods}, {}, {}
            for _ in range(args.repeats):
                for method, (target, setup, kwargs) in methods.items():
                    setup()
                    outputs[method], elapsed = timed_generate(target, ids, args.new_tokens, kwargs)
                    seconds[method].append(elapsed)
                    taus[method] = stats(model).tau if method.startswith("specdec") else None
            reference = outputs["plain greedy (eager)"]
            for method in methods:
                rows.append({"method": method, "prompt": number, "new_tokens": outputs[method].shape[1] - ids.shape[1],
                             "seconds": statistics.median(seconds[method]), "tau": taus[method],
                             "identical": bool(torch.equal(outputs[method], reference))})
            print(f"{name} prompt {number}: " + ", ".join(f"{r['method']} {r['new_tokens'] / r['seconds']:.1f} tok/s" for r in rows[-len(methods):]), flush=True)
        unpatch(model)
        speed = {m: sum(r["new_tokens"] for r in rows if r["method"] == m) / sum(r["seconds"] for r in rows if r["method"] == m) for m in methods}
        summary = {m: {"tokens_per_s": speed[m], "vs_eager": speed[m] / speed["plain greedy (eager)"],
                       "vs_hf_compiled": speed[m] / speed["HF static cache + torch.compile"],
                       "identical": all(r["identical"] for r in rows if r["method"] == m)} for m in methods}
        results["classes"][name] = {"rows": rows, "summary": summary}
        print(f"\n{name}\n| method | tokens/s | vs eager plain | vs HF static + compile | identical |\n| --- | --- | --- | --- | --- |")
        for m, s in summary.items():
            print(f"| {m} | {s['tokens_per_s']:.1f} | {s['vs_eager']:.2f}x | {s['vs_hf_compiled']:.2f}x | {'yes' if s['identical'] else 'NO'} |")
    device_name, device_kind = device_names(torch.device("cpu"))
    path = args.out / f"hf-compiled-{args.model}-{device_kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device_name, **environment(), "args": vars(args) | {"out": str(args.out)}, **results}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
