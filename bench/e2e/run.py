"""End-to-end benchmark: plain greedy vs Hugging Face's speculative modes vs specdec, per prompt class.

    python -m bench.e2e                                   # SmolLM2-135M-Instruct: held-out chat and code
    python -m bench.e2e --model stdlib-9m                 # the 9M stdlib model (code only)
    python -m bench.e2e --model DIR --predictor DIR       # any local checkpoint and its predictor
    python -m bench.e2e --draft-model DIR                 # also HF assisted generation with a draft model
    python -m bench.e2e --head DIR                        # also the token-aware draft head (bench.training.train_head)
    python -m bench.e2e --variants [RUN]                  # FIRP's map variants (bench.training.train_variants) vs the bundled maps
    python -m bench.e2e --step-timing                     # one speculative step vs one plain step, by tree size
    python -m bench.e2e --step-timing --shape llama-2-7b  # the same on a Llama-2-7B-shaped random model (GPU)

Prompt classes, reported separately: ``chat``, the held-out requests of
``bench/prompts/eval-chat.jsonl`` (none is in the distillation set) under the chat
template; ``code``, the first 64-256 tokens of held-out standard-library files (see
``specdec.training.corpus``), continued as raw text; ``random`` (only when asked for), 64 seeded
random token ids, where drafts are useless: the defaults must cost what plain decoding costs;
``short`` (only when asked for), the chat requests with at most :data:`SHORT_NEW_TOKENS` new
tokens, as a script or a request in a fresh worker sends them. ``--first-call`` runs
:mod:`bench.e2e.first_call` instead: plain greedy against the first patched ``generate`` of a fresh
process.
Every method continues them greedily (the sampling rows at their temperatures).
Methods are run interleaved prompt by prompt, timed as medians over repeats after a
warm-up, all with the same model, dtype and cache setting; a timed call during which another
process used the CPU is run again (:func:`bench.common.timed_quietly`). Results:
``bench/results/e2e-{model}-{class}-{device}.*``.
"""

import argparse
import copy
import hashlib
import json
import statistics
from pathlib import Path

import matplotlib
import torch

from bench.common import RESULTS, device_names, environment, timed_quietly, write_csv
from specdec import DraftSource, FIRPDrafts, FuturePredictor, HeadDrafts, LookupDrafts, TokenHead, load_demo, patch, stats, unpatch
from specdec.demo import DEFAULT_DEMO, DEMOS, demo_paths
from specdec.training.corpus import read_texts, stdlib_files
from specdec.demo.run import prompt_ids
from specdec.training.distill import read_prompts
from specdec.decode import graphs
from specdec.decode.tree import parse_tree_arg

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


CHAT_PROMPTS = Path(__file__).resolve().parents[1] / "prompts" / "eval-chat.jsonl"
PROMPT_CLASSES = ("chat", "code", "random", "short")
SHORT_NEW_TOKENS = 64


def chat_prompts(tokenizer, count: int, device) -> list[torch.Tensor]:
    """``count`` prompts ``[1, P]``: held-out chat requests under the tokenizer's chat template."""
    if not tokenizer.chat_template:
        raise SystemExit("the chat prompt class needs a tokenizer with a chat template (use --classes code)")
    return [prompt_ids(tokenizer, r["prompt"], chat=True).to(device) for r in read_prompts(CHAT_PROMPTS)[:count]]


def class_prompts(name: str, tokenizer, count: int, new_tokens: int, device) -> list[torch.Tensor]:
    """The prompts of class ``name`` (see the module docstring)."""
    if name in ("chat", "short"):
        return chat_prompts(tokenizer, count, device)
    if name == "random":
        return random_prompts(len(tokenizer), count, device)
    return heldout_prompts(tokenizer, count, new_tokens, device)


def random_prompts(vocab: int, count: int, device, length: int = 64) -> list[torch.Tensor]:
    """``count`` prompts ``[1, length]`` of uniformly random token ids (seeded): text where drafts
    are useless at first, to check that the defaults cost no more than plain decoding."""
    generator = torch.Generator().manual_seed(1234)
    return [torch.randint(vocab, (1, length), generator=generator).to(device) for _ in range(count)]


