"""Command line: ``python -m specdec train|distill|demo ...``.

``--model`` takes a local Hugging Face folder or a demo name (``smollm2-135m``, ``stdlib-9m``);
nothing is downloaded. Bad input ends in one ``error:`` line and exit status 2 (see
:mod:`specdec.cli_inputs`).
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from .cli_inputs import ACCEPTED_MODELS, check_train_output, checked_device, model_folder, tokenizer_folder
from .demo import DEFAULT_DEMO, DEMOS
from .draft_vocab import DraftVocabulary
from .tree import parse_tree_arg

SOURCES = ("firp", "mask", "exit")
MAPS = ("linear", "mlp", "multi")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m specdec",
        description="FIRP speculative decoding for Hugging Face models (arguments can come from @file, one per line)",
        fromfile_prefix_chars="@",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a draft source (FIRP predictor, mask slots, early exit) for a local checkpoint")
    train.add_argument("--model", required=True, help=f"{ACCEPTED_MODELS} (fetch a Hub model first: hf download OWNER/NAME --local-dir DIR)")
    train.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    train.add_argument("--data", nargs="+", required=True, help="text files, folders or JSONL files")
    train.add_argument("--eval-data", nargs="+", help="held-out text (default: the last 5%% of --data)")
    train.add_argument("--text-field", default="text", help="JSONL field holding the text")
    train.add_argument("--source", choices=SOURCES, default="firp",
                       help="firp: future-state maps at a transfer layer; mask: learned mask slots before layer 0 "
                            "(SPACE on a frozen model); exit: early-exit heads (SPEED's early-layer guess)")
    layers = train.add_mutually_exclusive_group()
    layers.add_argument("--layer", type=int, help="transfer layer (firp, default: L // 4) or exit layer (exit, default: L // 2)")
    layers.add_argument("--layers", help="comma-separated transfer layers to sweep (firp); the best is saved")
    train.add_argument("--k", type=int, default=3, help="future offsets (draft depth)")
    train.add_argument("--map", choices=MAPS, default="linear",
                       help="firp's map: linear (the paper's), mlp (plus a residual MLP per offset), "
                            "multi (plus an earlier layer's output)")
    train.add_argument("--map-width", type=int, help="hidden width of --map mlp (default: the model's hidden size)")
    train.add_argument("--earlier-layer", type=int, help="second input layer of --map multi (default: half the transfer layer; -1: embeddings)")
    train.add_argument("--adapter-rank", type=int, default=0,
                       help="rank of low-rank adapters on the projections of the layers the pseudo rows pass through "
                            "(firp, mask; applied to pseudo rows only; 0: none)")
    train.add_argument("--adapter-layers", help="layers the adapters go on, e.g. 5-9 or 5,7,9 (default: every layer the pseudo rows pass through)")
    train.add_argument("--adapter-lr", type=float, help="learning rate of the adapters and of a richer map's new parameters (default: --lr)")
    train.add_argument("--draft-vocab", type=int, default=0,
                       help="firp: rank pseudo rows over the N most frequent tokens of --data on CPU (FR-Spec; "
                            "real rows keep the whole vocabulary, so output is unchanged; 0: the whole vocabulary)")
    train.add_argument("--steps", type=int, default=300)
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--seq-len", type=int, default=256)
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--loss", choices=("kl", "ce"), default="kl")
    train.add_argument("--positions", default="64", help="positions sampled per sequence, or 'all'")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", required=True, help="directory for the predictor (and checkpoints)")
    train.add_argument("--checkpoint-dir", help="where checkpoints go (default: OUT/checkpoints)")
    train.add_argument("--resume", action="store_true",
                       help="continue from the checkpoints; a run with other settings (steps, batch size, seq len, lr, ...) is refused")
    train.add_argument("--force", action="store_true",
                       help="overwrite a predictor already in --out, and start over existing checkpoints without --resume")
    train.add_argument("--checkpoint-every", type=int, default=100)
    train.add_argument("--bf16", action="store_true", help="bfloat16 autocast of the frozen model's passes (faster on AMX CPUs)")
    train.add_argument("--eval-every", type=int, default=0, help="record held-out accuracy every N steps (checkpoint-dir/curve.jsonl)")
    train.add_argument("--tau-prompts", type=int, default=4, help="held-out prompts decoded to measure tau (0: skip)")
    train.add_argument("--max-new-tokens", type=int, default=64)
    train.add_argument("--tree", type=parse_tree_arg, default="default", help="tree name or node count for tau")
    train.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N, ...")

    distill = commands.add_parser("distill", help="self-distillation data: the model's own responses to a prompt set")
    distill.add_argument("--model", required=True, help=f"{ACCEPTED_MODELS} (fetch a Hub model first: hf download OWNER/NAME --local-dir DIR)")
    distill.add_argument("--prompts", required=True, help="JSONL prompt records (see specdec.distill)")
    distill.add_argument("--out", required=True, help="JSONL file the responses are appended to")
    distill.add_argument("--temperature", type=float, default=0.5, help="sampling temperature (0: greedy)")
    distill.add_argument("--max-new-tokens", type=int, default=256)
    distill.add_argument("--batch-size", type=int, default=8)
    distill.add_argument("--samples", type=int, default=1, help="responses per prompt")
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--resume", action="store_true", help="continue an existing --out file")
    distill.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    distill.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N, ...")

    demo = commands.add_parser("demo", help="plain vs patched generation on a demo model")
    demo.add_argument("--name", choices=DEMOS, default=DEFAULT_DEMO)
    demo.add_argument("--max-new-tokens", type=int, default=None, help="default: per demo")
    return parser


def checked_inputs(args) -> tuple[Path, Path, torch.device]:
    """``(model folder, tokenizer folder, device)`` of ``args``, each checked (one-line errors, no download)."""
    folder = model_folder(args.model)
    tokenizer = tokenizer_folder(args.tokenizer) if getattr(args, "tokenizer", None) else folder
    return folder, tokenizer, checked_device(args.device)


def load_model(folder: Path, tokenizer: Path, device: torch.device, dtype: str):
    """``(model, tokenizer)`` from checked local folders, the model in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype]).to(device).eval()
    return model, AutoTokenizer.from_pretrained(tokenizer)


