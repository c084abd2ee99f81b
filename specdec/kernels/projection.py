"""Triton kernel of :func:`project_future`: ``[R, d]`` rows through ``k`` maps ``[d, d]`` in one launch.

Algorithm
---------
Row ``r * k + i`` of the result is ``weight[i] @ hidden[r] + bias[i]``. The op is a batched skinny
GEMM. Program ``(row_block, out_block, i)`` computes the tile::

    hidden[row_block, :] @ weight[i, out_block, :].T + bias[i, out_block]      # [BLOCK_ROWS, BLOCK_OUT]

looping over the input dimension in steps of ``BLOCK_IN`` with an fp32 accumulator (``tl.dot``),
adds the bias in fp32, rounds once to ``hidden.dtype`` and stores the tile straight into rows
``r * k + i`` of ``out``. ``out`` only needs unit column stride, so it can be a row slice of a
larger buffer (no concatenation copy). All ``k`` maps share one launch (grid axis 2).

Memory traffic
--------------
At decode time ``R`` is 1..~256 and the weight (``k * d * d`` elements) dominates the traffic, so
the op is memory bound with a floor of ``k * d * d * itemsize / bandwidth``. When
``R <= BLOCK_ROWS`` there is one row block and every weight tile is read from memory exactly once
for all rows; the hidden rows (``R * d``, tiny) are re-read from L2 by each program. Rows are
padded to at least 16 with masks because ``tl.dot`` needs every dimension >= 16 (masked rows
cost registers and tensor-core cycles, not memory). Row blocks are the fastest-moving grid axis,
so when ``R`` needs several of them the programs sharing a weight tile run together and the
repeated reads hit L2. Weight tiles are ``[BLOCK_OUT, BLOCK_IN]`` with the contiguous input
dimension innermost: each row of a tile is one coalesced ``BLOCK_IN * itemsize``-byte read.

Block sizes (defaults of :func:`default_blocks`)
-----------------------------------------------
* Interpreter (``TRITON_INTERPRET=1``): cost is about programs x loop iterations x ops, so tiles
  are as large as possible: ``BLOCK_ROWS = next_pow2(R)`` (16..256), ``BLOCK_OUT = BLOCK_IN =
  next_pow2(d)`` capped at 256, i.e. one program per map for ``d <= 256``.
* GPU: ``BLOCK_ROWS = next_pow2(R)`` clamped to 16..64 (one row block up to R = 64),
  ``BLOCK_IN = 256 bytes / itemsize`` (128 for 16-bit types), and ``BLOCK_OUT`` the largest of
  128, 64, 32, 16 that still gives ``>= PROGRAMS_PER_SM * SMs`` programs, so that a small grid does
  not leave most of the 132 SMs of an H100 idle (d = 4096, k = 3, R <= 64: BLOCK_OUT = 32,
  384 programs, 3 per SM). ``num_warps = 4``, ``num_stages = 3``; shared memory per stage is
  ``(BLOCK_ROWS + BLOCK_OUT) * BLOCK_IN * itemsize`` <= 48 KiB.

Seen in sm_90 compiles made on CPU (no timings): 16-row tiles lower to ``mma.sync`` (``wgmma``
needs 64 rows); fp32 inputs use the exact FMA path (``input_precision="ieee"``, matching torch's
default fp32 matmul, no TF32); the weight loads are pipelined with ``cp.async`` when the pointers
and ``d`` are 16-divisible, which the JIT's argument specialisation provides for real shapes.

What a GPU session should tune (targets: >= 85% of copy bandwidth, never slower than ``F.linear``
per map): ``PROGRAMS_PER_SM`` and the ``BLOCK_OUT`` ladder (occupancy vs. tile size), the bytes
per weight row read (``BLOCK_IN``; 512 B may stream better), ``num_stages`` (more stages fit when
``BLOCK_OUT`` is small), ``num_warps``. If small ``d * k`` grids still leave SMs idle, split the
input dimension across programs (deterministic: fp32 partials plus a reduce, or a 2-CTA cluster).
For R = 1 a swap-AB tiling (weight tile as the MMA's M side) wastes fewer tensor-core lanes, which
only matters if the kernel turns out compute-limited.
"""

import torch
import triton
import triton.language as tl

from .launch import INTERPRET, INTERPRETING, SUPPORTED_DTYPES, check_runnable, pick_block, row_major, sm_count

PROGRAMS_PER_SM = 2
NUM_WARPS = 4
NUM_STAGES = 3


@triton.jit
def _project_kernel(
    hidden_ptr,
    weight_ptr,
    bias_ptr,
    out_ptr,
    rows,
    d,
    k,
    stride_hidden,
    stride_weight_map,
    stride_weight_row,
    stride_out,
    HAS_BIAS: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_OUT: tl.constexpr,
    BLOCK_IN: tl.constexpr,
):
    """One ``[BLOCK_ROWS, BLOCK_OUT]`` tile of map ``program_id(2)``; see the module docstring."""
    map_idx = tl.program_id(2).to(tl.int64)
    offs_rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    offs_out = tl.program_id(1) * BLOCK_OUT + tl.arange(0, BLOCK_OUT)
    offs_in = tl.arange(0, BLOCK_IN)
    mask_rows = offs_rows < rows
    mask_out = offs_out < d

    hidden_ptrs = hidden_ptr + offs_rows[:, None].to(tl.int64) * stride_hidden + offs_in[None, :]
    weight_ptrs = (
        weight_ptr
        + map_idx * stride_weight_map
        + offs_out[:, None].to(tl.int64) * stride_weight_row
        + offs_in[None, :]
    )
    acc = tl.zeros((BLOCK_ROWS, BLOCK_OUT), dtype=tl.float32)
    for start in range(0, d, BLOCK_IN):
        mask_in = offs_in < d - start
        h = tl.load(hidden_ptrs, mask=mask_rows[:, None] & mask_in[None, :], other=0.0)
        w = tl.load(weight_ptrs, mask=mask_out[:, None] & mask_in[None, :], other=0.0)
        if INTERPRET:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(h, tl.trans(w), acc, input_precision="ieee")
        hidden_ptrs += BLOCK_IN
        weight_ptrs += BLOCK_IN

    if HAS_BIAS:
        b = tl.load(bias_ptr + map_idx * d + offs_out, mask=mask_out, other=0.0).to(tl.float32)
        acc += b[None, :]
    out_rows = offs_rows.to(tl.int64) * k + map_idx
    out_ptrs = out_ptr + out_rows[:, None] * stride_out + offs_out[None, :]
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_rows[:, None] & mask_out[None, :])


