"""Tree-masked attention of a speculative step over a cached prefix, in Triton.

The op (same contract as :func:`specdec.kernels.reference.tree_attention`): ``S``
step rows (root, draft nodes, pseudo rows) attend over ``prefix_len`` cached keys,
which every row sees, and over the step's own ``S`` keys, which a row sees when
its packed visibility bit is set. The mask format (:mod:`specdec.kernels.bits`):
bit ``j % 32`` of the int32 word ``step_bits[i, j // 32]`` says row ``i`` sees
step row ``j``; ``step_bits=None`` means causal within the step (prompt prefill).
With a sliding ``window``, a row at position ``p`` also needs ``p - pos(key) <
window``, where prefix key ``j`` sits at position ``j`` and step key ``j`` at
``positions[j]``.

Algorithm (flash attention, forward only):

* **GQA packing.** A program owns one (batch, kv head, block of ``BLOCK_M`` query
  slots). The ``S * G`` slots of a kv group (``G = Hq / Hkv``) are ordered row
  major, slot ``m`` being row ``m // G`` of query head ``kv_head * G + m % G``, so
  every K/V tile is loaded once for the whole group and K/V are never expanded.
  Slots past the end are clamped to the last row (so loads stay in bounds) and
  not stored.
* **Online softmax in the exp2 domain.** Scores are ``q . k * scale * log2(e)``
  in fp32; a running max ``m``, sum ``l`` and unnormalised fp32 accumulator are
  rescaled per key block. A fully masked block (or row) never produces NaN: the
  reference max used for the exponentials is 0 while the running max is -inf,
  and ``l == 0`` is divided as 1 at the end.
* **Prefix keys carry no mask memory.** The prefix loop runs over full key
  blocks with no mask at all, then at most one bounded block for the partial
  tail; a sliding window adds a per-element position test and starts the loop
  at the first key the block's lowest position can see.
* **Only the step block reads mask data.** For a key block of the step the
  program gathers ``step_bits[row, key // 32]`` and tests bit ``key % 32`` (the
  same word is reused by 32 neighbouring lanes, so the gather hits in L1). In
  causal mode the bits are replaced by ``key <= row`` and the loop stops at the
  block's last row, so a long prefill does half the work.
* **Split-KV** (``num_splits > 1``): the prefix is cut into ``num_splits``
  ranges of whole key blocks, one program per (query block, batch x kv head,
  split); the last split also owns the step block. Each writes its partial
  ``(m, l, acc)`` in fp32 and :func:`_merge_splits_kernel` combines them into
  the output. This fills the GPU when decode launches few programs (``B * Hkv *
  ceil(S * G / BLOCK_M)`` is often 8-64 on a 132-SM H100) over a long prefix.
  Splitting moves the block maxima, so fp16/bf16 results differ from one pass in
  the last bits (the merge itself is fp32, and the output is rounded once);
  ``num_splits=1`` keeps a single pass.

Precision: the dots take the input dtype (bf16/fp16 tensor cores on GPU) with
fp32 accumulation, and the probabilities are rounded to the value dtype before
``P @ V``, as in any flash kernel. Both dots ask for ``input_precision="ieee"``:
for fp16/bf16 that is the ordinary tensor-core path, and fp32 inputs get true
fp32 products instead of TF32, whose 10-bit mantissa would break the 1e-4
agreement that fp32 greedy parity relies on (fp32 is the parity configuration,
not the fast one). When interpreting, tiles are cast to fp32 right after loading
(``INTERPRET``), because the interpreter computes bf16 on raw bit patterns.

Head dims: any ``D <= 256`` is served, with ``BLOCK_D = max(16, next_pow2(D))``
and masks on the feature axis (64, 128 and 256 need no padding; 48, 80 or 96
pad to 64 or 128).

Performance reasoning (H100; not measured, this machine has no GPU). Decode
runs ``S = 1..250`` rows over 2k-8k cached keys with, for Llama-3-8B, Hkv = 8,
G = 4, D = 128. Dense-mask SDPA reads an ``[S, L]`` mask for every head, needs
K/V expanded by G (or the math backend under ``enable_gqa``) and launches
``B * Hq * ceil(S / BLOCK)`` programs with no split over keys, so for small S
most SMs idle while a few programs stream the whole prefix. Here K/V are read
once per kv group and query block, the prefix costs no mask bytes, and split-KV
gives about two programs per SM, so small-S steps should run near K/V bandwidth
(8 heads x 4096 keys x 128 x 2 tensors x 2 B = 17 MB, about 6 us at 3 TB/s):
that is where the >= 2x over SDPA at prefix >= 2048 should come from. Around
S = 250 the step becomes compute bound and the gain is the missing mask traffic
and K/V expansion.

Tuning knobs (keyword arguments of :func:`tree_attention`, defaults in
:func:`_default_config` and :func:`_default_splits`):

* ``block_m``: query slots per program; 16/32/64 by slot count on GPU, 128 from
  1024 slots (long prefills); fp32 at most 32.
* ``block_n``: keys per block; 64 for D <= 128, 32 above and for fp32.
* ``num_splits``: about two programs per SM, each split at least 256 prefix
  keys, at most 32 splits; 1 when the grid already fills the GPU or when
  interpreting.
* ``num_warps`` (4, or 8 for 128-slot blocks or D > 128), ``num_stages`` (2).

When interpreting (``TRITON_INTERPRET=1``, CPU) the cost is per operation, not
per element, so blocks are large: up to 128 slots and 256 keys.
"""

