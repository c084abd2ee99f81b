"""A draft vocabulary for pseudo rows (FR-Spec): coverage lost against LM-head time saved.

    python -m bench.training.draft_vocab                    # SmolLM2-135M, CPU, the reference (PyTorch) path
    python -m bench.training.draft_vocab --device cuda      # the Triton kernels
    python -m bench.training.draft_vocab --write 4096       # only write that vocabulary into the demo predictor

Pseudo rows could be ranked over the most frequent tokens of the distillation data only
(``lm_head_topk(..., token_ids=...)``), real rows keeping the whole vocabulary. Two questions decide
whether that pays in specdec's one-pass step, where real and pseudo rows share one LM-head pass:

* **Coverage and hit rate**, on the held-out sequences of ``bench.training.train_variants`` (12 of
  held-out chat answers, 12 of held-out Python): the fraction of their tokens inside the ``N``
  most frequent tokens of the distillation data (``bench/prompts/distill-smollm2.jsonl``, packed into
  the predictor's training sequences, as ``specdec train --draft-vocab`` counts them), and the
  shipped predictor's top-1 per offset with its drafts ranked over the subset
  (``evaluate_predictor(..., vocabulary=...)``) against the whole vocabulary.
* **Time**: the LM head of a step with ``R`` real and ``P`` pseudo rows, as today (one top-K pass
  over all rows and the whole vocabulary) against a full-vocabulary argmax of the real rows plus a
  subset top-K of the pseudo rows (two passes, the second over ``N`` rows of the head). Interleaved,
  medians of ``--repeats``.

Results: ``bench/results/draft-vocab-smollm2-135m-{device}.{json,png}``.
"""

import argparse
import json
import statistics
import time

import matplotlib
import torch

from bench.common import RESULTS, device_names, environment
from bench.training.train_seeds import data
from specdec import kernels, load_demo
from specdec.demo import demo_paths
from specdec.drafts.firp.vocabulary import DraftVocabulary
from specdec.training.train import evaluate_predictor

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SIZES = (2048, 4096, 8192, 12288, 16384, 24576)
ROWS = ((1, 3), (4, 3), (8, 6), (16, 6), (8, 24))  # (real rows, pseudo rows): tree=auto puts pseudo rows on 1-2 rows
TOP_K = 8


def seconds(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def time_head(hidden, head, vocab: DraftVocabulary, real: int, repeats: int, device) -> dict:
    """Median seconds of the fused pass and of the split passes, interleaved."""
    weight, ids = vocab.rows(head)
    fused = lambda: kernels.lm_head_topk(hidden, head, TOP_K)  # noqa: E731
    split = lambda: (kernels.lm_head_argmax(hidden[:real], head), kernels.lm_head_topk(hidden[real:], weight, TOP_K, token_ids=ids))  # noqa: E731
    fused(), split()  # warm-up
    times = {"fused": [], "split": []}
    for _ in range(repeats):
        times["fused"].append(seconds(fused, device))
        times["split"].append(seconds(split, device))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write", type=int, metavar="N",
                        help="write the N most frequent distillation tokens into the demo predictor's folder and stop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, tokenizer, predictor = load_demo("smollm2-135m", dtype=getattr(torch, args.dtype), device=device, draft="firp")
    head = model.get_output_embeddings().weight.detach()
    # The predictor's packed training sequences (what `specdec train --draft-vocab` counts too).
    train_sequences, held_sequences = data(argparse.Namespace(model="smollm2-135m", seq_len=128, eval_sequences=24), model, tokenizer)
    train, held = train_sequences.flatten(), held_sequences.flatten()
    counts = torch.bincount(train, minlength=head.shape[0])
    if args.write:
        predictor.draft_vocab = DraftVocabulary.most_frequent(counts, args.write)
        folder = demo_paths("smollm2-135m")[1]
        predictor.half().save_pretrained(folder)
        print(f"wrote a {args.write}-token draft vocabulary into {folder}")
        return
    full = evaluate_predictor(model, predictor, held_sequences, seq_len=128)["top1"]
    print(f"whole vocabulary: held-out top-1 {' / '.join(f'{x:.3f}' for x in full)}", flush=True)

    rows = []
    gen = torch.Generator().manual_seed(0)
    for size in (s for s in SIZES if s < head.shape[0]):
        vocab = DraftVocabulary.most_frequent(counts, size)
        top1 = evaluate_predictor(model, predictor, held_sequences, seq_len=128, vocabulary=vocab)["top1"]
        entry = {"size": size, "fraction_of_vocab": size / head.shape[0], "coverage": vocab.coverage(held), "top1": top1}
        for real, pseudo in ROWS:
            hidden = torch.randn(real + pseudo, head.shape[1], generator=gen).to(device, head.dtype)
            timed = time_head(hidden, head, vocab.to(device), real, args.repeats, device)
            entry[f"{real}+{pseudo}"] = {**timed, "saved": 1 - timed["split"] / timed["fused"]}
            print(f"    {real}+{pseudo} rows: one pass {timed['fused'] * 1e3:.2f} ms, split {timed['split'] * 1e3:.2f} ms", flush=True)
        rows.append(entry)
        cells = "  ".join(f"{r}+{p}: {entry[f'{r}+{p}']['saved']:+.0%}" for r, p in ROWS)
        print(f"{size:6d} tokens ({size / head.shape[0]:.0%}): coverage {entry['coverage']:.3f}, top-1 "
              f"{' / '.join(f'{x:.3f}' for x in top1)}  time saved {cells}", flush=True)

    device_name, slug = device_names(device)
    meta = {**environment(), "device": device_name, **vars(args), "model": "smollm2-135m", "vocab": head.shape[0], "top_k": TOP_K,
            "train_tokens": train.numel(), "held_out_tokens": held.numel(), "distinct_train_tokens": int((counts > 0).sum()), "top1_whole_vocabulary": full}
    out = RESULTS / f"draft-vocab-smollm2-135m-{slug}"
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    sizes = [r["size"] for r in rows]
    left.plot(sizes, [r["coverage"] for r in rows], marker="o", label="held-out tokens covered")
    for offset in range(len(full)):
        left.plot(sizes, [r["top1"][offset] / full[offset] for r in rows], marker=".", label=f"top-1 kept, offset {offset + 1}")
    left.set(xlabel="draft vocabulary (most frequent distillation tokens)", ylabel="fraction of the whole vocabulary's", title="coverage and hit rate")
    left.legend(fontsize=7)
    for real, pseudo in ROWS:
        right.plot(sizes, [r[f"{real}+{pseudo}"]["saved"] for r in rows], marker="o", label=f"{real} real + {pseudo} pseudo rows")
    right.axhline(0, color="grey", lw=0.8)
    right.set(xlabel="draft vocabulary", ylabel="LM-head time saved (split vs one pass)", title="time")
    right.legend(fontsize=7)
    fig.suptitle(f"SmolLM2-135M-Instruct, {device_name}, {args.dtype}, {args.threads} threads", fontsize=9)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out}.json/.png")


if __name__ == "__main__":
    main()