def default_blocks(rows: int, d: int, k: int, dtype: torch.dtype, device: torch.device) -> tuple[int, int, int]:
    """``(BLOCK_ROWS, BLOCK_OUT, BLOCK_IN)`` for the interpreter or a GPU; see the module docstring."""
    if INTERPRETING:
        whole = min(max(16, triton.next_power_of_2(d)), 256)
        return min(max(16, triton.next_power_of_2(rows)), 256), whole, whole
    block_rows = min(max(16, triton.next_power_of_2(rows)), 64)
    block_in = 256 // dtype.itemsize
    target = PROGRAMS_PER_SM * sm_count(device)
    row_blocks = triton.cdiv(rows, block_rows)
    block_out = next(
        (b for b in (128, 64, 32) if row_blocks * triton.cdiv(d, b) * k >= target),
        16,
    )
    return block_rows, block_out, block_in


def _check_inputs(hidden, weight, bias, out) -> None:
    if hidden.dim() != 2:
        raise ValueError(f"project_future: hidden must be [R, d], got shape {tuple(hidden.shape)}")
    rows, d = hidden.shape
    if weight.dim() != 3 or weight.shape[1:] != (d, d):
        raise ValueError(f"project_future: weight must be [k, {d}, {d}], got shape {tuple(weight.shape)}")
    if hidden.dtype not in SUPPORTED_DTYPES:
        raise ValueError(f"project_future: unsupported dtype {hidden.dtype}; use one of {SUPPORTED_DTYPES}")
    named = {"weight": weight, "bias": bias, "out": out}
    for name, t in named.items():
        if t is not None and t.dtype != hidden.dtype:
            raise ValueError(f"project_future: {name} is {t.dtype} but hidden is {hidden.dtype}")
    if bias is not None and bias.shape != (weight.shape[0], d):
        raise ValueError(f"project_future: bias must be [{weight.shape[0]}, {d}], got shape {tuple(bias.shape)}")
    if out is not None:
        if out.shape != (rows * weight.shape[0], d):
            raise ValueError(
                f"project_future: out must be [{rows * weight.shape[0]}, {d}], got shape {tuple(out.shape)}"
            )
        if out.stride(1) != 1 and d > 1:
            raise ValueError(f"project_future: out needs unit column stride, got strides {out.stride()}")
    check_runnable("project_future", *(t for t in (hidden, weight, bias, out) if t is not None))


def project_future(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor | None = None,
    *,
    block_rows: int | None = None,
    block_out: int | None = None,
    block_in: int | None = None,
) -> torch.Tensor:
    """Pseudo hidden states for the next ``k`` positions of every row, in one kernel launch.

    Args:
        hidden: ``[R, d]`` fp32/fp16/bf16, any strides.
        weight: ``[k, d, d]`` same dtype, ``weight[i]`` laid out like ``nn.Linear.weight`` (out x in).
        bias: ``[k, d]`` same dtype, or None.
        out: optional ``[R * k, d]`` destination of the same dtype with unit column stride; any row
            stride, so it may be a row slice of a larger buffer. Written in place and returned.
        block_rows, block_out, block_in: tile sizes (powers of two >= 16); None picks
            :func:`default_blocks`.

    Returns:
        ``[R * k, d]`` in ``hidden.dtype``; row ``r * k + i`` is ``weight[i] @ hidden[r] + bias[i]``
        (fp32 accumulation, one rounding).
    """
    _check_inputs(hidden, weight, bias, out)
    rows, d = hidden.shape
    k = weight.shape[0]
    if out is None:
        out = torch.empty(rows * k, d, dtype=hidden.dtype, device=hidden.device)
    if out.numel() == 0:
        return out
    defaults = default_blocks(rows, d, k, hidden.dtype, hidden.device)
    block_rows = pick_block("block_rows", block_rows, defaults[0])
    block_out = pick_block("block_out", block_out, defaults[1])
    block_in = pick_block("block_in", block_in, defaults[2])
    hidden, weight = row_major(hidden), row_major(weight)
    bias = bias.contiguous() if bias is not None else None
    grid = (triton.cdiv(rows, block_rows), triton.cdiv(d, block_out), k)
    _project_kernel[grid](
        hidden,
        weight,
        bias if bias is not None else weight,  # never read when HAS_BIAS is False
        out,
        rows,
        d,
        k,
        hidden.stride(0),
        weight.stride(0),
        weight.stride(1),
        out.stride(0),
        HAS_BIAS=bias is not None,
        BLOCK_ROWS=block_rows,
        BLOCK_OUT=block_out,
        BLOCK_IN=block_in,
        num_warps=NUM_WARPS,
        num_stages=NUM_STAGES,
    )
    return out
