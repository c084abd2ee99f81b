"""Triton kernels of :func:`lm_head_argmax`: greedy tokens of ``[N, d]`` rows without writing logits.

Algorithm (a tiled matmul with the vocabulary reduction fused in, as in Cut-Cross-Entropy)
------------------------------------------------------------------------------------------
Phase 1, ``_argmax_partial_kernel``, grid ``(row_blocks, splits)``: the vocabulary is cut into
blocks of ``BLOCK_VOCAB`` rows of the LM head, and split ``s`` owns the consecutive blocks
``[s * blocks_per_split, (s + 1) * blocks_per_split)``. For each of its blocks a program computes
the logit tile ``hidden[row_block] @ weight[vocab_block].T`` (``[BLOCK_ROWS, BLOCK_VOCAB]``, fp32
accumulator over ``BLOCK_HIDDEN``-wide steps of ``d``), rounds it to ``hidden.dtype`` and back to
fp32 (so the comparison sees exactly the logits a plain ``lm_head`` in that dtype produces), masks
the columns past ``V`` to ``-inf``, and takes the tile's row maxima with lowest-index tie breaking.
A running ``(max, index)`` per row keeps the best block, replaced only on a strictly greater
value: blocks come in increasing vocabulary order, so ties keep the lowest index. The split's
``(max, index)`` goes to small fp32 / int32 buffers ``[N, splits]``.

Phase 2, ``_argmax_reduce_kernel``: per row, the maximum over the splits with lowest-split tie
breaking; split order is vocabulary order and each split holds its lowest index, so the result is
the lowest index of the global maximum, as ``torch.argmax``. Both phases are deterministic.
The logits ``[N, V]`` never exist in memory; the extra traffic is ``2 * N * splits`` words.
NaN logits never win a comparison, so a row with NaNs gets a valid but unspecified index
(``torch.argmax`` would return a NaN's index); ``-inf``/``+inf`` logits behave as in torch.

Memory traffic and parallelism
------------------------------
At decode time ``N`` is small and the op is bound by reading the ``V x d`` weight once. With
``N <= BLOCK_ROWS`` there is one row block, so each weight tile is read once for all rows (rows
are padded to >= 16 with masks for ``tl.dot``). Weight tiles are ``[BLOCK_VOCAB, BLOCK_HIDDEN]``
with the contiguous hidden dimension innermost (coalesced). The number of splits sets the grid:
``splits ~= PROGRAMS_PER_SM * SMs / row_blocks`` so an H100's 132 SMs all stream weight
(Llama-3 V = 128256, BLOCK_VOCAB = 128: 1002 blocks -> 2 blocks per split, 501 programs);
each program amortises its launch over several blocks when V is large.

Block sizes (defaults of :func:`default_blocks`)
-----------------------------------------------
* Interpreter (``TRITON_INTERPRET=1``): cost is about programs x loop iterations x ops, so big
  tiles: ``BLOCK_ROWS = next_pow2(N)`` (16..256), ``BLOCK_VOCAB = 256``, ``BLOCK_HIDDEN =
  next_pow2(d)`` capped at 1024, and at most ``INTERPRET_SPLITS`` splits (so both the in-program
  and the cross-program tie paths run in tests with small blocks).
* GPU: ``BLOCK_ROWS = next_pow2(N)`` clamped to 16..64, ``BLOCK_VOCAB = 128``, ``BLOCK_HIDDEN =
  256 bytes / itemsize`` (128 for 16-bit types), ``num_warps = 4``, ``num_stages = 3``; shared
  memory per stage is ``(BLOCK_ROWS + BLOCK_VOCAB) * BLOCK_HIDDEN * itemsize`` <= 48 KiB.

Seen in sm_90 compiles made on CPU: ``BLOCK_ROWS = 16`` lowers to ``mma.sync``, 64 to ``wgmma``;
with 3 stages a 64-row tile takes 144 KiB of shared memory (one program per SM), a 16-row tile
72 KiB. fp32 uses the exact FMA dot (``input_precision="ieee"``), as torch's fp32 matmul.

What a GPU session should tune (target: >= 85% of copy bandwidth and never slower than
``hidden @ W.T`` + ``argmax``): ``PROGRAMS_PER_SM`` (wave quantisation vs. per-program overhead),
``BLOCK_VOCAB`` 64/128/256, the bytes per weight row read (``BLOCK_HIDDEN``), ``num_stages`` and
``num_warps``. For ``N`` in the hundreds the weight is re-read per row block (mostly from L2,
since row blocks are the fastest grid axis); a larger ``BLOCK_ROWS`` (128) trades registers for
fewer re-reads there.
"""

import torch
import triton
import triton.language as tl

from .launch import INTERPRET, INTERPRETING, SUPPORTED_DTYPES, check_runnable, pick_block, row_major, sm_count

