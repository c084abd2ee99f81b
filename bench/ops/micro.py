"""Kernel microbenchmark: each Triton op against the PyTorch code a model would run instead.

    python -m bench.ops                      # GPU: decode shapes of 7-8B models, bf16
    python -m bench.ops                      # CPU: tiny smoke shapes, reference ops only
    python -m bench.ops --triton-interpret   # CPU: also the Triton path, interpreted
    python -m bench.ops --ops tree_attention lm_head_argmax

On a GPU every case is timed with ``triton.testing.do_bench`` (p20/p50/p80) and
related to the bytes the op must move and to the device-to-device copy bandwidth
measured in the same run. On CPU the figures come from ``time.perf_counter`` and
only smoke-test the code paths: they are not kernel figures. Results go to
``bench/results/kernels-<device>.{csv,json,png}``.
"""

import sys

if __name__ == "__main__" and not __package__:
    sys.exit("run this benchmark as `python -m bench.ops` from the repository root (it imports bench.common)")

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

if "--triton-interpret" in sys.argv[1:] and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # read when specdec.kernels is imported, just below

import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import triton.testing  # noqa: E402

from bench.common import RESULTS, device_names, environment, write_csv  # noqa: E402
from specdec import kernels  # noqa: E402
from specdec.kernels import reference  # noqa: E402
from specdec.decode.tree import StepLayout, TreeShape, best_paths  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CUDA = torch.cuda.is_available()
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
K = 3  # future offsets (pseudo rows per real row)
OPS = ("project_future", "tree_attention", "lm_head_argmax", "lm_head_topk", "lm_head_sample", "accept_walk")
CPU_NOTE = "CPU figures (perf_counter, smoke shapes) are not kernel figures; run on a GPU for those"


class Model(NamedTuple):
    d: int
    q_heads: int
    kv_heads: int
    head_dim: int
    vocab: int


GPU_MODELS = {
    "llama2-7b": Model(4096, 32, 32, 128, 32000),
    "llama3-8b": Model(4096, 32, 8, 128, 128256),
    "qwen2.5-7b": Model(3584, 28, 4, 128, 152064),
}
GPU_ROWS, GPU_PREFIXES = (1, 16, 64, 128), (512, 2048, 8192)
CPU_MODELS = {"tiny": Model(256, 4, 2, 64, 2048)}
CPU_ROWS, CPU_PREFIXES = (1, 16), (64, 256)


class Case(NamedTuple):
    """One op at one shape; the ``impls`` closures read the generator's loop variables, so run them first."""

    op: str
    model: str
    label: str
    nbytes: int  # bytes the op must move: weights, activations, KV read, outputs
    impls: dict[str, Callable[[], object]]


def tree_layout(real_rows: int, device: torch.device) -> StepLayout:
    """The step layout of a tree with ``real_rows - 1`` nodes (the most likely paths) and K pseudo rows per row."""
    shape = TreeShape.resolve(best_paths(real_rows - 1, K), K) if real_rows > 1 else TreeShape(())
    return StepLayout.build(shape, K, device)


def projection_cases(models, rows, device, dtype):
    """``project_future`` of ``R`` real rows into K pseudo rows each, against K ``F.linear`` calls and a stack."""
    for name, m in models.items():
        weight = torch.randn(K, m.d, m.d, device=device, dtype=dtype) * m.d**-0.5
        bias = torch.randn(K, m.d, device=device, dtype=dtype)
        for r in rows:
            hidden = torch.randn(r, m.d, device=device, dtype=dtype)
            size = hidden.element_size()
            yield Case(
                "project_future",
                name,
                f"R={r}",
                size * (K * m.d * m.d + K * m.d + r * m.d + r * K * m.d),
                {
                    "triton": lambda: kernels.project_future(hidden, weight, bias, backend="triton"),
                    "reference": lambda: kernels.project_future(hidden, weight, bias, backend="torch"),
                    # One nn.Linear per offset, as a model holding k linear layers would run them.
                    "pytorch": lambda: torch.stack([F.linear(hidden, weight[i], bias[i]) for i in range(K)], 1).view(
                        -1, m.d
                    ),
                },
            )


