"""The step by row count: Hugging Face's plain step, and specdec's step eager, packed and compiled.

    python -m bench.ops.compiled_step --out bench/results/compiled           # SmolLM2, prefix 512
    python -m bench.ops.compiled_step --model stdlib-9m --out bench/results/compiled
    python -m bench.ops.compiled_step --model llama-2-7b --device cuda --dtype bfloat16   # make gpu-check

Each specdec step is what the decode loop runs per step for a source without pseudo rows (root and
a chain of draft nodes): the forward pass, the LM-head argmax, the accept walk and the one host
read, through the loop's step interface: ``EagerStep`` on the weights as stored (``eager``), the
same on oneDNN-packed weights (``packed``, CPU, ``compile="auto"``) and the compiled program of
``specdec.decode.graphs`` (``compiled``, ``compile=True``, whose LM head is packed on a CPU as
``patch()`` packs it). Timings are medians, interleaved by row
count. The compiled program's making and first step are timed as the cold compile (this process
starts from empty inductor and specdec caches in fresh temporary folders; on a CPU: the export and
the AOTInductor build of the package); a second process that finds the package is then timed from
the model's load to its first compiled step (``warm``; CPU only: load the model, hash its weights,
load the package, prefill, one step). The weight-read
floor is the weights' bytes over the read bandwidth measured in the same run. ``llama-2-7b`` is a
model of that shape with random weights (on a GPU: the compiled step runs as CUDA graphs).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import DynamicCache

from bench.common import RESULTS, device_names, environment, write_csv
from bench.ops.step_timing import build, median_ms, plot_curves, weight_read_ms
from specdec import DraftSource, kernels
from specdec.decode.attention import ensure_wrapped
from specdec.decode.graphs import CompiledStep
from specdec.decode.loop import EagerStep, ModelParts
from specdec.decode.packages import cache_dir
from specdec.decode.packing import PackedWeights, PlainWeights
from specdec.decode.tree import StepLayout
from specdec.demo import DEMOS
from specdec.training.train import cache_kwarg

ROWS = (1, 2, 4, 8, 16, 32)


def step_fn(step, parts: ModelParts, tokens: torch.Tensor, prefix: int, rows: int, device):
    """One decoding step of ``rows`` rows (a chain) through ``step``: forward, argmax, walk, one host read."""
    layout = StepLayout.of(tuple(range(rows - 1)), (), 0, device)
    root, nodes = tokens[prefix : prefix + 1], tokens[prefix + 1 : prefix + rows]
    source = DraftSource()

    def run():
        hidden, _ = step.forward(source, layout, root, nodes, prefix)
        greedy = kernels.lm_head_argmax(hidden, parts.lm_head)[0]
        path, count = kernels.accept_walk(greedy, nodes, layout.node_parents, layout.depth)
        torch.cat([count.view(1), greedy[path.clamp(min=0)]]).tolist()
        step.truncate(prefix)

    return run


def loaded(model_name: str, device: str = "cpu", dtype: torch.dtype = torch.float32):
    """``(model, parts)``: a demo model (or ``llama-2-7b``, random weights) with specdec's attention
    wrapped in, as ``patch()`` leaves it."""
    model, _ = build(model_name, device, dtype)
    parts = ModelParts.of(model)
    ensure_wrapped(model, parts.layers)
    return model, parts


def first_compiled_step(model_name: str, prefix: int) -> dict:
    """Seconds from loading ``model_name`` to the end of its first compiled step (what a fresh process
    pays), and of that the making of the program (hashing the weights and loading the package)."""
    start = time.perf_counter()
    model, parts = loaded(model_name)
    tokens = torch.randint(model.config.vocab_size, (prefix + 2,))
    with torch.inference_mode():
        opened = time.perf_counter()
        step = CompiledStep().open(parts, "auto", prefix + 64)
        program = time.perf_counter() - opened
        step.prefill(tokens[:prefix])
        step_fn(step, parts, tokens, prefix, 2, tokens.device)()
    return {"first_compiled_step_s": time.perf_counter() - start, "program_s": program}


@torch.inference_mode()
def measure(args) -> dict:
    model, parts = loaded(args.model, args.device, getattr(torch, args.dtype))
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    tokens = torch.randint(vocab, (args.prefix + max(args.rows),), generator=torch.Generator().manual_seed(0)).to(device)

    cache = DynamicCache()
    model(tokens[None, : args.prefix], use_cache=True, **{cache_kwarg(model): cache})

    def plain_step():
        model(tokens[None, args.prefix : args.prefix + 1], use_cache=True, **{cache_kwarg(model): cache})
        cache.crop(-1)

    capacity = args.prefix + max(args.rows) + 64
    compiled = CompiledStep()
    plain, source = PlainWeights(), DraftSource()
    packed = PackedWeights().for_step(parts.layers, parts.lm_head)  # PlainWeights where packing does not apply
    # name -> (step, weights, modules the weights take over): what patch() runs for each compile setting;
    # compile=True packs the LM head (and a draft source's networks) as "auto" does, the layers are the program's.
    kinds = {"eager": (EagerStep.open(parts, "auto", capacity), plain, EagerStep.networks(parts, source))}
    if packed.name == "packed":
        kinds["packed"] = (EagerStep.open(parts, "auto", capacity), packed, EagerStep.networks(parts, source))
    heads = PackedWeights().for_step(parts.layers, parts.lm_head)  # its own packs: switching kinds repacks nothing
    start = time.perf_counter()  # cold: the program is made (on a CPU: exported and built) as the step opens
    kinds["compiled"] = (compiled.open(parts, "auto", capacity), heads, CompiledStep.networks(parts, source))
    for step, weights, networks in kinds.values():
        with weights.active(networks, parts.lm_head):
            step.prefill(tokens[: args.prefix])
    with heads.active(kinds["compiled"][2], parts.lm_head):
        step_fn(kinds["compiled"][0], parts, tokens, args.prefix, 2, device)()
    cold = time.perf_counter() - start
    print(f"cold compile (first compiled step): {cold:.1f} s", flush=True)

    floor = weight_read_ms(model, device)
    samples = {(name, rows): [] for name in ("hf_plain", *kinds) for rows in args.rows}
    for _ in range(args.rounds):  # interleaved: drift on a shared machine hits every kind alike
        for rows in args.rows:
            samples[("hf_plain", rows)].append(median_ms(plain_step, device, repeats=5))
            for name, (step, weights, networks) in kinds.items():
                with weights.active(networks, parts.lm_head):
                    samples[(name, rows)].append(median_ms(step_fn(step, parts, tokens, args.prefix, rows, device), device, repeats=5))
    table = []
    for rows in args.rows:
        row = {"rows": rows, "weight_read_ms": floor}
        for name in ("hf_plain", *kinds):
            row[f"{name}_ms"] = statistics.median(samples[(name, rows)])
        table.append(row)
        print("  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()), flush=True)
    built = list((cache_dir() / "steps").glob("*.pt2"))
    graphs = getattr(compiled._programs.get((device.type, ())), "seen", None)  # CUDA: the row counts recorded as graphs
    return {"cold_compile_s": cold, "packages": len(built), "package_mb": sum(p.stat().st_size for p in built) / 2**20,
            "cuda_graphs": sorted(graphs) if graphs is not None else None, "rows": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=(*DEMOS, "llama-2-7b"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--prefix", type=int, default=512, help="cached prefix length")
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--first-step", action="store_true", help=argparse.SUPPRESS)  # the warm process
    parser.add_argument("--out", type=Path, default=RESULTS / "compiled")
    args = parser.parse_args()
    if args.first_step:
        print(json.dumps(first_compiled_step(args.model, args.prefix)))
        return
    folder = tempfile.mkdtemp(prefix="specdec-cold-")  # cold: nothing compiled before this run
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.join(folder, "inductor")
    os.environ["SPECDEC_CACHE_DIR"] = os.path.join(folder, "specdec")
    result = measure(args)
    device = torch.device(args.device)
    if device.type == "cpu":
        warm = warm_process(args)
        result["warm_process_first_step_s"], result["warm_process_program_s"] = warm["first_compiled_step_s"], warm["program_s"]
        print(f"a second process, package on disk: {warm['first_compiled_step_s']:.1f} s from load to its first compiled step "
              f"({warm['program_s']:.1f} s of it hashing the weights and loading the package)")
    name, slug = device_names(device)
    meta = {"device": name, **environment(), "model": args.model, "dtype": args.dtype, "prefix": args.prefix, "command": " ".join(sys.argv)}
    stem = args.out / f"step-rows-{args.model}-{args.dtype}-{slug}"
    write_csv(stem.with_suffix(".csv"), result["rows"])
    stem.with_suffix(".json").write_text(json.dumps({**meta, **result}, indent=2) + "\n")
    plot(result["rows"], stem.with_suffix(".png"), f"{args.model}, prefix {args.prefix}, {args.dtype}, {name}, {meta['threads']} threads")
    print(f"wrote {stem}.csv, .json, .png")


def warm_process(args) -> dict:
    """What a second process (this run's caches filled, inherited through the environment) takes from load to its
    first compiled step (:func:`first_compiled_step`)."""
    warm = subprocess.run(
        [sys.executable, "-m", "bench.ops.compiled_step", "--model", args.model, "--prefix", str(args.prefix), "--first-step"],
        capture_output=True, text=True, check=True,
    )
    return json.loads(warm.stdout.strip().splitlines()[-1])


def plot(rows: list[dict], path: Path, title: str) -> None:
    labels = {"eager": "specdec step, weights as stored", "packed": "specdec step, packed weights (compile='auto')",
              "compiled": "specdec step, compiled (compile=True)"}
    curves = {label: [r[f"{name}_ms"] for r in rows] for name, label in labels.items() if f"{name}_ms" in rows[0]}
    plot_curves([r["rows"] for r in rows], curves, rows[0]["hf_plain_ms"], rows[0]["weight_read_ms"],
                "rows per step (root and draft nodes)", path, title)


if __name__ == "__main__":
    main()
