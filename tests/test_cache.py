"""The KV cache appends per layer, compacts accepted rows and grows with use, not with the request's limit."""

import pytest
import torch

import specdec
from drafting import forced, perturbed_predictor
from specdec.decode import loop as decoding
from specdec.decode.cache import MIN_CAPACITY, TreeKVCache
from tiny_models import prompt, tiny_model


def states(length, fill_from, heads=2, dim=3):
    values = torch.arange(fill_from, fill_from + length, dtype=torch.float32)
    return values.view(1, 1, length, 1).expand(1, heads, length, dim).contiguous()


def test_update_returns_everything_appended():
    cache = TreeKVCache(num_layers=2, max_positions=4)
    cache.update(states(3, 0), states(3, 100), 0)
    keys, values = cache.update(states(2, 3), states(2, 103), 0)
    assert keys[0, 0, :, 0].tolist() == [0, 1, 2, 3, 4]  # grew past max_positions=4: what is needed is always stored
    assert values[0, 1, :, 2].tolist() == [100, 101, 102, 103, 104]
    assert cache.get_seq_length(0) == 5 and cache.get_seq_length(1) == 0


def test_compact_keeps_accepted_rows_in_every_layer():
    cache = TreeKVCache(num_layers=2, max_positions=16)
    for layer, step_rows in ((0, 5), (1, 9)):  # later layers also hold pseudo rows
        cache.update(states(4, 0), states(4, 0), layer)
        cache.update(states(step_rows, 10), states(step_rows, 10), layer)
    cache.compact(4, torch.tensor([0, 2, 3]))
    for layer in (0, 1):
        keys, _ = cache.update(states(1, 50), states(1, 50), layer)
        assert keys[0, 0, :, 0].tolist() == [0, 1, 2, 3, 10, 12, 13, 50]


def test_compact_in_place_only_shrinks():
    cache = TreeKVCache(num_layers=1, max_positions=16)
    cache.update(states(3, 0), states(3, 0), 0)
    cache.update(states(4, 10), states(4, 10), 0)
    cache.compact(3, torch.tensor([0, 1]), in_place=True)
    keys, _ = cache.update(states(1, 50), states(1, 50), 0)
    assert keys[0, 0, :, 0].tolist() == [0, 1, 2, 10, 11, 50]


def test_storage_grows_with_use_up_to_the_limit():
    cache = TreeKVCache(num_layers=1, max_positions=10**6)
    cache.update(states(3, 0), states(3, 0), 0)
    assert cache.capacity(0) == MIN_CAPACITY  # not the million positions a request may reach
    cache.update(states(MIN_CAPACITY, 3), states(MIN_CAPACITY, 3), 0)
    assert cache.capacity(0) == 2 * MIN_CAPACITY
    small = TreeKVCache(num_layers=1, max_positions=MIN_CAPACITY + 10)
    small.update(states(3, 0), states(3, 0), 0)
    small.update(states(MIN_CAPACITY, 3), states(MIN_CAPACITY, 3), 0)
    assert small.capacity(0) == MIN_CAPACITY + 10  # doubling stops at the limit
    keys, _ = small.update(states(20, 0), states(20, 0), 0)  # what is needed is still stored
    assert keys.shape[2] == MIN_CAPACITY + 23 == small.capacity(0)


class RecordingCache(TreeKVCache):
    """Remembers every instance, to read what a generate call allocated."""

    made: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        RecordingCache.made.append(self)


@pytest.mark.parametrize("max_new_tokens", [200_000, 300])
def test_a_huge_limit_allocates_only_what_decoding_uses(monkeypatch, one_thread, max_new_tokens):
    """A far limit with an early EOS stays small; a run past the first allocation grows and stays exact."""
    model = tiny_model("llama-gqa", seed=6)
    ids = prompt(model, 5, seed=6)
    reference = model.generate(ids, max_new_tokens=300, do_sample=False, eos_token_id=None)
    eos = int(reference[0, -1]) if max_new_tokens == 200_000 else None
    expected = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos) if eos else reference
    specdec.patch(model, forced(perturbed_predictor(model, 1, 3), reference[0].tolist(), model.config.vocab_size))
    monkeypatch.setattr(decoding, "TreeKVCache", RecordingCache)
    RecordingCache.made.clear()
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos)
    assert torch.equal(out, expected)
    (cache,) = RecordingCache.made
    used = expected.shape[1] + 17 * 4  # the sequence + one step's rows (root and 16 nodes, 3 pseudo rows each)
    assert max(keys.shape[2] for keys in cache.keys) <= max(2 * used, MIN_CAPACITY)