def attention_cases(models, rows, prefixes, device, dtype):
    """``tree_attention`` of R real rows (S = R) and of real plus pseudo rows (S = R (1 + K)) over a prefix,
    against SDPA with a dense boolean mask over prefix + step."""
    for name, m in models.items():
        scale = m.head_dim**-0.5
        for r in rows:
            layout = tree_layout(r, device)
            for steps, bits in ((r, layout.real_bits), (r * (1 + K), layout.full_bits)):
                for prefix in prefixes:
                    # q as transformers passes it: a [B, H, S, D] view of a [B, S, H, D] tensor.
                    q = torch.randn(1, steps, m.q_heads, m.head_dim, device=device, dtype=dtype).transpose(1, 2)
                    k = torch.randn(1, m.kv_heads, prefix + steps, m.head_dim, device=device, dtype=dtype)
                    v = torch.randn_like(k)
                    mask = reference.step_visibility(steps, prefix, bits, None, None, device)  # built once per step
                    gqa = m.q_heads != m.kv_heads
                    size = q.element_size()
                    yield Case(
                        "tree_attention",
                        name,
                        f"R={r} S={steps} P={prefix}",
                        size * (2 * q.numel() + k.numel() + v.numel()) + bits.numel() * 4,
                        {
                            "triton": lambda: kernels.tree_attention(
                                q, k, v, prefix_len=prefix, step_bits=bits, scale=scale, backend="triton"
                            ),
                            "reference": lambda: kernels.tree_attention(
                                q, k, v, prefix_len=prefix, step_bits=bits, scale=scale, backend="torch"
                            ),
                            "pytorch": lambda: F.scaled_dot_product_attention(
                                q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa
                            )
                            .transpose(1, 2)
                            .contiguous(),
                        },
                    )


def lm_head_cases(models, rows, device, dtype):
    """``lm_head_argmax`` of N rows, against the full logits ``hidden @ W.T`` and ``argmax``."""
    for name, m in models.items():
        weight = torch.randn(m.vocab, m.d, device=device, dtype=dtype)
        for r in rows:
            hidden = torch.randn(r, m.d, device=device, dtype=dtype)
            yield Case(
                "lm_head_argmax",
                name,
                f"N={r}",
                hidden.element_size() * (weight.numel() + hidden.numel()) + r * (8 + 4),
                {
                    "triton": lambda: kernels.lm_head_argmax(hidden, weight, backend="triton"),
                    "reference": lambda: kernels.lm_head_argmax(hidden, weight, backend="torch"),
                    "pytorch": lambda: (hidden @ weight.T).argmax(-1),
                },
            )


def topk_cases(models, rows, device, dtype, k: int = 8):
    """``lm_head_topk`` of N rows (k candidates and the log-sum-exp), against full logits, ``topk`` and ``logsumexp``."""
    for name, m in models.items():
        weight = torch.randn(m.vocab, m.d, device=device, dtype=dtype)
        for r in rows:
            hidden = torch.randn(r, m.d, device=device, dtype=dtype)
            yield Case(
                "lm_head_topk",
                name,
                f"N={r} k={k}",
                hidden.element_size() * (weight.numel() + hidden.numel()) + r * k * (8 + 4) + 4 * r,
                {
                    "triton": lambda: kernels.lm_head_topk(hidden, weight, k, backend="triton"),
                    "reference": lambda: kernels.lm_head_topk(hidden, weight, k, backend="torch"),
                    "pytorch": lambda: (lambda logits: (logits.topk(k, dim=-1), logits.float().logsumexp(-1)))(hidden @ weight.T),
                },
            )


def sample_cases(models, rows, device, dtype, top_k: int = 50):
    """``lm_head_sample`` of N rows at temperature 0.7 and top-k, against logits, ``topk``, ``softmax`` and ``multinomial``."""
    for name, m in models.items():
        weight = torch.randn(m.vocab, m.d, device=device, dtype=dtype)
        for r in rows:
            hidden = torch.randn(r, m.d, device=device, dtype=dtype)
            offsets = torch.arange(r, device=device, dtype=torch.int64)
            yield Case(
                "lm_head_sample",
                name,
                f"N={r} T=0.7 top_k={top_k}",
                hidden.element_size() * (weight.numel() + hidden.numel()) + r * 8,
                {
                    "triton": lambda: kernels.lm_head_sample(hidden, weight, 1, offsets, temperature=0.7, top_k=top_k, backend="triton"),
                    "reference": lambda: kernels.lm_head_sample(hidden, weight, 1, offsets, temperature=0.7, top_k=top_k, backend="torch"),
                    "pytorch": lambda: (lambda top: top.indices.gather(-1, torch.multinomial((top.values.float() / 0.7).softmax(-1), 1)))(
                        (hidden @ weight.T).topk(top_k, dim=-1)
                    ),
                },
            )


