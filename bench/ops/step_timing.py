"""One speculative step against one plain decoding step, by tree size (``python -m bench.e2e --step-timing``).

A speculative step emits tau tokens on average, so the wall-clock speedup can
never exceed ``tau * plain_step / speculative_step``; this measures that ratio.
The speculative step here is what the decode loop does per step: the forward
pass over root, drafts and pseudo rows, the fused argmax, the accept walk and
the one host read. It is timed on the weights as stored (``eager``) and, where
:mod:`specdec.decode.packing` applies (CPU), on oneDNN-packed weights (``packed``),
interleaved; the plain step is Hugging Face's own (eager). The weight-read floor
is the weights' bytes over the read bandwidth measured in the same run (a sum
over a 1 GiB tensor on CPU, a device-to-device copy on a GPU).
"""

import json
import statistics
import time

import matplotlib
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from bench.common import write_csv
from specdec import DraftSource, FIRPDrafts, FuturePredictor, kernels, load_demo, patch, unpatch
from specdec.decode.cache import TreeKVCache
from specdec.decode.loop import ModelParts, forward_step, prefill
from specdec.decode.packing import PackedWeights, PlainWeights
from specdec.demo import DEMOS
from specdec.training.train import cache_kwarg
from specdec.decode.tree import StepLayout, TreeShape, best_paths

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TREE_SIZES = (0, 1, 2, 4, 8, 16, 32, 64)
LLAMA_2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32)


def build(shape: str, device: str, dtype: torch.dtype):
    """``(model, predictor)``: a demo model, or a Llama-2-7B-shaped model with random weights and an identity predictor."""
    if shape in DEMOS:
        model, _, predictor = load_demo(shape, dtype=dtype, device=device, draft="firp")
        return model, predictor
    if shape != "llama-2-7b":
        raise SystemExit(f"unknown --shape {shape!r}: one of {DEMOS} or llama-2-7b")
    with torch.device(device):
        model = LlamaForCausalLM._from_config(LlamaConfig(**LLAMA_2_7B), dtype=dtype).eval()
    return model, FuturePredictor.for_model(model, layer=8, k=3)


def median_ms(fn, device: torch.device, repeats: int = 30) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


@torch.inference_mode()
def run_step_timing(args, meta: dict, device_kind: str) -> None:
    dtype = getattr(torch, args.dtype)
    model, predictor = build(args.shape, args.device, dtype)
    device = next(model.parameters()).device
    ids = torch.randint(0, model.config.vocab_size, (1, args.prefix + 1), device=device)

    cache = DynamicCache()
    model(ids[:, :-1], use_cache=True, **{cache_kwarg(model): cache})

    def plain_step():
        model(ids[:, -1:], use_cache=True, **{cache_kwarg(model): cache})
        cache.crop(-1)  # drop the token just added (negative: works on every transformers 5.x)

    plain_ms = median_ms(plain_step, device)
    patch(model, predictor, tree="chain", backend=args.backend)
    parts, firp = ModelParts.of(model), FIRPDrafts(predictor).prepared(model, args.backend)
    tree_cache = TreeKVCache(len(parts.layers), args.prefix + 8 * 65)
    prefill(parts, tree_cache, ids[0, :-1], args.backend)
    packed = PackedWeights().for_step(parts.layers, parts.lm_head)
    kinds = {"eager": PlainWeights()} | ({"packed": packed} if packed.name == "packed" else {})
    floor_ms = weight_read_ms(model, device)
    rows = []
    plain_source = DraftSource()  # no pseudo rows: the package's own one-row step
    for source, nodes in [(plain_source, 0)] + [(firp, nodes) for nodes in TREE_SIZES]:
        shape = TreeShape.resolve(best_paths(nodes, source.k), source.k) if nodes else TreeShape(())
        layout = StepLayout.build(shape, source.k, device)
        drafts = torch.randint(0, model.config.vocab_size, (nodes,), device=device)

        def spec_step():
            hidden, _ = forward_step(parts, source, layout, tree_cache, ids[0, -1:], drafts, args.prefix, args.backend)
            greedy = kernels.lm_head_argmax(hidden[: layout.num_real], parts.lm_head, backend=args.backend)[0]
            path, count = kernels.accept_walk(greedy, drafts, layout.node_parents, layout.depth, backend=args.backend)
            torch.cat([count.view(1), greedy[path.clamp(min=0)]]).tolist()
            tree_cache.lengths = [args.prefix] * len(parts.layers)

        row = {"tree_nodes": nodes, "pseudo_rows": layout.num_pseudo, "step_rows": layout.num_rows, "plain_ms": plain_ms, "weight_read_ms": floor_ms}
        samples = {name: [] for name in kinds}
        for _ in range(3):  # interleaved rounds: drift on a shared machine hits both kinds alike
            for name, weights in kinds.items():
                with weights.active(parts.layers, parts.lm_head):
                    samples[name].append(median_ms(spec_step, device, repeats=10))
        for name in kinds:
            row[f"{name}_ms"] = statistics.median(samples[name])
            row[f"{name}_ratio"] = row[f"{name}_ms"] / plain_ms
        rows.append(row)
        print(
            f"tree {nodes:3d} nodes ({layout.num_rows:3d} rows): "
            + ", ".join(f"{name} {row[f'{name}_ms']:8.2f} ms = {row[f'{name}_ratio']:5.2f} x" for name in kinds)
            + f" the plain step {plain_ms:.2f} ms (weight read {floor_ms:.2f} ms)"
        )
    unpatch(model)
    stem = args.out / f"e2e-steps-{args.shape}-{device_kind}"
    write_csv(stem.with_suffix(".csv"), rows)
    stem.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    plot(rows, stem.with_suffix(".png"), f"{args.shape}, prefix {args.prefix}, {args.dtype}, {meta['device']}")
    print(f"wrote {stem}.csv, .json, .png")


def weight_read_ms(model, device: torch.device) -> float:
    """Milliseconds to read the model's weights once at the bandwidth measured now."""
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    if device.type == "cuda":
        buf = torch.empty(2**28, dtype=torch.uint8, device=device)
        seconds = median_ms(lambda: buf.clone(), device) / 1e3 / 2  # a copy reads and writes
    else:
        buf = torch.ones(2**28, dtype=torch.float32)
        seconds = min(median_ms(lambda: buf.sum(), device, repeats=5) for _ in range(2)) / 1e3
    return weight_bytes / (buf.numel() * buf.element_size() / seconds) * 1e3


def plot(rows: list[dict], path, title: str) -> None:
    curves = {f"speculative step, {name} weights": [r[f"{name}_ms"] for r in rows] for name in ("eager", "packed") if f"{name}_ms" in rows[0]}
    plot_curves([r["step_rows"] for r in rows], curves, rows[0]["plain_ms"], rows[0]["weight_read_ms"],
                "rows per step (root, draft nodes, pseudo rows)", path, title)


def plot_curves(counts: list[int], curves: dict[str, list[float]], plain_ms: float, floor_ms: float, xlabel: str, path, title: str) -> None:
    """Milliseconds per step against rows per step (log 2), one line per ``curves`` label, with
    Hugging Face's plain step and the weight-read floor as horizontal lines."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in curves.items():
        ax.plot(counts, values, marker="o", label=label)
    ax.axhline(plain_ms, color="tab:red", lw=1, ls="--", label="Hugging Face plain step (1 row)")
    ax.axhline(floor_ms, color="grey", lw=1, ls=":", label="weight-read floor")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ms per step")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
