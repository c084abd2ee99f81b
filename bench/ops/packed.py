"""The step's GEMMs on packed and unpacked weights, and what packing costs (CPU).

    python -m bench.ops.packed                 # SmolLM2-135M-shaped random weights, 1-32 rows

Times the 211 GEMMs of one SmolLM2-135M step (30 layers of q, k, v, o, gate, up, down, and the
LM head) with ``F.linear`` on the weights as stored, with oneDNN's linear on packed weights
(:func:`specdec.kernels.packed_linear`, what ``compile="auto"`` runs) and with MKL's own packed
GEMM (``torch.ops.mkl._mkl_linear``, what inductor's freezing picks for static shapes), medians of
9; then the time to pack every weight of the demo model (:class:`specdec.decode.packing.PackedWeights`,
first call) and to check them at a later call. Results: ``bench/results/packed/gemms-{device}.json``.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.common import RESULTS, device_names, environment
from specdec import kernels

D, FFN, KV, VOCAB, LAYERS = 576, 1536, 192, 49152, 30


def weights() -> list[torch.Tensor]:
    shapes = [(D, D), (KV, D), (KV, D), (D, D), (FFN, D), (FFN, D), (D, FFN)] * LAYERS + [(VOCAB, D)]
    return [torch.randn(shape) for shape in shapes]


def median_ms(call, ws, rows: int) -> float:
    x, xf = torch.randn(rows, D), torch.randn(rows, FFN)

    def once():
        start = time.perf_counter()
        for i, w in enumerate(ws):
            call(i, xf if w.shape[1] == FFN else x)
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(9)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--out", type=Path, default=RESULTS / "packed")
    args = parser.parse_args()
    ws = weights()
    onednn = [kernels.pack(w) for w in ws]
    rows = []
    for count in args.rows:
        mkl = [torch.ops.mkl._mkl_reorder_linear_weight(w, count) for w in ws]
        row = {
            "rows": count,
            "linear_ms": median_ms(lambda i, x: F.linear(x, ws[i]), ws, count),
            "onednn_packed_ms": median_ms(lambda i, x: kernels.packed_linear(x, onednn[i]), ws, count),
            "mkl_packed_ms": median_ms(lambda i, x: torch.ops.mkl._mkl_linear(x, mkl[i], ws[i], None, count), ws, count),
        }
        rows.append(row)
        print(f"{count:3d} rows: F.linear {row['linear_ms']:6.1f} ms, oneDNN packed {row['onednn_packed_ms']:6.1f} ms, "
              f"MKL packed {row['mkl_packed_ms']:6.1f} ms", flush=True)

    from specdec import load_demo
    from specdec.decode.loop import ModelParts
    from specdec.decode.packing import PackedWeights

    model, _, predictor = load_demo(draft="firp")
    parts, packs = ModelParts.of(model), PackedWeights()
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        with packs.active(parts.layers, parts.lm_head, predictor.draft_vocab):
            pass
        timings.append(time.perf_counter() - start)
    print(f"packing the demo model's {len(packs)} weights: {timings[0]:.2f} s; checking them at a later call: "
          f"{min(timings[1:]) * 1e3:.1f} ms")
    device_name, device_kind = device_names(torch.device("cpu"))
    path = args.out / f"gemms-{device_kind}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": device_name, **environment(), "rows": rows, "packed_weights": len(packs),
                                "pack_s": timings[0], "check_s": min(timings[1:])}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
