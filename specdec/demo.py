"""The bundled demo: a small Llama trained on the Python standard library, and its predictor.

``make demo`` runs :func:`run_demo`: plain greedy ``generate`` against the patched
model on a few code prompts, timed side by side (median of repeats, interleaved).
"""

import statistics
import time
from pathlib import Path

import torch

from .patching import patch, stats, unpatch
from .predictor import FuturePredictor

DEMO_DIR = Path(__file__).resolve().parent / "assets" / "demo"
PREDICTOR_DIR = DEMO_DIR / "predictor"
DEMO_TREE = 5
"""The demo's tree: the 5 most likely paths. On 2 CPU cores a step's cost grows fast with
its rows (16 nodes: 2.7x a plain step), so small trees decode fastest there."""
PROMPTS = (
    "import os\nimport sys\n\n\ndef main(argv):\n",
    "class Stack:\n    \"\"\"A last-in, first-out stack.\"\"\"\n\n    def __init__(self):\n",
    "def read_config(path):\n    with open(path) as f:\n",
)


def load_demo(dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """The demo ``(model, tokenizer, predictor)``, loaded from the package (no download)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for needed in (DEMO_DIR / "config.json", PREDICTOR_DIR / "predictor_config.json"):
        if not needed.is_file():
            raise FileNotFoundError(f"demo asset {needed} is missing; rebuild it with `make demo-model`")
    model = AutoModelForCausalLM.from_pretrained(DEMO_DIR, dtype=dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(DEMO_DIR)
    predictor = FuturePredictor.from_pretrained(PREDICTOR_DIR, device=device, dtype=dtype)
    return model, tokenizer, predictor


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run_demo(max_new_tokens: int = 128, tree=DEMO_TREE, backend: str = "auto", repeats: int = 3) -> dict:
    """Print completions, tokens/s of plain and patched greedy decoding, tau, speedup and exactness."""
    model, tokenizer, predictor = load_demo()
    device = next(model.parameters()).device
    print(f"specdec demo: {model.config.num_hidden_layers}-layer Llama, d={model.config.hidden_size}, "
          f"transfer layer {predictor.layer}, k={predictor.k}, tree={tree!r}, backend={backend!r}")
    print(f"device: {device} with {torch.get_num_threads()} threads (CPU timings, medians of {repeats} interleaved runs)\n")
    totals = {"plain_s": 0.0, "spec_s": 0.0, "tokens": 0, "steps": 0, "identical": True}
    for text in PROMPTS:
        ids = tokenizer(text, return_tensors="pt").input_ids.to(device)
        plain_runs, spec_runs = [], []
        for _ in range(repeats + 1):  # the first round warms up
            unpatch(model)
            plain, seconds = timed(lambda: model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False))
            plain_runs.append(seconds)
            patch(model, predictor, tree=tree, backend=backend)
            spec, seconds = timed(lambda: model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False))
            spec_runs.append(seconds)
        run = stats(model)
        unpatch(model)
        plain_s, spec_s = statistics.median(plain_runs[1:]), statistics.median(spec_runs[1:])
        new = spec.shape[1] - ids.shape[1]
        same = torch.equal(plain, spec)
        totals["plain_s"] += plain_s
        totals["spec_s"] += spec_s
        totals["tokens"] += new
        totals["steps"] += run.steps
        totals["identical"] &= same
        print("-" * 72)
        print(tokenizer.decode(spec[0]))
        print("-" * 72)
        print(f"{new} tokens | plain {new / plain_s:7.1f} tok/s | specdec {new / spec_s:7.1f} tok/s | "
              f"tau {run.tau:.2f} | speedup {plain_s / spec_s:.2f}x | identical to plain: {'yes' if same else 'NO'}\n")
    summary = {
        "plain_tokens_per_s": totals["tokens"] / totals["plain_s"],
        "specdec_tokens_per_s": totals["tokens"] / totals["spec_s"],
        "tau": totals["tokens"] / totals["steps"],
        "speedup": totals["plain_s"] / totals["spec_s"],
        "identical": totals["identical"],
    }
    print(f"overall: plain {summary['plain_tokens_per_s']:.1f} tok/s, specdec {summary['specdec_tokens_per_s']:.1f} tok/s, "
          f"tau {summary['tau']:.2f}, speedup {summary['speedup']:.2f}x, "
          f"outputs identical: {'yes' if summary['identical'] else 'NO'}")
    return summary
