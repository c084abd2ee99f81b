"""FIRP's map variants and pseudo-row adapters at the same training budget, scored on the same text.

    python -m bench.training.train_variants --model smollm2-135m --steps 200
    python -m bench.training.train_variants --model stdlib-9m --steps 600 --variants linear,mlp,adapters16

Each FIRP variant (:data:`VARIANTS`) starts from the bundled predictor's trained linear maps
(``--init shipped``, the default: what the extra capacity adds to the same maps trained further on
the same data) or from the identity maps (``--init scratch``); its new parts start as no-ops
(the MLP's output and the earlier layer's weight at zero, adapters as zero updates), so every
variant starts as the same map. Mask slots always start from scratch. Each is trained with the
same :class:`~specdec.training.train.TrainConfig`
(steps, batch, sequence length, sampled positions, learning rates, seed) on the same data as
:mod:`bench.training.train_seeds` (the standard-library files for ``stdlib-9m``, the self-distilled chat
responses for ``smollm2-135m``), at the bundled predictor's transfer layer and ``k``. Held-out
top-1/top-5 per offset (agreement with the model's greedy token) is recorded every
``--eval-every`` steps (the accuracy-vs-tokens curve) and at the end, with the training seconds
per step. Trained variants are saved in fp16 under ``bench/variants/{model}/{name}`` (not in git:
35 MB for SmolLM2's six; ``bench.e2e --variants`` decodes with them), checkpoints under
``--work``; a finished variant is not trained again. Results (every variant's scores and curve):
``bench/results/variants-train-{model}.json`` and ``.png``.

``--code-sequences N`` adds N sequences of standard-library code (training files only, disjoint from
the held-out ones; files in a fixed shuffled order) to SmolLM2's chat data, and ``--extra-data``
more distillation files (e.g. other samples of the same prompts, ``specdec distill --seed S``):
what more data, and data like the held-out code half, does. Such runs are named
``{model}-code{N}`` / ``{model}-extra{M}`` (M: the extra sequences) in variants and results.
For SmolLM2 the report also scores every FIRP variant, as saved, and the shipped predictor on each
half of the held-out set (chat, code).
"""

import argparse
import json
import os
import random
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402
import torch  # noqa: E402

from bench.common import RESULTS, cpu_model, environment  # noqa: E402
from bench.training.train_seeds import data  # noqa: E402
from specdec import FuturePredictor, load_demo  # noqa: E402
from specdec.training.corpus import read_texts, stdlib_files  # noqa: E402
from specdec.training.train import CHECKPOINT_STATE, TrainConfig, evaluate_predictor, new_source, read_curve, train_predictor  # noqa: E402
from specdec.training.data import pack_texts, read_corpus  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

VARIANTS_DIR = Path(__file__).resolve().parents[1] / "variants"
# name -> (source, new_source options); ``{layer}`` in a layer option is the transfer layer.
VARIANTS = {
    "linear": ("firp", {}),
    "mlp": ("firp", {"map": "mlp"}),
    "multi": ("firp", {"map": "multi", "earlier_layer": "half"}),
    "adapters16": ("firp", {"adapter_rank": 16}),
    "mlp+adapters16": ("firp", {"map": "mlp", "adapter_rank": 16}),
    "mask+adapters16": ("mask", {"adapter_rank": 16}),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("stdlib-9m", "smollm2-135m"), default="smollm2-135m")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {', '.join(VARIANTS)}")
    p.add_argument("--work", type=Path, default=Path("runs/variants"))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--positions", default="all", help="positions sampled per sequence, or 'all'")
    p.add_argument("--init", choices=("shipped", "scratch"), default="shipped", help="FIRP variants' linear maps")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--adapter-lr", type=float, default=1e-3, help="learning rate of the parameters the linear map lacks")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--eval-sequences", type=int, default=24)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--code-sequences", type=int, default=0, help="stdlib training-code sequences added to the data")
    p.add_argument("--extra-data", nargs="*", type=Path, default=[], help="more distillation JSONL files added to the data")
    args = p.parse_args()
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    return args


