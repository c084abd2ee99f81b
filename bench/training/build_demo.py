"""Rebuild the bundled demo model in ``specdec/assets/stdlib-9m/`` from the Python standard library.

Stage ``model`` trains, from scratch and offline, a byte-level BPE tokenizer and a
small ``LlamaForCausalLM`` on the train split of :mod:`specdec.training.corpus`, reports
the held-out loss, and saves the fp16 model, the tokenizer and ``build_info.json``.
Stage ``predictor`` then runs ``specdec train``: a short sweep over transfer layers,
and a longer training of the best layer's predictor into ``predictor/``.

    python -m bench.training.build_demo                                   # full build (about 1.5 h on 2 cores)
    python -m bench.training.build_demo --stage predictor --resume        # only the predictor
    python -m bench.training.build_demo --steps 30 --layers 2 --out runs/smoke --ckpt-dir runs/smoke-ckpt
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import random
import time
from pathlib import Path

# Idle OpenMP threads must sleep, not spin: on a CPU shared with other jobs, spinning
# threads starve their own descheduled peer (2 threads ran 2-10x slower than 1 in tests).
# It is read when torch loads OpenMP, so it is set before the first torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from tqdm import tqdm  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: E402

from specdec import cli as specdec_cli  # noqa: E402
from specdec.training.corpus import read_texts, stdlib_files  # noqa: E402
from specdec.training.train import CHECKPOINT_STATE  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "specdec" / "assets" / "stdlib-9m"
DEFAULT_CKPT_DIR = REPO_ROOT / "runs" / "build_demo"
EOS = "<|endoftext|>"
SAMPLE_PROMPTS = ("def __init__(self", "import os\n", "class ")
ROUND_TRIP_SAMPLE = 'class A:\n    def f(self, x):\n\t\treturn {"k": x}  # café ✓\n\n\n        pass\r\n'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line: data, model shape, optimisation and output knobs."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the model and tokenizer are saved")
    p.add_argument("--ckpt-dir", type=Path, default=DEFAULT_CKPT_DIR, help="where periodic checkpoints go")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --ckpt-dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--layers", type=int, default=5)
    p.add_argument("--hidden", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--max-positions", type=int, default=2048)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=8, help="sequences per optimiser step")
    p.add_argument("--tokens", type=int, default=10_000_000, help="training token budget")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps (overrides --tokens)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a fraction of the peak")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True, help="train under CPU bfloat16 autocast")
    p.add_argument("--ckpt-every", type=int, default=200, help="steps between checkpoints")
    p.add_argument("--eval-windows", type=int, default=32, help="held-out windows scored at each checkpoint")
    p.add_argument("--sample-tokens", type=int, default=64, help="new tokens per sample generation")
    p.add_argument("--stage", choices=("all", "model", "predictor"), default="all", help="what to build")
    p.add_argument("--predictor-layers", default="1,2,3", help="transfer layers swept for the predictor")
    p.add_argument("--k", type=int, default=3, help="predictor future offsets")
    p.add_argument("--sweep-steps", type=int, default=400, help="predictor steps per swept layer")
    p.add_argument("--predictor-steps", type=int, default=3000, help="predictor steps at the chosen layer")
    args = p.parse_args(argv)
    if args.steps is None:
        args.steps = math.ceil(args.tokens / (args.batch_size * args.seq_len))
    return args


def seed_everything(seed: int) -> None:
    """Seed Python's and torch's random generators."""
    random.seed(seed)
    torch.manual_seed(seed)


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Train a byte-level BPE tokenizer whose post-processor prepends ``EOS`` as the BOS token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    eos_id = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A {EOS} $B", special_tokens=[(EOS, eos_id)]
    )
    return tok


def wrap_tokenizer(tok: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    """Wrap a ``tokenizers`` tokenizer so ``AutoTokenizer.from_pretrained`` can load it back.

    ``EOS`` is also the BOS token, and there is no pad token: a pad equal to the BOS that starts
    every prompt would make ``generate`` infer a padding mask over it whenever a call sets
    ``eos_token_id`` to another token without an ``attention_mask``.
    """
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
    )


def check_round_trip(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> None:
    """Raise ``ValueError`` unless decode(encode(text)) gives back each text exactly."""
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        back = tokenizer.decode(ids, skip_special_tokens=True)
        if back != text:
            raise ValueError(f"tokenizer does not round-trip {text[:80]!r} -> {back[:80]!r}")


def pack(tok: Tokenizer, texts: list[str], shuffle_seed: int | None = None) -> torch.Tensor:
    """Concatenate the texts' ids into one stream; the tokenizer's template puts ``EOS`` before each file.

    With ``shuffle_seed`` the files are concatenated in a seeded random order.
    """
    order = list(range(len(texts)))
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    encodings = tok.encode_batch([texts[i] for i in order])
    stream = []
    for enc in encodings:
        stream.extend(enc.ids)
    return torch.tensor(stream, dtype=torch.long)


def batch_at(stream: torch.Tensor, step: int, args: argparse.Namespace) -> torch.Tensor:
    """Return the training batch of ``step``: windows at offsets drawn from a (seed, step) generator."""
    gen = torch.Generator().manual_seed(args.seed * 1_000_003 + step)
    starts = torch.randint(0, len(stream) - args.seq_len, (args.batch_size,), generator=gen)
    return torch.stack([stream[s : s + args.seq_len] for s in starts.tolist()])


def build_model(args: argparse.Namespace, vocab_size: int, eos_id: int) -> LlamaForCausalLM:
    """Create a freshly initialised Llama model of the requested shape (no pad token, see :func:`wrap_tokenizer`)."""
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=args.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
    )
    return LlamaForCausalLM(config)


def make_optimizer(model: torch.nn.Module, args: argparse.Namespace) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norm gains)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8)


def lr_factor(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up to 1, then cosine decay to ``args.min_lr_ratio`` at the last step."""
    if step < args.warmup:
        return (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def save_checkpoint(path: Path, model, optimizer, scheduler, step: int, elapsed: float) -> None:
    """Atomically write the training state after ``step`` completed steps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "elapsed": elapsed,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, float]:
    """Restore the training state; return (completed steps, training seconds so far)."""
    state = torch.load(path, map_location="cpu")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state["step"], state["elapsed"]


@torch.no_grad()
def heldout_loss(model, stream: torch.Tensor, seq_len: int, batch_size: int, max_windows: int | None = None) -> float:
    """Mean next-token cross-entropy over ``stream`` cut into consecutive ``seq_len`` windows."""
    was_training = model.training
    model.eval()
    windows = list(stream.split(seq_len))[:max_windows]
    full = [w for w in windows if len(w) == seq_len]
    batches = [torch.stack(full[i : i + batch_size]) for i in range(0, len(full), batch_size)]
    batches += [w[None] for w in windows if 1 < len(w) < seq_len]
    total, count = 0.0, 0
    for ids in batches:
        logits = model(input_ids=ids).logits[:, :-1].float()
        targets = ids[:, 1:]
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        count += targets.numel()
    model.train(was_training)
    return total / count


def train(model, stream: torch.Tensor, heldout: torch.Tensor, args: argparse.Namespace) -> float:
    """Run the optimisation loop with checkpoints; return the training time in seconds."""
    optimizer = make_optimizer(model, args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, args))
    ckpt = args.ckpt_dir / "checkpoint.pt"
    start, elapsed = 0, 0.0
    if args.resume and ckpt.exists():
        start, elapsed = load_checkpoint(ckpt, model, optimizer, scheduler)
    start_elapsed = elapsed
    model.train()
    tokens_per_step = args.batch_size * args.seq_len
    bar = tqdm(range(start, args.steps), initial=start, total=args.steps, desc="train", mininterval=5)
    for step in bar:
        t0 = time.perf_counter()
        ids = batch_at(stream, step, args)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        scheduler.step()
        elapsed += time.perf_counter() - t0
        done = step + 1
        tok_s = (done - start) * tokens_per_step / (elapsed - start_elapsed)
        bar.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tok_s:.0f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", refresh=False)
        if done % args.ckpt_every == 0 or done == args.steps:
            save_checkpoint(ckpt, model, optimizer, scheduler, done, elapsed)
            val = heldout_loss(model, heldout, args.seq_len, args.batch_size, args.eval_windows)
            bar.write(f"step {done}: train loss {loss.item():.3f}, held-out loss (first {args.eval_windows} windows) {val:.3f}, {elapsed:.0f}s")
    return elapsed


@torch.no_grad()
def sample_generations(model, tokenizer, max_new_tokens: int) -> dict[str, str]:
    """Greedy continuations of ``SAMPLE_PROMPTS`` (prompt included)."""
    model.eval()
    samples = {}
    for prompt in SAMPLE_PROMPTS:
        inputs = tokenizer(prompt, return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        samples[prompt] = tokenizer.decode(out[0], skip_special_tokens=True)
    return samples


def build_info(args, model, counts: dict, train_seconds: float, loss: float, samples: dict) -> dict:
    """Collect what is needed to judge and reproduce the build."""
    return {
        "config": model.config.to_dict(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "steps": args.steps,
        "tokens_seen": args.steps * args.batch_size * args.seq_len,
        "train_seconds": round(train_seconds, 1),
        "heldout_loss": round(loss, 4),
        "heldout_perplexity": round(math.exp(loss), 3),
        "corpus": counts,
        "seed": args.seed,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "samples": samples,
    }


def build_language_model(args: argparse.Namespace) -> None:
    """Build the tokenizer and model, train, evaluate, and save everything to ``args.out``."""
    train_files, heldout_files = stdlib_files("train"), stdlib_files("heldout")
    train_texts, heldout_texts = read_texts(train_files), read_texts(heldout_files)
    tok = train_tokenizer(train_texts, args.vocab_size)
    tokenizer = wrap_tokenizer(tok, args.max_positions)
    check_round_trip(tokenizer, [ROUND_TRIP_SAMPLE, *heldout_texts[:5]])
    stream = pack(tok, train_texts, shuffle_seed=args.seed)
    heldout = pack(tok, heldout_texts)
    counts = {
        "train_files": len(train_files),
        "heldout_files": len(heldout_files),
        "train_tokens": len(stream),
        "heldout_tokens": len(heldout),
        "vocab_size": tok.get_vocab_size(),
    }
    print(json.dumps(counts))
    model = build_model(args, tok.get_vocab_size(), tok.token_to_id(EOS))
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, {args.steps} steps")
    train_seconds = train(model, stream, heldout, args)
    model = model.half().float()  # score the weights exactly as they are shipped
    loss = heldout_loss(model, heldout, args.seq_len, args.batch_size)
    print(f"held-out loss {loss:.4f}, perplexity {math.exp(loss):.2f}")
    samples = sample_generations(model, tokenizer, args.sample_tokens)
    for text in samples.values():
        print("-" * 40 + "\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    info = build_info(args, model, counts, train_seconds, loss, samples)
    (args.out / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")


def run_specdec_train(options: list[str]) -> None:
    """Run ``python -m specdec train`` in-process (``--force``: a rebuild replaces what it wrote before);
    raise ``SystemExit`` when it fails."""
    code = specdec_cli.main(["train", *options, "--force"])
    if code:
        raise SystemExit(f"specdec train {' '.join(options)} failed with exit code {code}")


def resume_flag(args: argparse.Namespace, checkpoint_dir: Path) -> list[str]:
    """``["--resume"]`` when ``--resume`` was given and ``checkpoint_dir`` holds a checkpoint, else ``[]``."""
    return ["--resume"] if args.resume and any(checkpoint_dir.rglob(CHECKPOINT_STATE)) else []


def build_predictor(args: argparse.Namespace) -> None:
    """Sweep transfer layers briefly, then train the best layer's predictor into ``args.out / "predictor"``.

    The sweep table is kept in the predictor's ``training_report.json``.
    """
    args.ckpt_dir.mkdir(parents=True, exist_ok=True)
    lists = {}
    for split in ("train", "heldout"):
        lists[split] = args.ckpt_dir / f"{split}_files.txt"
        lists[split].write_text("\n".join(str(f) for f in stdlib_files(split)) + "\n")
    common = ["--model", str(args.out), "--data", f"@{lists['train']}", "--eval-data", f"@{lists['heldout']}",
              "--k", str(args.k), "--seed", str(args.seed)]
    sweep_out, sweep_ckpt = args.ckpt_dir / "predictor-sweep", args.ckpt_dir / "predictor-sweep-checkpoints"
    run_specdec_train([*common, "--layers", args.predictor_layers, "--steps", str(args.sweep_steps),
                       "--out", str(sweep_out), "--checkpoint-dir", str(sweep_ckpt), *resume_flag(args, sweep_ckpt)])
    sweep = json.loads((sweep_out / "training_report.json").read_text())
    final_out, final_ckpt = args.out / "predictor", args.ckpt_dir / "predictor-checkpoints"
    run_specdec_train([*common, "--layer", str(sweep["layer"]), "--steps", str(args.predictor_steps),
                       "--out", str(final_out), "--checkpoint-dir", str(final_ckpt), *resume_flag(args, final_ckpt)])
    report_path = final_out / "training_report.json"
    report = json.loads(report_path.read_text())
    report["sweep"] = {"steps_per_layer": args.sweep_steps, "layers": sweep["sweep"]}
    report["steps"] = args.predictor_steps
    report_path.write_text(json.dumps(report, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Build the stages asked for by ``--stage``."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    if args.stage in ("all", "model"):
        build_language_model(args)
    if args.stage in ("all", "predictor"):
        build_predictor(args)


if __name__ == "__main__":
    main()
