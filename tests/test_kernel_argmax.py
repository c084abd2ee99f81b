"""Triton ``lm_head_argmax`` against the PyTorch reference.

On CPU the kernels run under Triton's interpreter; with CUDA they run natively and bf16 joins the
dtypes. fp32 ``tl.dot`` uses ``input_precision="ieee"``, so fp32 tolerances hold on a GPU too.
Every buffer the op allocates is NaN/-1 poisoned (``argmax._empty`` is swapped), so a row the
kernels fail to write shows up.

Random inputs: the kernel and the reference sum in different orders, so a rounded logit may
differ by an ulp and near-ties may flip; :func:`check_result` accepts any token whose reference
logit is within tolerance of the maximum and demands the reference's token where the top two are
further apart. Rigged ties use small integers, whose sums are exact in every order and dtype, so
there the ids must match exactly, lowest index first.
"""

import pytest
import torch
import torch.nn.functional as F
from kernel_utils import DEVICE, TOLERANCES, assert_close, case_generator, hopper_ptx, kernel_dtypes, poisoned

from specdec.kernels import argmax as argmax_module
from specdec.kernels import reference
from specdec.kernels.argmax import lm_head_argmax


@pytest.fixture(autouse=True)
def poison_buffers(monkeypatch):
    monkeypatch.setattr(argmax_module, "_empty", poisoned)


def check_result(ids: torch.Tensor, max_logit: torch.Tensor, hidden: torch.Tensor, weight: torch.Tensor) -> None:
    """``(ids, max_logit)`` is a valid greedy choice of the reference logits, within the dtype's tolerance."""
    dtype = hidden.dtype
    assert ids.dtype == torch.int64 and max_logit.dtype == torch.float32
    assert ids.shape == max_logit.shape == (hidden.shape[0],)
    ref_ids, ref_max = reference.lm_head_argmax(hidden, weight)
    assert_close(max_logit, ref_max, dtype)
    logits = F.linear(hidden, weight).float()
    assert ((ids >= 0) & (ids < weight.shape[0])).all()
    assert_close(logits.gather(1, ids[:, None]).squeeze(1), ref_max, dtype)
    atol, rtol = TOLERANCES[dtype]
    top2 = logits.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 2 * (atol + rtol * top2[:, 0].abs())
    assert torch.equal(ids[clear], ref_ids[clear])


# (rows, d, vocab, explicit blocks): odd rows, non-power-of-two and power-of-two d, V not a
# multiple of any block; the explicit-blocks case has 2 row blocks, 16 vocab blocks, 4 hidden steps.
CASES = [
    (1, 48, 517, {}),
    (3, 80, 1000, {}),
    (17, 64, 1000, dict(block_rows=16, block_vocab=64, block_hidden=16)),
    (40, 128, 3001, {}),  # the medium case
]


@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("rows,d,vocab,blocks", CASES)
def test_matches_reference(request, dtype, rows, d, vocab, blocks):
    gen = case_generator(request)
    hidden = torch.randn(rows, d, generator=gen).to(DEVICE, dtype)
    weight = torch.randn(vocab, d, generator=gen).to(DEVICE, dtype)
    check_result(*lm_head_argmax(hidden, weight, **blocks), hidden, weight)


def rigged_ties(gen: torch.Generator, rows: int, d: int, vocab: int, copies: list[int], dtype: torch.dtype):
    """Integer ``hidden [rows, d]`` and ``weight [vocab, d]`` where weight rows ``copies`` all give the
    logit 256 (exact in every dtype) and every other row at most ``16 + d - 1``: exact ties."""
    hidden = torch.randint(-1, 2, (rows, d), generator=gen).float()
    weight = torch.randint(-1, 2, (vocab, d), generator=gen).float()
    hidden[:, 0] = 16.0
    weight[copies] = 0.0
    weight[copies, 0] = 16.0
    return hidden.to(DEVICE, dtype), weight.to(DEVICE, dtype)


# Positions of the winning row's copies and the paths they exercise under the interpreter's split
# policy (INTERPRET_SPLITS = 4): block_vocab=64 over V = 1000 gives 16 blocks, 4 per split. On a
# GPU the same cases still hold; splits are then one block each, so all ties cross programs.
TIE_CASES = {
    "same-block": (dict(block_vocab=64), [65, 100, 70]),
    "across-blocks-one-split": (dict(block_vocab=64), [70, 900, 200]),
    "across-splits": (dict(block_vocab=64), [300, 999, 700]),
    "default-blocks": ({}, [3, 260, 517, 999, 600]),
}


