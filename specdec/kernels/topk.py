"""Triton kernels of :func:`lm_head_topk`: the top-K tokens of ``[N, d]`` rows and each row's
log-sum-exp in one pass over the LM head, without writing logits.

One step of speculative decoding needs, from the same LM head, the greedy token of every real row
and the ranked candidates (with probabilities) of the pseudo rows that may draft the next step.
This op serves both in one read of the ``V x d`` weight: column 0 is the greedy token.

Algorithm (the :mod:`argmax <specdec.kernels.argmax>` kernel grown to top-K)
------------------------------------------------------------------------------
Phase 1, ``_topk_partial_kernel``, grid ``(row_blocks, splits)`` as in the argmax kernel: split
``s`` walks its vocabulary blocks in increasing order; each block's logit tile
``[BLOCK_ROWS, BLOCK_VOCAB]`` is computed in fp32 and rounded through ``hidden.dtype`` (the logits a
plain ``lm_head`` produces). Per row the program keeps

* an online log-sum-exp ``(m, s)``: ``m`` the running maximum, ``s = sum(exp(logit - m))``;
* a running top-K set of ``BLOCK_K >= K`` slots (values, vocabulary indices). Slots ``>= K`` hold
  ``+inf`` so they are never replaced. For each tile, ``K`` times: take the tile's maximum (lowest
  column on ties), and if it is strictly greater than the set's worst entry (the smallest value,
  the highest index among equals) replace that entry; then mask the taken column out. Blocks come
  in increasing vocabulary order, so an equal value from a later block never displaces an earlier
  index: ties keep the lowest indices.

The split's ``K`` slots and ``(m, s)`` go to small buffers ``[N, splits, K]`` and ``[N, splits]``.

Phase 2, ``_topk_reduce_kernel``: per row, ``lse = M + log(sum_s s_s * exp(m_s - M))`` over the
splits, and the final ranking: ``K`` times, the largest value among the ``splits * K`` candidates
with the lowest vocabulary index among equals (indices are unique across splits), which is then
removed. Output: ids int64 ``[N, K]`` and rounded logits fp32 ``[N, K]`` in descending order (ties
lowest index first, so column 0 equals ``torch.argmax`` of the rounded logits), and ``lse`` fp32
``[N]``. Both phases are deterministic; NaN logits are unspecified, as in the argmax kernel.

Cost: the extra work over the argmax kernel is ``K`` row reductions per tile and one ``exp`` per
logit, on data already in registers; the op stays bound by reading the weight once at decode row
counts. Block sizes and splits are :func:`~specdec.kernels.argmax.default_blocks` and
:func:`~specdec.kernels.argmax.split_vocab`'s.
"""

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from . import argmax as _argmax
from .argmax import NUM_STAGES, NUM_WARPS, _rounded_logits, check_lm_head_inputs, default_blocks, split_vocab
from .launch import pick_block, row_major
from .reference import check_token_ids

MAX_K = 64


@triton.jit
def insert_tile(logits, top_val, top_idx, vocab_start, K, BLOCK_VOCAB: tl.constexpr, BLOCK_K: tl.constexpr):
    """Merge a logit tile ``[R, BLOCK_VOCAB]`` (columns ``vocab_start + j``) into running top-K sets
    ``[R, BLOCK_K]``: ``K`` times, the tile's maximum (lowest column on ties) replaces the set's worst
    entry (smallest value, highest index among equals) when strictly greater."""
    slots = tl.arange(0, BLOCK_K)
    cols = tl.arange(0, BLOCK_VOCAB)
    for _ in range(0, K):
        cand_val, cand_col = tl.max(logits, axis=1, return_indices=True, return_indices_tie_break_left=True)
        worst_val = tl.min(top_val, axis=1)
        is_worst = top_val == worst_val[:, None]
        worst_idx = tl.max(tl.where(is_worst, top_idx, -2), axis=1)
        worst_slot = tl.min(tl.where(is_worst & (top_idx == worst_idx[:, None]), slots[None, :], BLOCK_K), axis=1)
        replace = (slots[None, :] == worst_slot[:, None]) & (cand_val > worst_val)[:, None]
        top_val = tl.where(replace, cand_val[:, None], top_val)
        top_idx = tl.where(replace, (vocab_start + cand_col)[:, None], top_idx)
        logits = tl.where(cols[None, :] == cand_col[:, None], float("-inf"), logits)
    return top_val, top_idx


