"""Triton tree attention (:mod:`specdec.kernels.attention`) against the PyTorch reference.

Every case draws fresh inputs from its own seed. Inputs are laid out as in real
decoding and poisoned around the edges: q is a transposed view whose padding
(extra rows, extra features) is NaN, k/v are ``buf[:, :, :L]`` views of larger
NaN-tailed cache buffers, ``out`` is NaN before the call, and the unused high bits
of the last mask word are set. A kernel that reads out of bounds or misses an
output element therefore fails the comparison (assert_close rejects NaN).

The expected output is the reference evaluated in fp32 on the same (rounded)
inputs, compared with the tolerance of the kernel's dtype. On CPU the kernels run
interpreted, so shapes are small and blocks large; the same tests run natively
when DEVICE is cuda (fp32 dots are exact there too: the kernel asks for
``input_precision="ieee"``).
"""

import pytest
import torch
from kernel_utils import DEVICE, assert_close, hopper_ptx, kernel_dtypes, poisoned

from specdec.kernels import reference
from specdec.kernels.attention import tree_attention
from specdec.kernels.bits import num_words, pack_bits
from specdec.decode.tree import StepLayout, TreeShape

DTYPES = kernel_dtypes()


def make_qkv(seed, batch, q_heads, kv_heads, rows, prefix_len, head_dim, dtype):
    """Random q ``[B, Hq, S, D]`` (transposed view) and k, v views of larger cache buffers, NaN around them."""
    gen = torch.Generator().manual_seed(seed)
    keys = prefix_len + rows

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(dtype=dtype, device=DEVICE)

    q_buf = poisoned((batch, rows + 2, q_heads, head_dim + 3), dtype)
    q_buf[:, :rows, :, :head_dim] = randn(batch, rows, q_heads, head_dim)
    k_buf = poisoned((batch, kv_heads, keys + 5, head_dim), dtype)
    v_buf = poisoned((batch, kv_heads, keys + 5, head_dim), dtype)
    k_buf[:, :, :keys] = randn(batch, kv_heads, keys, head_dim)
    v_buf[:, :, :keys] = randn(batch, kv_heads, keys, head_dim)
    q = q_buf[:, :rows, :, :head_dim].transpose(1, 2)
    return q, k_buf[:, :, :keys], v_buf[:, :, :keys]