def accept_cases(rows, device):
    """``accept_walk`` of trees of ``R - 1`` nodes, against the reference walk (on the host: a device sync)."""
    for r in rows:
        if r == 1:
            continue  # no tree, nothing to walk
        layout = tree_layout(r, device)
        nodes, depth = layout.num_real - 1, layout.depth
        # Every draft token equals every greedy id: the walk goes to full depth through the lowest children.
        ids = torch.zeros(nodes + 1, dtype=torch.int64, device=device)
        tokens = torch.zeros(nodes, dtype=torch.int64, device=device)
        parents = layout.node_parents
        yield Case(
            "accept_walk",
            "any",
            f"M={nodes} depth={depth}",
            8 * (3 * nodes + 1 + depth + 2),
            {
                "triton": lambda: kernels.accept_walk(ids, tokens, parents, depth, backend="triton"),
                "pytorch": lambda: reference.accept_walk(ids, tokens, parents, depth),  # the host walk
            },
        )


def measure(fn: Callable[[], object], repeats: int) -> list[float]:
    """p20, p50, p80 of ``fn``'s time in ms: ``do_bench`` on a GPU, ``perf_counter`` on CPU."""
    if CUDA:
        return list(triton.testing.do_bench(fn, quantiles=[0.2, 0.5, 0.8]))
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return [float(x) for x in np.percentile(samples, [20, 50, 80])]


