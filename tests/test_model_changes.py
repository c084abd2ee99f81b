"""A model changed after patch(): every generate call reads it afresh, re-wraps, falls back or refuses.

Plain output here is ``type(model).generate`` on the same (patched, changed) model: the
original decoding, whose attention calls the wrapper hands unchanged to the wrapped
implementation (see test_patching.test_plain_forward_of_patched_model_is_unchanged).
"""

import copy
import warnings

import pytest
import torch
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import specdec
from drafting import perturbed_predictor
from near_tie import assert_greedy_equivalent
from tiny_models import prompt, tiny_model


@pytest.fixture
def model():
    model = tiny_model("llama-gqa", seed=4)
    specdec.patch(model, perturbed_predictor(model, 1, k=3), tree="default")
    return model


def plain(model, ids, new=30):
    return type(model).generate(model, ids, max_new_tokens=new, do_sample=False)


def patched(model, ids, new=30):
    """Patched output, checked to come from the speculative loop without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        out = model.generate(ids, max_new_tokens=new, do_sample=False)
    assert specdec.stats(model).fallback is None
    return out


def set_by_config(model, name):
    model.config._attn_implementation = name


@pytest.mark.parametrize("switch", [lambda m, name: m.set_attn_implementation(name), set_by_config], ids=["set_attn_implementation", "config"])
@pytest.mark.parametrize("name", ["sdpa", "eager"])
def test_attention_switched_after_patch_is_wrapped_again(model, switch, name):
    ids = prompt(model, 7, seed=1)
    switch(model, name)
    out = patched(model, ids)
    assert model.config._attn_implementation == f"specdec_{name}"
    assert_greedy_equivalent(model, plain(model, ids), out)
    specdec.unpatch(model)
    assert model.config._attn_implementation == name  # the user's latest choice, not the one at patch time


def test_attention_that_cannot_be_wrapped_falls_back_with_a_warning(model):
    AttentionInterface.register("test_custom_attention", sdpa_attention_forward)
    AttentionMaskInterface.register("test_custom_attention", sdpa_mask)
    ids = prompt(model, 7, seed=2)
    model.set_attn_implementation("test_custom_attention")
    with pytest.warns(UserWarning, match="attention implementation 'test_custom_attention'"):
        out = model.generate(ids, max_new_tokens=30, do_sample=False)
    assert "test_custom_attention" in specdec.stats(model).fallback
    assert torch.equal(out, plain(model, ids))


def test_replaced_attention_module_with_its_own_config_falls_back(model):
    layer = model.model.layers[2]
    config = copy.deepcopy(model.config)
    config._attn_implementation = "sdpa"
    attention = type(layer.self_attn)(config, layer_idx=2)
    attention.load_state_dict(layer.self_attn.state_dict())
    layer.self_attn = attention
    ids = prompt(model, 7, seed=3)
    with pytest.warns(UserWarning, match="could not be wrapped in every decoder layer"):
        out = model.generate(ids, max_new_tokens=30, do_sample=False)
    assert torch.equal(out, plain(model, ids))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_dtype_change_after_patch(model, dtype):
    ids = prompt(model, 7, seed=4)
    model.to(dtype)
    assert_greedy_equivalent(model, plain(model, ids), patched(model, ids))
    model.to(torch.float32)  # and back: the draft source is prepared again for fp32
    assert_greedy_equivalent(model, plain(model, ids), patched(model, ids))


def swap_head_weight(model):
    model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().flip(0).clone())


def swap_head_module(model):
    head = nn.Linear(model.config.hidden_size, model.config.vocab_size, bias=False)
    with torch.no_grad():
        head.weight.copy_(model.lm_head.weight.roll(7, dims=0))
    model.lm_head = head


def tie_head(model):
    model.lm_head.weight = model.model.embed_tokens.weight


@pytest.mark.parametrize("change", [swap_head_weight, swap_head_module, tie_head])
def test_replaced_lm_head_is_used(model, change):
    ids = prompt(model, 7, seed=5)
    before = plain(model, ids)
    change(model)
    expected = plain(model, ids)
    assert not torch.equal(expected, before), "the change must alter the output for this test to mean anything"
    assert_greedy_equivalent(model, expected, patched(model, ids))


def add_head_bias(model):
    model.lm_head.bias = nn.Parameter(torch.zeros(model.config.vocab_size))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda m: m.resize_token_embeddings(120, mean_resizing=False), "vocab_size is 101 in the predictor but 120 in the model"),
        (add_head_bias, "LM heads with a bias"),
    ],
    ids=["resize_token_embeddings", "head_bias"],
)
def test_change_that_patch_would_refuse_is_refused_per_call(model, change, message):
    change(model)
    with pytest.raises(ValueError, match=message) as info:
        model.generate(prompt(model, 7, seed=6), max_new_tokens=10, do_sample=False)
    assert "changed after specdec.patch()" in str(info.value)
