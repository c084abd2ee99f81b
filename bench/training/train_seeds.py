"""Train the three seed methods' draft sources on one bundled model with the same budget, and score them.

    python -m bench.training.train_seeds --model stdlib-9m --steps 600
    python -m bench.training.train_seeds --model smollm2-135m --steps 60 --bf16

FIRP (at the bundled predictor's transfer layer and ``k``), mask slots (SPACE on the frozen model,
same ``k``) and early-exit heads (SPEED's early-layer guess, at ``--exit-layers``, ``k=1`` by
default) are each trained with the same :class:`~specdec.training.train.TrainConfig` (steps, batch, sequence
length, positions, learning rate, seed) on the same data: the standard-library training files for
``stdlib-9m``, the self-distilled chat responses for ``smollm2-135m``. Each is scored on the same
held-out text (per-offset top-1/top-5 agreement with the model's greedy token) and saved under
``--work/{model}/{name}``, which ``python -m bench.e2e --seeds`` decodes with. A finished setting
is not trained again. The trained sources are saved in fp16 under ``bench/seeds/{model}/{name}``
(small; committed, so the comparison decodes on any checkout), checkpoints under ``--work``.
Results: ``bench/results/seeds-train-{model}.json``.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from bench.common import RESULTS, environment  # noqa: E402
from specdec import FuturePredictor, load_demo  # noqa: E402
from specdec.training.corpus import read_texts, stdlib_files  # noqa: E402
from specdec.training.train import CHECKPOINT_STATE, TrainConfig, evaluate_predictor, teacher_pass, train_predictor  # noqa: E402
from specdec.training.data import pack_texts, read_corpus  # noqa: E402

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"
SEEDS = Path(__file__).resolve().parents[1] / "seeds"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("stdlib-9m", "smollm2-135m"), default="stdlib-9m")
    p.add_argument("--work", type=Path, default=Path("runs/seeds"))
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--positions", type=int, default=32, help="positions sampled per sequence")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--exit-layers", default=None, help="comma-separated exit layers (default: L//2 and L-1)")
    p.add_argument("--exit-k", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--eval-sequences", type=int, default=24)
    return p.parse_args()


def data(args, model, tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train [N, T], held out [S, T])`` token ids of the model's training and held-out text."""
    if args.model == "stdlib-9m":
        train = pack_texts(read_texts(stdlib_files("train")), tokenizer, args.seq_len, model.config)
        held = pack_texts(read_texts(stdlib_files("heldout")), tokenizer, args.seq_len, model.config)
        return train, held[: args.eval_sequences]
    train = pack_texts(read_corpus([PROMPTS / "distill-smollm2.jsonl"]), tokenizer, args.seq_len, model.config)
    chat = pack_texts(read_corpus([PROMPTS / "eval-chat-smollm2.jsonl"]), tokenizer, args.seq_len, model.config)
    code = pack_texts(read_texts(stdlib_files("heldout")[:6]), tokenizer, args.seq_len, model.config)
    half = args.eval_sequences // 2
    return train, torch.cat([chat[:half], code[:half]])


def settings(args, model, firp: FuturePredictor) -> dict[str, tuple[str, int | None, int]]:
    """name -> (source, layer, k) of every source to train."""
    num_layers = model.config.num_hidden_layers
    exits = [int(x) for x in args.exit_layers.split(",")] if args.exit_layers else [num_layers // 2, num_layers - 1]
    found = {f"firp-layer{firp.layer}": ("firp", firp.layer, firp.k), "mask": ("mask", None, firp.k)}
    for layer in exits:
        found[f"exit-layer{layer}"] = ("exit", layer, args.exit_k)
    return found


def quarter_layers(num_layers: int) -> list[int]:
    return sorted({num_layers // 4, num_layers // 2, 3 * num_layers // 4, num_layers - 2})


def train_one(args, model, train, held, name: str, source: str, layer, k: int) -> dict:
    folder = args.work / args.model / name
    saved = SEEDS / args.model / name
    result_file = saved / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, positions=args.positions, lr=args.lr,
        warmup=min(30, args.steps // 5), checkpoint_dir=str(folder), checkpoint_every=max(10, args.steps // 6),
        resume=(folder / CHECKPOINT_STATE).is_file(), bf16=args.bf16,
    )
    start = time.perf_counter()
    trained = train_predictor(model, train, layer, k, source=source, config=config)
    seconds = time.perf_counter() - start
    scores = evaluate_predictor(model, trained, held, seq_len=args.seq_len)
    getattr(trained, "module", trained).half().save_pretrained(saved)
    result = {"name": name, "source": source, "layer": layer, "k": k, "top1": scores["top1"], "top5": scores["top5"],
              "kl": scores["kl"], "train_seconds": seconds, "resumed": config.resume}
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return result


@torch.no_grad()
def speed_guess(model, held: torch.Tensor, layer: int) -> float:
    """How often layer ``layer``'s own guess of a token's successor (final norm + LM head of its
    state, no trained map) is the model's greedy token: the input guess SPEED's pipeline runs on."""
    hits = total = 0
    for batch in held.split(8):
        teacher, hidden, _, _ = teacher_pass(model, batch, layer)
        guess = model.get_output_embeddings()(model.model.norm(hidden)).argmax(-1)
        hits += int((guess == teacher.argmax(-1)).sum())
        total += guess.numel()
    return hits / total


def main():
    args = parse_args()
    torch.manual_seed(0)
    model, tokenizer, firp = load_demo(args.model, draft="firp")
    train, held = data(args, model, tokenizer)
    print(f"{train.shape[0]} training and {held.shape[0]} held-out sequences of {args.seq_len} tokens")
    results = [train_one(args, model, train, held, name, *setting) for name, setting in settings(args, model, firp).items()]
    bundled = evaluate_predictor(model, firp, held, seq_len=args.seq_len)
    report = {
        "model": args.model,
        "budget": {"steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len, "positions": args.positions,
                   "lr": args.lr, "bf16": args.bf16, "train_sequences": train.shape[0], "held_out_sequences": held.shape[0]},
        "results": results,
        "speed_guess_top1": {layer: speed_guess(model, held, layer) for layer in quarter_layers(model.config.num_hidden_layers)},
        "bundled_firp": {"layer": firp.layer, "k": firp.k, "top1": bundled["top1"], "top5": bundled["top5"], "kl": bundled["kl"]},
        "environment": environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"seeds-train-{args.model}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