PROGRAMS_PER_SM = 4
INTERPRET_SPLITS = 4
NUM_WARPS = 4
NUM_STAGES = 3


@triton.jit
def _rounded_logits(
    hidden_ptr,
    weight_ptr,
    offs_rows,
    mask_rows,
    vocab_start,
    vocab,
    d,
    stride_hidden,
    stride_weight,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_VOCAB: tl.constexpr,
    BLOCK_HIDDEN: tl.constexpr,
):
    """Logits ``[BLOCK_ROWS, BLOCK_VOCAB]`` fp32, rounded through the input dtype; ``-inf`` past ``vocab``."""
    offs_vocab = vocab_start + tl.arange(0, BLOCK_VOCAB)
    offs_hidden = tl.arange(0, BLOCK_HIDDEN)
    mask_vocab = offs_vocab < vocab
    hidden_ptrs = hidden_ptr + offs_rows[:, None].to(tl.int64) * stride_hidden + offs_hidden[None, :]
    weight_ptrs = weight_ptr + offs_vocab[:, None].to(tl.int64) * stride_weight + offs_hidden[None, :]
    acc = tl.zeros((BLOCK_ROWS, BLOCK_VOCAB), dtype=tl.float32)
    for start in range(0, d, BLOCK_HIDDEN):
        mask_hidden = offs_hidden < d - start
        h = tl.load(hidden_ptrs, mask=mask_rows[:, None] & mask_hidden[None, :], other=0.0)
        w = tl.load(weight_ptrs, mask=mask_vocab[:, None] & mask_hidden[None, :], other=0.0)
        if INTERPRET:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, tl.trans(w), acc, input_precision="ieee")
        hidden_ptrs += BLOCK_HIDDEN
        weight_ptrs += BLOCK_HIDDEN
    rounded = acc.to(hidden_ptr.dtype.element_ty).to(tl.float32)
    return tl.where(mask_vocab[None, :], rounded, float("-inf"))


