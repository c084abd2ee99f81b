"""Spec-Bench first turns: plain greedy, Hugging Face prompt lookup and specdec, per task group.

    python -m bench.e2e.spec_bench --questions PATH/question.jsonl             # 3 questions per group
    python -m bench.e2e.spec_bench --questions PATH --per-group 10 --new-tokens 256 --repeats 2

Spec-Bench (Xia et al., 2024; the public ``hemingkx/Spec-Bench`` repository) is the field's standard
prompt set for speculative decoding: ``data/spec_bench/question.jsonl`` holds 480 questions, 80 per
task group: multi-turn conversation (MT-bench's eight categories, 10 each), translation,
summarization, question answering, mathematical reasoning and retrieval-augmented generation. The
file is not part of this repository: pass its path. Each question's first turn is rendered with the
model's chat template and continued greedily; the first ``--per-group`` questions of each group are
used, in file order. Methods are interleaved per prompt, medians over repeats (see
:func:`bench.e2e.run.run_generation`). Results: ``bench/results/spec-bench-{model}-{device}.*``
(per group and overall; a plot of the speedups per group).
"""

import argparse
import json
from pathlib import Path

import matplotlib
import torch

from bench.common import RESULTS, device_names, environment, write_csv
from bench.e2e.run import load, markdown_table, methods, run_generation, summarize
from specdec.demo import DEFAULT_DEMO
from specdec.demo.run import prompt_ids

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MT_BENCH = ("writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities")
GROUPS = {"mt_bench": MT_BENCH, "translation": ("translation",), "summarization": ("summarization",),
          "qa": ("qa",), "math_reasoning": ("math_reasoning",), "rag": ("rag",)}


def group_of(category: str) -> str:
    """The task group of a Spec-Bench category (MT-bench's eight categories are one group)."""
    for group, categories in GROUPS.items():
        if category in categories:
            return group
    raise ValueError(f"unknown Spec-Bench category {category!r}; known: {', '.join(c for cs in GROUPS.values() for c in cs)}")


def read_questions(path: Path, per_group: int) -> dict[str, list[str]]:
    """Group -> the first turns of its first ``per_group`` questions (file order); MT-bench's group
    takes its categories in turn, so a small sample still covers several of them."""
    if not path.is_file():
        raise SystemExit(f"--questions {path}: no such file (Spec-Bench's data/spec_bench/question.jsonl)")
    by_category: dict[str, list[str]] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            category, turns = record["category"], record["turns"]
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise SystemExit(f"{path}:{number}: not a Spec-Bench question ({type(err).__name__}: {err})") from None
        group_of(category)
        if not turns or not isinstance(turns[0], str):
            raise SystemExit(f"{path}:{number}: no first turn")
        by_category.setdefault(category, []).append(turns[0])
    groups = {}
    for group, categories in GROUPS.items():
        queues = [by_category.get(c, []) for c in categories]
        interleaved = [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]
        if interleaved:
            groups[group] = interleaved[:per_group]
    return groups


def plot_groups(per_group: dict[str, list[dict]], path: Path, title: str) -> None:
    """Speedup over plain greedy of each method, per task group."""
    groups = list(per_group)
    names = [s["method"] for s in next(iter(per_group.values())) if s["method"] != "plain greedy"]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [next(s["speedup"] for s in per_group[g] if s["method"] == name) for g in groups]
        ax.bar([x + (i - (len(names) - 1) / 2) * width for x in range(len(groups))], values, width, label=name)
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylabel("speedup over plain greedy")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=Path, required=True, help="Spec-Bench's data/spec_bench/question.jsonl")
    parser.add_argument("--model", default=DEFAULT_DEMO, help="a demo name or a local checkpoint (with --predictor)")
    parser.add_argument("--tokenizer")
    parser.add_argument("--predictor")
    parser.add_argument("--per-group", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--prompt-lookup", type=int, default=10)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--head", help="also decode with this token-aware draft head: a folder (bench.training.train_head's output) or 'shipped' (the demo's)")
    parser.add_argument("--compiled", action="store_true", help="also decode with compile=True (see bench.e2e --compiled)")
    parser.add_argument("--compare-head", help="also decode with this second head (see bench.e2e --compare-head)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.per_group < 1 or args.new_tokens < 1 or args.repeats < 1:
        raise SystemExit("--per-group, --new-tokens and --repeats must be >= 1")
    groups = read_questions(args.questions, args.per_group)
    model, tokenizer, predictor = load(args)
    if not tokenizer.chat_template:
        raise SystemExit("Spec-Bench's questions are chat requests: the tokenizer needs a chat template")
    # bench.e2e's methods: plain greedy, HF prompt lookup, specdec's defaults and patch(model); no static trees.
    table_args = argparse.Namespace(**vars(args), draft_model=None, identity_check=False, zero_training=True, eager_step=False, own_plain=False, trees=[],
                                    lookup_trees=[], temperatures=[])
    table = {name: method for name, method in methods(table_args, model, predictor).items() if "whole vocabulary" not in name}
    all_rows, per_group = [], {}
    for group, questions in groups.items():
        print(f"== {group}: {len(questions)} questions ==", flush=True)
        prompts = [prompt_ids(tokenizer, text, chat=True).to(args.device) for text in questions]
        rows, summary = run_generation(table_args, model, predictor, prompts, table)
        per_group[group] = summary
        all_rows += [{**row, "group": group, "prompt": f"{group}-{row['prompt']}"} for row in rows]
        print(markdown_table(summary), flush=True)
    overall = summarize(all_rows, list(table))
    print(f"\nall groups\n{markdown_table(overall)}")
    device_name, device_kind = device_names(torch.device(args.device))
    tag = Path(args.model).name
    stem = args.out / f"spec-bench-{tag}{'-head' if args.head else ''}{'-vs-' + Path(args.compare_head).name if args.compare_head else ''}{'-compiled' if args.compiled else ''}-{device_kind}"
    write_csv(stem.with_suffix(".csv"), all_rows)
    meta = {"device": device_name, **environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    stem.with_suffix(".json").write_text(json.dumps({**meta, "groups": per_group, "overall": overall}, indent=2) + "\n")
    cpu_note = "" if device_kind != "cpu" else f", {device_name}, {torch.get_num_threads()} threads"
    title = f"{tag}: Spec-Bench first turns, {args.per_group} per group, {args.new_tokens} new tokens, {args.dtype}{cpu_note}"
    plot_groups(per_group, stem.with_suffix(".png"), title)
    print(f"wrote {stem}.csv, .json, .png")


if __name__ == "__main__":
    main()