def build(model, name: str, bundled, init: str):
    """Variant ``name`` at the bundled predictor's transfer layer and ``k`` (the earlier layer of
    ``multi``: half of it), its linear maps copied from ``bundled`` when ``init`` is ``"shipped"``."""
    source, options = VARIANTS[name]
    layer = bundled.layer
    options = {key: (layer // 2 if value == "half" else value) for key, value in options.items()}
    variant = new_source(model, source, None if source == "mask" else layer, bundled.k, **options)
    if source == "firp" and init == "shipped":
        with torch.no_grad():
            for param in bundled.BASE_PARAMETERS:
                getattr(variant, param).copy_(getattr(bundled, param))
    return variant


def run_name(args) -> str:
    """The model's name, with the added data if any (variants, checkpoints and results)."""
    code = f"-code{args.code_sequences}" if args.code_sequences else ""
    extra = f"-extra{args.extra_sequences}" if args.extra_sequences else ""
    return args.model + code + extra


def stdlib_code(tokenizer, model, count: int, seq_len: int) -> torch.Tensor:
    """``[count, seq_len]`` int64: training-split stdlib files, in a fixed shuffled order, packed."""
    files = stdlib_files("train")
    random.Random(0).shuffle(files)
    texts, chars = [], 0
    for text in read_texts(files):  # about 3 characters a token: read what ``count`` sequences need, and some
        texts.append(text)
        chars += len(text)
        if chars > 4 * count * seq_len:
            break
    packed = pack_texts(texts, tokenizer, seq_len, model.config)
    if packed.shape[0] < count:
        raise ValueError(f"the stdlib training files give {packed.shape[0]} sequences, fewer than {count}")
    return packed[:count]


def train_one(args, model, train, held, name: str, bundled) -> dict:
    saved = VARIANTS_DIR / run_name(args) / name
    result_file = saved / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    folder = args.work / run_name(args) / name
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, positions=args.positions, lr=args.lr,
        adapter_lr=args.adapter_lr, warmup=min(30, args.steps // 5), checkpoint_dir=str(folder),
        checkpoint_every=max(10, args.steps // 6), resume=(folder / CHECKPOINT_STATE).is_file(), bf16=args.bf16,
        eval_every=args.eval_every,
    )
    done = torch.load(folder / CHECKPOINT_STATE, weights_only=False)["step"] if config.resume else 0
    start = time.perf_counter()
    trained = train_predictor(model, train, predictor=build(model, name, bundled, args.init), config=config, eval_data=held)
    seconds = time.perf_counter() - start
    scores = evaluate_predictor(model, trained, held, seq_len=args.seq_len)
    getattr(trained, "module", trained).half().save_pretrained(saved)
    result = {"name": name, "top1": scores["top1"], "top5": scores["top5"], "kl": scores["kl"],
              "seconds_per_step": seconds / max(1, args.steps - done), "resumed_at": done,
              "curve": read_curve(folder), "parameters": sum(p.numel() for p in getattr(trained, "module", trained).parameters())}
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: value for key, value in result.items() if key != "curve"}), flush=True)
    return result


def halves(model, predictor, held: torch.Tensor, seq_len: int) -> dict[str, list[float]]:
    """Top-1 per offset on each half of SmolLM2's held-out set (chat answers first, then code)."""
    half = held.shape[0] // 2
    return {part: evaluate_predictor(model, predictor, rows, seq_len=seq_len)["top1"] for part, rows in (("chat", held[:half]), ("code", held[half:]))}


def add_halves(args, model, held, result: dict) -> None:
    """Score a saved FIRP variant (fp16, as saved) on each half, once; kept in its ``result.json``."""
    saved = VARIANTS_DIR / run_name(args) / result["name"]
    if "halves" in result or json.loads((saved / "predictor_config.json").read_text()).get("source", "firp") != "firp":
        return
    result["halves"] = halves(model, FuturePredictor.from_pretrained(saved, dtype=torch.float32), held, args.seq_len)
    (saved / "result.json").write_text(json.dumps(result, indent=2) + "\n")


def plot(results: list[dict], path: Path, title: str) -> None:
    """Held-out top-1 at offsets 1 and 2 against training tokens, one line per variant."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharex=True)
    for offset, ax in enumerate(axes):
        for result in results:
            points = [(entry["tokens"], entry["top1"][offset]) for entry in result["curve"]]
            if points:
                ax.plot(*zip(*points), marker="o", ms=3, label=result["name"])
        ax.set_title(f"offset {offset + 1}: held-out top-1", fontsize=10)
        ax.set_xlabel("training tokens (teacher passes)")
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    args = parse_args()
    torch.manual_seed(0)
    model, tokenizer, bundled = load_demo(args.model, draft="firp")
    train, held = data(args, model, tokenizer)
    if args.code_sequences:
        train = torch.cat([train, stdlib_code(tokenizer, model, args.code_sequences, args.seq_len)])
    args.extra_sequences = 0
    if args.extra_data:
        extra = pack_texts(read_corpus(args.extra_data), tokenizer, args.seq_len, model.config)
        args.extra_sequences = extra.shape[0]
        train = torch.cat([train, extra])
    print(f"{train.shape[0]} training and {held.shape[0]} held-out sequences of {args.seq_len} tokens")
    args.positions = None if args.positions == "all" else int(args.positions)
    results = [train_one(args, model, train, held, name, bundled) for name in args.variants.split(",")]
    shipped = evaluate_predictor(model, bundled, held, seq_len=args.seq_len)
    if args.model == "smollm2-135m":
        shipped["halves"] = halves(model, bundled, held, args.seq_len)
        for result in results:
            add_halves(args, model, held, result)
    report = {
        "model": args.model, "layer": bundled.layer, "k": bundled.k, "cpu": cpu_model(), "init": args.init,
        "code_sequences": args.code_sequences, "extra_data": [str(path) for path in args.extra_data],
        "extra_sequences": args.extra_sequences,
        "budget": {"steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len, "positions": args.positions,
                   "lr": args.lr, "adapter_lr": args.adapter_lr, "bf16": args.bf16, "train_sequences": train.shape[0],
                   "held_out_sequences": held.shape[0]},
        "results": results,
        "shipped_predictor": {key: shipped[key] for key in ("top1", "top5", "kl", "halves") if key in shipped},
        "environment": environment(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"variants-train-{run_name(args)}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(results, out.with_suffix(".png"),
         f"{run_name(args)}: FIRP map variants and adapters from the {args.init} maps, {args.steps} steps of "
         f"{args.batch_size} x {args.seq_len} tokens ({args.positions or 'all'} positions), layer {bundled.layer}, k={bundled.k}")
    print(f"wrote {out} and .png")


if __name__ == "__main__":
    main()
