"""``make demo``: plain greedy ``generate`` and specdec side by side on a demo model.

For each prompt the plain model's output and then the patched model's output are streamed
to the terminal; each run is timed (after one short warm-up of both), and a line gives the
tokens/s of each, tau, the speedup and whether the two outputs are identical token for token.
The patch uses :func:`specdec.patch`'s defaults: with the demo's trained predictor (``source=
"trained"``), or without one (``source="lookup"``: n-gram lookup drafts, nothing trained).
"""

import time

import torch
from transformers import TextStreamer

from . import load_demo
from ..drafts.head.network import TokenHead
from ..patching import patch, stats, unpatch

CHAT_PROMPTS = (
    "Write a Python function that returns the squares of the even numbers in a list.",
    "Give me three tips for writing a clear commit message.",
    "Explain what a Python dictionary is, with a short example.",
)
CODE_PROMPTS = (
    "import os\nimport sys\n\n\ndef main(argv):\n",
    "class Stack:\n    \"\"\"A last-in, first-out stack.\"\"\"\n\n    def __init__(self):\n",
    "def read_config(path):\n    with open(path) as f:\n",
)
DEMO_SETTINGS = {
    "smollm2-135m": {"prompts": CHAT_PROMPTS, "chat": True, "max_new_tokens": 160},
    "stdlib-9m": {"prompts": CODE_PROMPTS, "chat": False, "max_new_tokens": 128},
}


def prompt_ids(tokenizer, text: str, chat: bool) -> torch.Tensor:
    """``[1, P]`` int64 ids of a user message (chat template) or of raw text."""
    if chat:
        messages = [{"role": "user", "content": text}]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return tokenizer(rendered, return_tensors="pt", add_special_tokens=False).input_ids
    return tokenizer(text, return_tensors="pt").input_ids


def timed_generate(model, ids, max_new_tokens: int, streamer=None) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)
    return out, time.perf_counter() - start


SOURCES = ("trained", "firp", "lookup")


def run_demo(name: str = "smollm2-135m", max_new_tokens: int | None = None, source: str = "trained") -> dict:
    """Print both outputs and the figures per prompt and overall; return the overall figures.

    ``source``: ``"trained"`` patches with the demo's default draft source (SmolLM2: the token-aware
    head; the 9M model: FIRP), ``"firp"`` with its FIRP predictor, ``"lookup"`` with none (n-gram
    lookup drafts only). ``max_new_tokens`` defaults to the demo's own setting.
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    settings = DEMO_SETTINGS[name]
    max_new_tokens = max_new_tokens or settings["max_new_tokens"]
    model, tokenizer, predictor = load_demo(name, draft="firp" if source == "firp" else "default")
    if source == "lookup":
        predictor = None
    config = model.config
    if predictor is None:
        drafts = "n-gram lookup only (no predictor)"
    elif isinstance(predictor, TokenHead):
        vocab = config.vocab_size if predictor.draft_vocab is None else len(predictor.draft_vocab)
        drafts = f"token-aware draft head: depth {predictor.depth}, {vocab}-token draft vocabulary"
    else:
        drafts = f"FIRP predictor: transfer layer {predictor.layer}, k={predictor.k}"
    print(f"specdec demo: {name} ({config.num_hidden_layers} layers, d={config.hidden_size}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, fp32), "
          f"{drafts}; {torch.get_num_threads()} CPU threads")
    prompts = [prompt_ids(tokenizer, text, settings["chat"]) for text in settings["prompts"]]
    for patched in (False, True):  # warm-up
        patch(model, predictor) if patched else unpatch(model)
        model.generate(prompts[0], max_new_tokens=8, do_sample=False)
    unpatch(model)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    totals = {"plain_s": 0.0, "spec_s": 0.0, "tokens": 0, "steps": 0, "identical": True}
    for text, ids in zip(settings["prompts"], prompts):
        print("=" * 72 + f"\nprompt: {text}\n" + "-" * 30 + " plain greedy " + "-" * 28)
        plain, plain_s = timed_generate(model, ids, max_new_tokens, streamer)
        print("-" * 30 + " specdec " + "-" * 33)
        patch(model, predictor)
        spec, spec_s = timed_generate(model, ids, max_new_tokens, streamer)
        run = stats(model)
        unpatch(model)
        new, same = plain.shape[1] - ids.shape[1], torch.equal(plain, spec)
        totals["plain_s"] += plain_s
        totals["spec_s"] += spec_s
        totals["tokens"] += new
        totals["steps"] += run.steps
        totals["identical"] &= same
        print(f"\n{new} tokens | plain {new / plain_s:6.1f} tok/s | specdec {new / spec_s:6.1f} tok/s | tau {run.tau:.2f} | "
              f"speedup {plain_s / spec_s:.2f}x | identical: {'yes' if same else 'NO'}")
    summary = {
        "plain_tokens_per_s": totals["tokens"] / totals["plain_s"],
        "specdec_tokens_per_s": totals["tokens"] / totals["spec_s"],
        "tau": totals["tokens"] / totals["steps"],
        "speedup": totals["plain_s"] / totals["spec_s"],
        "identical": totals["identical"],
    }
    print("=" * 72 + f"\noverall: plain {summary['plain_tokens_per_s']:.1f} tok/s, specdec {summary['specdec_tokens_per_s']:.1f} tok/s, "
          f"tau {summary['tau']:.2f}, speedup {summary['speedup']:.2f}x, outputs identical: {'yes' if summary['identical'] else 'NO'}")
    return summary
