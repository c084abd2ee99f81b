"""Packed visibility bitmasks for the step block of tree attention.

A step of speculative decoding appends ``S`` rows (the root, draft nodes and
pseudo rows) after a cached prefix. Every row sees the whole prefix, so only the
``S x S`` step block carries mask data, packed 32 columns to an int32 word:
bit ``j % 32`` of ``bits[i, j // 32]`` is set when row ``i`` may attend to step
row ``j``. Bit 31 makes a word negative; arithmetic shifts still read it right.
"""

import torch

WORD_BITS = 32


def num_words(columns: int) -> int:
    """Number of int32 words that hold ``columns`` bits (at least one)."""
    return max(1, -(-columns // WORD_BITS))


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean mask ``[S, C]`` into int32 words ``[S, ceil(C / 32)]``."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"pack_bits expects a 2-D bool mask, got {tuple(mask.shape)} {mask.dtype}")
    rows, cols = mask.shape
    words = num_words(cols)
    padded = torch.zeros(rows, words * WORD_BITS, dtype=torch.int64, device=mask.device)
    padded[:, :cols] = mask.to(torch.int64)
    weights = torch.ones(WORD_BITS, dtype=torch.int64, device=mask.device) << torch.arange(
        WORD_BITS, device=mask.device
    )
    packed = (padded.view(rows, words, WORD_BITS) * weights).sum(-1)
    # Fold values >= 2**31 into the int32 range (two's complement).
    packed = torch.where(packed >= 2**31, packed - 2**32, packed)
    return packed.to(torch.int32)


def unpack_bits(bits: torch.Tensor, columns: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: int32 ``[S, W]`` -> bool ``[S, columns]``."""
    col = torch.arange(columns, device=bits.device)
    words = bits.to(torch.int64)[:, col // WORD_BITS]
    return ((words >> (col % WORD_BITS)) & 1).bool()
