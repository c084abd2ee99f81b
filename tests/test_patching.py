"""patch()/unpatch() life cycle, fallbacks to the original generate, and bad input."""

import re
import warnings

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaModel, LogitsProcessor, LogitsProcessorList

import specdec
from drafting import perturbed_predictor
from specdec import FuturePredictor
from tiny_models import prompt, tiny_model


@pytest.fixture
def model():
    return tiny_model("llama-gqa", seed=1)


@pytest.fixture
def predictor(model):
    return perturbed_predictor(model, 1, k=3)


def snapshot(model):
    return model.config._attn_implementation, "generate" in vars(model), specdec.is_patched(model)


def test_unpatch_restores_original_behaviour(model, predictor):
    ids = prompt(model, 6, seed=0)
    before, original_state = model.generate(ids, max_new_tokens=20, do_sample=False), snapshot(model)
    specdec.patch(model, predictor)
    assert snapshot(model) == ("specdec_sdpa", True, True)
    specdec.unpatch(model)
    assert snapshot(model) == original_state == ("sdpa", False, False)
    assert torch.equal(model.generate(ids, max_new_tokens=20, do_sample=False), before)
    specdec.unpatch(model)  # unpatching an unpatched model is a no-op
    assert snapshot(model) == original_state


def test_patch_twice_is_harmless_and_replaces_settings(model, predictor):
    ids = prompt(model, 6, seed=0)
    before = model.generate(ids, max_new_tokens=20, do_sample=False)
    assert specdec.patch(specdec.patch(model, predictor), predictor, tree="chain") is model
    assert torch.equal(model.generate(ids, max_new_tokens=20, do_sample=False), before)
    assert max(specdec.stats(model).nodes) == 3
    specdec.unpatch(model)
    assert snapshot(model) == ("sdpa", False, False)


def test_patch_does_not_touch_state_dict_or_predictor(model, predictor):
    keys = set(model.state_dict())
    half = predictor.to(torch.float16)
    specdec.patch(model, half)
    assert set(model.state_dict()) == keys
    assert half.weight.dtype == torch.float16


def test_plain_forward_of_patched_model_is_unchanged(model, predictor):
    ids = prompt(model, 9, seed=3)
    before = model(ids).logits
    specdec.patch(model, predictor)
    assert torch.equal(model(ids).logits, before)


class AddOne(LogitsProcessor):
    def __call__(self, input_ids, scores):
        return scores + 1


# (case, what the warning must name, generate kwargs)
FALLBACKS = [
    ("num_return_sequences", "num_return_sequences=2", dict(do_sample=True, num_return_sequences=2)),
    ("beam", "generation mode 'beam_search'", dict(num_beams=2)),
    ("batch size 2", "batch size 2", dict()),
    ("padding", "padding in attention_mask", dict()),
    ("return_dict_in_generate", "return_dict_in_generate=True", dict(return_dict_in_generate=True)),
    ("prompt_lookup_num_tokens", "prompt_lookup_num_tokens was given", dict(prompt_lookup_num_tokens=2)),
    ("AddOne", "logits processor AddOne", dict(logits_processor=LogitsProcessorList([AddOne()]))),
    ("inputs_embeds", "inputs_embeds was given", dict()),
]


@pytest.mark.parametrize("case,reason,kwargs", FALLBACKS, ids=[c for c, _, _ in FALLBACKS])
def test_unsupported_requests_fall_back_with_one_warning(model, predictor, case, reason, kwargs):
    ids = prompt(model, 6, seed=2)
    mask = None
    if case == "batch size 2":
        ids = torch.cat([ids, prompt(model, 6, seed=9)])
    if case == "padding":
        mask = torch.ones_like(ids)
        mask[0, :2] = 0
    if case == "prompt_lookup_num_tokens":
        ids = torch.tensor([[5, 6, 7, 8, 5, 6, 7, 8, 5, 6]])
    inputs = dict(inputs_embeds=model.get_input_embeddings()(ids).detach()) if case == "inputs_embeds" else dict(inputs=ids)

    def run():
        torch.manual_seed(0)
        out = model.generate(**inputs, attention_mask=mask, max_new_tokens=12, **kwargs)
        return out.sequences if hasattr(out, "sequences") else out

    expected = run()
    specdec.patch(model, predictor)
    with pytest.warns(UserWarning, match=f"specdec: {re.escape(reason)}.*; running the original generate"):
        first = run()
    assert specdec.stats(model).fallback.startswith(reason)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        second = run()
    assert torch.equal(first, expected) and torch.equal(second, expected)


def test_unsupported_model_type_is_refused():
    config = GPT2Config(vocab_size=50, n_embd=32, n_layer=2, n_head=2)
    model = GPT2LMHeadModel(config).eval()
    pred = FuturePredictor(32, 3, 0, {"model_type": "gpt2", "hidden_size": 32, "num_hidden_layers": 2, "vocab_size": 50})
    with pytest.raises(ValueError, match=r"'gpt2' is not supported; supported types: llama, mistral, qwen2, qwen3"):
        specdec.patch(model, pred)
    assert not specdec.is_patched(model)


