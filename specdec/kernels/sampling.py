"""Triton kernels of :func:`lm_head_sample`: one draw per row from the warped softmax of
``hidden @ W.T``, in one pass over the LM head, without writing logits.

Sampling by the Gumbel-max trick: ``argmax_v(s_v + g_v)`` with ``s = logits / temperature`` and
``g_v = -log(-log(u_v))`` is a draw from ``softmax(s)``. The uniforms are counter-based:
``u_v`` is splitmix64 of the row's stream ``seed + offsets[r]`` (the decoder passes the row's
position) mixed with the token ``v`` (:func:`_gumbel`), in float64 (53-bit uniforms: the Gumbel
tail is cut at ~37 nats, not at ~17 as 24-bit floats would cut it). The same seed and offsets give
the same draws, run to run; a row's draw does not depend on the other rows.

Without truncation (temperature only), phase 1 (grid ``(row blocks, splits)`` as in the argmax
kernel) keeps a running ``(max, index)`` of ``s + g`` per row and phase 2 takes the best split.

With top-k, top-p or min-p, phase 1 instead keeps each split's top-``K`` logits
(:func:`~specdec.kernels.topk.insert_tile`) and the log-sum-exp of ``s``; phase 2 ranks the row's
``K`` best (:func:`~specdec.kernels.topk.ranked_candidates`), applies the warpers in transformers'
order on them (top-k: the first ``top_k``; top-p: the ranks whose higher-ranked mass, renormalised
over the top-k set or over the whole vocabulary, is below ``top_p``; min-p: scores within
``log(min_p)`` of the best) and draws by Gumbel-max among the kept ones. ``K`` is ``top_k`` when set,
else :data:`TRUNCATION_K`. Without top-k the kept set may reach past the ``K`` candidates (a flat
distribution under top-p, or every candidate above the min-p bar): such a row is *flagged*, and
the host function draws it with the PyTorch reference instead (one device sync, only for
top-p/min-p without top-k). A top-k tie at the boundary keeps the lowest indices, where
transformers keeps every tied token: the sets differ only on exactly equal logits.
"""

import math

import torch
import triton
import triton.language as tl

from . import argmax as _argmax
from . import reference
from .argmax import NUM_STAGES, NUM_WARPS, _rounded_logits, check_lm_head_inputs
from .topk import MAX_K, candidate_pass, insert_tile, ranked_candidates

TRUNCATION_K = 64

_GOLDEN = tl.constexpr(0x9E3779B97F4A7C15)  # splitmix64's constants, as uint64
_MIX_1 = tl.constexpr(0xBF58476D1CE4E5B9)
_MIX_2 = tl.constexpr(0x94D049BB133111EB)


@triton.jit
def _splitmix(x):
    """splitmix64's finaliser on uint64 (wrapping arithmetic, logical shifts)."""
    x = x + _GOLDEN
    x = (x ^ (x >> 30)) * _MIX_1
    x = (x ^ (x >> 27)) * _MIX_2
    return x ^ (x >> 31)


@triton.jit
def _gumbel(stream, tokens):
    """Gumbel noise float64 for uint64 row streams ``[R, 1]`` and int vocabulary indices ``[R, C]``."""
    bits = _splitmix(stream + tokens.to(tl.uint64) * _MIX_2)
    uniform = ((bits >> 11).to(tl.float64) + 0.5) * 1.1102230246251565e-16  # 2**-53
    return -tl.log(-tl.log(uniform))


