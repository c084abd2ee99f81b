"""What ``tree="auto"`` verified per step, and how often it accepted nothing (useless drafts' cost).

    python -m bench.e2e.draft_waste                       # SmolLM2, untrained predictor + lookup, 6 chat requests
    python -m bench.e2e.draft_waste --predictor shipped   # the trained defaults
    python -m bench.e2e.draft_waste --predictor bench/variants/smollm2-135m-code2000/linear --class code --new-tokens 128

Each request is decoded plain and patched (interleaved, timed only while the CPU is otherwise
quiet). Every planned step is classified by what it verified: a plain step, lookup-chain nodes,
FIRP-ranked nodes (with or without chain nodes), pseudo rows only, and whether pseudo rows rode
along; per class the script counts steps, steps that accepted no draft, and rows per step. The
untrained predictor is the identity map at the shipped predictor's layer and ``k``: drafts that
never help, with the defaults otherwise; a folder is a saved FIRP predictor (e.g. a variant of
:mod:`bench.training.train_variants`). Results: ``bench/results/draft-waste-{model}-{predictor}[-{class}]-{device}.json``
(the class is named unless it is chat).
"""

import argparse
import collections
import json
from pathlib import Path

import torch

from bench.common import RESULTS, device_names, environment, timed_quietly
from bench.e2e.run import class_prompts
from specdec import FuturePredictor, load_demo, patch, stats, unpatch
from specdec.decode.planner import AutoPlanner


def step_kind(plan) -> str:
    """What one planned step verifies: ``plan.keys`` name each node's source kind (``"chain"``, ...)."""
    pseudo = plan.layout.num_pseudo > 0
    if not plan.tokens:
        return "pseudo rows only" if pseudo else "plain"
    kinds = {key[0] for key in plan.keys}
    kind = "chain nodes" if kinds == {"chain"} else "FIRP nodes (+chain)"
    return kind + (" + pseudo rows" if pseudo else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--predictor", default="untrained", help="untrained, shipped, or a saved FIRP predictor's folder")
    parser.add_argument("--class", dest="prompt_class", choices=["chat", "code", "short", "random"], default="chat")
    parser.add_argument("--prompts", type=int, default=6)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer, shipped = load_demo(args.model, draft="firp")
    label = args.predictor
    if args.predictor == "shipped":
        predictor = shipped
    elif args.predictor == "untrained":
        predictor = FuturePredictor.for_model(model, layer=shipped.layer, k=shipped.k)
    else:
        folder = Path(args.predictor)
        predictor = FuturePredictor.from_pretrained(folder, device=model.device, dtype=model.dtype)
        predictor.draft_vocab = shipped.draft_vocab  # as bench.e2e --variants: only the maps differ
        label = f"{folder.parent.name}-{folder.name}"
    prompts = class_prompts(args.prompt_class, tokenizer, args.prompts, args.new_tokens, model.device)

    kinds: list[str] = []
    plan = AutoPlanner.plan

    def recorded(self, cands):
        chosen = plan(self, cands)
        kinds.append(step_kind(chosen))
        return chosen

    AutoPlanner.plan = recorded
    steps, idle, rows, tokens = collections.Counter(), collections.Counter(), collections.Counter(), collections.Counter()
    plain_seconds = patched_seconds = 0.0
    per_request = []
    for ids in prompts:
        unpatch(model)
        _, plain = timed_quietly(lambda: model.generate(ids, max_new_tokens=args.new_tokens, do_sample=False))
        patch(model, predictor)
        kinds.clear()
        _, patched = timed_quietly(lambda: model.generate(ids, max_new_tokens=args.new_tokens, do_sample=False))
        record = stats(model)
        for kind, accepted, n in zip(kinds, record.accepted, record.rows):
            steps[kind] += 1
            idle[kind] += accepted == 0
            rows[kind] += n
            tokens[kind] += accepted
        plain_seconds += plain
        patched_seconds += patched
        per_request.append({"speedup": plain / patched, "steps": record.steps, "rows_per_step": record.mean_rows})
        print(f"request {len(per_request)}: {plain / patched:.3f}x, {record.steps} steps, {record.mean_rows:.1f} rows/step")
    AutoPlanner.plan = plan

    classes = {k: {"steps": steps[k], "accepted_nothing": idle[k], "rows_per_step": rows[k] / steps[k],
                   "accepted_per_step": tokens[k] / steps[k]} for k in steps}
    print(f"all: {plain_seconds / patched_seconds:.3f}x of plain (sum of times)")
    for kind, c in classes.items():
        print(f"  {kind}: {c['steps']} steps, {c['accepted_nothing']} accepted nothing, {c['rows_per_step']:.1f} rows/step, "
              f"{c['accepted_per_step']:.2f} drafts accepted/step")
    device, slug = device_names(model.device)
    name = label if args.prompt_class == "chat" else f"{label}-{args.prompt_class}"
    out = RESULTS / f"draft-waste-{args.model}-{name}-{slug}.json"
    out.write_text(json.dumps({**environment(), "device": device, **vars(args),
                               "speedup": plain_seconds / patched_seconds, "requests": per_request, "classes": classes}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
