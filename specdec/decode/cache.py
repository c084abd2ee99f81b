"""Per-layer KV cache that grows with use, with in-place compaction of accepted rows.

Transformers' attention modules call ``cache.update(keys, values, layer_idx, ...)``
and attend over what it returns; this class answers that call, so the decoder
can drive the model's own decoder layers. During a step, layers up to the
transfer layer append the real rows and later layers also the pseudo rows, so
per-layer lengths differ until :meth:`compact` keeps the root and the accepted
nodes of every layer and drops the rest.
"""

import torch

MIN_CAPACITY = 256


class TreeKVCache:
    """Keys and values ``[B, H_kv, capacity, D]`` per layer; ``lengths[i]`` of them are valid.

    Storage grows with use, not with the request's limit: a layer's buffer is allocated on
    its first update with room for ``max(needed, MIN_CAPACITY)`` positions and doubles when
    full, but doubling stops at ``max_positions`` (the most a request can use). At peak a
    layer holds at most ``max(2 * used, MIN_CAPACITY)`` positions, ``used`` being the most
    it ever held at once, plus the old buffer for the moment of a copy.
    """

    def __init__(self, num_layers: int, max_positions: int):
        if max_positions < 1:
            raise ValueError(f"max_positions must be >= 1, got {max_positions}")
        self.max_positions = max_positions
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths = [0] * num_layers

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Append ``[B, H_kv, S, D]`` keys/values of layer ``layer_idx``; return all valid ones (views)."""
        start = self.lengths[layer_idx]
        end = start + key_states.shape[2]
        if self.keys[layer_idx] is None or end > self.keys[layer_idx].shape[2]:
            self._grow(layer_idx, key_states, value_states, end)
        self.keys[layer_idx][:, :, start:end] = key_states
        self.values[layer_idx][:, :, start:end] = value_states
        self.lengths[layer_idx] = end
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def capacity(self, layer_idx: int = 0) -> int:
        """Positions allocated for layer ``layer_idx`` (0 before its first update)."""
        keys = self.keys[layer_idx]
        return 0 if keys is None else keys.shape[2]

    def _grow(self, layer_idx: int, key_states: torch.Tensor, value_states: torch.Tensor, needed: int) -> None:
        old_k, old_v = self.keys[layer_idx], self.values[layer_idx]
        size = max(needed, min(self.max_positions, max(2 * self.capacity(layer_idx), MIN_CAPACITY)))
        batch, heads, _, head_dim = key_states.shape
        new_k = key_states.new_empty(batch, heads, size, head_dim)
        new_v = value_states.new_empty(batch, heads, size, value_states.shape[3])
        if old_k is not None:
            valid = self.lengths[layer_idx]
            new_k[:, :, :valid] = old_k[:, :, :valid]
            new_v[:, :, :valid] = old_v[:, :, :valid]
        self.keys[layer_idx], self.values[layer_idx] = new_k, new_v

    def compact(self, prefix_len: int, keep: torch.Tensor, in_place: bool = False) -> None:
        """Keep step rows ``keep`` (int64 ``[n]``, ascending, relative to ``prefix_len``) in every layer.

        ``in_place`` says the caller knows ``keep`` is ``0..n-1``: nothing moves, lengths shrink.
        """
        kept = keep.shape[0]
        if not in_place:
            move_rows([b for b in self.keys + self.values if b is not None], prefix_len, keep)
        self.lengths = [prefix_len + kept if keys is not None else 0 for keys in self.keys]

    def truncate(self, length: int) -> None:
        """Drop every row past ``length`` in every layer (nothing moves)."""
        self.lengths = [min(n, length) for n in self.lengths]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.lengths[layer_idx]


def move_rows(buffers: list[torch.Tensor], prefix_len: int, keep: torch.Tensor) -> None:
    """Move step rows ``keep`` (int64 ``[n]``, ascending, relative to ``prefix_len``) of every
    ``[B, H, capacity, D]`` buffer to positions ``prefix_len .. prefix_len + n - 1``, in place."""
    index = keep + prefix_len
    for buffer in buffers:
        buffer[:, :, prefix_len : prefix_len + keep.shape[0]] = buffer.index_select(2, index)
