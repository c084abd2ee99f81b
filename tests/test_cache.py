"""The KV cache appends per layer, compacts accepted rows and grows when needed."""

import torch

from specdec.cache import TreeKVCache


def states(length, fill_from, heads=2, dim=3):
    values = torch.arange(fill_from, fill_from + length, dtype=torch.float32)
    return values.view(1, 1, length, 1).expand(1, heads, length, dim).contiguous()


def test_update_returns_everything_appended():
    cache = TreeKVCache(num_layers=2, capacity=4)
    cache.update(states(3, 0), states(3, 100), 0)
    keys, values = cache.update(states(2, 3), states(2, 103), 0)
    assert keys[0, 0, :, 0].tolist() == [0, 1, 2, 3, 4]  # grew past capacity 4
    assert values[0, 1, :, 2].tolist() == [100, 101, 102, 103, 104]
    assert cache.get_seq_length(0) == 5 and cache.get_seq_length(1) == 0


def test_compact_keeps_accepted_rows_in_every_layer():
    cache = TreeKVCache(num_layers=2, capacity=16)
    for layer, step_rows in ((0, 5), (1, 9)):  # later layers also hold pseudo rows
        cache.update(states(4, 0), states(4, 0), layer)
        cache.update(states(step_rows, 10), states(step_rows, 10), layer)
    cache.compact(4, torch.tensor([0, 2, 3]))
    for layer in (0, 1):
        keys, _ = cache.update(states(1, 50), states(1, 50), layer)
        assert keys[0, 0, :, 0].tolist() == [0, 1, 2, 3, 10, 12, 13, 50]


def test_compact_in_place_only_shrinks():
    cache = TreeKVCache(num_layers=1, capacity=16)
    cache.update(states(3, 0), states(3, 0), 0)
    cache.update(states(4, 10), states(4, 10), 0)
    cache.compact(3, torch.tensor([0, 1]), in_place=True)
    keys, _ = cache.update(states(1, 50), states(1, 50), 0)
    assert keys[0, 0, :, 0].tolist() == [0, 1, 2, 10, 11, 50]
