"""End to end with the Triton kernels (interpreted on CPU, compiled on a GPU): patched output equals plain greedy."""

import pytest

import specdec
from drafting import forced, perturbed_predictor
from kernel_utils import DEVICE
from near_tie import assert_greedy_equivalent
from tiny_models import prompt, tiny_model


@pytest.mark.parametrize("arch,tree", [("llama-gqa", "default"), ("mistral-window", "chain")])
def test_triton_backend_matches_plain_greedy(arch, tree):
    model = tiny_model(arch, seed=9).to(DEVICE)
    ids = prompt(model, 11, seed=6).to(DEVICE)
    expected = model.generate(ids, max_new_tokens=14, do_sample=False)
    specdec.patch(model, perturbed_predictor(model, 1, k=3), tree=tree, backend="triton")
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=14, do_sample=False))
    assert specdec.stats(model).fallback is None


def test_triton_backend_accepts_forced_drafts():
    model = tiny_model("qwen3-norm", seed=2).to(DEVICE)
    ids = prompt(model, 6, seed=1).to(DEVICE)
    expected = model.generate(ids, max_new_tokens=13, do_sample=False, eos_token_id=None)
    source = forced(perturbed_predictor(model, 2, k=3), expected[0].tolist(), model.config.vocab_size)
    specdec.patch(model, source, tree="default", backend="triton")
    assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=13, do_sample=False, eos_token_id=None))
    assert specdec.stats(model).tau > 3
