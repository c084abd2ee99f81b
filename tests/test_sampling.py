"""do_sample=True: patched output is distributed exactly as plain sampling.

A tiny model with a 12-token vocabulary and sharpened logits makes whole 3-token continuations a
small enough outcome space to compare distributions: the exact distribution of plain sampling is
computed by enumeration (the same processors ``generate`` builds, applied to every context), and
the patched model is sampled many times with fixed seeds. A chi-square statistic over the outcomes
(bins with fewer than 5 expected samples pooled) is compared with the critical value at
p = 1e-4, so a correct implementation passes and the test is deterministic. Draft trees hold up to
36 nodes of random subsets of the vocabulary (so every acceptance path runs: the first draft
taken, a later rank, rejection at any depth) or the whole vocabulary (every draw accepted); the
test's own check is shown to catch a deliberately wrong rule that accepts the first child without
sampling.
"""

import itertools
import math
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import specdec
from specdec import Candidates, DraftSource, FIRPDrafts, FuturePredictor
from specdec.decode import verification
from simulated_device import pin_cost
from stats_checks import chi_square

VOCAB, NEW, SAMPLES = 12, 3, 1500
PROMPT = torch.tensor([[3, 7, 1, 9]])
SETTINGS = {
    "t0.5": dict(temperature=0.5),
    "t1.0": dict(temperature=1.0),
    "t1.5": dict(temperature=1.5),
    "top-k": dict(temperature=1.0, top_k=4),
    "top-p": dict(temperature=1.2, top_p=0.8),
    "min-p": dict(temperature=1.0, min_p=0.15),
    "repetition": dict(temperature=1.0, repetition_penalty=1.8),
}


def sharp_model() -> LlamaForCausalLM:
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=8)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(25.0)  # logits of a few units: distinct, peaked next-token distributions
    return model


class SubsetDrafts(DraftSource):
    """Ranks ``width`` random tokens of the vocabulary at each of 2 depths (all of them when ``width``
    is the vocabulary size), at every step, the first included."""

    def __init__(self, inner: DraftSource, width: int, seed: int):
        self.inner, self.width, self.rng = inner, width, random.Random(seed)
        self.k, self.layer = inner.k, inner.layer

    def prepared(self, model, backend):
        return SubsetDrafts(self.inner.prepared(model, backend), self.width, self.rng.random())

    def inject(self, hidden, out):
        self.inner.inject(hidden, out)

    def propose(self, context, ranked):
        rows = [self.rng.sample(range(VOCAB), self.width) for _ in range(self.k)]
        return Candidates(rows, [[math.log(0.5)] * self.width for _ in rows])


def processors_of(model, **settings):
    """The logits processors ``generate`` builds for ``settings`` (captured through ``custom_generate``)."""
    captured = {}

    def capture(model, input_ids, logits_processor, *args, **kwargs):
        captured["processors"] = logits_processor
        return input_ids

    model.generate(PROMPT, max_new_tokens=NEW, do_sample=True, custom_generate=capture, **settings)
    return captured["processors"]


@torch.no_grad()
def exact_distribution(model, processors) -> dict[tuple[int, ...], float]:
    """Probability of every ``NEW``-token continuation under plain sampling."""
    dist = {(): 1.0}
    for _ in range(NEW):
        grown = {}
        for seq, p in dist.items():
            ids = torch.cat([PROMPT, torch.tensor([seq], dtype=torch.int64).view(1, -1)], dim=1)
            scores = processors(ids, model(ids).logits[:, -1].float())
            for token, q in enumerate(scores.softmax(-1)[0].tolist()):
                if q > 0:
                    grown[seq + (token,)] = p * q
        dist = grown
    return dist


def sample_counts(model, settings: dict, samples: int) -> tuple[dict, int]:
    """Outcome counts of ``samples`` patched generations, and their total number of steps."""
    counts, steps = {}, 0
    torch.manual_seed(1234)
    for _ in range(samples):
        out = model.generate(PROMPT, max_new_tokens=NEW, do_sample=True, **settings)
        outcome = tuple(out[0, PROMPT.shape[1]:].tolist())
        counts[outcome] = counts.get(outcome, 0) + 1
        steps += specdec.stats(model).steps
    return counts, steps


TREE = [[r] for r in range(6)] + [[r, s] for r in range(6) for s in range(5)]  # 36 nodes, 2 deep


@pytest.mark.parametrize("name,width", [(name, 6) for name in SETTINGS] + [("t1.0", VOCAB)])
def test_sampling_matches_plain_distribution(name, width):
    model = sharp_model()
    settings = SETTINGS[name]
    dist = exact_distribution(model, processors_of(model, **settings))
    predictor = FuturePredictor.for_model(model, layer=0, k=2)
    tree = TREE if width < VOCAB else [[r] for r in range(VOCAB)] + [[r, s] for r in range(VOCAB) for s in range(2)]
    specdec.patch(model, SubsetDrafts(FIRPDrafts(predictor), width, seed=len(name)), tree=tree)
    counts, steps = sample_counts(model, settings, SAMPLES)
    statistic, critical = chi_square(counts, dist, SAMPLES)
    assert statistic < critical, f"{name}: chi-square {statistic:.1f} >= {critical:.1f}"
    assert specdec.stats(model).fallback is None
    assert steps < 0.8 * NEW * SAMPLES  # drafts were accepted: fewer steps than tokens