def heldout_prompts(tokenizer, count: int, new_tokens: int, device) -> list[torch.Tensor]:
    """``count`` prompts ``[1, P]``: the first P tokens (64..256, by a hash of the path) of held-out files."""
    prompts = []
    for path in stdlib_files("heldout"):
        ids = tokenizer(read_texts([path])[0], return_tensors="pt").input_ids
        length = 64 + hashlib.sha256(path.name.encode()).digest()[0] % 193
        if ids.shape[1] >= length + new_tokens:
            prompts.append(ids[:, :length].to(device))
        if len(prompts) == count:
            break
    if not prompts:
        raise ValueError("no held-out file is long enough for a prompt")
    return prompts


def load(args):
    """``(model, tokenizer, predictor)`` of a demo (``--model`` is a demo name) or of ``--model``/``--predictor``."""
    dtype = getattr(torch, args.dtype)
    if args.model in DEMOS:
        return load_demo(args.model, dtype=dtype, device=args.device, draft="firp")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model)
    if args.predictor is None:
        raise SystemExit("--model needs --predictor (train one with `python -m specdec train`)")
    return model, tokenizer, FuturePredictor.from_pretrained(args.predictor, device=args.device, dtype=dtype)


def methods(args, model, predictor):
    """Name -> (set-up, generate keyword arguments). Set-up patches or unpatches the model and
    returns it (the model the method generates with)."""
    plain = lambda: unpatch(model)  # noqa: E731
    table = {"plain greedy": (plain, {})}
    if args.prompt_lookup:
        table[f"HF prompt lookup ({args.prompt_lookup})"] = (plain, {"prompt_lookup_num_tokens": args.prompt_lookup})
    if args.draft_model:
        from transformers import AutoModelForCausalLM

        draft = AutoModelForCausalLM.from_pretrained(args.draft_model, dtype=model.dtype).to(model.device).eval()
        table["HF assisted (draft model)"] = (plain, {"assistant_model": draft})
    runs = [("auto", predictor, " (defaults)")]  # patch(model, predictor): FIRP + lookup, tree="auto"
    if args.eager_step:  # the same on the weights as stored: what oneDNN packing buys (CPU)
        table["specdec auto (defaults), compile=False"] = (lambda: patch(model, predictor, backend=args.backend, compile=False), {})
    if args.own_plain:  # the package's plain step (a source that never drafts): efficiency = speedup over it / tau
        table["specdec plain step (no drafts)"] = (lambda: patch(model, DraftSource(), backend=args.backend), {})
    if args.compiled:  # compile=True (specdec.decode.graphs): its plain step, lookup alone, the defaults (FIRP + lookup); the head below
        table["specdec plain step (no drafts), compile=True"] = (lambda: patch(model, DraftSource(), backend=args.backend, compile=True), {})
        table["specdec auto, lookup only, compile=True"] = (lambda: patch(model, backend=args.backend, compile=True), {})
        if graphs.compile_refusal(LookupDrafts(predictor), model.config.num_hidden_layers) is None:  # FIRP's pseudo rows through the program
            table["specdec auto (defaults), compile=True"] = (lambda: patch(model, predictor, backend=args.backend, compile=True), {})
    if args.zero_training:  # patch(model): n-gram lookup alone, nothing trained
        runs.append(("auto", None, ", no predictor (lookup only)"))
    if predictor.draft_vocab is not None:  # what its draft vocabulary saves: the same without it
        whole = copy.deepcopy(predictor)
        whole.draft_vocab = None
        runs.append(("auto", whole, f" (defaults), pseudo rows over the whole vocabulary, not {len(predictor.draft_vocab)} tokens"))
    if args.identity_check:  # drafts that never help: the defaults must still cost what plain decoding costs
        identity = FuturePredictor.for_model(model, layer=predictor.layer, k=predictor.k)
        runs.append(("auto", identity, ", untrained predictor (identity maps) + lookup"))
        runs.append(("auto", FIRPDrafts(identity), ", identity predictor, no lookup"))
    head = load_head(args, model)
    if head is not None:  # the token-aware draft head (bench.training.train_head): with lookup, alone, in a static 5-node tree
        runs += [("auto", head, ", token-aware head + lookup"), ("auto", HeadDrafts(head), ", token-aware head only"),
                 (5, HeadDrafts(head), " token-aware head only")]
    other = load_head(args, model, "compare_head")
    if other is not None:  # a second head beside the first, interleaved with it (say, a retrained one)
        name = Path(args.compare_head).name
        runs += [("auto", other, f", token-aware head [{name}] + lookup"), (5, HeadDrafts(other), f" token-aware head [{name}] only")]
    runs += [(tree, FIRPDrafts(predictor), " FIRP only") for tree in args.trees]
    runs += [(tree, LookupDrafts(predictor), " + lookup") for tree in args.lookup_trees]
    for tree, source, suffix in runs:
        label = f"{tree} nodes" if isinstance(tree, int) else tree
        table[f"specdec {label}{suffix}"] = (
            lambda tree=tree, source=source: patch(model, source, tree=tree, backend=args.backend), {})
    if args.compiled and head is not None:  # and the same with the head's draft pass eager (on packed weights), as before it was compiled
        table["specdec auto, token-aware head + lookup, compile=True"] = (lambda: head_pass_compiled(True) or patch(model, head, backend=args.backend, compile=True), {})
        table["specdec auto, token-aware head + lookup, compile=True, head pass eager"] = (
            lambda: head_pass_compiled(False) or patch(model, head, backend=args.backend, compile=True), {})
    for temperature in args.temperatures:  # do_sample=True: each against plain sampling at the same temperature
        sampled = {"do_sample": True, "temperature": temperature}
        table[f"plain sampling T={temperature}"] = (plain, sampled)
        table[f"specdec auto (defaults) sampling T={temperature}"] = (lambda: patch(model, predictor, backend=args.backend), sampled)
        if head is not None:
            table[f"specdec auto, token-aware head + lookup sampling T={temperature}"] = (lambda: patch(model, head, backend=args.backend), sampled)
    return table


