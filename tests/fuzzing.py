"""Randomized end-to-end cases: patched ``generate`` against plain greedy decoding.

``sample_case(seed)`` draws one :class:`FuzzCase` (architecture, sizes, sliding
window, dtype, attention implementation, ``k``, transfer layer, tree (static or ``"auto"``), draft
source (FIRP or a token-aware head), prompt, EOS, logits processors, kernel backend, ``compile`` (packed weights or not), and a change made to the
model after ``patch()``: attention implementation, dtype or LM head); ``run_case(case)``
builds two identical tiny models, decodes with plain greedy on one and with specdec
on the other, and checks the exactness policy (:mod:`near_tie`). The same seed
always gives the same case.

``tests/test_fuzz.py`` runs a few dozen seeds per suite run; ``python -m bench.e2e.fuzz``
runs 1000 (or any number) on demand.
"""

import os
import random
from dataclasses import dataclass, field

import torch
from torch import nn

import specdec
from drafting import ScrambledDrafts, perturbed_head, perturbed_predictor
from near_tie import assert_greedy_equivalent
from specdec import FIRPDrafts, ForcedDrafts, HeadDrafts, LookupDrafts
from tiny_models import ARCHS, tiny_model

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DRAFTS = ("firp", "correct", "wrong", "scrambled", "lookup")
# Models stay on the CPU, so the Triton backend is drawn only where it runs interpreted
# (there, without bf16, which the interpreter cannot compute; see docs/platform-notes.md).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@dataclass(frozen=True)
class FuzzCase:
    """One randomized request; every field is plain data so a failing case prints as a reproduction."""

    seed: int
    arch: str
    config: dict = field(hash=False)
    dtype: str
    attn: str
    k: int
    layer: int
    tree: object = field(hash=False)
    drafts: str
    prompt: tuple
    max_new_tokens: int
    eos: object = field(hash=False)
    options: dict = field(hash=False)
    backend: str
    after_patch: str | None
    compile: object = "auto"
    head: bool = False


def _sizes(rng: random.Random, arch: str) -> dict:
    """Random model sizes: heads, GQA groups, head dim, depth, vocabulary, sliding window."""
    heads = rng.choice((1, 2, 3, 4, 6, 8))
    kv_heads = rng.choice([h for h in range(1, heads + 1) if heads % h == 0])
    head_dim = rng.choice((4, 8, 12, 16))
    config = dict(
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        hidden_size=heads * head_dim,
        head_dim=head_dim,
        num_hidden_layers=rng.randint(1, 5),
        vocab_size=rng.randint(17, 300),
    )
    if arch == "qwen2-bias":
        del config["head_dim"]  # Qwen2 derives it from hidden_size / heads
        window = rng.choice((None, rng.randint(2, 24)))
        config.update(use_sliding_window=window is not None, sliding_window=window, max_window_layers=rng.randint(0, 4))
    if arch == "mistral-window":
        config["sliding_window"] = rng.choice((None, rng.randint(2, 24)))
    return config


def _random_paths(rng: random.Random, k: int) -> list[list[int]]:
    """A random prefix-closed tree of up to 24 nodes, ranks below 4, depth at most ``k``."""
    paths = [(rng.randrange(4),)]
    for _ in range(rng.randint(0, 23)):
        parent = rng.choice([()] + [p for p in paths if len(p) < k])
        child = parent + (rng.randrange(4),)
        if child not in paths:
            paths.append(child)
    rng.shuffle(paths)
    return [list(p) for p in paths]


def _options(rng: random.Random, vocab: int) -> dict:
    """Zero to two of the stateless logits processors ``generate`` builds from its arguments."""
    choices = [
        lambda: dict(repetition_penalty=round(rng.uniform(1.1, 2.0), 2)),
        lambda: dict(no_repeat_ngram_size=rng.randint(1, 3)),
        lambda: dict(suppress_tokens=rng.sample(range(vocab), 3)),
        lambda: dict(bad_words_ids=[[rng.randrange(vocab)], [rng.randrange(vocab), rng.randrange(vocab)]]),
        lambda: dict(min_new_tokens=rng.randint(1, 12)),
    ]
    options = {}
    for make in rng.sample(choices, rng.choice((0, 0, 1, 2))):
        options.update(make())
    return options