class FirstChildRule(verification.SamplingRule):
    """A wrong rule: at rows with children, target the first child's token (accept it without sampling)."""

    def targets(self, lm_head, hidden, plan, top_k, tokens, backend, vocabulary=None):
        draws, ranked = super().targets(lm_head, hidden, plan, top_k, tokens, backend, vocabulary)
        for row, parent in reversed(list(enumerate(plan.layout.parents, start=1))):
            draws[parent] = plan.tokens[row - 1]
        return draws, ranked


def test_the_check_catches_a_rule_that_accepts_without_sampling(monkeypatch):
    model = sharp_model()
    settings = SETTINGS["t1.0"]
    dist = exact_distribution(model, processors_of(model, **settings))
    specdec.patch(model, SubsetDrafts(FIRPDrafts(FuturePredictor.for_model(model, layer=0, k=2)), 6, seed=5), tree=TREE)
    monkeypatch.setattr(verification, "SamplingRule", FirstChildRule)
    statistic, critical = chi_square(sample_counts(model, settings, 500)[0], dist, 500)
    assert statistic > 10 * critical


def test_a_seed_fixes_the_output_whatever_the_trees():
    """Draws are counter-based per position: chain, wide and auto trees give the same tokens."""
    model = sharp_model()
    predictor = FuturePredictor.for_model(model, layer=0, k=2)
    runs = []
    for tree in ("chain", "wide", "auto", "auto"):
        specdec.patch(model, SubsetDrafts(FIRPDrafts(predictor), 6, seed=1), tree=tree)
        torch.manual_seed(7)
        runs.append(model.generate(PROMPT, max_new_tokens=12, do_sample=True, temperature=1.3, top_k=6))
    assert all(torch.equal(run, runs[0]) for run in runs)
    torch.manual_seed(8)
    assert not torch.equal(model.generate(PROMPT, max_new_tokens=12, do_sample=True, temperature=1.3, top_k=6), runs[0])


def test_tiny_temperature_and_greedy_give_greedy_output():
    model = sharp_model()
    greedy = model.generate(PROMPT, max_new_tokens=8, do_sample=False)
    specdec.patch(model, FuturePredictor.for_model(model, layer=0, k=2))
    assert torch.equal(model.generate(PROMPT, max_new_tokens=8, do_sample=True, temperature=1e-4), greedy)
    assert torch.equal(model.generate(PROMPT, max_new_tokens=8, do_sample=False), greedy)


def test_outcome_space_is_small_enough_for_the_test():
    """Guards the test's power: most of the mass sits on outcomes sampled at least 5 times."""
    model = sharp_model()
    dist = exact_distribution(model, processors_of(model, temperature=1.0))
    covered = sum(p for p in dist.values() if SAMPLES * p >= 5)
    assert covered > 0.65 and len(list(itertools.islice(dist, 2))) == 2


def test_lookup_alone_matches_plain_distribution(monkeypatch):
    """``specdec.patch(model)`` (n-gram lookup drafts, no predictor) under sampling: drafted chains
    are verified by the same rule, so the output is distributed as plain sampling."""
    model = sharp_model()
    settings = SETTINGS["t1.0"]
    dist = exact_distribution(model, processors_of(model, **settings))
    pin_cost(model, monkeypatch, lambda rows: 0.01 * (1 + 0.01 * rows), regime="sample")
    specdec.patch(model)
    counts, steps = sample_counts(model, settings, SAMPLES)
    statistic, critical = chi_square(counts, dist, SAMPLES)
    assert statistic < critical, f"chi-square {statistic:.1f} >= {critical:.1f}"
    assert steps < 0.98 * NEW * SAMPLES  # lookup chains were drafted and some accepted (4392 of 4500 steps when written)


def test_head_drafts_match_plain_distribution():
    """The token-aware head's draft trees (a random head ranking 6 of the 12 tokens per node, 2 deep)
    under sampling: drafts change how many tokens a step emits, never their distribution."""
    model = sharp_model()
    settings = SETTINGS["t1.0"]
    dist = exact_distribution(model, processors_of(model, **settings))
    head = specdec.TokenHead.for_model(model, depth=2)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for param in head.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=gen))
    specdec.patch(model, specdec.HeadDrafts(head, width=6, beam=6), tree=TREE)
    counts, steps = sample_counts(model, settings, SAMPLES)
    statistic, critical = chi_square(counts, dist, SAMPLES)
    assert statistic < critical, f"chi-square {statistic:.1f} >= {critical:.1f}"
    assert specdec.stats(model).fallback is None
    assert steps < 0.8 * NEW * SAMPLES  # drafts were accepted: fewer steps than tokens