def test_model_without_lm_head_is_refused(model, predictor):
    with pytest.raises(ValueError, match=r"needs a \*ForCausalLM model with an LM head, got LlamaModel"):
        specdec.patch(LlamaModel(model.config), predictor)


@pytest.mark.parametrize(
    "other,field",
    [
        (dict(hidden_size=48), "hidden_size"),
        (dict(num_hidden_layers=5), "num_hidden_layers"),
        (dict(vocab_size=102), "vocab_size"),
    ],
)
def test_predictor_for_another_model_is_refused(model, other, field):
    donor = tiny_model("llama-gqa", **other)
    with pytest.raises(ValueError, match=field):
        specdec.patch(model, FuturePredictor.for_model(donor, layer=1))
    assert snapshot(model) == ("sdpa", False, False)


def test_predictor_of_another_architecture_is_refused(model):
    donor = tiny_model("qwen3-norm", hidden_size=64, vocab_size=101)
    with pytest.raises(ValueError, match="model_type is 'qwen3' in the predictor but 'llama'"):
        specdec.patch(model, FuturePredictor.for_model(donor, layer=1))


@pytest.mark.parametrize("layer", [-1, 4, 10, 1.5, True])
def test_transfer_layer_out_of_range(model, layer):
    with pytest.raises(ValueError, match="transfer layer"):
        FuturePredictor.for_model(model, layer=layer)
    pred = FuturePredictor.for_model(model, layer=1)
    pred.layer = layer
    with pytest.raises(ValueError, match="transfer layer"):
        specdec.patch(model, pred)
    assert not specdec.is_patched(model)


@pytest.mark.parametrize("k", [0, -2, 2.5, True])
def test_k_not_a_positive_int(model, k):
    with pytest.raises(ValueError, match=f"k must be an int >= 1, got {k!r}"):
        FuturePredictor.for_model(model, layer=1, k=k)


@pytest.mark.parametrize("name,args", [("hidden_size", (64.0, 3, 1)), ("layer", (64, 3, True)), ("layer", (64, 3, -1))])
def test_predictor_constructor_checks_its_ints(name, args):
    with pytest.raises(ValueError, match=f"{name} must be an int"):
        FuturePredictor(*args, fingerprint={})


@pytest.mark.parametrize(
    "tree,message",
    [
        ([[0, 0]], "gap"),
        ([[0], [0, 1, 0]], "gap"),
        ([[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]], "depth 4 > k=3"),
        ([[0], [1], [0]], "twice"),
        ([], "non-empty list"),
        ([[0], [-1]], "non-negative"),
        ([[0], []], "non-empty list"),
        ("bushy", "unknown tree"),
        (7.5, "a node count or a non-empty list of paths"),
        (0, "at least 1 node"),
        ([[0], [True]], "non-negative ints"),
        (10**6, "at most 1110 nodes"),
    ],
)
def test_malformed_trees_are_refused(model, predictor, tree, message):
    with pytest.raises(ValueError, match=message):
        specdec.patch(model, predictor, tree=tree)
    assert snapshot(model) == ("sdpa", False, False)


def test_bad_backend_and_type_are_refused(model, predictor):
    with pytest.raises(ValueError, match="backend must be one of"):
        specdec.patch(model, predictor, backend="cuda")
    with pytest.raises(TypeError, match="FuturePredictor, a TokenHead or a DraftSource"):
        specdec.patch(model, "predictor.safetensors")
    assert snapshot(model) == ("sdpa", False, False)


def test_refusal_keeps_an_existing_patch(model, predictor):
    specdec.patch(model, predictor, tree="chain")
    with pytest.raises(ValueError):
        specdec.patch(model, predictor, tree=[[0, 0]])
    assert specdec.is_patched(model) and specdec.stats(model) is None
    ids = prompt(model, 4, seed=1)
    model.generate(ids, max_new_tokens=5, do_sample=False)
    assert max(specdec.stats(model).nodes) == 3


def test_stats_of_a_never_patched_model_raises():
    with pytest.raises(ValueError, match="never patched"):
        specdec.stats(tiny_model("llama-gqa"))


def test_stats_are_kept_by_unpatch_and_reset_by_patch(model, predictor):
    specdec.patch(model, predictor)
    assert specdec.stats(model) is None
    specdec.unpatch(model)
    assert specdec.stats(model) is None  # before the first call, patched or not
    specdec.patch(model, predictor)
    model.generate(prompt(model, 4, seed=2), max_new_tokens=6, do_sample=False)
    last = specdec.stats(model)
    assert last is not None and last.new_tokens == 6
    specdec.unpatch(model)
    assert specdec.stats(model) is last
    model.generate(prompt(model, 4, seed=2), max_new_tokens=3, do_sample=False)  # plain: not a specdec call
    assert specdec.stats(model) is last
    specdec.patch(model, predictor)
    assert specdec.stats(model) is None
