"""The first patched ``generate`` of a fresh process against plain greedy on the same request.

    python -m bench.e2e.first_call                      # SmolLM2-135M-Instruct, 6 processes, 64 new tokens
    python -m bench.e2e.first_call --model stdlib-9m --processes 8
    python -m bench.e2e.first_call --prompt-class code --new-tokens 128   # the one-shot script on code

A user who patches a model and calls ``generate`` once (a script, a notebook cell, a request in a
fresh worker) gets what nothing learned yet can give. Each run is a new Python process that loads
the model, warms plain decoding up on another prompt (8 tokens, so torch's own first-use costs
count for neither side), then times plain greedy and the first patched call on one held-out chat
request (code for a model without a chat template, or ``--prompt-class``), in alternating order
from process to process. The patched model drafts with the demo's default draft source
(``load_demo()``'s: the token-aware head for SmolLM2, FIRP for the 9M model; ``--draft`` picks). A process during which another process used the CPU is run again. ``--warmup`` calls
``specdec.warmup(model)`` after ``patch()`` and before the timed call (a server's start; its time is
reported, not counted). Results: ``bench/results/e2e-first-call-{model}[-warmup]-{device}.*``.
"""

import argparse
import json
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import matplotlib
import torch

from bench.common import RESULTS, device_names, environment, others_cpu_seconds, settle, write_csv
from specdec import load_demo, patch, stats, unpatch, warmup
from specdec.demo import DEFAULT_DEMO, DEMOS

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

QUIET_SHARE = 0.05
TRIES = 3


def child(args) -> dict:
    """One fresh process's measurement (printed as JSON by ``--child``)."""
    from bench.e2e.run import class_prompts

    model, tokenizer, predictor = load_demo(args.model, draft=args.draft)
    name = args.prompt_class or ("chat" if tokenizer.chat_template else "code")
    prompts = class_prompts(name, tokenizer, args.processes + 1, args.new_tokens, "cpu")
    request, warm_up = prompts[args.child % (len(prompts) - 1)], prompts[-1]
    model.generate(warm_up, max_new_tokens=8, do_sample=False)
    settle()
    others = others_cpu_seconds()
    times, outputs = {}, {}
    order = ("plain", "first call") if args.child % 2 else ("first call", "plain")
    for which in order:
        if which == "plain":
            unpatch(model)
        else:
            patch(model, predictor)
            if args.warmup:  # a server's start: specdec.warmup() before the request, timed on its own
                begin = time.perf_counter()
                warmup(model)
                times["warmup"] = time.perf_counter() - begin
        begin = time.perf_counter()
        outputs[which] = model.generate(request, max_new_tokens=args.new_tokens, do_sample=False)
        times[which] = time.perf_counter() - begin
        if which == "first call":
            run = stats(model)
    busy = others_cpu_seconds() - others
    return {
        "process": args.child, "prompt_class": name, "order": " then ".join(order),
        "plain_s": times["plain"], "first_call_s": times["first call"], "warmup_s": times.get("warmup"), "speedup": times["plain"] / times["first call"],
        "new_tokens": outputs["plain"].shape[1] - request.shape[1], "steps": run.steps, "tau": run.tau,
        "exact": bool(torch.equal(outputs["plain"], outputs["first call"])),
        "quiet": busy <= QUIET_SHARE * (times["plain"] + times["first call"]),
    }


def run_processes(args) -> list[dict]:
    """Every process's result (each rerun up to :data:`TRIES` times while not quiet)."""
    rows = []
    for number in range(args.processes):
        for attempt in range(TRIES):
            command = [sys.executable, "-m", "bench.e2e.first_call", "--child", str(number), "--model", args.model,
                       "--processes", str(args.processes), "--new-tokens", str(args.new_tokens), "--draft", args.draft]
            command += (["--warmup"] if args.warmup else []) + (["--prompt-class", args.prompt_class] if args.prompt_class else [])
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            if row["quiet"]:
                break
            print(f"process {number}: another process used the CPU, running it again")
        rows.append(row)
        print(f"process {number} ({row['order']}): plain {row['plain_s']:.2f} s, first patched call "
              f"{row['first_call_s']:.2f} s, {row['speedup']:.2f}x, tau {row['tau']:.2f}, exact {row['exact']}")
    return rows


def plot(rows: list[dict], path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar([r["process"] for r in rows], [r["speedup"] for r in rows], color="#4c72b0")
    ax.axhline(1, color="grey", lw=0.8)
    ax.axhline(0.95, color="#c44e52", lw=0.8, ls="--", label="target 0.95x")
    ax.set_xlabel("fresh process")
    ax.set_ylabel("first patched call / plain (speedup)")
    ax.set_title(textwrap.fill(title, 90), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_DEMO, choices=DEMOS)
    parser.add_argument("--processes", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--draft", default="default", choices=("default", "firp", "head"), help="load_demo's draft source")
    parser.add_argument("--prompt-class", choices=("chat", "code"), help="held-out prompts (default: chat with a chat template)")
    parser.add_argument("--warmup", action="store_true", help="call specdec.warmup(model) after patch(), before the timed request")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args)))
        return
    rows = run_processes(args)
    device_name, device_kind = device_names(torch.device("cpu"))
    speedups = [r["speedup"] for r in rows]
    warmups = [r["warmup_s"] for r in rows if r["warmup_s"] is not None]
    summary = {"median_speedup": statistics.median(speedups), "min_speedup": min(speedups),
               "median_warmup_s": statistics.median(warmups) if warmups else None,
               "exact": all(r["exact"] for r in rows), "processes": len(rows)}
    variant = (f"-{args.prompt_class}" if args.prompt_class else "") + (f"-{args.draft}" if args.draft != "default" else "")
    stem = args.out / f"e2e-first-call-{args.model}{variant}{'-warmup' if args.warmup else ''}-{device_kind}"
    write_csv(stem.with_suffix(".csv"), rows)
    meta = {"device": device_name, **environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    stem.with_suffix(".json").write_text(json.dumps({**meta, "summary": summary}, indent=2) + "\n")
    title = (f"{args.model}: first patched generate of a fresh process vs plain greedy, {rows[0]['prompt_class']} "
             f"requests, {args.new_tokens} new tokens, {device_name}, {torch.get_num_threads()} threads")
    plot(rows, stem.with_suffix(".png"), title)
    print(f"median {summary['median_speedup']:.2f}x, min {summary['min_speedup']:.2f}x, exact {summary['exact']}; wrote {stem}.*")


if __name__ == "__main__":
    main()