def random_bits(seed, rows, density=0.3):
    """Packed random visibility with the diagonal on and the padding bits of the last word set."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(rows, rows, generator=gen) < density
    mask.fill_diagonal_(True)
    padded = torch.ones(rows, num_words(rows) * 32, dtype=torch.bool)
    padded[:, :rows] = mask
    return pack_bits(padded).to(DEVICE)


def check(q, k, v, dtype, options=None, **kwargs):
    """Run the kernel (with tuning ``options``) into a poisoned ``out``; compare with the fp32 reference."""
    out = poisoned((q.shape[0], q.shape[2], q.shape[1], q.shape[3]), dtype)
    result = tree_attention(q, k, v, out=out, **kwargs, **(options or {}))
    assert result is out
    expected = reference.tree_attention(q.float(), k.float(), v.float(), **kwargs)
    assert_close(result, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "seed, tree, pseudo, prefix_len, heads, head_dim",
    [
        (51, "chain", 0, 1, (4, 4), 64),
        (52, "chain", 3, 19, (8, 2), 128),
        (53, "default", 0, 0, (4, 1), 64),
        (54, "default", 3, 45, (8, 1), 48),
        (55, "wide", 0, 7, (8, 2), 64),
        (56, "wide", 3, 333, (4, 1), 64),  # the medium case: 244 rows, 976 query slots
    ],
)
def test_real_tree_layouts(seed, tree, pseudo, prefix_len, heads, head_dim, dtype):
    layout = StepLayout.build(TreeShape.resolve(tree, 3), pseudo, DEVICE)
    bits = layout.full_bits
    q, k, v = make_qkv(seed, 1, *heads, bits.shape[0], prefix_len, head_dim, dtype)
    check(q, k, v, dtype, prefix_len=prefix_len, step_bits=bits, scale=head_dim**-0.5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "seed, batch, heads, rows, prefix_len, head_dim",
    [
        (1, 1, (1, 1), 1, 0, 64),
        (2, 2, (3, 3), 7, 1, 48),
        (3, 1, (8, 1), 33, 13, 64),  # crosses a word boundary
        (4, 2, (4, 1), 64, 5, 128),  # bit 31 set: negative words
        (5, 1, (8, 2), 70, 0, 80),
    ],
)
def test_random_bitmasks(seed, batch, heads, rows, prefix_len, head_dim, dtype):
    q, k, v = make_qkv(seed, batch, *heads, rows, prefix_len, head_dim, dtype)
    check(q, k, v, dtype, prefix_len=prefix_len, step_bits=random_bits(seed, rows), scale=0.37)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "seed, heads, rows, prefix_len, blocks",
    [
        (11, (4, 1), 150, 0, {}),  # prompt prefill
        (12, (2, 2), 100, 0, {"block_m": 32, "block_n": 32}),  # several query and key blocks: early stop
        (13, (8, 2), 9, 17, {"block_n": 16}),
    ],
)
def test_causal(seed, heads, rows, prefix_len, blocks, dtype):
    q, k, v = make_qkv(seed, 1, *heads, rows, prefix_len, 64, dtype)
    check(q, k, v, dtype, blocks, prefix_len=prefix_len, step_bits=None, scale=0.125)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "seed, causal, prefix_len, window, blocks",
    [
        (21, False, 90, 16, {"block_n": 16}),  # the window starts inside the prefix, mid-block
        (22, False, 7, 100, {}),  # the window covers everything
        (23, True, 0, 8, {"block_m": 16, "block_n": 16}),  # sliding-window prefill
        (24, True, 0, 64, {"block_m": 16, "block_n": 16}),  # a window longer than the prefill: the reference's causal path
    ],
)
def test_sliding_window(seed, causal, prefix_len, window, blocks, dtype):
    if causal:
        rows, bits, positions = 40, None, torch.arange(40, device=DEVICE)
    else:
        layout = StepLayout.build(TreeShape.resolve("default", 3), 3, DEVICE)
        rows, bits, positions = layout.num_rows, layout.full_bits, layout.offsets + prefix_len
    q, k, v = make_qkv(seed, 1, 4, 2, rows, prefix_len, 64, dtype)
    contract = {"prefix_len": prefix_len, "step_bits": bits, "positions": positions, "window": window}
    check(q, k, v, dtype, blocks, scale=0.125, **contract)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "seed, num_splits, prefix_len, window, blocks",
    [
        (31, 2, 300, None, {}),
        (32, 3, 70, None, {"block_n": 16}),
        (33, 8, 40, None, {"block_n": 16}),  # more splits than key blocks: empty splits
        (34, 4, 100, 30, {"block_n": 16}),  # the window empties the first splits
    ],
)
def test_split_kv(seed, num_splits, prefix_len, window, blocks, dtype):
    rows = 21
    positions = torch.arange(prefix_len, prefix_len + rows, device=DEVICE) if window else None
    q, k, v = make_qkv(seed, 1, 8, 2, rows, prefix_len, 64, dtype)
    bits = random_bits(seed, rows)
    options = {"num_splits": num_splits, **blocks}
    contract = {"prefix_len": prefix_len, "step_bits": bits, "positions": positions, "window": window}
    check(q, k, v, dtype, options, scale=0.125, **contract)


def test_allocates_output_and_honours_scale():
    q, k, v = make_qkv(41, 1, 4, 2, 5, 3, 64, torch.float32)
    bits = random_bits(41, 5)
    out = tree_attention(q, k, v, prefix_len=3, step_bits=bits, scale=2.5)
    assert out.shape == (1, 5, 4, 64) and out.is_contiguous() and out.dtype == torch.float32
    expected = reference.tree_attention(q, k, v, prefix_len=3, step_bits=bits, scale=2.5)
    assert_close(out, expected, torch.float32)


def broken_call(name):
    """Valid arguments with the one named ``name`` broken, as (args, kwargs)."""
    q, k, v = make_qkv(0, 1, 4, 2, 3, 2, 16, torch.float32)
    args = {
        "q rank": (q[0], k, v),
        "dtype mix": (q, k.half(), v),
        "heads": (q[:, :3], k, v),
        "head dim": (q, k[..., :8], v[..., :8]),
        "prefix_len": (q, k[:, :, :4], v[:, :, :4]),
    }.get(name, (q, k, v))
    kwargs = {"prefix_len": 2, "step_bits": random_bits(0, 3), "scale": 0.25}
    kwargs.update(
        {
            "bits shape": {"step_bits": torch.zeros(3, 2, dtype=torch.int32, device=DEVICE)},
            "bits dtype": {"step_bits": torch.zeros(3, 1, dtype=torch.int64, device=DEVICE)},
            "window without positions": {"window": 4},
            "positions shape": {"window": 4, "positions": torch.arange(2, device=DEVICE)},
            "out shape": {"out": torch.empty(1, 4, 3, 16, device=DEVICE)},
            "block size": {"block_n": 24},
            "splits": {"num_splits": 0},
        }.get(name, {})
    )
    return args, kwargs


@pytest.mark.parametrize(
    "name",
    ["q rank", "dtype mix", "heads", "head dim", "prefix_len", "bits shape", "bits dtype",
     "window without positions", "positions shape", "out shape", "block size", "splits"],
)
def test_rejects_bad_inputs(name):
    args, kwargs = broken_call(name)
    with pytest.raises(ValueError, match="tree_attention"):
        tree_attention(*args, **kwargs)


POINTER_TYPES = {"bits_ptr": "*i32", "pos_ptr": "*i64", "m_part_ptr": "*fp32", "l_part_ptr": "*fp32",
                 "acc_part_ptr": "*fp32", "qk_scale": "fp32"}
HOPPER_CASES = {
    **{
        f"{dtype}-{'prefill' if causal else 'decode'}": (
            "specdec.kernels.attention", "_tree_attention_kernel", dtype,
            dict(GROUP=4, HEAD_DIM=128, BLOCK_M=block_m, BLOCK_N=64, BLOCK_D=128, CAUSAL=causal, HAS_WINDOW=window, SPLIT=split),
            POINTER_TYPES,
        )
        for dtype in ("bf16", "fp16")
        for causal, window, split, block_m in ((False, True, True, 64), (True, False, False, 128))
    },
    **{
        f"{dtype}-merge": ("specdec.kernels.attention", "_merge_splits_kernel", dtype,
                           dict(GROUP=4, HEAD_DIM=128, BLOCK_M=64, BLOCK_D=128), POINTER_TYPES)
        for dtype in ("bf16", "fp16")
    },
}


def test_compiles_for_hopper():
    """bf16 and fp16, decode (bits, window, split) and prefill (causal) variants, plus the merge kernel."""
    ptx = hopper_ptx(HOPPER_CASES)
    for case, code in ptx.items():
        if "merge" not in case:
            assert "wgmma" in code, f"{case}: the dots should run on Hopper tensor cores"