@triton.jit
def _argmax_partial_kernel(
    hidden_ptr,
    weight_ptr,
    part_max_ptr,
    part_idx_ptr,
    rows,
    vocab,
    d,
    stride_hidden,
    stride_weight,
    blocks_per_split,
    splits,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_VOCAB: tl.constexpr,
    BLOCK_HIDDEN: tl.constexpr,
):
    """Phase 1: ``(max, lowest argmax)`` of split ``program_id(1)`` for one row block -> ``[N, splits]``."""
    split = tl.program_id(1)
    offs_rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    mask_rows = offs_rows < rows
    first_block = split * blocks_per_split
    num_blocks = tl.minimum(blocks_per_split, tl.cdiv(vocab, BLOCK_VOCAB) - first_block)

    best_max = tl.full((BLOCK_ROWS,), float("-inf"), dtype=tl.float32)
    best_idx = tl.full((BLOCK_ROWS,), 0, dtype=tl.int32) + first_block * BLOCK_VOCAB
    for block in range(0, num_blocks):
        vocab_start = (first_block + block) * BLOCK_VOCAB
        logits = _rounded_logits(
            hidden_ptr,
            weight_ptr,
            offs_rows,
            mask_rows,
            vocab_start,
            vocab,
            d,
            stride_hidden,
            stride_weight,
            BLOCK_ROWS,
            BLOCK_VOCAB,
            BLOCK_HIDDEN,
        )
        block_max, block_arg = tl.max(logits, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = block_max > best_max
        best_max = tl.where(better, block_max, best_max)
        best_idx = tl.where(better, vocab_start + block_arg, best_idx)

    offsets = offs_rows * splits + split
    tl.store(part_max_ptr + offsets, best_max, mask=mask_rows)
    tl.store(part_idx_ptr + offsets, best_idx, mask=mask_rows)


@triton.jit
def _argmax_reduce_kernel(
    part_max_ptr,
    part_idx_ptr,
    ids_ptr,
    max_ptr,
    rows,
    splits,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_SPLITS: tl.constexpr,
):
    """Phase 2: per row, the split with the largest max (lowest split on ties) -> ids int64, max fp32."""
    offs_rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    offs_splits = tl.arange(0, BLOCK_SPLITS)
    mask_rows = offs_rows < rows
    mask = mask_rows[:, None] & (offs_splits < splits)[None, :]
    offsets = offs_rows[:, None] * splits + offs_splits[None, :]
    part_max = tl.load(part_max_ptr + offsets, mask=mask, other=float("-inf"))
    part_idx = tl.load(part_idx_ptr + offsets, mask=mask, other=0)
    best_max, best_split = tl.max(part_max, axis=1, return_indices=True, return_indices_tie_break_left=True)
    best_idx = tl.sum(tl.where(offs_splits[None, :] == best_split[:, None], part_idx, 0), axis=1)
    tl.store(ids_ptr + offs_rows, best_idx.to(tl.int64), mask=mask_rows)
    tl.store(max_ptr + offs_rows, best_max, mask=mask_rows)


def default_blocks(rows: int, d: int, dtype: torch.dtype, device: torch.device) -> tuple[int, int, int]:
    """``(BLOCK_ROWS, BLOCK_VOCAB, BLOCK_HIDDEN)`` for the interpreter or a GPU; see the module docstring."""
    if INTERPRETING:
        return (
            min(max(16, triton.next_power_of_2(rows)), 256),
            256,
            min(max(16, triton.next_power_of_2(d)), 1024),
        )
    return min(max(16, triton.next_power_of_2(rows)), 64), 128, 256 // dtype.itemsize


def split_vocab(vocab_blocks: int, row_blocks: int, device: torch.device) -> tuple[int, int]:
    """``(blocks_per_split, splits)``: about ``PROGRAMS_PER_SM * SMs`` programs in all (GPU)."""
    target = INTERPRET_SPLITS if INTERPRETING else max(1, PROGRAMS_PER_SM * sm_count(device) // row_blocks)
    blocks_per_split = triton.cdiv(vocab_blocks, min(target, vocab_blocks))
    return blocks_per_split, triton.cdiv(vocab_blocks, blocks_per_split)


def _empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocator of every buffer the kernels write (tests swap it for a NaN-filled one)."""
    return torch.empty(shape, dtype=dtype, device=device)


def check_lm_head_inputs(op: str, hidden: torch.Tensor, weight: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``hidden [N, d]`` and ``weight [V, d]`` can run through ``op``'s kernels."""
    if hidden.dim() != 2 or weight.dim() != 2:
        raise ValueError(f"{op}: hidden must be [N, d] and weight [V, d], got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"{op}: hidden width {hidden.shape[1]} != weight width {weight.shape[1]}")
    if weight.shape[0] == 0:
        raise ValueError(f"{op}: empty vocabulary (V = 0)")
    if hidden.dtype not in SUPPORTED_DTYPES or weight.dtype != hidden.dtype:
        raise ValueError(f"{op}: hidden and weight must share one of {SUPPORTED_DTYPES}, got {hidden.dtype} and {weight.dtype}")
    check_runnable(op, hidden, weight)


def lm_head_argmax(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    *,
    block_rows: int | None = None,
    block_vocab: int | None = None,
    block_hidden: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy token of each row without materialising the logits.

    Logits are accumulated in fp32 and rounded to ``hidden.dtype`` before the comparison, as a
    plain ``lm_head`` followed by ``argmax`` does; ties go to the lowest index.

    Args:
        hidden: ``[N, d]`` fp32/fp16/bf16 final-normed hidden states, any strides.
        weight: ``[V, d]`` LM head of the same dtype (unit column stride avoids a copy).
        block_rows, block_vocab, block_hidden: tile sizes (powers of two >= 16); None picks
            :func:`default_blocks`.

    Returns:
        ``(ids, max_logit)``: int64 ``[N]`` and float32 ``[N]`` (the rounded winning logit).
    """
    check_lm_head_inputs("lm_head_argmax", hidden, weight)
    rows, d = hidden.shape
    vocab = weight.shape[0]
    device = hidden.device
    ids = _empty((rows,), torch.int64, device)
    max_logit = _empty((rows,), torch.float32, device)
    if rows == 0:
        return ids, max_logit
    defaults = default_blocks(rows, d, hidden.dtype, device)
    block_rows = pick_block("block_rows", block_rows, defaults[0])
    block_vocab = pick_block("block_vocab", block_vocab, defaults[1])
    block_hidden = pick_block("block_hidden", block_hidden, defaults[2])
    hidden, weight = row_major(hidden), row_major(weight)

    row_blocks = triton.cdiv(rows, block_rows)
    blocks_per_split, splits = split_vocab(triton.cdiv(vocab, block_vocab), row_blocks, device)
    part_max = _empty((rows, splits), torch.float32, device)
    part_idx = _empty((rows, splits), torch.int32, device)
    _argmax_partial_kernel[(row_blocks, splits)](
        hidden,
        weight,
        part_max,
        part_idx,
        rows,
        vocab,
        d,
        hidden.stride(0),
        weight.stride(0),
        blocks_per_split,
        splits,
        BLOCK_ROWS=block_rows,
        BLOCK_VOCAB=block_vocab,
        BLOCK_HIDDEN=block_hidden,
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
    block_splits = triton.next_power_of_2(splits)
    reduce_rows = min(triton.next_power_of_2(rows), max(1, 4096 // block_splits))  # tiles of <= 4096 values
    _argmax_reduce_kernel[(triton.cdiv(rows, reduce_rows),)](
        part_max,
        part_idx,
        ids,
        max_logit,
        rows,
        splits,
        BLOCK_ROWS=reduce_rows,
        BLOCK_SPLITS=block_splits,
    )
    return ids, max_logit
