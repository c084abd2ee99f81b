"""The accept logic accepts what it should: forced true drafts give tau near k+1, wrong ones tau 1."""

import math

import pytest

import specdec
from drafting import forced, perturbed_predictor
from near_tie import assert_greedy_equivalent
from tiny_models import prompt, tiny_model


@pytest.mark.parametrize("k,tree", [(1, "chain"), (3, "chain"), (3, "default"), (4, "wide")])
def test_true_drafts_are_all_accepted(k, tree):
    model = tiny_model("llama-gqa", seed=3)
    ids = prompt(model, 6, seed=4)
    expected = model.generate(ids, max_new_tokens=41, do_sample=False)
    new = expected.shape[1] - ids.shape[1]
    specdec.patch(model, forced(perturbed_predictor(model, 1, k), expected[0].tolist(), model.config.vocab_size), tree=tree)
    out = model.generate(ids, max_new_tokens=41, do_sample=False)
    assert_greedy_equivalent(model, expected, out)
    stats = specdec.stats(model)
    # The first step has no drafts and emits one token; every later step emits k + 1.
    assert stats.steps == 1 + math.ceil((new - 1) / (k + 1))
    assert stats.tau == pytest.approx(new / stats.steps)
    assert stats.tau > 0.85 * (k + 1)
    assert all(a == 1.0 for a in stats.acceptance)


@pytest.mark.parametrize("tree", ["chain", "default", "wide"])
def test_wrong_drafts_are_all_rejected(tree):
    model = tiny_model("qwen2-bias", seed=2)
    ids = prompt(model, 6, seed=5)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False)
    specdec.patch(model, forced(perturbed_predictor(model, 2, 3), expected[0].tolist(), model.config.vocab_size, correct=False), tree=tree)
    out = model.generate(ids, max_new_tokens=30, do_sample=False)
    assert_greedy_equivalent(model, expected, out)
    stats = specdec.stats(model)
    assert stats.tau == 1.0
    assert stats.steps == out.shape[1] - ids.shape[1]
    assert all(a == 0.0 for a in stats.acceptance)
