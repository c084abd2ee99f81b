"""What ``specdec.warmup()`` costs with ``compile=True``: on a machine that never compiled, and in a later process.

    python -m bench.ops.cold_start --out bench/results/package-build     # SmolLM2 and its draft head, CPU

A server's start: load the demo model and its default draft source (SmolLM2: the token-aware
head), ``specdec.patch(model, source, compile=True)``, ``specdec.warmup(model)``. The first process
runs with empty specdec and inductor caches (inductor's per-machine files too: its temporary folder
is fresh), so its warm-up builds the step's packages and the head's; the second finds them and
loads. Each is timed from ``patch()`` to the end of ``warmup()`` (the model's load apart), in a
process of its own, with specdec's progress lines kept.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import RESULTS, device_names, environment
from specdec.demo import DEMOS


def child(model_name: str) -> dict:
    """One process: load, then time ``patch(compile=True)`` and ``warmup()``."""
    import specdec

    start = time.perf_counter()
    model, _, source = specdec.load_demo(model_name)
    loaded = time.perf_counter()
    specdec.patch(model, source, compile=True)
    specdec.warmup(model)
    return {"load_s": loaded - start, "patch_and_warmup_s": time.perf_counter() - loaded, "source": type(source).__name__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=DEMOS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS / "package-build")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.model)))
        return
    folder = tempfile.mkdtemp(prefix="specdec-cold-start-")
    env = {**os.environ, "SPECDEC_CACHE_DIR": os.path.join(folder, "specdec"), "TORCHINDUCTOR_CACHE_DIR": os.path.join(folder, "inductor"), "TMPDIR": folder}
    runs = {}
    for which in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-m", "bench.ops.cold_start", "--model", args.model, "--child"], env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the {which} process failed:\n{done.stderr[-4000:]}")
        runs[which] = {**json.loads(done.stdout.strip().splitlines()[-1]),
                       "progress": [line for line in done.stderr.splitlines() if line.startswith("specdec:")]}
        print(which, json.dumps(runs[which], indent=1), flush=True)
    name, slug = device_names(torch.device("cpu"))
    path = args.out / f"cold-start-{args.model}-{slug}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": name, **environment(), "model": args.model, "command": " ".join(sys.argv), **runs}, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
