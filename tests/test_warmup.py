"""specdec.warmup(): the step timed at chosen row counts before the first request, exactness after it."""

import pytest
import torch

import specdec
from drafting import perturbed_predictor
from near_tie import assert_greedy_equivalent
from specdec import patching
from specdec.decode.cost import GRID
from tiny_models import prompt, tiny_model


def _greedy_cost(model, step: str):
    param = model.get_input_embeddings().weight
    return patching._TUNING[model].costs[(param.device, param.dtype, "greedy", step)]


def test_warmup_measures_the_step_and_seeds_the_auto_planner():
    model = tiny_model("llama-gqa", seed=5)
    ids = prompt(model, 9, seed=1)
    ids = torch.cat([ids, ids], dim=1)
    expected = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=None)
    specdec.patch(model)
    seconds = specdec.warmup(model, rows=(4, 2), prompt_tokens=20)
    assert sorted(seconds) == [1, 2, 4] and all(0 < s < 10 for s in seconds.values())
    cost = _greedy_cost(model, "packed" if torch.backends.mkldnn.is_available() else "eager")
    assert cost.ready
    assert all(cost.weights[GRID.index(r)] > 0 for r in (1, 2, 4))  # measured points, not the prior
    out = model.generate(ids, max_new_tokens=24, do_sample=False, eos_token_id=None)
    assert_greedy_equivalent(model, expected, out)
    assert not any("forward" in m.__dict__ for m in model.model.layers.modules())


def test_warmup_with_a_static_tree_leaves_the_planner_alone():
    model = tiny_model("qwen3-norm", seed=2)
    ids = prompt(model, 11, seed=4)
    expected = model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None)
    specdec.patch(model, perturbed_predictor(model, layer=1, k=2, seed=3), tree="chain")
    seconds = specdec.warmup(model, rows=[3], prompt_tokens=0)
    assert sorted(seconds) == [1, 3]
    assert model not in patching._TUNING  # static trees have no cost curve to seed
    out = model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None)
    assert_greedy_equivalent(model, expected, out)


@pytest.mark.parametrize("rows", [(), 0, (0,), (65,), (1.5,), (True,), "4"])
def test_warmup_refuses_bad_rows(rows):
    model = tiny_model("llama-gqa")
    specdec.patch(model)
    with pytest.raises(ValueError, match="rows must be"):
        specdec.warmup(model, rows=rows)


def test_warmup_needs_a_patched_model():
    model = tiny_model("llama-gqa")
    with pytest.raises(ValueError, match="patched with specdec.patch"):
        specdec.warmup(model)
    specdec.patch(model)
    with pytest.raises(ValueError, match="prompt_tokens"):
        specdec.warmup(model, prompt_tokens=-1)
