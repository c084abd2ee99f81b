"""Self-distillation throughput: new tokens per second by batch size, on packed and unpacked weights.

    python -m bench.training.distill_rate                       # SmolLM2, 16 prompts, 48 new tokens
    python -m bench.training.distill_rate --batch-sizes 1 8 32 --prompts 32

Runs :func:`specdec.training.distill.distill` (sampling at T=0.5, as ``specdec distill`` does) on the
first ``--prompts`` records of ``bench/prompts/distill.jsonl`` (the distillation prompt set) into a scratch file, once per
batch size and weight kind, and counts the response tokens written per second of wall time.
Results: ``bench/results/distill-rate-{model}-{device}.{json,png}``.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib
import torch

from bench.common import RESULTS, device_names, environment, settle
from specdec import load_demo
from specdec.training.distill import distill, read_prompts

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PROMPTS = Path(__file__).resolve().parents[1] / "prompts" / "distill.jsonl"


def rate(model, tokenizer, records, batch_size: int, new_tokens: int, packed: bool) -> tuple[float, int]:
    """``(new tokens per second, new tokens)`` of one distillation run."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "out.jsonl"
        settle()
        start = time.perf_counter()
        distill(model, tokenizer, records, out, max_new_tokens=new_tokens, batch_size=batch_size, progress=False, packed=packed)
        seconds = time.perf_counter() - start
        tokens = sum(json.loads(line)["new_tokens"] for line in out.read_text().splitlines())
    return tokens / seconds, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    model, tokenizer, _ = load_demo(args.model, draft="firp")
    records = read_prompts(PROMPTS)[: args.prompts]
    distill(model, tokenizer, records[:2], Path(tempfile.mkdtemp()) / "warm.jsonl", max_new_tokens=4, progress=False)
    rows = []
    for batch_size in args.batch_sizes:
        for packed in (False, True):
            per_second, tokens = rate(model, tokenizer, records, batch_size, args.new_tokens, packed)
            rows.append({"batch_size": batch_size, "packed": packed, "tokens_per_s": per_second, "new_tokens": tokens})
            print(f"batch {batch_size:3d}, {'packed' if packed else 'eager '} weights: {per_second:6.1f} new tokens/s ({tokens} tokens)", flush=True)
    device_name, device_kind = device_names(torch.device("cpu"))
    stem = args.out / f"distill-rate-{args.model}-{device_kind}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    meta = {"device": device_name, **environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for packed in (False, True):
        mine = [r for r in rows if r["packed"] == packed]
        ax.plot([r["batch_size"] for r in mine], [r["tokens_per_s"] for r in mine], marker="o",
                label="packed weights" if packed else "weights as stored")
    ax.set_xscale("log", base=2)
    ax.set_xticks(args.batch_sizes, [str(b) for b in args.batch_sizes])
    ax.set_xlabel("batch size (prompts per generate call)")
    ax.set_ylabel("new tokens / s")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{args.model} self-distillation, T=0.5, {args.new_tokens} new tokens, {device_name}, "
                 f"{torch.get_num_threads()} threads", fontsize=8)
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    print(f"wrote {stem}.json, .png")


if __name__ == "__main__":
    main()
