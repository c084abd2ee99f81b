"""Command line: ``python -m specdec train|distill|demo ...``.

``--model`` takes a local Hugging Face folder or a demo name (``smollm2-135m``, ``stdlib-9m``);
nothing is downloaded. Bad input ends in one ``error:`` line and exit status 2 (see
:mod:`specdec.cli.inputs`), found before anything is loaded: the arguments that need no model
first, then those that need the model's shape against its ``config.json``, then the corpus files.
"""

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..decode.tree import TreeShape, parse_tree_arg
from ..demo import DEFAULT_DEMO, DEMOS
from ..demo import run as demo_run
from ..drafts.firp.adapters import adapted_layers
from ..drafts.firp.maps import check_earlier_layer, default_earlier_layer
from ..drafts.firp.predictor import check_layer, default_layer
from ..drafts.firp.vocabulary import DraftVocabulary
from ..training.data import check_seq_len
from ..training.train import TrainConfig
from .inputs import (
    ACCEPTED_MODELS,
    Bound,
    check_bounds,
    check_train_output,
    checked_device,
    config_int,
    flag_errors,
    model_config,
    model_folder,
    parse_positions,
    tokenizer_folder,
)

SOURCES = ("firp", "mask", "exit", "head")
MAPS = ("linear", "mlp", "multi")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
TRAIN_BOUNDS = (
    Bound("--k", 1),
    Bound("--steps", 1),
    Bound("--batch-size", 1),
    Bound("--seq-len", 2),
    Bound("--lr", 0, above=True),
    Bound("--adapter-lr", 0, above=True),
    Bound("--layer", 0),
    Bound("--earlier-layer", -1, note=" (-1: the embeddings)"),
    Bound("--map-width", 1),
    Bound("--adapter-rank", 0, note=" (0: no adapters)"),
    Bound("--draft-vocab", 0, note=" (0: the whole vocabulary)"),
    Bound("--checkpoint-every", 1),
    Bound("--eval-every", 0, note=" (0: no curve)"),
    Bound("--tau-prompts", 0, note=" (0: no tau)"),
    Bound("--max-new-tokens", 1),
)
DISTILL_BOUNDS = (Bound("--temperature", 0, note=" (0: greedy)"), Bound("--max-new-tokens", 1), Bound("--batch-size", 1), Bound("--samples", 1))
DEMO_BOUNDS = (Bound("--max-new-tokens", 1),)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m specdec",
        description="FIRP speculative decoding for Hugging Face models (arguments can come from @file, one per line)",
        fromfile_prefix_chars="@",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a draft source (FIRP predictor, mask slots, early exit, token-aware head) for a local checkpoint")
    train.add_argument("--model", required=True, help=f"{ACCEPTED_MODELS} (fetch a Hub model first: hf download OWNER/NAME --local-dir DIR)")
    train.add_argument("--tokenizer", help="tokenizer directory (default: the model directory)")
    train.add_argument("--data", nargs="+", required=True, help="text files, folders or JSONL files")
    train.add_argument("--eval-data", nargs="+", help="held-out text (default: the last 5%% of --data)")
    train.add_argument("--text-field", default="text", help="JSONL field holding the text")
    train.add_argument("--source", choices=SOURCES, default="firp",
                       help="firp: future-state maps at a transfer layer; mask: learned mask slots before layer 0 "
                            "(SPACE on a frozen model); exit: early-exit heads (SPEED's early-layer guess); head: a token-aware draft "
                            "head (EAGLE-style: one small decoder block on the last hidden state and the next token; --k is its depth)")
    layers = train.add_mutually_exclusive_group()
    layers.add_argument("--layer", type=int, help="transfer layer (firp, default: L // 4) or exit layer (exit, default: L // 2)")
    layers.add_argument("--layers", help="transfer layers to sweep (firp), e.g. 2,4,6 or 2-6; the best is saved")
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
    train.add_argument("--tree", type=parse_tree_arg, default="default", help="tree name (chain, default, wide, auto) or node count for tau")
    train.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    train.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N, ...")

    distill = commands.add_parser("distill", help="self-distillation data: the model's own responses to a prompt set")
    distill.add_argument("--model", required=True, help=f"{ACCEPTED_MODELS} (fetch a Hub model first: hf download OWNER/NAME --local-dir DIR)")
    distill.add_argument("--prompts", required=True, help="JSONL prompt records (see specdec.training.distill)")
    distill.add_argument("--out", required=True, help="JSONL file the responses are appended to")
    distill.add_argument("--temperature", type=float, default=0.5, help="sampling temperature (0: greedy)")
    distill.add_argument("--max-new-tokens", type=int, default=256)
    distill.add_argument("--batch-size", type=int, default=8)
    distill.add_argument("--samples", type=int, default=1, help="responses per prompt")
    distill.add_argument("--seed", type=int, default=0)
    distill.add_argument("--resume", action="store_true", help="continue an existing --out file")
    distill.add_argument("--packed", action=argparse.BooleanOptionalAction, default=True,
                         help="on a CPU, run the linear layers on oneDNN-packed weights (faster batches)")
    distill.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    distill.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda, cuda:N, ...")

    demo = commands.add_parser("demo", help="plain vs patched generation on a demo model")
    demo.add_argument("--model", choices=DEMOS, default=DEFAULT_DEMO, help="the demo model")
    demo.add_argument("--name", choices=DEMOS, dest="model", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # --model's old name
    demo.add_argument("--source", choices=demo_run.SOURCES, default="trained",
                      help="trained: the demo's default trained draft source (SmolLM2: the token-aware head; 9M: FIRP), with n-gram "
                           "lookup; firp: its FIRP predictor, with lookup; lookup: n-gram lookup drafts only, nothing trained")
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
    """Check the numbers and read the prompts, then load the model and append its responses to ``--out``."""
    from ..training.distill import distill, read_prompts

    check_bounds(args, DISTILL_BOUNDS)
    records = read_prompts(args.prompts)
    model, tokenizer = load_model(*checked_inputs(args), args.dtype)
    written = distill(
        model, tokenizer, records, args.out, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size, samples=args.samples, seed=args.seed, resume=args.resume, packed=args.packed,
    )
    print(f"wrote {written} responses to {args.out}")


@dataclass
class TrainPlan:
    """What ``train``'s arguments ask for, checked and parsed before anything is loaded."""

    options: dict
    """:func:`~specdec.training.train.new_source`'s map and adapter options."""
    sweep: list[int] | None
    """The ``--layers`` to sweep, or None."""
    config: TrainConfig
    out: Path
    checkpoints: Path


def run_train(args) -> None:
    """Check every argument (those that need the model's shape against its ``config.json``), read the
    corpus, then load the model, train and save."""
    from ..training.data import read_corpus

    plan = train_plan(args)
    folder, tokenizer_dir, device = checked_inputs(args)
    check_model_config(args, plan, model_config(folder))
    texts = read_corpus(args.data, args.text_field)
    held_out_texts = read_corpus(args.eval_data, args.text_field) if args.eval_data else None
    model, tokenizer = load_model(folder, tokenizer_dir, device, args.dtype)
    sequences, held_out = training_sequences(model, tokenizer, texts, held_out_texts, args.seq_len)
    prompts = [held_out[i : i + 1, :64].to(args.device) for i in range(min(args.tau_prompts, held_out.shape[0]))]
    print(f"{sequences.shape[0]} training and {held_out.shape[0]} held-out sequences of {args.seq_len} tokens")
    if args.source == "head":
        train_head_source(args, plan, model, sequences, held_out, prompts)
        return
    predictor, scores, tau, sweep = train_source(args, plan, model, sequences, held_out, prompts)
    module = getattr(predictor, "module", predictor)
    if args.draft_vocab:
        counts = torch.bincount(sequences.flatten(), minlength=model.config.vocab_size)
        module.draft_vocab = DraftVocabulary.most_frequent(counts, min(args.draft_vocab, counts.numel()))
    predictor.save_pretrained(plan.out)
    saved = module.config_dict()
    report = {"source": args.source, "layer": module.layer, "k": module.k, "map": saved.get("map"), "adapters": saved.get("adapters"),
              **{key: scores[key] for key in ("top1", "top5")}, "tau": tau}
    if sweep:
        report["sweep"] = sweep
    (plan.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved predictor to {plan.out}: " + json.dumps(report))


def train_plan(args) -> TrainPlan:
    """``train``'s arguments that need no model, checked (``ValueError`` naming the flag) and parsed."""
    check_bounds(args, TRAIN_BOUNDS)
    if args.layers and args.source != "firp":
        raise ValueError("--layers sweeps FIRP transfer layers: use --layer with --source exit (mask slots take no layer)")
    if args.source == "mask" and args.layer is not None:
        raise ValueError("mask slots enter before layer 0: --layer does not apply to --source mask")
    if args.draft_vocab and args.source not in ("firp", "head"):
        raise ValueError("--draft-vocab ranks FIRP's pseudo rows or the head's drafts: it does not apply to --source " + args.source)
    if args.source == "head":
        given = [flag for flag, value in (("--layer", args.layer is not None), ("--layers", args.layers), ("--map", args.map != "linear"),
                                          ("--adapter-rank", args.adapter_rank), ("--bf16", args.bf16), ("--loss", args.loss != "kl"),
                                          ("--resume", args.resume), ("--positions", args.positions != "64")) if value]
        if given:
            raise ValueError(f"{given[0]} does not apply to --source head (it trains on the model's last hidden states at every position)")
    if args.seq_len < args.k + 2:
        raise ValueError(f"--seq-len {args.seq_len} is too short for --k {args.k}: sequences need at least k + 2 = {args.k + 2} tokens")
    if args.tree != "auto":
        with flag_errors("--tree"):
            TreeShape.resolve(args.tree, args.k)
    options = checked_source_options(args)
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        lr=args.lr,
        adapter_lr=args.adapter_lr,
        loss=args.loss,
        positions=parse_positions(args.positions),
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        bf16=args.bf16,
        eval_every=args.eval_every,
    )
    out = Path(args.out)
    checkpoints = Path(args.checkpoint_dir) if args.checkpoint_dir else out / "checkpoints"
    check_train_output(out, checkpoints, args.resume, args.force)
    return TrainPlan(options, parse_layers(args.layers, "--layers"), config, out, checkpoints)


def check_model_config(args, plan: TrainPlan, config: dict) -> None:
    """``--seq-len`` and the layer arguments against the model's ``config.json`` (the fields it has)."""
    with flag_errors("--seq-len"):
        check_seq_len(args.seq_len, config_int(config, "max_position_embeddings"))
    num_layers = config_int(config, "num_hidden_layers")
    if num_layers is not None:
        check_layers(args, plan, num_layers)


def check_layers(args, plan: TrainPlan, num_layers: int) -> None:
    """``--layers``, ``--layer``, ``--earlier-layer`` and ``--adapter-layers`` against a ``num_layers``-layer model."""
    for layer in plan.sweep or ():
        with flag_errors("--layers"):
            check_layer(layer, num_layers)
    if args.source == "head":
        return
    if args.source == "exit":
        if args.layer is not None:  # the default, L // 2, is one of the model's
            with flag_errors("--layer"):
                check_layer(args.layer, num_layers, "exit layer")
        return
    layer = -1 if args.source == "mask" else default_layer(num_layers) if args.layer is None else args.layer
    if args.source == "firp":
        with flag_errors("--layer"):
            check_layer(layer, num_layers)
    if args.map == "multi":
        with flag_errors("--earlier-layer"):
            check_earlier_layer(default_earlier_layer(layer) if args.earlier_layer is None else args.earlier_layer, layer)
    if args.adapter_rank:
        with flag_errors("--adapter-layers" if args.adapter_layers else "--adapter-rank"):
            adapted_layers(plan.options["adapter_layers"], layer + 1, num_layers)


def training_sequences(model, tokenizer, texts: list[str], held_out_texts: list[str] | None, seq_len: int):
    """``(training, held-out)`` packed sequences: the held-out texts', or the last 5% of the training ones."""
    from ..training.data import as_sequences

    sequences = as_sequences(model, texts, tokenizer, seq_len)
    if held_out_texts is not None:
        return sequences, as_sequences(model, held_out_texts, tokenizer, seq_len)
    if sequences.shape[0] < 2:
        raise ValueError("need at least two sequences of --seq-len tokens to hold one out; pass --eval-data")
    cut = max(1, sequences.shape[0] // 20)
    return sequences[:-cut], sequences[-cut:]


def train_source(args, plan: TrainPlan, model, sequences, held_out, prompts):
    """Train the source (or sweep ``plan.sweep``); ``(predictor, scores, tau, sweep rows or None)``."""
    from ..training.sweep import best_layer, format_table, measure_tau, sweep_layers
    from ..training.train import evaluate_predictor, new_source, train_predictor

    config = plan.config
    if plan.sweep:
        config.checkpoint_dir = str(plan.checkpoints / "sweep")
        results = sweep_layers(
            model, sequences, held_out, plan.sweep, args.k, config=config, prompts=prompts, max_new_tokens=args.max_new_tokens, tree=args.tree
        )
        print(format_table(results))
        best = best_layer(results)
        print(f"best transfer layer: {best.layer}")
        sweep = [{"layer": r.layer, "top1": r.top1, "top5": r.top5, "tau": r.tau} for r in results]
        return best.predictor, {"top1": best.top1, "top5": best.top5}, best.tau, sweep
    config.checkpoint_dir = str(plan.checkpoints)
    predictor = new_source(model, args.source, args.layer, args.k, **plan.options)
    predictor = train_predictor(model, sequences, config=config, predictor=predictor, eval_data=held_out)
    scores = evaluate_predictor(model, predictor, held_out, seq_len=args.seq_len)
    tau = measure_tau(model, predictor, prompts, args.max_new_tokens, args.tree) if prompts else None
    return predictor, scores, tau, None


def train_head_source(args, plan: TrainPlan, model, sequences, held_out, prompts) -> None:
    """``--source head``: the model's states of the text (once, into the checkpoint folder), the head's
    training on them, its held-out top-1 and tau; saves the head and ``training_report.json``."""
    from ..drafts.head.network import TokenHead
    from ..drafts.head.source import HeadDrafts
    from ..training.head import evaluate_head, extract_features, load_shards, train_head
    from ..training.sweep import measure_tau

    def states(rows: torch.Tensor, name: str, dtype=torch.float16):
        key = hashlib.sha1(rows.numpy().tobytes()).hexdigest()[:12]  # other text (or seq len): other shards, never stale ones
        return load_shards(extract_features(model, rows, plan.checkpoints / "features" / f"{name}-{key}"), dtype)

    train, held = states(sequences, "train"), states(held_out, "held-out", model.dtype)
    vocab = None
    if args.draft_vocab:
        counts = torch.bincount(sequences.flatten(), minlength=model.config.vocab_size)
        vocab = DraftVocabulary.most_frequent(counts, min(args.draft_vocab, counts.numel()))
    head = TokenHead.for_model(model, args.k, vocab)
    train_head(model, head, train, plan.config.steps, plan.config.batch_size, plan.config.lr, plan.config.seed, held, plan.config.eval_every)
    scores = evaluate_head(model, head, held)
    tau = measure_tau(model, HeadDrafts(head), prompts, args.max_new_tokens, args.tree) if prompts else None
    head.save_pretrained(plan.out)
    report = {"source": "head", "k": head.depth, "top1": [scores["top1_depth1"], scores["top1_depth2"]], "tau": tau}
    (plan.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"saved the draft head to {plan.out}: " + json.dumps(report))


def checked_source_options(args) -> dict:
    """:func:`~specdec.training.train.new_source`'s map and adapter options from ``args``; ``ValueError`` for
    options of another map or source (before anything is loaded)."""
    if args.map != "linear" and args.source != "firp":
        raise ValueError(f"--map is FIRP's: it does not apply to --source {args.source}")
    for flag, value, kind in (("--map-width", args.map_width, "mlp"), ("--earlier-layer", args.earlier_layer, "multi")):
        if value is not None and args.map != kind:
            raise ValueError(f"{flag} is an option of --map {kind}")
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


def parse_layers(text: str | None, flag: str = "--adapter-layers") -> list[int] | None:
    """``"5-9"``, ``"5,7,9"`` or a mix (``"1,4-6"``) -> the layers, in order; None for None.
    ``ValueError`` naming ``flag`` for anything else, a negative layer or a layer named twice."""
    if text is None:
        return None
    layers = []
    try:
        for part in text.split(","):
            first, dash, last = part.strip().partition("-")
            layers.extend(range(int(first), int(last) + 1) if dash else [int(first)])
    except ValueError:
        raise ValueError(f"{flag} takes layers like 5-9 or 5,7,9 (each >= 0), got {text!r}") from None
    if not layers:
        raise ValueError(f"{flag} names no layer: {text!r}")
    twice = sorted({layer for layer in layers if layers.count(layer) > 1})
    if twice:
        raise ValueError(f"{flag} names layer {twice[0]} more than once: {text!r}")
    return layers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "train":
            run_train(args)
        elif args.command == "distill":
            run_distill(args)
        else:
            check_bounds(args, DEMO_BOUNDS)
            demo_run.run_demo(args.model, max_new_tokens=args.max_new_tokens, source=args.source)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