HEAD_PROGRAMS = dict(graphs.NETWORK_PROGRAMS)


def head_pass_compiled(on: bool) -> None:
    """Whether ``compile=True`` runs the token-aware head's draft pass as its compiled program (the
    package's behaviour) or eagerly (an ablation: what compiling the head's pass buys)."""
    graphs.NETWORK_PROGRAMS.clear()
    graphs.NETWORK_PROGRAMS.update(HEAD_PROGRAMS if on else {})


def load_head(args, model, option: str = "head") -> TokenHead | None:
    """The token-aware head saved in ``args.<option>`` (``"shipped"``: the demo's; None without one),
    on the model's device and dtype."""
    path = getattr(args, option, None)
    if path is None:
        return None
    weight = model.get_input_embeddings().weight
    if path == "shipped":
        if args.model not in DEMOS:
            raise SystemExit("--head shipped is the demo's head: pass a folder for --model DIR")
        path = demo_paths(args.model)[1].parent / "head"
    return TokenHead.from_pretrained(path, device=weight.device, dtype=weight.dtype)


def baseline_of(name: str) -> str:
    """The method a row's speedup is measured against: plain sampling at its temperature, else plain greedy."""
    return "plain sampling T=" + name.split("sampling T=")[1] if "sampling T=" in name else "plain greedy"


def timed_generate(model, ids, new_tokens, kwargs) -> tuple[torch.Tensor, float]:
    """``(output, seconds)`` of one ``generate`` call, timed while no other process used the CPU."""
    sync = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    sync()

    def call():
        out = model.generate(ids, max_new_tokens=new_tokens, **{"do_sample": False, **kwargs})
        sync()
        return out

    return timed_quietly(call)