import math

import torch
import triton
import triton.language as tl

from .bits import num_words
from .launch import INTERPRET, INTERPRETING, check_block, check_runnable, clamped_pow2, sm_count
_LOG2E = math.log2(math.e)
MAX_HEAD_DIM = 256
_MIN_SPLIT_KEYS = 256  # the auto heuristic gives each split at least this many prefix keys
_MAX_AUTO_SPLITS = 32


@triton.jit
def _slot_coords(pid_m, pid_bh, kv_heads, rows, GROUP: tl.constexpr, BLOCK_M: tl.constexpr):
    """Batch (int64), kv head, slot ids, clamped rows and query heads of a program's ``BLOCK_M`` slots."""
    batch = (pid_bh // kv_heads).to(tl.int64)
    kv_head = pid_bh % kv_heads
    slots = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row = tl.minimum(slots // GROUP, rows - 1)
    head = kv_head * GROUP + slots % GROUP
    return batch, kv_head, slots, row, head


@triton.jit
def _load_rows(base, index, stride_n, stride_d, bound, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
               BOUNDED: tl.constexpr):
    """Load a ``[len(index), BLOCK_D]`` tile of K or V rows ``index``; rows ``>= bound`` read 0 if BOUNDED."""
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_d < HEAD_DIM)[None, :]
    if BOUNDED:
        mask = mask & (index < bound)[:, None]
    tile = tl.load(base + index[:, None] * stride_n + offs_d[None, :] * stride_d, mask=mask, other=0.0)
    if INTERPRET:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _softmax_update(acc, m_i, l_i, scores, v):
    """Fold one key block into the running (acc, max, sum); ``scores`` are log2-scaled, masked = -inf."""
    m_new = tl.maximum(m_i, tl.max(scores, 1))
    m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.exp2(m_i - m_ref)
    p = tl.exp2(scores - m_ref[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision="ieee")
    return acc, m_new, l_i


@triton.jit
def _attend_prefix(acc, m_i, l_i, q, k_base, v_base, start, hi, row_pos, window, qk_scale,
                   stride_kn, stride_kd, stride_vn, stride_vd,
                   HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                   BOUNDED: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """One block of prefix keys ``start + [0, BLOCK_N)``; only the tail block (BOUNDED) tests ``key < hi``."""
    keys = start + tl.arange(0, BLOCK_N)
    k = _load_rows(k_base, keys, stride_kn, stride_kd, hi, HEAD_DIM, BLOCK_D, BOUNDED)
    v = _load_rows(v_base, keys, stride_vn, stride_vd, hi, HEAD_DIM, BLOCK_D, BOUNDED)
    scores = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
    if BOUNDED:
        scores = tl.where((keys < hi)[None, :], scores, float("-inf"))
    if HAS_WINDOW:
        scores = tl.where(row_pos[:, None] - keys[None, :] < window, scores, float("-inf"))
    return _softmax_update(acc, m_i, l_i, scores, v)


@triton.jit
def _step_visible(row, keys, rows, bits_ptr, stride_bits, row_pos, pos_ptr, window,
                  CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """Boolean ``[BLOCK_M, BLOCK_N]``: which step keys ``keys`` (step-relative) each slot's row sees."""
    if CAUSAL:
        visible = keys[None, :] <= row[:, None]  # row < rows, so keys past the step stay hidden
    else:  # words of keys past the step read as 0, whatever the padding bits of the last word hold
        words_ptr = bits_ptr + row[:, None] * stride_bits + (keys // 32)[None, :]
        words = tl.load(words_ptr, mask=(keys < rows)[None, :], other=0)
        visible = ((words >> (keys % 32)[None, :]) & 1) != 0
    if HAS_WINDOW:
        key_pos = tl.load(pos_ptr + keys, mask=keys < rows, other=0)
        visible = visible & (row_pos[:, None] - key_pos[None, :] < window)
    return visible


@triton.jit
def _attend_step(acc, m_i, l_i, q, k_base, v_base, start, rows, prefix_len, row, row_pos,
                 bits_ptr, stride_bits, pos_ptr, window, qk_scale,
                 stride_kn, stride_kd, stride_vn, stride_vd,
                 HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                 CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr):
    """One block of step keys ``start + [0, BLOCK_N)`` (step-relative), masked by the bits or causally."""
    keys = start + tl.arange(0, BLOCK_N)
    index = prefix_len + keys
    k = _load_rows(k_base, index, stride_kn, stride_kd, prefix_len + rows, HEAD_DIM, BLOCK_D, True)
    v = _load_rows(v_base, index, stride_vn, stride_vd, prefix_len + rows, HEAD_DIM, BLOCK_D, True)
    scores = tl.dot(q, tl.trans(k), input_precision="ieee") * qk_scale
    visible = _step_visible(row, keys, rows, bits_ptr, stride_bits, row_pos, pos_ptr, window, CAUSAL, HAS_WINDOW)
    scores = tl.where(visible, scores, float("-inf"))
    return _softmax_update(acc, m_i, l_i, scores, v)


@triton.jit
def _store_output(out_ptr, acc, l_i, batch, slots, row, head, kv_heads, rows,
                  GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """Write ``acc / l`` of the valid slots to ``out[batch, row, head, :]`` (contiguous ``[B, S, Hq, D]``)."""
    offs_d = tl.arange(0, BLOCK_D)
    result = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    offsets = ((batch * rows + row) * (kv_heads * GROUP) + head) * HEAD_DIM
    mask = (slots < rows * GROUP)[:, None] & (offs_d < HEAD_DIM)[None, :]
    tl.store(out_ptr + offsets[:, None] + offs_d[None, :], result.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _tree_attention_kernel(
    q_ptr, k_ptr, v_ptr, out_ptr, bits_ptr, pos_ptr, m_part_ptr, l_part_ptr, acc_part_ptr,
    stride_qb, stride_qh, stride_qs, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    stride_vb, stride_vh, stride_vn, stride_vd,
    stride_bits, kv_heads, rows, prefix_len, split_len, window, qk_scale,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr, CAUSAL: tl.constexpr, HAS_WINDOW: tl.constexpr, SPLIT: tl.constexpr,
):
    """Grid ``(ceil(S * G / BLOCK_M), B * Hkv, num_splits)``; see the module docstring.

    q, k, v: ``[B, Hq, S, D]`` / ``[B, Hkv, prefix_len + S, D]`` with the given strides; out:
    contiguous ``[B, S, Hq, D]`` (written when not SPLIT); bits: int32 ``[S, W]`` row stride
    ``stride_bits`` (unused when CAUSAL); pos: int64 ``[S]`` (read when HAS_WINDOW). With SPLIT,
    split ``s`` covers prefix keys ``[s * split_len, (s + 1) * split_len)`` (the last one also the
    step block) and writes fp32 partials: m, l ``[B * Hkv, splits, S * G]``, acc ``[..., D]``.
    """
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    split = tl.program_id(2)
    num_splits = tl.num_programs(2)
    batch, kv_head, slots, row, head = _slot_coords(pid_m, pid_bh, kv_heads, rows, GROUP, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q_offsets = batch * stride_qb + head[:, None] * stride_qh + row[:, None] * stride_qs + offs_d[None, :] * stride_qd
    q = tl.load(q_ptr + q_offsets, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    if INTERPRET:
        q = q.to(tl.float32)
    k_base = k_ptr + batch * stride_kb + kv_head.to(tl.int64) * stride_kh
    v_base = v_ptr + batch * stride_vb + kv_head.to(tl.int64) * stride_vh

    row_pos = row  # unused unless HAS_WINDOW
    lo = split * split_len
    hi = tl.minimum(lo + split_len, prefix_len)
    if HAS_WINDOW:
        row_pos = tl.load(pos_ptr + row)
        lo = tl.maximum(lo, (tl.min(row_pos, 0) - window + 1).to(tl.int32))
    full_end = lo + tl.maximum(hi - lo, 0) // BLOCK_N * BLOCK_N

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start in range(lo, full_end, BLOCK_N):
        acc, m_i, l_i = _attend_prefix(acc, m_i, l_i, q, k_base, v_base, start, hi, row_pos, window, qk_scale,
                                       stride_kn, stride_kd, stride_vn, stride_vd,
                                       HEAD_DIM, BLOCK_N, BLOCK_D, False, HAS_WINDOW)
    for start in range(full_end, hi, BLOCK_N):
        acc, m_i, l_i = _attend_prefix(acc, m_i, l_i, q, k_base, v_base, start, hi, row_pos, window, qk_scale,
                                       stride_kn, stride_kd, stride_vn, stride_vd,
                                       HEAD_DIM, BLOCK_N, BLOCK_D, True, HAS_WINDOW)

    step_end = rows
    if CAUSAL:
        step_end = tl.minimum(rows, ((pid_m + 1) * BLOCK_M - 1) // GROUP + 1)
    step_end = tl.where(split == num_splits - 1, step_end, 0)
    for start in range(0, step_end, BLOCK_N):
        acc, m_i, l_i = _attend_step(acc, m_i, l_i, q, k_base, v_base, start, rows, prefix_len, row, row_pos,
                                     bits_ptr, stride_bits, pos_ptr, window, qk_scale,
                                     stride_kn, stride_kd, stride_vn, stride_vd,
                                     HEAD_DIM, BLOCK_N, BLOCK_D, CAUSAL, HAS_WINDOW)

    if SPLIT:
        valid = slots < rows * GROUP
        part = (pid_bh * num_splits + split).to(tl.int64) * (rows * GROUP) + slots
        tl.store(m_part_ptr + part, m_i, mask=valid)
        tl.store(l_part_ptr + part, l_i, mask=valid)
        acc_mask = valid[:, None] & (offs_d < HEAD_DIM)[None, :]
        tl.store(acc_part_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], acc, mask=acc_mask)
    else:
        _store_output(out_ptr, acc, l_i, batch, slots, row, head, kv_heads, rows, GROUP, HEAD_DIM, BLOCK_D)


@triton.jit
def _merge_splits_kernel(
    m_part_ptr, l_part_ptr, acc_part_ptr, out_ptr, kv_heads, rows, num_splits,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """Grid ``(ceil(S * G / BLOCK_M), B * Hkv)``: combine the fp32 split partials into ``out``."""
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    batch, kv_head, slots, row, head = _slot_coords(pid_m, pid_bh, kv_heads, rows, GROUP, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    valid = slots < rows * GROUP
    acc_mask = valid[:, None] & (offs_d < HEAD_DIM)[None, :]
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    for split in range(0, num_splits):
        part = (pid_bh * num_splits + split).to(tl.int64) * (rows * GROUP) + slots
        m_s = tl.load(m_part_ptr + part, mask=valid, other=float("-inf"))
        l_s = tl.load(l_part_ptr + part, mask=valid, other=0.0)
        acc_s = tl.load(acc_part_ptr + part[:, None] * HEAD_DIM + offs_d[None, :], mask=acc_mask, other=0.0)
        m_new = tl.maximum(m_i, m_s)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.exp2(m_i - m_ref)
        beta = tl.exp2(m_s - m_ref)
        l_i = l_i * alpha + l_s * beta
        acc = acc * alpha[:, None] + acc_s * beta[:, None]
        m_i = m_new
    _store_output(out_ptr, acc, l_i, batch, slots, row, head, kv_heads, rows, GROUP, HEAD_DIM, BLOCK_D)


def _default_config(slots: int, keys: int, head_dim: int, dtype: torch.dtype, interpreting: bool) -> dict:
    """Default ``block_m``, ``block_n``, ``num_warps``, ``num_stages`` (see the module docstring)."""
    if interpreting:
        return {"block_m": clamped_pow2(slots, 16, 128), "block_n": clamped_pow2(keys, 16, 256),
                "num_warps": 4, "num_stages": 1}
    if dtype == torch.float32:  # exact fp32 dots run on FMA units: keep the register tiles small
        return {"block_m": clamped_pow2(slots, 16, 32), "block_n": 32, "num_warps": 4, "num_stages": 2}
    block_m = 128 if slots >= 1024 else clamped_pow2(slots, 16, 64)
    return {
        "block_m": block_m,
        "block_n": 64 if head_dim <= 128 else 32,
        "num_warps": 8 if block_m == 128 or head_dim > 128 else 4,
        "num_stages": 2,
    }


def _default_splits(programs: int, prefix_len: int, device: torch.device) -> int:
    """About two programs per SM, each split covering at least ``_MIN_SPLIT_KEYS`` prefix keys."""
    if INTERPRETING or device.type != "cuda":
        return 1
    target = 2 * sm_count(device)
    if programs >= target:
        return 1
    return max(1, min(triton.cdiv(target, programs), prefix_len // _MIN_SPLIT_KEYS, _MAX_AUTO_SPLITS))


def _check_qkv(q, k, v, prefix_len) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            raise ValueError(f"tree_attention: {name} must be a 4-D tensor, got {getattr(t, 'shape', type(t))}")
        if t.device != q.device:
            raise ValueError(f"tree_attention: {name} is on {t.device} but q is on {q.device}")
    check_runnable("tree_attention", q, k, v)
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        dtypes = f"{q.dtype}, {k.dtype}, {v.dtype}"
        raise ValueError(f"tree_attention: q, k, v must share one of fp16/bf16/fp32, got {dtypes}")
    batch, q_heads, rows, head_dim = q.shape
    if k.shape != v.shape or k.shape[0] != batch or k.shape[3] != head_dim:
        raise ValueError(f"tree_attention: k {tuple(k.shape)} and v {tuple(v.shape)} do not match q {tuple(q.shape)}")
    if k.shape[1] == 0 or q_heads % k.shape[1]:
        raise ValueError(f"tree_attention: {q_heads} query heads is not a multiple of {k.shape[1]} kv heads")
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(f"tree_attention: head dim {head_dim} is not in 1..{MAX_HEAD_DIM}")
    if rows < 1 or prefix_len < 0 or k.shape[2] != prefix_len + rows:
        raise ValueError(f"tree_attention: {k.shape[2]} keys but prefix_len={prefix_len} + {rows} step rows")


def _check_visibility(rows, device, step_bits, positions, window) -> None:
    if step_bits is not None:
        expected = (rows, num_words(rows))
        if not isinstance(step_bits, torch.Tensor):
            raise ValueError(f"tree_attention: step_bits must be an int32 tensor or None, got {type(step_bits)}")
        if step_bits.dtype != torch.int32 or step_bits.shape != expected:
            described = f"{tuple(step_bits.shape)} {step_bits.dtype}"
            raise ValueError(f"tree_attention: step_bits must be int32 {list(expected)}, got {described}")
        if step_bits.device != device:
            raise ValueError(f"tree_attention: step_bits is on {step_bits.device} but q is on {device}")
    if window is not None:
        if not isinstance(window, int) or window < 1:
            raise ValueError(f"tree_attention: window must be a positive int or None, got {window!r}")
        if positions is None:
            raise ValueError("tree_attention: a sliding window needs the rows' positions")
        if positions.dtype != torch.int64 or tuple(positions.shape) != (rows,) or positions.device != device:
            raise ValueError(
                f"tree_attention: positions must be int64 [{rows}] on {device}, "
                f"got {tuple(positions.shape)} {positions.dtype} on {positions.device}"
            )


def _check_out(out, q) -> None:
    batch, q_heads, rows, head_dim = q.shape
    expected = (batch, rows, q_heads, head_dim)
    if out.shape != expected or out.dtype != q.dtype or out.device != q.device or not out.is_contiguous():
        raise ValueError(f"tree_attention: out must be a contiguous {q.dtype} {list(expected)} on {q.device}")


def _resolve_options(q, kv_heads, prefix_len, num_splits, block_m, block_n, num_warps, num_stages) -> dict:
    """The caller's tuning options, defaults filled in and checked."""
    batch, q_heads, rows, head_dim = q.shape
    slots = rows * (q_heads // kv_heads)
    opts = _default_config(slots, max(prefix_len, rows), head_dim, q.dtype, INTERPRETING or q.device.type != "cuda")
    given = {"block_m": block_m, "block_n": block_n, "num_warps": num_warps, "num_stages": num_stages}
    opts.update({name: value for name, value in given.items() if value is not None})
    check_block("tree_attention: block_m", opts["block_m"])
    check_block("tree_attention: block_n", opts["block_n"])
    if num_splits is None:
        num_splits = _default_splits(triton.cdiv(slots, opts["block_m"]) * batch * kv_heads, prefix_len, q.device)
    if not isinstance(num_splits, int) or num_splits < 1:
        raise ValueError(f"tree_attention: num_splits must be a positive int, got {num_splits!r}")
    opts["num_splits"] = num_splits
    return opts


def tree_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    prefix_len: int,
    step_bits: torch.Tensor | None,
    scale: float,
    positions: torch.Tensor | None = None,
    window: int | None = None,
    out: torch.Tensor | None = None,
    num_splits: int | None = None,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Attention of a step's rows over the cached prefix and the step's own rows (Triton).

    Args:
        q: ``[B, Hq, S, D]`` queries (any strides), fp16, bf16 or fp32, ``D <= 256``.
        k, v: ``[B, Hkv, prefix_len + S, D]`` (any strides, e.g. views of a larger cache),
            same dtype; ``Hq`` a multiple of ``Hkv``.
        prefix_len: cached keys every row sees.
        step_bits: int32 ``[S, ceil(S / 32)]`` packed step visibility, or None for causal.
        scale: softmax scale.
        positions: int64 ``[S]`` positions of the rows; required with ``window``.
        window: sliding window, or None.
        out: optional contiguous ``[B, S, Hq, D]`` destination in ``q.dtype``.
        num_splits: key-dimension splits (None: heuristic, 1 when interpreting).
        block_m, block_n: query slots / keys per block (powers of two >= 16; None: defaults).
        num_warps, num_stages: GPU launch options (None: defaults).

    Returns:
        ``[B, S, Hq, D]`` contiguous in ``q.dtype`` (``out`` when given).

    Raises:
        ValueError: on inconsistent shapes, dtypes, devices or options.
    """
    _check_qkv(q, k, v, prefix_len)
    _check_visibility(q.shape[2], q.device, step_bits, positions, window)
    if out is None:
        out = torch.empty(q.shape[0], q.shape[2], q.shape[1], q.shape[3], dtype=q.dtype, device=q.device)
    else:
        _check_out(out, q)
    opts = _resolve_options(q, k.shape[1], prefix_len, num_splits, block_m, block_n, num_warps, num_stages)
    batch, q_heads, rows, head_dim = q.shape
    kv_heads = k.shape[1]
    group = q_heads // kv_heads
    grid = (triton.cdiv(rows * group, opts["block_m"]), batch * kv_heads, opts["num_splits"])
    if batch == 0:
        return out
    causal, has_window, split = step_bits is None, window is not None, opts["num_splits"] > 1
    # Pointers a variant does not read get ``out`` as a placeholder, so no call allocates dummies.
    bits = out if causal else step_bits.contiguous()
    pos = positions.contiguous() if has_window else out
    m_part = l_part = acc_part = out
    if split:
        m_part = torch.empty(batch * kv_heads, grid[2], rows * group, dtype=torch.float32, device=q.device)
        l_part = torch.empty_like(m_part)
        acc_part = torch.empty(*m_part.shape, head_dim, dtype=torch.float32, device=q.device)
    split_len = triton.cdiv(triton.cdiv(prefix_len, grid[2]), opts["block_n"]) * opts["block_n"]
    block_d = max(16, triton.next_power_of_2(head_dim))
    _tree_attention_kernel[grid](
        q, k, v, out, bits, pos, m_part, l_part, acc_part,
        *q.stride(), *k.stride(), *v.stride(),
        0 if causal else bits.stride(0), kv_heads, rows, prefix_len, split_len, window if has_window else 0,
        scale * _LOG2E,
        GROUP=group, HEAD_DIM=head_dim, BLOCK_M=opts["block_m"], BLOCK_N=opts["block_n"], BLOCK_D=block_d,
        CAUSAL=causal, HAS_WINDOW=has_window, SPLIT=split, num_warps=opts["num_warps"], num_stages=opts["num_stages"],
    )
    if split:
        _merge_splits_kernel[grid[:2]](
            m_part, l_part, acc_part, out, kv_heads, rows, grid[2],
            GROUP=group, HEAD_DIM=head_dim, BLOCK_M=opts["block_m"], BLOCK_D=block_d, num_warps=4,
        )
    return out
