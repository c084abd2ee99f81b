"""Train SmolLM2-135M-Instruct's token-aware draft head on its self-distilled data.

    python -m bench.training.train_head --work runs/head --stage features   # the model's states, once (resumable)
    python -m bench.training.train_head --work runs/head --stage train --steps 400
    python -m bench.training.train_head --work runs/head --stage all

Data: every ``bench/prompts/distill-smollm2*.jsonl`` (SmolLM2's own answers to the 522
distillation prompts, one file per sampling seed), packed together into ``--seq-len`` sequences,
and every ``bench/prompts/distill-self-smollm2*.jsonl`` (answers to the requests SmolLM2 wrote,
``bench.prompts.self_prompts``), each file packed on its own, so that a new file costs only its
own pass for the model's states (``--no-self`` leaves them out).
Held-out: the model's greedy answers to the evaluation chat prompts
(``bench/prompts/eval-chat-smollm2.jsonl``, prompts never trained on) and held-out standard-library
code. The draft vocabulary is the ``--draft-vocab`` most frequent tokens of the training data.
Writes the head (fp32) to ``--out`` and ``training_report.json`` (config, data size, times,
the loss and held-out top-1 log) beside it.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from bench.common import cpu_model, environment  # noqa: E402
from specdec.demo import load_demo  # noqa: E402
from specdec.drafts.firp.vocabulary import DraftVocabulary  # noqa: E402
from specdec.drafts.head.network import TokenHead  # noqa: E402
from specdec.training.corpus import read_texts, stdlib_files  # noqa: E402
from specdec.training.data import pack_texts, read_corpus  # noqa: E402
from specdec.training.head import evaluate_head, extract_features, load_shards, train_head  # noqa: E402

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, required=True, help="feature shards and checkpoints")
    p.add_argument("--out", type=Path, default=None, help="where the head goes (default: WORK/head)")
    p.add_argument("--stage", choices=("features", "train", "all"), default="all")
    p.add_argument("--files", type=int, default=0, help="use the first N distillation files (0: all)")
    p.add_argument("--no-self", action="store_true", help="only the first passes over distill.jsonl (no later pass, no self-written requests)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--depth", type=int, default=5)
    p.add_argument("--draft-vocab", type=int, default=4096)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--init", type=Path, help="continue from this saved head (its vocabulary and depth) instead of a new one")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


FIRST_PASSES = 7  # distill-smollm2.jsonl and its -seed1..6 passes, packed together (as their cached features were)


def pass_number(path: Path) -> int:
    """0 for ``distill-smollm2.jsonl``, N for ``distill-smollm2-seedN.jsonl``."""
    return int(path.stem.rsplit("seed", 1)[1]) if "-seed" in path.stem else 0


def distill_files(limit: int) -> list[Path]:
    """The first passes over ``distill.jsonl`` (up to ``limit``; 0: all :data:`FIRST_PASSES`), in name order."""
    files = sorted(f for f in PROMPTS_DIR.glob("distill-smollm2*.jsonl") if pass_number(f) < FIRST_PASSES)
    return files[:limit] if limit else files


def self_files() -> list[Path]:
    """Files packed one by one (each file's features are computed once): the later passes over
    ``distill.jsonl`` and the passes over the self-written requests."""
    later = [f for f in PROMPTS_DIR.glob("distill-smollm2-seed*.jsonl") if pass_number(f) >= FIRST_PASSES]
    return sorted(later, key=pass_number) + sorted(PROMPTS_DIR.glob("distill-self-smollm2*.jsonl"))


def firp_heldout(model, tokenizer, head) -> dict:
    """Top-1 on exactly the held-out text the FIRP variants are scored on (bench.training.train_variants:
    12 chat and 12 code sequences of 128 tokens), per half."""
    from specdec.training.head import HeadBatch

    chat = pack_texts(read_corpus([PROMPTS_DIR / "eval-chat-smollm2.jsonl"]), tokenizer, 128, model.config)[:12]
    code = pack_texts(read_texts(stdlib_files("heldout")[:6]), tokenizer, 128, model.config)[:12]
    scores = {}
    for name, ids in (("chat", chat), ("code", code)):
        with torch.no_grad():
            feats = model.model(input_ids=ids).last_hidden_state
        scores[name] = evaluate_head(model, head, [HeadBatch(ids, feats)])
    return scores


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_demo("smollm2-135m", draft="firp")
    files = distill_files(args.files)
    extra = [] if args.no_self else self_files()
    groups = {f"train-{len(files)}": pack_texts(read_corpus(files), tokenizer, args.seq_len, model.config)}
    groups.update({f"{f.stem}-{args.seq_len}": pack_texts(read_corpus([f]), tokenizer, args.seq_len, model.config) for f in extra})
    train_seq = torch.cat(list(groups.values()))
    chat = pack_texts(read_corpus([PROMPTS_DIR / "eval-chat-smollm2.jsonl"]), tokenizer, args.seq_len, model.config)
    code = pack_texts(read_texts(stdlib_files("heldout")[:6]), tokenizer, args.seq_len, model.config)[: chat.shape[0]]
    started = time.perf_counter()
    paths = {
        "train": [path for name, seq in groups.items() for path in extract_features(model, seq, args.work / "features" / name)],
        "chat": extract_features(model, chat, args.work / "features" / "eval-chat"),
        "code": extract_features(model, code, args.work / "features" / "eval-code"),
    }
    feature_seconds = time.perf_counter() - started
    print(f"features: {train_seq.numel()} training tokens, {feature_seconds:.0f} s this run")
    if args.stage == "features":
        return
    counts = torch.bincount(train_seq.view(-1), minlength=model.config.vocab_size)
    vocab = DraftVocabulary.most_frequent(counts, args.draft_vocab)
    head = TokenHead.for_model(model, args.depth, vocab) if args.init is None else TokenHead.from_pretrained(args.init, dtype=torch.float32)
    shards = load_shards(paths["train"])
    evals = {name: load_shards(paths[name], torch.float32) for name in ("chat", "code")}
    log = []
    started = time.perf_counter()
    history = train_head(model, head, shards, args.steps, args.batch_size, args.lr, eval_batches=evals["chat"], eval_every=args.eval_every,
                         log=lambda r: (print(r, flush=True), log.append(r)))
    train_seconds = time.perf_counter() - started
    final = {name: evaluate_head(model, head, batches) for name, batches in evals.items()}
    final["firp-heldout"] = firp_heldout(model, tokenizer, head)
    out = args.out or args.work / "head"
    head.save_pretrained(out)
    report = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "data": {"files": [f.name for f in files + extra], "training_tokens": train_seq.numel(), "draft_vocab_coverage": vocab.coverage(train_seq)},
        "seconds": {"train": round(train_seconds, 1)},
        "heldout": final,
        "log": [r for r in history if "top1_depth1" in r or r["step"] % 50 == 0],
        "machine": {"cpu": cpu_model(), "threads": args.threads},
        "environment": environment(),
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(final))


if __name__ == "__main__":
    main()