def run_generation(args, model, predictor, prompts: list[torch.Tensor], table: dict | None = None) -> tuple[list[dict], list[dict]]:
    """Per-prompt rows and per-method summary rows (of ``table``, default :func:`methods`; each
    method generates with the model its set-up returns)."""
    table = table or methods(args, model, predictor)
    for setup, kwargs in table.values():  # warm-up
        timed_generate(setup(), prompts[0], 16, kwargs)
    rows = []
    for number, ids in enumerate(prompts):
        outputs, seconds, runs = {}, {name: [] for name in table}, {}
        for _ in range(args.repeats):
            for name, (setup, kwargs) in table.items():
                target = setup()
                outputs[name], elapsed = timed_generate(target, ids, args.new_tokens, kwargs)
                seconds[name].append(elapsed)
                runs[name] = stats(target) if name.startswith("specdec") else None
        unpatch(model)
        reference = outputs["plain greedy"]
        for name in table:
            new = outputs[name].shape[1] - ids.shape[1]
            run = runs[name]
            rows.append({
                "method": name, "prompt": number, "prompt_tokens": ids.shape[1], "new_tokens": new,
                "seconds": statistics.median(seconds[name]), "steps": run.steps if run else None,
                "nodes_per_step": run.tree_nodes if run else None, "rows_per_step": run.mean_rows if run else None,
                "exact": None if table[name][1].get("do_sample") else bool(torch.equal(outputs[name], reference)),
            })
        print(f"prompt {number}: " + ", ".join(f"{r['method']} {r['new_tokens'] / r['seconds']:.1f} tok/s" for r in rows[-len(table):]))
    return rows, summarize(rows, list(table))


def summarize(rows: list[dict], names: list[str]) -> list[dict]:
    """Per method: tokens/s, speedup over its plain baseline (:func:`baseline_of`; overall, and each
    prompt's, sorted, for the spread) and, for greedy methods, over HF prompt lookup; tau, rows per
    step, step cost (seconds per step over its baseline's seconds per token, i.e. per plain step),
    exactness (greedy methods only)."""
    def tokens_per_second(name):  # the exact name: "specdec auto (defaults)" must not take in its sampling rows
        mine = [r for r in rows if r["method"] == name]
        return sum(r["new_tokens"] for r in mine) / sum(r["seconds"] for r in mine) if mine else None

    def per_prompt(name):  # each prompt's speedup over its own baseline run
        base = {r["prompt"]: r["seconds"] / r["new_tokens"] for r in rows if r["method"] == baseline_of(name)}
        return sorted(base[r["prompt"]] * r["new_tokens"] / r["seconds"] for r in rows if r["method"] == name)

    lookup = next((tokens_per_second(name) for name in names if name.startswith("HF prompt lookup")), None)
    summary = []
    for name in names:
        mine = [r for r in rows if r["method"] == name]
        speed = tokens_per_second(name)
        steps = [r["steps"] for r in mine if r["steps"] is not None]
        exact = [r["exact"] for r in mine if r["exact"] is not None]
        greedy = "sampling" not in name
        summary.append({
            "method": name,
            "tokens_per_s": speed,
            "speedup": speed / tokens_per_second(baseline_of(name)),
            "speedup_per_prompt": per_prompt(name),
            "vs_prompt_lookup": speed / lookup if lookup and greedy else None,
            "tau": sum(r["new_tokens"] for r in mine) / sum(steps) if steps else None,
            "rows_per_step": sum(r["rows_per_step"] * r["steps"] for r in mine) / sum(steps) if steps else None,
            "step_cost": tokens_per_second(baseline_of(name)) * sum(r["seconds"] for r in mine) / sum(steps) if steps else None,
            "exact_match": sum(exact) / len(exact) if exact else None,
            "prompts": len(mine),
        })
    return summary