def copy_bandwidth(device: torch.device) -> float:
    """GB/s of a large copy within ``device`` (bytes read + written over the median time)."""
    src = torch.ones((1 << 28) if CUDA else (1 << 23), dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    p50 = measure(lambda: dst.copy_(src), repeats=20)[1]
    return 2 * src.numel() * src.element_size() / (p50 * 1e-3) / 1e9


def run_cases(cases, impls, bandwidth, device_kind):
    """Time every implementation of every case; return one row per case and implementation, and skip notes."""
    rows, skipped = [], {}
    # ``cases`` is a generator whose lambdas close over loop variables: each case is timed before
    # the generator advances, so every lambda still sees its own tensors.
    for number, case in enumerate(cases, 1):
        timings = {}
        for impl in impls:
            fn = case.impls.get(impl.removesuffix("-interpreted"))
            if fn is None:
                continue
            try:
                fn()
            except NotImplementedError as error:
                if (case.op, impl) not in skipped:
                    print(f"  skip {case.op} {impl}: {error}")
                skipped[(case.op, impl)] = str(error)
                continue
            except Exception as error:  # one broken kernel must not cost the other ops' figures
                print(f"  FAILED {case.op} {impl} {case.label}: {type(error).__name__}: {error}")
                skipped[(case.op, impl)] = f"failed: {type(error).__name__}"
                continue
            timings[impl] = measure(fn, repeats=3 if impl == "triton-interpreted" else 20)
        for impl, (p20, p50, p80) in timings.items():
            gbps = case.nbytes / (p50 * 1e-3) / 1e9
            row = {
                "device": device_kind,
                "op": case.op,
                "model": case.model,
                "case": case.label,
                "impl": impl,
                "p20_ms": p20,
                "p50_ms": p50,
                "p80_ms": p80,
                "bytes": case.nbytes,
                "gbps": gbps,
                "frac_copy_bw": gbps / bandwidth,
                "speedup_vs_pytorch": timings["pytorch"][1] / p50 if "pytorch" in timings else float("nan"),
            }
            rows.append(row)
            print(
                f"[{number}] {case.op:15s} {case.model:10s} {case.label:22s} {impl:18s} p50 {p50:9.4f} ms "
                f"{gbps:8.1f} GB/s ({row['frac_copy_bw']:6.1%} of copy) {row['speedup_vs_pytorch']:5.2f}x vs pytorch"
            )
    return rows, [f"{op} {impl}: {why}" for (op, impl), why in skipped.items()]


def plot(rows, path: Path, title: str) -> None:
    """One row of panels per op: p50 time (log scale) and fraction of copy bandwidth, per implementation."""
    ops = [op for op in OPS if any(r["op"] == op for r in rows)]
    most_cases = max(len({(r["model"], r["case"]) for r in rows if r["op"] == op}) for op in ops)
    fig, axes = plt.subplots(len(ops), 2, figsize=(max(18, 0.3 * most_cases), 4.2 * len(ops)), squeeze=False)
    for (ax_time, ax_bw), op in zip(axes, ops):
        op_rows = [r for r in rows if r["op"] == op]
        labels = list(dict.fromkeys(f"{r['model']} {r['case']}" for r in op_rows))
        for impl in dict.fromkeys(r["impl"] for r in op_rows):
            mine = {f"{r['model']} {r['case']}": r for r in op_rows if r["impl"] == impl}
            x = [i for i, label in enumerate(labels) if label in mine]
            picked = [mine[labels[i]] for i in x]
            p50 = np.array([r["p50_ms"] for r in picked])
            spread = [p50 - [r["p20_ms"] for r in picked], [r["p80_ms"] for r in picked] - p50]
            ax_time.errorbar(x, p50, yerr=spread, marker="o", ms=3, lw=1, capsize=2, label=impl)
            ax_bw.plot(x, [r["frac_copy_bw"] for r in picked], marker="o", ms=3, lw=1, label=impl)
        for ax, ylabel in ((ax_time, "p50 ms (bars: p20-p80)"), (ax_bw, "fraction of copy bandwidth")):
            ax.set_title(op)
            ax.set_ylabel(ylabel)
            ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax_time.set_yscale("log")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--triton-interpret", action="store_true", help="without CUDA, also run the Triton path interpreted"
    )
    parser.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS), help="ops to run (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder (default: bench/results)")
    args = parser.parse_args()

    device = torch.device("cuda" if CUDA else "cpu")
    device_name, device_kind = device_names(device)
    if CUDA:
        dtype = torch.bfloat16
        models, real_rows, prefixes = GPU_MODELS, GPU_ROWS, GPU_PREFIXES
        impls = ["triton", "pytorch"]
    else:
        dtype = torch.float32
        models, real_rows, prefixes = CPU_MODELS, CPU_ROWS, CPU_PREFIXES
        torch.set_num_threads(1)  # steadier smoke timings on a shared machine
        impls = ["reference", "pytorch"] + (["triton-interpreted"] if INTERPRETED else [])
        print(f"No CUDA: {CPU_NOTE}.")

    bandwidth = copy_bandwidth(device)
    print(f"{device_name}: copy bandwidth {bandwidth:.1f} GB/s; {dtype}; implementations {impls}")
    builders = {
        "project_future": lambda: projection_cases(models, real_rows, device, dtype),
        "tree_attention": lambda: attention_cases(models, real_rows, prefixes, device, dtype),
        "lm_head_argmax": lambda: lm_head_cases(models, real_rows, device, dtype),
        "lm_head_topk": lambda: topk_cases(models, real_rows, device, dtype),
        "lm_head_sample": lambda: sample_cases(models, real_rows, device, dtype),
        "accept_walk": lambda: accept_cases(real_rows, device),
    }
    rows, skipped = [], []
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"kernels-{device_kind}"
    torch.manual_seed(0)
    with torch.inference_mode():
        for op in args.ops:
            print(f"== {op}")
            op_rows, op_skipped = run_cases(builders[op](), impls, bandwidth, device_kind)
            rows += op_rows
            skipped += op_skipped
            write_csv(stem.with_suffix(".csv"), rows)  # after every op: a time limit keeps what was measured
    meta = {
        "device": device_name,
        "device_kind": device_kind,
        "dtype": str(dtype),
        **environment(),
        "copy_bandwidth_gbps": bandwidth,
        "timing": "triton.testing.do_bench quantiles" if CUDA else "time.perf_counter percentiles",
        "triton_interpreted": INTERPRETED and not CUDA,
        "k": K,
        "models": {name: m._asdict() for name, m in models.items()},
        "real_rows": real_rows,
        "prefixes": prefixes,
        "skipped": skipped,
        "note": "GB/s = bytes the op must move (weights + activations + KV read + outputs) / p50; "
        "frac_copy_bw = GB/s / copy bandwidth; speedup = pytorch p50 / impl p50"
        + ("" if CUDA else f". {CPU_NOTE}"),
    }
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    title = f"specdec kernels on {device_name}, {dtype}" + ("" if CUDA else f"\n{CPU_NOTE}")
    plot(rows, stem.with_suffix(".png"), title)
    print(f"wrote {stem}.csv, .json, .png")


if __name__ == "__main__":
    main()
