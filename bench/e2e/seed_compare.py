"""The seed-method comparison of ``python -m bench.e2e --seeds``: FIRP vs mask slots vs early exit.

Every source was trained by ``python -m bench.training.train_seeds`` with the same budget on the same data
and saved under ``bench/seeds/{model}/``. Each runs with ``tree="auto"`` (its own best tree for its
acceptance and this device's step cost), alone and in the combinations :class:`EarlyExitDrafts`
allows, next to plain greedy, HF prompt lookup and the bundled defaults, interleaved prompt by
prompt like every e2e run. The table adds each source's held-out top-1 per offset and the step
cost (seconds per step over a plain step's).
"""

import json
from pathlib import Path

from specdec import EarlyExitDrafts, FIRPDrafts, FuturePredictor, LookupDrafts, MaskDrafts, patch, unpatch

SEEDS = Path(__file__).resolve().parents[1] / "seeds"


def load_seeds(model_name: str, device, dtype) -> dict[str, tuple[object, dict]]:
    """name -> (trained source or predictor, its training result) of ``bench/seeds/{model_name}``."""
    folder = SEEDS / model_name
    if not folder.is_dir():
        raise SystemExit(f"no trained seed sources in {folder}: run python -m bench.training.train_seeds --model {model_name} first")
    loaders = {"firp": FuturePredictor.from_pretrained, "mask": MaskDrafts.from_pretrained, "exit": EarlyExitDrafts.from_pretrained}
    found = {}
    for sub in sorted(p for p in folder.iterdir() if (p / "result.json").is_file()):
        result = json.loads((sub / "result.json").read_text())
        found[sub.name] = (loaders[result["source"]](sub, device=device, dtype=dtype), result)
    return found


def seed_methods(args, model, predictor, seeds: dict) -> tuple[dict, dict]:
    """``(methods, parts)``: name -> (set-up, generate kwargs) as :func:`bench.e2e.run.methods`, and
    name -> the seed names whose training results describe it."""
    plain = lambda: unpatch(model)  # noqa: E731
    table = {"plain greedy": (plain, {})}
    if args.prompt_lookup:
        table[f"HF prompt lookup ({args.prompt_lookup})"] = (plain, {"prompt_lookup_num_tokens": args.prompt_lookup})
    firp = next(name for name in seeds if name.startswith("firp"))
    exits = [name for name in seeds if name.startswith("exit")]
    best_exit = max(exits, key=lambda name: seeds[name][1]["top1"][0])
    early = seeds[best_exit][0]
    runs = {  # name -> (source, seed names)
        f"FIRP ({firp})": (FIRPDrafts(seeds[firp][0]), [firp]),
        "mask slots": (seeds["mask"][0], ["mask"]),
        **{f"early exit ({name})": (seeds[name][0], [name]) for name in exits},
        f"early exit ({best_exit}) + FIRP": (early.combined_with(FIRPDrafts(seeds[firp][0])), [best_exit, firp]),
        f"early exit ({best_exit}) + mask slots": (early.combined_with(seeds["mask"][0]), [best_exit, "mask"]),
        "FIRP + lookup": (LookupDrafts(seeds[firp][0]), [firp]),
        f"early exit ({best_exit}) + FIRP + lookup": (LookupDrafts(early.combined_with(FIRPDrafts(seeds[firp][0]))), [best_exit, firp]),
        "bundled FIRP + lookup (defaults)": (LookupDrafts(predictor), []),
    }
    parts = {}
    for label, (source, names) in runs.items():
        name = f"specdec auto: {label}"
        table[name] = (lambda source=source: patch(model, source, tree="auto", backend=args.backend), {})
        parts[name] = names
    return table, parts


def seeds_table(summary: list[dict], parts: dict, seeds: dict) -> str:
    """Markdown: per method, the sources' held-out top-1 per offset, tau, rows and step cost, speedups."""
    lines = ["| method | held-out top-1 per offset | tau | rows/step | step cost | speedup | vs HF prompt lookup | exact |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summary:
        top1 = "; ".join(" / ".join(f"{v:.2f}" for v in seeds[n][1]["top1"]) for n in parts.get(s["method"], []))
        fmt = lambda v, f, x="": "-" if v is None else format(v, f) + x  # noqa: E731
        exact = "-" if s["exact_match"] is None else f"{s['exact_match']:.0%}"
        lines.append(f"| {s['method']} | {top1 or '-'} | {fmt(s['tau'], '.2f')} | {fmt(s['rows_per_step'], '.1f')} "
                     f"| {fmt(s.get('step_cost'), '.2f', 'x')} | {s['speedup']:.2f}x | {fmt(s['vs_prompt_lookup'], '.2f', 'x')} | {exact} |")
    return "\n".join(lines)