@triton.jit
def ranked_candidates(
    part_val_ptr, part_idx_ptr, offs_rows, mask_rows, splits, K, BLOCK_ROWS: tl.constexpr, BLOCK_CANDS: tl.constexpr, BLOCK_K: tl.constexpr
):
    """The ``K`` best of a row's ``splits * K`` phase-1 candidates, ranked (descending, lowest index
    first among equals): values fp32 and indices int32 ``[R, BLOCK_K]`` (slots ``>= K``: ``-inf``, -1)."""
    offs_cands = tl.arange(0, BLOCK_CANDS)
    mask_cands = mask_rows[:, None] & (offs_cands < splits * K)[None, :]
    cands = offs_rows[:, None] * (splits * K) + offs_cands[None, :]
    vals = tl.load(part_val_ptr + cands, mask=mask_cands, other=float("-inf"))
    idx = tl.load(part_idx_ptr + cands, mask=mask_cands, other=-1)
    slots = tl.arange(0, BLOCK_K)
    ranked_val = tl.full((BLOCK_ROWS, BLOCK_K), float("-inf"), dtype=tl.float32)
    ranked_idx = tl.full((BLOCK_ROWS, BLOCK_K), -1, dtype=tl.int32)
    big = 2147483647
    for rank in range(0, K):
        best = tl.max(vals, axis=1)
        best_idx = tl.min(tl.where((vals == best[:, None]) & (idx >= 0), idx, big), axis=1)
        ranked_val = tl.where(slots[None, :] == rank, best[:, None], ranked_val)
        ranked_idx = tl.where(slots[None, :] == rank, best_idx[:, None], ranked_idx)
        vals = tl.where(idx == best_idx[:, None], float("-inf"), vals)
        idx = tl.where(idx == best_idx[:, None], -1, idx)
    return ranked_val, ranked_idx


