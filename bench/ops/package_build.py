"""What building the compiled step's package costs under each AOTInductor setting, and what its step costs.

    python -m bench.ops.package_build --out bench/results/package-build            # SmolLM2, CPU
    python -m bench.ops.package_build --settings freezing concat-linear+wrapper-O0+2-parts

Each setting (:data:`SETTINGS`: what :data:`specdec.decode.packages.INDUCTOR_CONFIGS` and ``$SPECDEC_BUILD_PARTS`` are set to) builds the
step's packages (:class:`specdec.decode.graphs.PackagedProgram`, split into the setting's number of
layer ranges) in a process of its own from empty inductor and specdec caches (inductor's
precompiled C++ headers too, kept under the temporary folder): ``torch.export`` of each part, then
AOTInductor (AOTAutograd, freezing, lowering, the C++ compile) in build processes, one per part,
all at once, while the process prefills 64 tokens, then the packages' loads and a first step: the
whole is ``build_s``, export and load are timed apart. Then one
process loads every package and times its step by row count (a chain of draft nodes over a
512-token cache: forward, LM-head argmax, accept walk, one host read; interleaved by setting and row
count, medians), and checks each setting's hidden states against the first setting's.
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

from bench.common import RESULTS, device_names, environment, write_csv
from bench.ops.compiled_step import loaded, step_fn
from bench.ops.step_timing import median_ms
from specdec import DraftSource
from specdec.decode import packages
from specdec.decode.graphs import CompiledStep
from specdec.decode.packing import PackedWeights
from specdec.decode.tree import StepLayout
from specdec.demo import DEMOS

FREEZING = {"freezing": True}
CONCAT = {"cpp.enable_concat_linear": True}  # q/k/v and gate/up as one packed GEMM each
O0 = {"aot_inductor.compile_wrapper_opt_level": "O0"}  # the host wrapper's C++ unoptimised
NO_PCH = {"aot_inductor.precompile_headers": False}  # torch's headers parsed by each compile, not precompiled first
SETTINGS = {  # name -> (inductor settings of the package, packages the step is split into)
    "freezing": (FREEZING, 1),  # the step as first packaged
    "concat-linear": ({**FREEZING, **CONCAT}, 1),
    "wrapper-O0": ({**FREEZING, **O0}, 1),
    "concat-linear+wrapper-O0": ({**FREEZING, **CONCAT, **O0}, 1),
    "concat-linear+wrapper-O0+2-parts": ({**FREEZING, **CONCAT, **O0}, 2),
    "concat-linear+wrapper-O0+4-parts": ({**FREEZING, **CONCAT, **O0}, 4),
    "concat-linear+wrapper-O0+no-pch+2-parts": ({**FREEZING, **CONCAT, **O0, **NO_PCH}, 2),  # the defaults on 2 cores
}
ROWS = (1, 2, 8, 16)


def use(setting: str) -> None:
    """Make ``setting`` the package settings of this process."""
    configs, parts = SETTINGS[setting]
    packages.INDUCTOR_CONFIGS = dict(configs)
    os.environ["SPECDEC_BUILD_PARTS"] = str(parts)


def timed(module, name: str, into: dict, label: str) -> None:
    """Wrap ``module.name`` so each call adds its seconds to ``into[label]``."""
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            into[label] = into.get(label, 0.0) + time.perf_counter() - start

    setattr(module, name, wrapper)


def build(model_name: str, setting: str) -> dict:
    """Build ``setting``'s package of ``model_name``'s step (this process's caches are empty); its seconds by phase."""
    use(setting)
    _, parts = loaded(model_name)
    phases: dict[str, float] = {}
    timed(torch.export, "export", phases, "export_s")  # in this process; AOTInductor runs in build processes
    timed(torch._inductor, "aoti_load_package", phases, "load_s")
    before = set((packages.cache_dir() / "steps").glob("*.pt2"))
    tokens = torch.randint(parts.lm_head.shape[0], (66,), generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    with torch.inference_mode():
        step = CompiledStep().open(parts, "auto", 128)  # exports, starts the builds
        step.prefill(tokens[:64])  # meanwhile, as a request would
        step_hidden(step, tokens, 64, 2)  # waits for the builds, loads the packages
    phases["build_s"] = time.perf_counter() - start
    built = set((packages.cache_dir() / "steps").glob("*.pt2")) - before
    return {**phases, "package_mb": sum(p.stat().st_size for p in built) / 2**20}


@torch.inference_mode()
def time_steps(model_name: str, settings: list[str], rows: tuple, rounds: int, prefix: int = 512) -> list[dict]:
    """Each setting's step by row count (its package on disk), interleaved; and its largest deviation from the first's."""
    model, parts = loaded(model_name)
    tokens = torch.randint(model.config.vocab_size, (prefix + max(rows),), generator=torch.Generator().manual_seed(0))
    head = PackedWeights().for_step(parts.layers, parts.lm_head)
    steps = {}
    for setting in settings:
        use(setting)
        steps[setting] = CompiledStep().open(parts, "auto", prefix + max(rows) + 64)
        steps[setting].prefill(tokens[:prefix])
    table = {(s, r): [] for s in settings for r in rows}
    with head.active(torch.nn.ModuleList(), parts.lm_head):
        for _ in range(rounds):
            for r in rows:
                for setting, step in steps.items():
                    table[(setting, r)].append(median_ms(step_fn(step, parts, tokens, prefix, r, tokens.device), tokens.device, repeats=5))
    hidden = {setting: step_hidden(step, tokens, prefix, max(rows)) for setting, step in steps.items()}
    first = hidden[settings[0]]
    deviation = {setting: (h - first).abs().max().item() for setting, h in hidden.items()}
    return [{"setting": s, "rows": r, "step_ms": statistics.median(table[(s, r)]), "max_abs_dev_vs_first": deviation[s]}
            for s in settings for r in rows]


def step_hidden(step, tokens: torch.Tensor, prefix: int, rows: int) -> torch.Tensor:
    """The step's final-normed hidden states ``[rows, d]`` for a chain of ``rows`` rows after ``prefix``."""
    layout = StepLayout.of(tuple(range(rows - 1)), (), 0, tokens.device)
    hidden, _ = step.forward(DraftSource(), layout, tokens[prefix : prefix + 1], tokens[prefix + 1 : prefix + rows], prefix)
    return hidden


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=DEMOS)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS), metavar="SETTING",
                        help=f"of {list(SETTINGS)} (default: all)")
    parser.add_argument("--rows", type=int, nargs="+", default=list(ROWS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--build", help=argparse.SUPPRESS)  # one build, in a process of its own
    parser.add_argument("--out", type=Path, default=RESULTS / "package-build")
    args = parser.parse_args()
    if args.build:
        print(json.dumps(build(args.model, args.build)))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="specdec-build-")
    os.environ["SPECDEC_CACHE_DIR"] = os.path.join(folder, "specdec")  # every package lands here; timing loads them
    builds = {}
    for i, setting in enumerate(args.settings):
        cold = os.path.join(folder, f"cold-{i}")  # inductor's caches, and its precompiled headers under the temporary folder
        os.makedirs(cold)
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": os.path.join(cold, "inductor"), "TMPDIR": cold}
        command = [sys.executable, "-m", "bench.ops.package_build", "--model", args.model, "--build", setting, "--out", str(args.out)]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"building {setting!r} failed:\n{done.stderr[-4000:]}")
        builds[setting] = json.loads(done.stdout.strip().splitlines()[-1])
        print(setting, "  ".join(f"{k} {v:.1f}" for k, v in builds[setting].items()), flush=True)
    steps = time_steps(args.model, args.settings, tuple(args.rows), args.rounds)
    for row in steps:
        print(f"{row['setting']:28s} rows {row['rows']:3d}  {row['step_ms']:.2f} ms  dev {row['max_abs_dev_vs_first']:.2e}", flush=True)
    rows = [{**row, **{k: builds[row["setting"]][k] for k in builds[row["setting"]]}} for row in steps]
    name, slug = device_names(torch.device("cpu"))
    stem = args.out / f"package-build-{args.model}-{slug}"
    write_csv(stem.with_suffix(".csv"), rows)
    meta = {"device": name, **environment(), "model": args.model, "settings": {s: SETTINGS[s] for s in args.settings}, "command": " ".join(sys.argv)}
    stem.with_suffix(".json").write_text(json.dumps({**meta, "builds": builds, "steps": steps}, indent=2) + "\n")
    print(f"wrote {stem}.csv, .json")


if __name__ == "__main__":
    main()