def sample_case(seed: int) -> FuzzCase:
    """The case of ``seed`` (deterministic)."""
    rng = random.Random(seed)
    arch = rng.choice(ARCHS)
    config = _sizes(rng, arch)
    backend = "triton" if rng.random() < 0.05 and INTERPRETED else "torch"
    dtypes = ("float32", "float16") if backend == "triton" else tuple(DTYPES)
    dtype = rng.choices(dtypes, weights=(6, 2, 1)[: len(dtypes)])[0]
    k = rng.randint(1, 4)
    static = rng.choice(("chain", "default", "wide", rng.randint(1, 10 if k == 1 else 40), _random_paths(rng, k)))
    tree = "auto" if rng.random() < 0.35 else static
    drafts = rng.choice(DRAFTS)
    vocab = config["vocab_size"]
    length = rng.randint(1, 20)
    prompt = [rng.randrange(vocab) for _ in range(length)]
    if drafts == "lookup" or rng.random() < 0.2:  # repeated text, so n-gram lookups find matches
        prompt = (prompt * 3)[: 3 * length - rng.randrange(length)]
    eos = rng.choice(("config", None, "output", "outputs", rng.randrange(vocab)))
    return FuzzCase(
        seed=seed,
        arch=arch,
        config=config,
        dtype=dtype,
        attn=rng.choice(("sdpa", "eager")),
        k=k,
        layer=rng.randrange(config["num_hidden_layers"]),
        tree=tree,
        drafts=drafts,
        prompt=tuple(prompt),
        max_new_tokens=rng.randint(1, 48),
        eos=eos,
        options=_options(rng, vocab),
        backend=backend,
        after_patch=rng.choice((None, None, None, "attention", "dtype", "head")),
        compile=rng.choice(("auto", "auto", False)),  # drawn late: earlier seeds keep their other draws
        head=rng.random() < 0.25,  # drawn last: a token-aware head replaces FIRP in "firp" and "lookup" cases
    )


def _model(case: FuzzCase):
    """The case's tiny model as it is before the change of ``after_patch``."""
    dtype = DTYPES[case.dtype]
    if case.after_patch == "dtype":
        dtype = torch.float32 if dtype != torch.float32 else torch.bfloat16
    model = tiny_model(case.arch, seed=case.seed, dtype=dtype, **case.config)
    model.set_attn_implementation({"sdpa": "eager", "eager": "sdpa"}[case.attn] if case.after_patch == "attention" else case.attn)
    return model


def _change(case: FuzzCase, model) -> None:
    """Bring the model to the case's attention implementation, dtype and LM head (``after_patch``)."""
    if case.after_patch == "attention":
        model.set_attn_implementation(case.attn)
    elif case.after_patch == "dtype":
        model.to(DTYPES[case.dtype])
    elif case.after_patch == "head":
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().roll(1, dims=0).clone())


def _eos_kwarg(case: FuzzCase, model, ids: torch.Tensor, kwargs: dict):
    """The ``eos_token_id`` of the case: the config's, none, a random id, or tokens of the output itself."""
    if case.eos == "config":
        return {}
    if case.eos not in ("output", "outputs"):
        return dict(eos_token_id=case.eos)
    rng = random.Random(case.seed + 1)
    free = model.generate(ids, **{**kwargs, "eos_token_id": None})[0, ids.shape[1] :].tolist()
    picks = rng.sample(free, min(len(free), 1 if case.eos == "output" else 3))
    return dict(eos_token_id=picks[0] if case.eos == "output" else picks)


def _source(case: FuzzCase, model, reference: list[int]):
    firp = FIRPDrafts(perturbed_predictor(model, case.layer, case.k, seed=case.seed))
    if case.head and case.drafts in ("firp", "lookup"):
        head = HeadDrafts(perturbed_head(model, depth=case.k, seed=case.seed), width=1 + case.seed % 4, beam=1 + case.seed % 3)
        return head if case.drafts == "firp" else LookupDrafts(head)
    vocab = model.config.vocab_size
    chain = case.seed % 9 if case.tree == "auto" else 0  # forced chains up to 8 deep (auto follows them past k)
    return {
        "firp": lambda: firp,
        "correct": lambda: ForcedDrafts(firp, reference, vocab, correct=True, chain_depth=chain),
        "wrong": lambda: ForcedDrafts(firp, reference, vocab, correct=False, chain_depth=chain),
        "scrambled": lambda: ScrambledDrafts(firp, reference, vocab, seed=case.seed, chain_depth=chain),
        "lookup": lambda: LookupDrafts(firp),
    }[case.drafts]()


def run_case(case: FuzzCase) -> None:
    """Decode ``case`` plain and patched; raise ``AssertionError`` unless the policy holds.

    Two identical models: the plain one gets the ``after_patch`` change before decoding,
    the patched one right after ``patch()``.
    """
    plain_model = _model(case)
    _change(case, plain_model)
    ids = torch.tensor([case.prompt])
    kwargs = dict(max_new_tokens=case.max_new_tokens, do_sample=False, **case.options)
    kwargs.update(_eos_kwarg(case, plain_model, ids, kwargs))
    plain = plain_model.generate(ids, **kwargs, output_scores=True, return_dict_in_generate=True)
    expected = plain.sequences

    model = _model(case)
    specdec.patch(model, _source(case, model, expected[0].tolist()), tree=case.tree, backend=case.backend, compile=case.compile)
    _change(case, model)
    out = model.generate(ids, **kwargs)
    stats = specdec.stats(model)
    assert stats.fallback is None, f"fell back: {stats.fallback}"
    assert stats.new_tokens == out.shape[1] - ids.shape[1]
    assert_greedy_equivalent(plain_model, expected, out, scores=plain.scores)