def plot_auto(rows: list[dict], method: str, path: Path, title: str) -> None:
    """Per prompt, what ``tree="auto"`` chose (draft nodes and rows per step) and what it got (tau, speedup)."""
    mine = [r for r in rows if r["method"] == method]
    plain = {r["prompt"]: r["seconds"] / r["new_tokens"] for r in rows if r["method"] == "plain greedy"}
    prompts = [r["prompt"] for r in mine]
    fig, (ax_choice, ax_gain) = plt.subplots(1, 2, figsize=(11, 3.8))
    width = 0.4
    ax_choice.bar([p - width / 2 for p in prompts], [r["nodes_per_step"] for r in mine], width, label="draft nodes / step")
    ax_choice.bar([p + width / 2 for p in prompts], [r["rows_per_step"] for r in mine], width, label="rows / step")
    ax_choice.set_xlabel("prompt")
    ax_choice.set_title("what auto chose (means over the steps)")
    ax_choice.legend(fontsize=8)
    ax_gain.bar([p - width / 2 for p in prompts], [r["new_tokens"] / r["steps"] for r in mine], width, label="tau")
    ax_gain.bar([p + width / 2 for p in prompts], [plain[r["prompt"]] * r["new_tokens"] / r["seconds"] for r in mine], width, label="speedup vs plain")
    ax_gain.axhline(1, color="grey", lw=0.8)
    ax_gain.set_xlabel("prompt")
    ax_gain.set_title("what it got")
    ax_gain.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_generation(summary: list[dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(summary) + 1.8))
    names = [s["method"] for s in summary][::-1]
    speed = [s["tokens_per_s"] for s in summary][::-1]
    bars = ax.barh(names, speed, color=["#4c72b0" if n.startswith("specdec") else "#999999" for n in names])
    for bar, s in zip(bars, summary[::-1]):
        note = f" {s['speedup']:.2f}x" + (f", tau {s['tau']:.2f}" if s["tau"] else "")
        note += f", exact {s['exact_match']:.0%}" if s["exact_match"] is not None else " vs plain sampling"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, note, va="center", fontsize=9)
    ax.set_xlabel("tokens / s (median over repeats)")
    ax.set_xlim(0, max(speed) * 1.45)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # long method names must not push notes off the figure
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_DEMO, help=f"a demo ({', '.join(DEMOS)}) or a local Hugging Face checkpoint")
    parser.add_argument("--classes", nargs="+", choices=PROMPT_CLASSES, help="prompt classes (default: chat and code, code only without a chat template)")
    parser.add_argument("--tokenizer")
    parser.add_argument("--predictor", help="predictor directory for --model")
    parser.add_argument("--draft-model", help="a smaller checkpoint for HF assisted generation")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per class")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trees", nargs="*", type=parse_tree_arg, default=["chain", 5, "default"],
                        help="static trees run with FIRP drafts alone: names, or a node count N for the N most likely paths")
    parser.add_argument("--lookup-trees", nargs="*", type=parse_tree_arg, default=[5],
                        help="static trees run with n-gram lookup merged into the FIRP drafts (specdec.LookupDrafts)")
    parser.add_argument("--identity-check", action=argparse.BooleanOptionalAction, default=True,
                        help="also run tree='auto' with an untrained identity predictor and no lookup (useless drafts)")
    parser.add_argument("--zero-training", action=argparse.BooleanOptionalAction, default=True,
                        help="also run specdec.patch(model) with no predictor (n-gram lookup drafts alone)")
    parser.add_argument("--eager-step", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the defaults with compile=False (the step on the weights as stored)")
    parser.add_argument("--compiled", action="store_true",
                        help="also run compile=True (the compiled step): its plain step, lookup alone, the defaults (FIRP + lookup) where compile=True covers the predictor, and with --head the head + lookup")
    parser.add_argument("--own-plain", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the package's own plain step (a draft source that never drafts) on the default step")
    parser.add_argument("--prompt-lookup", type=int, default=10, help="HF prompt_lookup_num_tokens (0: skip)")
    parser.add_argument("--temperatures", nargs="*", type=float, default=[0.7, 1.0],
                        help="also run do_sample=True at these temperatures: plain sampling and the specdec defaults")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--step-timing", action="store_true", help="time one step by tree size instead")
    parser.add_argument("--shape", default=DEFAULT_DEMO, help=f"--step-timing model: {', '.join(DEMOS)} or llama-2-7b (random weights)")
    parser.add_argument("--prefix", type=int, default=512, help="--step-timing cached prefix length")
    parser.add_argument("--seeds", action="store_true",
                        help="compare the seed methods' sources trained by bench.training.train_seeds (FIRP, mask slots, early exit) instead")
    parser.add_argument("--variants", nargs="?", const="", default=None, metavar="RUN",
                        help="compare FIRP's map variants trained by bench.training.train_variants (bench/variants/RUN, default the "
                             "model's name, e.g. smollm2-135m-code2000) with the bundled predictor instead")
    parser.add_argument("--head", help="also decode with this token-aware draft head: a folder (bench.training.train_head's output) or 'shipped' (the demo's)")
    parser.add_argument("--compare-head", help="also decode with this second head (with lookup, and alone in a static 5-node tree)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    device_name, device_kind = device_names(torch.device(args.device))
    meta = {"device": device_name, **environment(), "args": {k: str(v) for k, v in vars(args).items()}}
    torch.manual_seed(0)
    if args.step_timing:
        from bench.ops.step_timing import run_step_timing

        run_step_timing(args, meta, device_kind)
        return
    model, tokenizer, predictor = load(args)
    tag = Path(args.model).name
    classes = args.classes or (("chat", "code") if tokenizer.chat_template else ("code",))
    table = parts = seeds = None
    if args.seeds:
        from bench.e2e.seed_compare import load_seeds, seed_methods

        seeds = load_seeds(tag, args.device, getattr(torch, args.dtype))
        table, parts = seed_methods(args, model, predictor, seeds)
    kind = "seeds-" if args.seeds else "head-" if args.head else ""
    if args.variants is not None:
        from bench.e2e.variant_compare import load_variants, variant_methods

        tag = args.variants or tag  # the results are named after the variants' training run
        table = variant_methods(args, model, predictor, load_variants(tag, args.device, getattr(torch, args.dtype)))
        kind = "variants-"
    for name in classes:
        print(f"== {name} prompts ==")
        class_args = argparse.Namespace(**vars(args))
        if name == "short":
            class_args.new_tokens = min(args.new_tokens, SHORT_NEW_TOKENS)
        prompts = class_prompts(name, tokenizer, args.prompts, class_args.new_tokens, args.device)
        rows, summary = run_generation(class_args, model, predictor, prompts, table)
        stem = args.out / f"e2e-{kind}{tag}-{name}-{device_kind}"
        write_csv(stem.with_suffix(".csv"), rows)
        stem.with_suffix(".json").write_text(json.dumps({**meta, "prompt_class": name, "summary": summary}, indent=2) + "\n")
        cpu_note = "" if device_kind != "cpu" else f", {device_name}, {torch.get_num_threads()} threads"
        title = f"{tag}: {len(rows) // len(summary)} {'' if name == 'random' else 'held-out '}{name} prompts, {class_args.new_tokens} new tokens, {args.dtype}{cpu_note}"
        plot_generation(summary, stem.with_suffix(".png"), title)
        if args.seeds:
            from bench.e2e.seed_compare import seeds_table

            print(f"\n{name} prompts\n{seeds_table(summary, parts, seeds)}")
            print(f"wrote {stem}.csv, .json, .png")
            continue
        if args.variants is None:
            plot_auto(rows, "specdec auto (defaults)", stem.with_name(stem.name + "-auto.png"), title)
        print(f"\n{name} prompts\n{markdown_table(summary)}")
        print(f"wrote {stem}.csv, .json, .png" + ("" if args.variants is not None else ", -auto.png"))


def markdown_table(summary: list[dict]) -> str:
    """The summary rows as a Markdown table (as printed, and as quoted in the README)."""
    def cell(value, fmt):
        return "-" if value is None else format(value, fmt) + ("x" if fmt == ".2f" else "")

    lines = ["| method | tokens/s | speedup | per prompt: median (range) | vs HF prompt lookup | tau | rows/step | exact match |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for s in summary:
        exact = "n/a (sampled)" if s["exact_match"] is None else f"{s['exact_match']:.0%}"
        each = s["speedup_per_prompt"]
        spread = f"{statistics.median(each):.2f}x ({each[0]:.2f}-{each[-1]:.2f}x)" if each else "-"
        lines.append(f"| {s['method']} | {s['tokens_per_s']:.1f} | {s['speedup']:.2f}x | {spread} | {cell(s['vs_prompt_lookup'], '.2f')} "
                     f"| {cell(s['tau'], '.2f').removesuffix('x')} | {cell(s['rows_per_step'], '.1f')} | {exact} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
