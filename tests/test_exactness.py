"""Patched greedy output equals the unpatched model's generate(do_sample=False) (near-tie policy)."""

import pytest
import torch

import specdec
from drafting import ScrambledDrafts, perturbed_predictor
from near_tie import assert_greedy_equivalent
from specdec import FIRPDrafts
from tiny_models import ARCHS, NUM_LAYERS, prompt, tiny_model

# (prompt length, max_new_tokens) pairs; prompt length 1 has no prefill.
LENGTHS = ((1, 9), (6, 23), (13, 40))
CUSTOM_TREES = {
    1: [[0], [2], [1]],
    2: [[0], [1], [0, 0], [1, 0], [0, 2]],
    3: [[1], [0], [0, 0], [0, 1], [1, 0], [0, 0, 0], [0, 1, 0]],
    4: [[0], [0, 0], [0, 0, 0], [0, 0, 0, 0], [0, 0, 1], [1], [1, 0]],
}
TREES = ("chain", "default", "wide", "custom")
LAYERS = {"first": 0, "middle": NUM_LAYERS // 2, "last": NUM_LAYERS - 1}

# A covering design: every architecture meets every k, and trees and layers rotate.
CASES = [
    (arch, k, TREES[(i + k) % len(TREES)], tuple(LAYERS)[(i + k) % len(LAYERS)])
    for i, arch in enumerate(ARCHS)
    for k in (1, 2, 3, 4)
]


def plain_outputs(model, prompts, **kwargs):
    return [model.generate(ids, max_new_tokens=new, do_sample=False, **kwargs) for ids, new in prompts]


@pytest.mark.parametrize("arch,k,tree,layer", CASES)
def test_firp_matches_plain_greedy(arch, k, tree, layer):
    model = tiny_model(arch, seed=k)
    prompts = [(prompt(model, length, seed), new) for seed, (length, new) in enumerate(LENGTHS)]
    plain = plain_outputs(model, prompts)
    predictor = perturbed_predictor(model, LAYERS[layer], k, seed=k)
    specdec.patch(model, predictor, tree=CUSTOM_TREES[k] if tree == "custom" else tree)
    for (ids, new), expected in zip(prompts, plain):
        out = model.generate(ids, max_new_tokens=new, do_sample=False)
        assert_greedy_equivalent(model, expected, out)
        stats = specdec.stats(model)
        assert stats.fallback is None and stats.new_tokens == out.shape[1] - ids.shape[1]


@pytest.mark.parametrize("arch", ARCHS)
def test_partial_acceptance_of_any_rank_matches_plain(arch):
    """Drafts with the truth at random ranks (or missing) exercise every branch of the walk."""
    model = tiny_model(arch, seed=7)
    ids = prompt(model, 5, seed=3)
    expected = model.generate(ids, max_new_tokens=60, do_sample=False)
    predictor = perturbed_predictor(model, 1, k=3)
    specdec.patch(model, ScrambledDrafts(FIRPDrafts(predictor), expected[0].tolist(), model.config.vocab_size), tree="wide")
    out = model.generate(ids, max_new_tokens=60, do_sample=False)
    assert_greedy_equivalent(model, expected, out)
    stats = specdec.stats(model)
    assert 0 < sum(stats.accepted) < 3 * len(stats.accepted), "expected partial acceptance"


def test_bfloat16_model_matches_plain_greedy():
    model = tiny_model("llama-gqa", seed=11, dtype=torch.bfloat16)
    ids = prompt(model, 7, seed=1)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False)
    specdec.patch(model, perturbed_predictor(model, 1, k=3))
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=30, do_sample=False))


def test_eager_attention_model_matches_plain_greedy():
    model = tiny_model("qwen3-norm", seed=5)
    model.set_attn_implementation("eager")
    ids = prompt(model, 8, seed=2)
    expected = model.generate(ids, max_new_tokens=25, do_sample=False)
    specdec.patch(model, perturbed_predictor(model, 2, k=2))
    assert model.config._attn_implementation == "specdec_eager"
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=25, do_sample=False))
    specdec.unpatch(model)
    assert model.config._attn_implementation == "eager"
