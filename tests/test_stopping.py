"""Stopping and logits processing follow plain greedy decoding token by token, also mid-step."""

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

import specdec
from drafting import forced, perturbed_predictor
from near_tie import assert_greedy_equivalent
from tiny_models import prompt, tiny_model, tiny_tokenizer


def patched_pair(arch="llama-gqa", new=40, k=3, seed=0, **overrides):
    """An unpatched continuation and the same model patched with drafts that follow it (4 tokens a step)."""
    model = tiny_model(arch, seed=seed, **overrides)
    ids = prompt(model, 5, seed=seed)
    reference = model.generate(ids, max_new_tokens=new, do_sample=False, eos_token_id=None)
    specdec.patch(model, forced(perturbed_predictor(model, 1, k), reference[0].tolist(), model.config.vocab_size))
    return model, ids, reference


def compare(model, ids, **kwargs):
    """Patched greedy output, checked to come from the speculative loop (no fallback)."""
    patched = model.generate(ids, do_sample=False, **kwargs)
    state = specdec.stats(model)
    assert state.fallback is None, state.fallback
    return patched


def plain_generate(model, ids, **kwargs):
    return type(model).generate(model, ids, do_sample=False, **kwargs)


@pytest.mark.parametrize("index", [0, 2, 6, 11])
def test_eos_hit_mid_step(index):
    model, ids, reference = patched_pair()
    eos = int(reference[0, ids.shape[1] + index])
    expected = plain_generate(model, ids, max_new_tokens=40, eos_token_id=eos)
    assert expected[0, -1] == eos
    assert_greedy_equivalent(model, expected, compare(model, ids, max_new_tokens=40, eos_token_id=eos))


def test_eos_list():
    model, ids, reference = patched_pair()
    eos = [int(reference[0, ids.shape[1] + 9]), int(reference[0, ids.shape[1] + 7])]
    expected = plain_generate(model, ids, max_new_tokens=40, eos_token_id=eos)
    assert_greedy_equivalent(model, expected, compare(model, ids, max_new_tokens=40, eos_token_id=eos))


@pytest.mark.parametrize("new", [1, 2, 3, 5, 6, 7, 10, 13])
def test_max_new_tokens_hit_mid_step(new):
    model, ids, _ = patched_pair()
    expected = plain_generate(model, ids, max_new_tokens=new, eos_token_id=None)
    out = compare(model, ids, max_new_tokens=new, eos_token_id=None)
    assert out.shape[1] == ids.shape[1] + new
    assert_greedy_equivalent(model, expected, out)


def test_max_length():
    model, ids, _ = patched_pair()
    expected = plain_generate(model, ids, max_length=17, eos_token_id=None)
    assert_greedy_equivalent(model, expected, compare(model, ids, max_length=17, eos_token_id=None))


def test_min_new_tokens_suppresses_early_eos():
    model, ids, reference = patched_pair()
    eos = int(reference[0, ids.shape[1] + 2])
    expected = plain_generate(model, ids, max_new_tokens=30, eos_token_id=eos, min_new_tokens=8)
    assert expected.shape[1] - ids.shape[1] >= 8
    assert_greedy_equivalent(model, expected, compare(model, ids, max_new_tokens=30, eos_token_id=eos, min_new_tokens=8))


@pytest.mark.parametrize("option", [dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=2), dict(suppress_tokens=[3, 5])])
def test_stateless_logits_processors_are_applied_per_row(option):
    model, ids, _ = patched_pair(arch="mistral-window")
    expected = plain_generate(model, ids, max_new_tokens=25, eos_token_id=None, **option)
    assert_greedy_equivalent(model, expected, compare(model, ids, max_new_tokens=25, eos_token_id=None, **option))


class StopAfterToken(StoppingCriteria):
    def __init__(self, token: int):
        self.token = token

    def __call__(self, input_ids, scores, **kwargs):
        return input_ids[:, -1] == self.token


def test_user_stopping_criteria():
    model, ids, reference = patched_pair()
    criteria = StoppingCriteriaList([StopAfterToken(int(reference[0, ids.shape[1] + 5]))])
    expected = plain_generate(model, ids, max_new_tokens=40, eos_token_id=None, stopping_criteria=criteria)
    out = compare(model, ids, max_new_tokens=40, eos_token_id=None, stopping_criteria=criteria)
    assert_greedy_equivalent(model, expected, out)


class CountingCriterion(StoppingCriteria):
    """Never stops; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, input_ids, scores, **kwargs):
        self.calls += 1
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


@pytest.mark.parametrize("stop", ["max_new_tokens", "eos"])
def test_user_criteria_are_called_once_per_token_as_in_plain_decoding(stop):
    model, ids, reference = patched_pair()
    eos = int(reference[0, ids.shape[1] + 6]) if stop == "eos" else None
    counts = []
    for run in (plain_generate, compare):
        criterion = CountingCriterion()
        out = run(model, ids, max_new_tokens=20, eos_token_id=eos, stopping_criteria=StoppingCriteriaList([criterion]))
        counts.append((criterion.calls, out.shape[1] - ids.shape[1]))
    calls, new = counts[0]
    assert counts[1] == counts[0] and calls == new
    assert new < 20 if stop == "eos" else new == 20


def test_stop_strings_with_a_tokenizer():
    tokenizer = tiny_tokenizer(vocab_size=90)
    model, ids, reference = patched_pair(vocab_size=len(tokenizer))
    texts = [tokenizer.decode([token]) for token in reference[0, ids.shape[1] :].tolist()]
    stop = next(text for text in texts[2:] if text.isascii() and text.strip())  # random bytes are mostly not text
    expected = plain_generate(model, ids, max_new_tokens=40, eos_token_id=None, stop_strings=[stop], tokenizer=tokenizer)
    assert expected.shape[1] < reference.shape[1]
    out = compare(model, ids, max_new_tokens=40, eos_token_id=None, stop_strings=[stop], tokenizer=tokenizer)
    assert_greedy_equivalent(model, expected, out)


def test_all_ones_attention_mask_is_accepted():
    model, ids, _ = patched_pair()
    expected = plain_generate(model, ids, max_new_tokens=12, eos_token_id=None)
    out = compare(model, ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, eos_token_id=None)
    assert_greedy_equivalent(model, expected, out)


class CollectingStreamer(BaseStreamer):
    def __init__(self):
        self.chunks, self.ended = [], False

    def put(self, value):
        self.chunks.append(value.view(-1).tolist())

    def end(self):
        self.ended = True


def test_streamer_receives_prompt_then_each_token():
    model, ids, _ = patched_pair()
    plain_streamer, patched_streamer = CollectingStreamer(), CollectingStreamer()
    plain_generate(model, ids, max_new_tokens=9, eos_token_id=None, streamer=plain_streamer)
    compare(model, ids, max_new_tokens=9, eos_token_id=None, streamer=patched_streamer)
    assert patched_streamer.chunks == plain_streamer.chunks and patched_streamer.ended
