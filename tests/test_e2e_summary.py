"""bench/e2e.py's summary: each method's figures come from its own rows only."""

from bench.e2e.run import summarize


def row(method, prompt, seconds, steps=None):
    return {"method": method, "prompt": prompt, "new_tokens": 100, "seconds": seconds, "steps": steps,
            "rows_per_step": 4.0 if steps else None, "exact": None if "sampling" in method else True}


def test_a_method_is_not_mixed_with_methods_whose_name_extends_it():
    names = ["plain greedy", "HF prompt lookup (10)", "specdec auto (defaults)", "plain sampling T=0.7",
             "specdec auto (defaults) sampling T=0.7"]
    rows = []
    for prompt in range(2):
        rows += [row("plain greedy", prompt, 1.0), row("HF prompt lookup (10)", prompt, 0.5),
                 row("specdec auto (defaults)", prompt, 0.25, steps=25), row("plain sampling T=0.7", prompt, 1.0),
                 row("specdec auto (defaults) sampling T=0.7", prompt, 2.0, steps=80)]
    summary = {s["method"]: s for s in summarize(rows, names)}
    auto = summary["specdec auto (defaults)"]
    assert auto["tokens_per_s"] == 400 and auto["speedup"] == 4 and auto["vs_prompt_lookup"] == 2 and auto["tau"] == 4
    sampled = summary["specdec auto (defaults) sampling T=0.7"]
    assert sampled["speedup"] == 0.5 and sampled["vs_prompt_lookup"] is None


def test_per_prompt_speedups_give_the_spread():
    names = ["plain greedy", "specdec auto (defaults)"]
    rows = [row("plain greedy", 0, 1.0), row("plain greedy", 1, 2.0), row("specdec auto (defaults)", 0, 0.5, steps=40), row("specdec auto (defaults)", 1, 2.5, steps=40)]
    auto = {s["method"]: s for s in summarize(rows, names)}["specdec auto (defaults)"]
    assert auto["speedup_per_prompt"] == [0.8, 2.0] and auto["speedup"] == 3.0 / 3.0