@triton.jit
def _topk_partial_kernel(
    hidden_ptr,
    weight_ptr,
    part_val_ptr,
    part_idx_ptr,
    part_max_ptr,
    part_sum_ptr,
    rows,
    vocab,
    d,
    stride_hidden,
    stride_weight,
    blocks_per_split,
    splits,
    K,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_VOCAB: tl.constexpr,
    BLOCK_HIDDEN: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """Phase 1: top-``K`` (value, index) and ``(max, sum of exp)`` of one split -> ``[N, splits, K]``, ``[N, splits]``."""
    split = tl.program_id(1)
    offs_rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    mask_rows = offs_rows < rows
    first_block = split * blocks_per_split
    num_blocks = tl.minimum(blocks_per_split, tl.cdiv(vocab, BLOCK_VOCAB) - first_block)
    slots = tl.arange(0, BLOCK_K)

    top_val = tl.where(slots[None, :] < K, float("-inf"), float("inf")) + tl.zeros((BLOCK_ROWS, BLOCK_K), dtype=tl.float32)
    top_idx = tl.full((BLOCK_ROWS, BLOCK_K), -1, dtype=tl.int32)
    run_max = tl.full((BLOCK_ROWS,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
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
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), axis=1)
        run_max = new_max
        top_val, top_idx = insert_tile(logits, top_val, top_idx, vocab_start, K, BLOCK_VOCAB, BLOCK_K)

    part = (offs_rows[:, None] * splits + split) * K + slots[None, :]
    mask = mask_rows[:, None] & (slots[None, :] < K)
    tl.store(part_val_ptr + part, top_val, mask=mask)
    tl.store(part_idx_ptr + part, top_idx, mask=mask)
    tl.store(part_max_ptr + offs_rows * splits + split, run_max, mask=mask_rows)
    tl.store(part_sum_ptr + offs_rows * splits + split, run_sum, mask=mask_rows)


@triton.jit
def _topk_reduce_kernel(
    part_val_ptr,
    part_idx_ptr,
    part_max_ptr,
    part_sum_ptr,
    token_ids_ptr,
    ids_ptr,
    val_ptr,
    lse_ptr,
    rows,
    splits,
    K,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_SPLITS: tl.constexpr,
    BLOCK_CANDS: tl.constexpr,
    BLOCK_K: tl.constexpr,
    HAS_IDS: tl.constexpr,
):
    """Phase 2: per row, the ``K`` best of ``splits * K`` candidates in rank order, and the log-sum-exp.

    With ``HAS_IDS`` the weight is a row subset of the LM head and a candidate's weight row ``j``
    is reported as token ``token_ids[j]``."""
    offs_rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    mask_rows = offs_rows < rows
    offs_splits = tl.arange(0, BLOCK_SPLITS)
    mask_splits = mask_rows[:, None] & (offs_splits < splits)[None, :]
    stats = offs_rows[:, None] * splits + offs_splits[None, :]
    part_max = tl.load(part_max_ptr + stats, mask=mask_splits, other=float("-inf"))
    part_sum = tl.load(part_sum_ptr + stats, mask=mask_splits, other=0.0)
    top = tl.max(part_max, axis=1)
    total = tl.sum(tl.where(mask_splits, part_sum * tl.exp(part_max - top[:, None]), 0.0), axis=1)
    tl.store(lse_ptr + offs_rows, top + tl.log(total), mask=mask_rows)

    ranked_val, ranked_idx = ranked_candidates(
        part_val_ptr, part_idx_ptr, offs_rows, mask_rows, splits, K, BLOCK_ROWS, BLOCK_CANDS, BLOCK_K
    )
    out = offs_rows[:, None] * K + tl.arange(0, BLOCK_K)[None, :]
    mask = mask_rows[:, None] & (tl.arange(0, BLOCK_K) < K)[None, :]
    ranked_idx = ranked_idx.to(tl.int64)
    if HAS_IDS:
        ranked_idx = tl.load(token_ids_ptr + ranked_idx, mask=mask, other=0)
    tl.store(ids_ptr + out, ranked_idx, mask=mask)
    tl.store(val_ptr + out, ranked_val, mask=mask)


def lm_head_topk(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    k: int,
    *,
    token_ids: torch.Tensor | None = None,
    block_rows: int | None = None,
    block_vocab: int | None = None,
    block_hidden: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits of each row and the row's log-sum-exp, without materialising logits.

    Logits are accumulated in fp32 and rounded to ``hidden.dtype`` (as a plain ``lm_head`` in that
    dtype), ranked in descending order with ties to the lowest index.

    Args:
        hidden: ``[N, d]`` fp32/fp16/bf16 final-normed hidden states, any strides.
        weight: ``[V, d]`` LM head of the same dtype, or ``[V', d]`` rows ``token_ids`` of it.
        k: candidates per row, ``1 <= k <= min(V, MAX_K)``.
        token_ids: None, or int64 ``[V']`` ascending vocabulary ids of ``weight``'s rows (a draft
            vocabulary): the ids returned are ``token_ids[row]`` and ``lse`` is over the subset.
        block_rows, block_vocab, block_hidden: tile sizes (powers of two >= 16); None picks
            :func:`~specdec.kernels.argmax.default_blocks`.

    Returns:
        ``(ids, logits, lse)``: int64 ``[N, k]``, float32 ``[N, k]`` (rounded logits) and float32
        ``[N]`` (log-sum-exp of the row's rounded logits); ``logits - lse[:, None]`` are log-probabilities.
    """
    check_lm_head_inputs("lm_head_topk", hidden, weight)
    check_token_ids(token_ids, weight)
    rows, d = hidden.shape
    vocab = weight.shape[0]
    check_top_k(k, vocab)
    device = hidden.device
    ids = _argmax._empty((rows, k), torch.int64, device)
    values = _argmax._empty((rows, k), torch.float32, device)
    lse = _argmax._empty((rows,), torch.float32, device)
    if rows == 0:
        return ids, values, lse
    run = candidate_pass(hidden, weight, k, block_rows, block_vocab, block_hidden)
    _topk_partial_kernel[(run.row_blocks, run.splits)](
        run.hidden,
        run.weight,
        run.part_val,
        run.part_idx,
        run.part_max,
        run.part_sum,
        rows,
        vocab,
        d,
        run.hidden.stride(0),
        run.weight.stride(0),
        run.blocks_per_split,
        run.splits,
        k,
        BLOCK_ROWS=run.block_rows,
        BLOCK_VOCAB=run.block_vocab,
        BLOCK_HIDDEN=run.block_hidden,
        BLOCK_K=run.block_k,
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
    _topk_reduce_kernel[(triton.cdiv(rows, run.reduce_rows),)](
        run.part_val,
        run.part_idx,
        run.part_max,
        run.part_sum,
        ids if token_ids is None else token_ids,  # a placeholder pointer when not read
        ids,
        values,
        lse,
        rows,
        run.splits,
        k,
        BLOCK_ROWS=run.reduce_rows,
        BLOCK_SPLITS=triton.next_power_of_2(run.splits),
        BLOCK_CANDS=run.block_cands,
        BLOCK_K=run.block_k,
        HAS_IDS=token_ids is not None,
    )
    return ids, values, lse


def check_top_k(k: int, vocab: int) -> None:
    """Raise ``ValueError`` unless ``1 <= k <= min(vocab, MAX_K)``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= min(vocab, MAX_K):
        raise ValueError(f"lm_head_topk: k must be an int in [1, {min(vocab, MAX_K)}] (vocabulary {vocab}), got {k!r}")


class CandidatePass(NamedTuple):
    """Launch geometry and phase-1 buffers of a tiled pass over the LM head that keeps ``k``
    candidates (and the ``(max, sum of exp)`` pair) per row and vocabulary split; shared by
    :func:`lm_head_topk` and :func:`specdec.kernels.sampling.lm_head_sample`."""

    hidden: torch.Tensor  # [N, d] row-major
    weight: torch.Tensor  # [V, d] row-major
    block_rows: int
    block_vocab: int
    block_hidden: int
    block_k: int  # next power of two >= k
    row_blocks: int
    blocks_per_split: int
    splits: int
    part_val: torch.Tensor  # float32 [N, splits, k]
    part_idx: torch.Tensor  # int32 [N, splits, k]
    part_max: torch.Tensor  # float32 [N, splits]
    part_sum: torch.Tensor  # float32 [N, splits]
    block_cands: int  # next power of two >= splits * k: one row's candidates in the reduce
    reduce_rows: int  # rows per reduce program (tiles of <= 4096 candidates)


def candidate_pass(hidden, weight, k: int, block_rows, block_vocab, block_hidden) -> CandidatePass:
    """The :class:`CandidatePass` for ``hidden [N >= 1, d]`` and ``weight [V, d]`` (tile sizes as
    :func:`lm_head_topk` takes them; None picks the defaults)."""
    rows, d = hidden.shape
    device = hidden.device
    defaults = default_blocks(rows, d, hidden.dtype, device)
    block_rows = pick_block("block_rows", block_rows, defaults[0])
    block_vocab = pick_block("block_vocab", block_vocab, defaults[1])
    block_hidden = pick_block("block_hidden", block_hidden, defaults[2])
    row_blocks = triton.cdiv(rows, block_rows)
    blocks_per_split, splits = split_vocab(triton.cdiv(weight.shape[0], block_vocab), row_blocks, device)
    block_cands = triton.next_power_of_2(splits * k)
    return CandidatePass(
        row_major(hidden),
        row_major(weight),
        block_rows,
        block_vocab,
        block_hidden,
        triton.next_power_of_2(k),
        row_blocks,
        blocks_per_split,
        splits,
        _argmax._empty((rows, splits, k), torch.float32, device),
        _argmax._empty((rows, splits, k), torch.int32, device),
        _argmax._empty((rows, splits), torch.float32, device),
        _argmax._empty((rows, splits), torch.float32, device),
        block_cands,
        min(triton.next_power_of_2(rows), max(1, 4096 // block_cands)),
    )
