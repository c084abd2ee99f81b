"""The map-variant comparison of ``python -m bench.e2e --variants``: decoding with each variant
trained by :mod:`bench.training.train_variants`, next to the bundled predictor.

Per predictor (the bundled one and every FIRP variant in ``bench/variants/{run}/``, a run of
:mod:`bench.training.train_variants`: the model's name, or with the added data, e.g. ``{model}-code{N}``): FIRP alone in
a static 5-node tree (its tau does not depend on the device's step cost), FIRP alone under
``tree="auto"``, and the defaults (FIRP + n-gram lookup, ``tree="auto"``), interleaved prompt by
prompt with plain greedy and HF prompt lookup like every e2e run. Every variant ranks its pseudo
rows over the bundled predictor's draft vocabulary (if it has one), so only the maps differ.
"""

import json
from pathlib import Path

from specdec import FIRPDrafts, FuturePredictor, LookupDrafts, patch, unpatch

VARIANTS_DIR = Path(__file__).resolve().parents[1] / "variants"


def load_variants(run: str, device, dtype) -> dict[str, tuple[FuturePredictor, dict]]:
    """name -> (trained FIRP variant, its training result) of ``bench/variants/{run}``."""
    folder = VARIANTS_DIR / run
    if not folder.is_dir():
        raise SystemExit(f"no trained variants in {folder}: train them with python -m bench.training.train_variants first")
    found = {}
    for sub in sorted(p for p in folder.iterdir() if (p / "result.json").is_file()):
        config = json.loads((sub / "predictor_config.json").read_text())
        if config.get("source", "firp") == "firp":
            found[sub.name] = (FuturePredictor.from_pretrained(sub, device=device, dtype=dtype), json.loads((sub / "result.json").read_text()))
    return found


def variant_methods(args, model, predictor, variants: dict) -> dict:
    """name -> (set-up, generate kwargs), as :func:`bench.e2e.run.methods`."""
    plain = lambda: unpatch(model)  # noqa: E731
    table = {"plain greedy": (plain, {})}
    if args.prompt_lookup:
        table[f"HF prompt lookup ({args.prompt_lookup})"] = (plain, {"prompt_lookup_num_tokens": args.prompt_lookup})
    for label, firp in {"bundled": predictor, **{name: found[0] for name, found in variants.items()}}.items():
        firp.draft_vocab = predictor.draft_vocab  # the same draft vocabulary for all: only the maps differ
        runs = {"5 nodes FIRP only": (FIRPDrafts(firp), 5), "auto FIRP only": (FIRPDrafts(firp), "auto"),
                "auto + lookup (defaults)": (LookupDrafts(firp), "auto")}
        for run, (source, tree) in runs.items():
            table[f"specdec {label}: {run}"] = (lambda source=source, tree=tree: patch(model, source, tree=tree, backend=args.backend), {})
    return table