def run_distill(args) -> None:
    from .distill import distill, read_prompts

    records = read_prompts(args.prompts)
    model, tokenizer = load_model(*checked_inputs(args), args.dtype)
    written = distill(
        model, tokenizer, records, args.out, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, samples=args.samples, seed=args.seed, resume=args.resume,
    )
    print(f"wrote {written} responses to {args.out}")


def run_train(args) -> None:
    from .sweep import best_layer, format_table, measure_tau, sweep_layers
    from .train import TrainConfig, evaluate_predictor, new_source, train_predictor
    from .train_data import as_sequences, read_corpus

    if args.layers and args.source != "firp":
        raise ValueError("--layers sweeps FIRP transfer layers: use --layer with --source exit (mask slots take no layer)")
    if args.source == "mask" and args.layer is not None:
        raise ValueError("mask slots enter before layer 0: --layer does not apply to --source mask")
    if args.draft_vocab < 0:
        raise ValueError(f"--draft-vocab must be >= 0 (0: the whole vocabulary), got {args.draft_vocab}")
    if args.draft_vocab and args.source != "firp":
        raise ValueError("--draft-vocab ranks FIRP's pseudo rows: it does not apply to --source " + args.source)
    source_options = checked_source_options(args)
    out = Path(args.out)
    checkpoints = Path(args.checkpoint_dir) if args.checkpoint_dir else out / "checkpoints"
    check_train_output(out, checkpoints, args.resume, args.force)
    model, tokenizer = load_model(*checked_inputs(args), args.dtype)
    sequences = as_sequences(model, read_corpus(args.data, args.text_field), tokenizer, args.seq_len)
    if args.eval_data:
        held_out = as_sequences(model, read_corpus(args.eval_data, args.text_field), tokenizer, args.seq_len)
    else:
        if sequences.shape[0] < 2:
            raise ValueError("need at least two sequences of --seq-len tokens to hold one out; pass --eval-data")
        cut = max(1, sequences.shape[0] // 20)
        sequences, held_out = sequences[:-cut], sequences[-cut:]
    prompts = [held_out[i : i + 1, :64].to(args.device) for i in range(min(args.tau_prompts, held_out.shape[0]))]
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        adapter_lr=args.adapter_lr,
        loss=args.loss,
        positions=None if args.positions == "all" else int(args.positions),
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        bf16=args.bf16,
        eval_every=args.eval_every,
    )
    print(f"{sequences.shape[0]} training and {held_out.shape[0]} held-out sequences of {args.seq_len} tokens")
    if args.layers:
        layers = [int(x) for x in args.layers.split(",")]
        config.checkpoint_dir = str(checkpoints / "sweep")
        results = sweep_layers(
            model, sequences, held_out, layers, args.k, config=config, prompts=prompts, max_new_tokens=args.max_new_tokens, tree=args.tree
        )
        print(format_table(results))
        best = best_layer(results)
        print(f"best transfer layer: {best.layer}")
        predictor, scores, tau = best.predictor, {"top1": best.top1, "top5": best.top5}, best.tau
        sweep = [{"layer": r.layer, "top1": r.top1, "top5": r.top5, "tau": r.tau} for r in results]
    else:
        config.checkpoint_dir = str(checkpoints)
        predictor = new_source(model, args.source, args.layer, args.k, **source_options)
        predictor = train_predictor(model, sequences, config=config, predictor=predictor, eval_data=held_out)
        scores = evaluate_predictor(model, predictor, held_out, seq_len=args.seq_len)
        tau = measure_tau(model, predictor, prompts, args.max_new_tokens, args.tree) if prompts else None
        sweep = None
    module = getattr(predictor, "module", predictor)
    if args.draft_vocab:
        counts = torch.bincount(sequences.flatten(), minlength=model.config.vocab_size)
        module.draft_vocab = DraftVocabulary.most_frequent(counts, min(args.draft_vocab, counts.numel()))
    predictor.save_pretrained(out)
    saved = module.config_dict()
    report = {"source": args.source, "layer": module.layer, "k": module.k, "map": saved.get("map"), "adapters": saved.get("adapters"),
              **{key: scores[key] for key in ("top1", "top5")}, "tau": tau}
    if sweep:
        report["sweep"] = sweep
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved predictor to {out}: " + json.dumps(report))