@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("case", sorted(TIE_CASES))
def test_ties_go_to_lowest_index(request, dtype, case):
    blocks, copies = TIE_CASES[case]
    hidden, weight = rigged_ties(case_generator(request), 3, 48, 1000, copies, dtype)
    ids, max_logit = lm_head_argmax(hidden, weight, **blocks)
    ref_ids, ref_max = reference.lm_head_argmax(hidden, weight)
    assert (ids == min(copies)).all() and torch.equal(ids, ref_ids)
    assert (max_logit == 256.0).all() and torch.equal(max_logit, ref_max)


@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
def test_all_negative_logits_ignore_padding(request, dtype):
    """With every logit negative, the zero-filled columns past V must never win."""
    gen = case_generator(request)
    hidden = torch.rand(3, 48, generator=gen).to(DEVICE, dtype)
    weight = (-torch.rand(517, 48, generator=gen)).to(DEVICE, dtype)
    check_result(*lm_head_argmax(hidden, weight), hidden, weight)


def test_rounds_logits_to_input_dtype():
    """Logits 1 and 1 + 2**-12 tie once rounded to fp16 (ulp 2**-10 at 1): the lower index must win,
    as with fp16 ``lm_head`` + argmax, although the fp32 accumulator prefers the higher one."""
    hidden = torch.zeros(1, 16, device=DEVICE, dtype=torch.float16)
    hidden[0, :2] = torch.tensor([1.0, 2.0**-12])
    weight = torch.zeros(40, 16, device=DEVICE, dtype=torch.float16)
    weight[5, 0] = 1.0
    weight[30, :2] = 1.0
    ids, max_logit = lm_head_argmax(hidden, weight, block_vocab=16)
    assert ids.tolist() == [5] and max_logit.tolist() == [1.0]


def test_empty_rows():
    ids, max_logit = lm_head_argmax(torch.zeros(0, 16, device=DEVICE), torch.zeros(10, 16, device=DEVICE))
    assert ids.shape == max_logit.shape == (0,)


@pytest.mark.parametrize(
    "hidden,weight,message",
    [
        (torch.zeros(16), torch.zeros(4, 16), "must be \\[N, d\\]"),
        (torch.zeros(2, 16), torch.zeros(4, 8), "width"),
        (torch.zeros(2, 16), torch.zeros(0, 16), "empty vocabulary"),
        (torch.zeros(2, 16), torch.zeros(4, 16, dtype=torch.float16), "must share"),
        (torch.zeros(2, 16, dtype=torch.float64), torch.zeros(4, 16, dtype=torch.float64), "must share"),
    ],
)
def test_rejects_bad_inputs(hidden, weight, message):
    with pytest.raises(ValueError, match=message):
        lm_head_argmax(hidden.to(DEVICE), weight.to(DEVICE))


def test_rejects_bad_block():
    with pytest.raises(ValueError, match="power of two"):
        lm_head_argmax(torch.zeros(2, 16, device=DEVICE), torch.zeros(4, 16, device=DEVICE), block_vocab=8)


PARTS = {"part_max_ptr": "*fp32", "part_idx_ptr": "*i32"}

# The GPU default tiles for decode (16 rows) and for a larger row block; the reduce kernel at a
# 528-split (4 x 132 SMs, padded to 1024) width.
HOPPER_CASES = {
    **{
        f"partial-{dtype}-rows{rows}": (
            "specdec.kernels.argmax", "_argmax_partial_kernel", dtype, dict(BLOCK_ROWS=rows, BLOCK_VOCAB=128, BLOCK_HIDDEN=128), PARTS
        )
        for dtype in ("bf16", "fp16")
        for rows in (16, 64)
    },
    "reduce": ("specdec.kernels.argmax", "_argmax_reduce_kernel", "fp32", dict(BLOCK_ROWS=4, BLOCK_SPLITS=1024), {**PARTS, "ids_ptr": "*i64"}),
}


def test_compiles_for_hopper():
    assert set(hopper_ptx(HOPPER_CASES)) == set(HOPPER_CASES)