@triton.jit
def _sample_partial_kernel(
    hidden_ptr,
    weight_ptr,
    streams_ptr,
    part_val_ptr,
    part_idx_ptr,
    part_max_ptr,
    part_sum_ptr,
    part_best_ptr,
    rows,
    vocab,
    d,
    stride_hidden,
    stride_weight,
    blocks_per_split,
    splits,
    K,
    inv_temperature,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_VOCAB: tl.constexpr,
    BLOCK_HIDDEN: tl.constexpr,
    BLOCK_K: tl.constexpr,
    TRUNCATE: tl.constexpr,
):
    """Phase 1 of one split: the best ``s + g`` (``part_best`` fp64, ``part_idx`` ``[N, splits]``) or, with
    ``TRUNCATE``, the top-``K`` logits ``[N, splits, K]`` and ``(max, sum of exp)`` of ``s`` ``[N, splits]``."""
    split = tl.program_id(1)
    offs_rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    mask_rows = offs_rows < rows
    first_block = split * blocks_per_split
    num_blocks = tl.minimum(blocks_per_split, tl.cdiv(vocab, BLOCK_VOCAB) - first_block)
    slots = tl.arange(0, BLOCK_K)
    streams = tl.load(streams_ptr + offs_rows, mask=mask_rows, other=0).to(tl.uint64, bitcast=True)[:, None]

    top_val = tl.where(slots[None, :] < K, float("-inf"), float("inf")) + tl.zeros((BLOCK_ROWS, BLOCK_K), dtype=tl.float32)
    top_idx = tl.full((BLOCK_ROWS, BLOCK_K), -1, dtype=tl.int32)
    run_max = tl.full((BLOCK_ROWS,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    best = tl.full((BLOCK_ROWS,), float("-inf"), dtype=tl.float64)
    best_idx = tl.full((BLOCK_ROWS,), -1, dtype=tl.int32)
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
        if TRUNCATE:
            scaled = logits * inv_temperature
            new_max = tl.maximum(run_max, tl.max(scaled, axis=1))
            run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(scaled - new_max[:, None]), axis=1)
            run_max = new_max
            top_val, top_idx = insert_tile(logits, top_val, top_idx, vocab_start, K, BLOCK_VOCAB, BLOCK_K)
        else:
            tokens = vocab_start + tl.arange(0, BLOCK_VOCAB)[None, :]
            score = (logits * inv_temperature).to(tl.float64) + _gumbel(streams, tokens)
            tile_best, tile_col = tl.max(score, axis=1, return_indices=True, return_indices_tie_break_left=True)
            better = tile_best > best
            best = tl.where(better, tile_best, best)
            best_idx = tl.where(better, vocab_start + tile_col, best_idx)

    if TRUNCATE:
        part = (offs_rows[:, None] * splits + split) * K + slots[None, :]
        mask = mask_rows[:, None] & (slots[None, :] < K)
        tl.store(part_val_ptr + part, top_val, mask=mask)
        tl.store(part_idx_ptr + part, top_idx, mask=mask)
        tl.store(part_max_ptr + offs_rows * splits + split, run_max, mask=mask_rows)
        tl.store(part_sum_ptr + offs_rows * splits + split, run_sum, mask=mask_rows)
    else:
        tl.store(part_best_ptr + offs_rows * splits + split, best, mask=mask_rows)
        tl.store(part_idx_ptr + offs_rows * splits + split, best_idx, mask=mask_rows)


@triton.jit
def _sample_reduce_kernel(
    part_val_ptr,
    part_idx_ptr,
    part_max_ptr,
    part_sum_ptr,
    part_best_ptr,
    streams_ptr,
    ids_ptr,
    flags_ptr,
    rows,
    splits,
    K,
    inv_temperature,
    top_k,
    top_p,
    log_min_p,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_SPLITS: tl.constexpr,
    BLOCK_CANDS: tl.constexpr,
    BLOCK_K: tl.constexpr,
    TRUNCATE: tl.constexpr,
):
    """Phase 2: per row, the drawn token (int64) and a flag (int32, 1: draw it with the reference)."""
    offs_rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    mask_rows = offs_rows < rows
    offs_splits = tl.arange(0, BLOCK_SPLITS)
    mask_splits = mask_rows[:, None] & (offs_splits < splits)[None, :]
    stats = offs_rows[:, None] * splits + offs_splits[None, :]
    if TRUNCATE:
        part_max = tl.load(part_max_ptr + stats, mask=mask_splits, other=float("-inf"))
        part_sum = tl.load(part_sum_ptr + stats, mask=mask_splits, other=0.0)
        top = tl.max(part_max, axis=1)
        lse = top + tl.log(tl.sum(tl.where(mask_splits, part_sum * tl.exp(part_max - top[:, None]), 0.0), axis=1))
        ranked_val, ranked_idx = ranked_candidates(
            part_val_ptr, part_idx_ptr, offs_rows, mask_rows, splits, K, BLOCK_ROWS, BLOCK_CANDS, BLOCK_K
        )
        slots = tl.arange(0, BLOCK_K)[None, :]
        scaled = ranked_val * inv_temperature  # [R, BLOCK_K], descending; -inf past K
        kept = tl.broadcast_to(slots < K, (BLOCK_ROWS, BLOCK_K))  # full shape: the branches below refine it
        if top_k > 0:
            kept = kept & (slots < top_k)
            in_k = tl.where(kept, scaled, float("-inf"))
            norm = tl.max(in_k, axis=1)
            norm = norm + tl.log(tl.sum(tl.exp(in_k - norm[:, None]), axis=1))
        else:
            norm = lse
        probs = tl.where(kept, tl.exp(scaled - norm[:, None]), 0.0)
        flagged = tl.zeros((BLOCK_ROWS,), dtype=tl.int32)
        if top_p < 1.0:
            above = tl.cumsum(probs, axis=1) - probs  # mass ranked strictly higher
            kept = kept & ((above < top_p) | (slots == 0))
            if top_k == 0:
                flagged = tl.where(tl.sum(probs, axis=1) < top_p, 1, flagged)
        if log_min_p > float("-inf"):
            kept = kept & (scaled >= tl.max(scaled, axis=1)[:, None] + log_min_p)
            if top_k == 0 and top_p >= 1.0:
                last = tl.sum(tl.where(slots == K - 1, scaled, 0.0), axis=1)
                flagged = tl.where(last >= tl.max(scaled, axis=1) + log_min_p, 1, flagged)
        streams = tl.load(streams_ptr + offs_rows, mask=mask_rows, other=0).to(tl.uint64, bitcast=True)[:, None]
        score = tl.where(kept, scaled.to(tl.float64) + _gumbel(streams, tl.maximum(ranked_idx, 0)), float("-inf"))
        _, winner = tl.max(score, axis=1, return_indices=True, return_indices_tie_break_left=True)
        drawn = tl.sum(tl.where(slots == winner[:, None], ranked_idx, 0), axis=1)
        tl.store(flags_ptr + offs_rows, flagged, mask=mask_rows)
    else:
        part_best = tl.load(part_best_ptr + stats, mask=mask_splits, other=float("-inf"))
        part_idx = tl.load(part_idx_ptr + stats, mask=mask_splits, other=0)
        _, best_split = tl.max(part_best, axis=1, return_indices=True, return_indices_tie_break_left=True)
        drawn = tl.sum(tl.where(offs_splits[None, :] == best_split[:, None], part_idx, 0), axis=1)
        tl.store(flags_ptr + offs_rows, tl.zeros((BLOCK_ROWS,), dtype=tl.int32), mask=mask_rows)
    tl.store(ids_ptr + offs_rows, drawn.to(tl.int64), mask=mask_rows)


def lm_head_sample(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    seed: int,
    offsets: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    block_rows: int | None = None,
    block_vocab: int | None = None,
    block_hidden: int | None = None,
) -> torch.Tensor:
    """One token per row from the warped softmax of ``hidden @ W.T`` (see the module docstring).

    Same arguments and result as :func:`specdec.kernels.reference.lm_head_sample` (int64 ``[N]``),
    plus tile sizes; the draws differ from the reference's (Gumbel-max here, inverse CDF there) but
    follow the same distribution and are a function of ``seed`` and ``offsets``.
    """
    check_lm_head_inputs("lm_head_sample", hidden, weight)
    if not temperature > 0:
        raise ValueError(f"lm_head_sample: temperature must be > 0, got {temperature}")
    rows, d = hidden.shape
    vocab = weight.shape[0]
    device = hidden.device
    if top_k > MAX_K:  # the top-k set does not fit the kernel's candidate slots
        return reference.lm_head_sample(hidden, weight, seed, offsets, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    ids = _argmax._empty((rows,), torch.int64, device)
    if rows == 0:
        return ids
    truncate = bool(top_k) or top_p < 1.0 or min_p > 0.0
    k = min(top_k or TRUNCATION_K, vocab) if truncate else 1
    run = candidate_pass(hidden, weight, k, block_rows, block_vocab, block_hidden)
    streams = reference.stream_keys(seed, offsets.to(device))
    part_best = _argmax._empty((rows, run.splits), torch.float64, device)
    flags = _argmax._empty((rows,), torch.int32, device)
    _sample_partial_kernel[(run.row_blocks, run.splits)](
        run.hidden,
        run.weight,
        streams,
        run.part_val,
        run.part_idx,
        run.part_max,
        run.part_sum,
        part_best,
        rows,
        vocab,
        d,
        run.hidden.stride(0),
        run.weight.stride(0),
        run.blocks_per_split,
        run.splits,
        k,
        1.0 / temperature,
        BLOCK_ROWS=run.block_rows,
        BLOCK_VOCAB=run.block_vocab,
        BLOCK_HIDDEN=run.block_hidden,
        BLOCK_K=run.block_k,
        TRUNCATE=truncate,
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
    _sample_reduce_kernel[(triton.cdiv(rows, run.reduce_rows),)](
        run.part_val,
        run.part_idx,
        run.part_max,
        run.part_sum,
        part_best,
        streams,
        ids,
        flags,
        rows,
        run.splits,
        k,
        1.0 / temperature,
        top_k,
        top_p,
        math.log(min_p) if min_p > 0 else float("-inf"),
        BLOCK_ROWS=run.reduce_rows,
        BLOCK_SPLITS=triton.next_power_of_2(run.splits),
        BLOCK_CANDS=run.block_cands,
        BLOCK_K=run.block_k,
        TRUNCATE=truncate,
    )
    if truncate and not top_k and (top_p < 1.0 or min_p > 0.0):
        undecided = flags.nonzero().view(-1)  # a device sync: only top-p/min-p without top-k can flag rows
        if undecided.numel():
            ids[undecided] = reference.lm_head_sample(
                hidden[undecided], weight, seed, offsets.to(device)[undecided], temperature=temperature, top_p=top_p, min_p=min_p
            )
    return ids