def checked_source_options(args) -> dict:
    """:func:`~specdec.train.new_source`'s map and adapter options from ``args``; ``ValueError`` for
    options of another map or source (before anything is loaded)."""
    if args.map != "linear" and args.source != "firp":
        raise ValueError(f"--map is FIRP's: it does not apply to --source {args.source}")
    for flag, value, kind in (("--map-width", args.map_width, "mlp"), ("--earlier-layer", args.earlier_layer, "multi")):
        if value is not None and args.map != kind:
            raise ValueError(f"{flag} is an option of --map {kind}")
    if args.adapter_rank < 0:
        raise ValueError(f"--adapter-rank must be >= 0, got {args.adapter_rank}")
    if args.adapter_rank and args.source == "exit":
        raise ValueError("an early exit's states skip the later layers: adapters do not apply to --source exit")
    if args.adapter_layers is not None and not args.adapter_rank:
        raise ValueError("--adapter-layers needs --adapter-rank >= 1")
    if args.layers and (args.map != "linear" or args.adapter_rank):
        raise ValueError("--layers sweeps linear maps without adapters: train a richer map or adapters at one --layer")
    options = {"map": args.map, "adapter_rank": args.adapter_rank, "adapter_layers": parse_layers(args.adapter_layers)}
    if args.map_width is not None:
        options["width"] = args.map_width
    if args.earlier_layer is not None:
        options["earlier_layer"] = args.earlier_layer
    return options


def parse_layers(text: str | None) -> list[int] | None:
    """``"5-9"``, ``"5,7,9"`` or a mix (``"1,4-6"``) -> the layers, in order; None for None."""
    if text is None:
        return None
    layers = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            layers.extend(range(int(first), int(last) + 1) if dash else [int(first)])
    except ValueError:
        raise ValueError(f"--adapter-layers takes layers like 5-9 or 5,7,9, got {text!r}") from None
    if not layers:
        raise ValueError(f"--adapter-layers names no layer: {text!r}")
    return layers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            run_train(args)
        elif args.command == "distill":
            run_distill(args)
        else:
            from .demo_run import run_demo

            run_demo(args.name, max_new_tokens=args.max_new_tokens)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
