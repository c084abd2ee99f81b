"""Triton ``project_future`` against the PyTorch reference.

On CPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1`` from the root
conftest); with CUDA it runs natively and bf16 joins the dtypes. The kernel's fp32 ``tl.dot``
uses ``input_precision="ieee"`` (no TF32), like torch's default fp32 matmul, so the fp32
tolerances of ``kernel_utils.TOLERANCES`` hold on a GPU too.
"""

import pytest
import torch
from kernel_utils import DEVICE, assert_close, case_generator, hopper_ptx, kernel_dtypes, poisoned

from specdec.kernels import reference
from specdec.kernels.projection import project_future

def make_inputs(gen: torch.Generator, rows: int, d: int, k: int, dtype: torch.dtype, with_bias: bool):
    """``hidden [rows, d]``, ``weight [k, d, d]`` (unit-variance outputs), ``bias [k, d]`` or None, on DEVICE."""
    hidden = torch.randn(rows, d, generator=gen)
    weight = torch.randn(k, d, d, generator=gen) / d**0.5
    bias = torch.randn(k, d, generator=gen) if with_bias else None
    return tuple(t.to(DEVICE, dtype) if t is not None else None for t in (hidden, weight, bias))


# (rows, d, k, with_bias, explicit blocks): odd sizes, non-power-of-two and power-of-two d, k in
# {1, 2, 3}; the explicit-blocks case has several row, output and input tiles per program grid.
CASES = [
    (1, 48, 1, True, {}),
    (3, 80, 2, False, {}),
    (17, 64, 3, True, {}),
    (17, 80, 2, True, dict(block_rows=16, block_out=32, block_in=32)),
    (40, 200, 3, True, {}),  # the medium case
]


@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("rows,d,k,with_bias,blocks", CASES)
def test_matches_reference(request, dtype, rows, d, k, with_bias, blocks):
    hidden, weight, bias = make_inputs(case_generator(request), rows, d, k, dtype, with_bias)
    out = poisoned((rows * k, d), dtype)
    result = project_future(hidden, weight, bias, out, **blocks)
    assert result is out
    assert_close(out, reference.project_future(hidden, weight, bias), dtype)


@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
def test_writes_into_row_slice_of_larger_buffer(request, dtype):
    rows, d, k = 3, 48, 3
    hidden, weight, bias = make_inputs(case_generator(request), rows, d, k, dtype, True)
    buffer = poisoned((rows * k + 7, d + 5), dtype)
    out = buffer[4 : 4 + rows * k, :d]  # row stride d + 5, unit column stride
    project_future(hidden, weight, bias, out)
    assert_close(out, reference.project_future(hidden, weight, bias), dtype)
    outside = torch.ones_like(buffer, dtype=torch.bool)
    outside[4 : 4 + rows * k, :d] = False
    assert buffer[outside].isnan().all()


def test_allocates_output_and_accepts_strided_hidden(request):
    dtype = torch.float32
    hidden, weight, bias = make_inputs(case_generator(request), 5, 64, 2, dtype, True)
    strided = torch.stack([hidden, hidden], dim=2).flatten(1)[:, ::2]  # column stride 2: copied once
    wide_rows = torch.cat([hidden, hidden], dim=1)[:, :64]  # row stride 128
    expected = reference.project_future(hidden, weight, bias)
    for view in (strided, wide_rows):
        result = project_future(view, weight, bias)
        assert result.shape == (10, 64) and result.dtype == dtype
        assert_close(result, expected, dtype)


def test_empty_rows():
    weight = torch.zeros(2, 16, 16, device=DEVICE)
    assert project_future(torch.zeros(0, 16, device=DEVICE), weight, None).shape == (0, 16)


@pytest.mark.parametrize(
    "hidden_shape,weight_shape,bias_shape,out_shape,message",
    [
        ((4,), (1, 4, 4), None, None, "hidden must be"),
        ((2, 4), (1, 4, 8), None, None, "weight must be"),
        ((2, 4), (4, 4), None, None, "weight must be"),
        ((2, 4), (3, 4, 4), (2, 4), None, "bias must be"),
        ((2, 4), (3, 4, 4), None, (5, 4), "out must be"),
    ],
)
def test_rejects_bad_shapes(hidden_shape, weight_shape, bias_shape, out_shape, message):
    tensors = [torch.zeros(s, device=DEVICE) if s is not None else None for s in (bias_shape, out_shape)]
    with pytest.raises(ValueError, match=message):
        project_future(torch.zeros(hidden_shape, device=DEVICE), torch.zeros(weight_shape, device=DEVICE), *tensors)


def test_rejects_bad_dtypes_and_strides():
    hidden = torch.zeros(2, 16, device=DEVICE)
    weight = torch.zeros(1, 16, 16, device=DEVICE)
    with pytest.raises(ValueError, match="weight is torch.float16"):
        project_future(hidden, weight.half(), None)
    with pytest.raises(ValueError, match="unsupported dtype"):
        project_future(hidden.double(), weight.double(), None)
    with pytest.raises(ValueError, match="unit column stride"):
        project_future(hidden, weight, None, torch.zeros(16, 2, device=DEVICE).t())
    with pytest.raises(ValueError, match="power of two"):
        project_future(hidden, weight, None, block_out=24)


# GPU-sized tiles: a decode-time config (R <= 16, BLOCK_OUT 32) and a larger one.
HOPPER_CASES = {
    f"{dtype}-{tiles}": ("specdec.kernels.projection", "_project_kernel", dtype, constexprs, {})
    for dtype in ("bf16", "fp16")
    for tiles, constexprs in {
        "decode": dict(HAS_BIAS=True, BLOCK_ROWS=16, BLOCK_OUT=32, BLOCK_IN=128),
        "large-nobias": dict(HAS_BIAS=False, BLOCK_ROWS=64, BLOCK_OUT=128, BLOCK_IN=128),
    }.items()
}


def test_compiles_for_hopper():
    assert set(hopper_ptx(HOPPER_CASES)) == set(HOPPER_CASES)
