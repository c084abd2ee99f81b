"""Triton ``lm_head_topk`` against the PyTorch reference.

On CPU the kernels run under Triton's interpreter; with CUDA they run natively and bf16 joins the
dtypes. Every buffer the op allocates is NaN/-1 poisoned (``argmax._empty``, which this op's host
function also allocates through, is swapped), so an entry the kernels fail to write shows up.

Random inputs: the kernel and the reference sum in different orders, so a rounded logit may differ
by an ulp and near-ties may swap ranks; :func:`check_result` compares values rank by rank within
tolerance and demands the reference's token only at ranks clearly separated from their neighbours.
Rigged ties use small integers, whose sums are exact in every order and dtype: there the ids must
match exactly, lowest index first.
"""

import pytest
import torch
import torch.nn.functional as F
from kernel_utils import DEVICE, TOLERANCES, assert_close, case_generator, hopper_ptx, kernel_dtypes, poisoned

from specdec.kernels import argmax as argmax_module
from specdec.kernels import reference
from specdec.kernels.topk import lm_head_topk


@pytest.fixture(autouse=True)
def poison_buffers(monkeypatch):
    monkeypatch.setattr(argmax_module, "_empty", poisoned)


def check_result(result, hidden: torch.Tensor, weight: torch.Tensor, k: int) -> None:
    """``(ids, logits, lse)`` is a valid top-``k`` of the reference logits, within the dtype's tolerance."""
    ids, values, lse = result
    dtype = hidden.dtype
    rows = hidden.shape[0]
    assert ids.dtype == torch.int64 and values.dtype == torch.float32 and lse.dtype == torch.float32
    assert ids.shape == values.shape == (rows, k) and lse.shape == (rows,)
    ref_ids, ref_values, ref_lse = reference.lm_head_topk(hidden, weight, k)
    assert_close(values, ref_values, dtype)
    assert_close(lse, ref_lse, dtype)
    assert ((ids >= 0) & (ids < weight.shape[0])).all()
    assert all(len(set(row)) == k for row in ids.tolist()), "a token appears twice in a row"
    logits = F.linear(hidden, weight).float()
    assert_close(logits.gather(1, ids), ref_values, dtype)
    atol, rtol = TOLERANCES[dtype]
    ranked = logits.topk(min(k + 1, weight.shape[0]), dim=1).values
    margin = 2 * (atol + rtol * ranked.abs())
    gaps = ranked[:, :-1] - ranked[:, 1:]  # gap below each rank
    above = torch.cat([torch.full_like(gaps[:, :1], float("inf")), gaps], dim=1)[:, :k]
    below = gaps[:, :k] if gaps.shape[1] >= k else torch.cat([gaps, torch.full_like(gaps[:, :1], float("inf"))], 1)
    clear = (above > margin[:, :k]) & (below > margin[:, :k])
    assert torch.equal(ids[clear], ref_ids[clear])


# (rows, d, vocab, k, explicit blocks): odd rows and widths, V not a multiple of any block, k from 1
# to more than a block's columns; the explicit-blocks case has 2 row blocks and 16 vocab blocks.
CASES = [
    (1, 48, 517, 1, {}),
    (3, 80, 1000, 5, {}),
    (17, 64, 1000, 8, dict(block_rows=16, block_vocab=64, block_hidden=16)),
    (6, 32, 37, 20, dict(block_vocab=16)),  # k > block columns, V < one default block
    (40, 128, 3001, 6, {}),
]


@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("rows,d,vocab,k,blocks", CASES)
def test_matches_reference(request, dtype, rows, d, vocab, k, blocks):
    gen = case_generator(request)
    hidden = torch.randn(rows, d, generator=gen).to(DEVICE, dtype)
    weight = (torch.randn(vocab, d, generator=gen) / d**0.5).to(DEVICE, dtype)
    check_result(lm_head_topk(hidden, weight, k, **blocks), hidden, weight, k)


@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
def test_ties_rank_lowest_index_first(request, dtype):
    """Small-integer logits with many exact ties, inside blocks and across vocab blocks and splits."""
    gen = case_generator(request)
    rows, d, vocab, k = 5, 16, 300, 7
    hidden = torch.randint(-1, 2, (rows, d), generator=gen).to(DEVICE, dtype)
    weight = torch.randint(-1, 2, (vocab, d), generator=gen).to(DEVICE, dtype)
    ids, values, lse = lm_head_topk(hidden, weight, k, block_vocab=16)
    ref_ids, ref_values, _ = reference.lm_head_topk(hidden, weight, k)
    assert torch.equal(ids, ref_ids) and torch.equal(values, ref_values)
    plain = F.linear(hidden, weight).float()
    assert torch.equal(ids[:, 0], plain.argmax(dim=1))


@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("rows,d,vocab,subset,k", [(1, 48, 517, 131, 4), (9, 80, 3001, 1000, 7)])
def test_draft_vocabulary_subset(request, dtype, rows, d, vocab, subset, k):
    """A row subset of the LM head ranks as the full head restricted to those tokens, ids mapped back."""
    gen = case_generator(request)
    hidden = torch.randn(rows, d, generator=gen).to(DEVICE, dtype)
    weight = (torch.randn(vocab, d, generator=gen) / d**0.5).to(DEVICE, dtype)
    token_ids = torch.randperm(vocab, generator=gen)[:subset].sort().values.to(DEVICE)
    rows_of = weight.index_select(0, token_ids)
    ids, values, lse = lm_head_topk(hidden, rows_of, k, token_ids=token_ids, block_vocab=64)
    ref_ids, ref_values, ref_lse = reference.lm_head_topk(hidden, rows_of, k, token_ids=token_ids)
    assert_close(values, ref_values, dtype)
    assert_close(lse, ref_lse, dtype)
    assert torch.isin(ids, token_ids).all() and torch.isin(ref_ids, token_ids).all()
    full = F.linear(hidden, weight).float()
    assert_close(full.gather(1, ids), ref_values, dtype)  # the logits reported are the full head's
    local_ids, _, _ = lm_head_topk(hidden, rows_of, k, block_vocab=64)
    assert torch.equal(ids, token_ids[local_ids])


def test_draft_vocabulary_ties_keep_lowest_token_id(request):
    """Exact ties inside the subset rank by token id, as in the full head."""
    gen = case_generator(request)
    hidden = torch.randint(-1, 2, (4, 16), generator=gen).to(DEVICE)
    weight = torch.randint(-1, 2, (300, 16), generator=gen).to(DEVICE).float()
    token_ids = torch.arange(3, 300, 2, device=DEVICE)
    for impl in (lm_head_topk, reference.lm_head_topk):
        ids, values, _ = impl(hidden.float(), weight[token_ids], 6, token_ids=token_ids)
        full = F.linear(hidden.float(), weight)[:, token_ids]
        expected = token_ids[torch.stack([row.argsort(descending=True, stable=True)[:6] for row in full])]
        assert torch.equal(ids, expected), impl.__module__


@pytest.mark.parametrize("token_ids,message", [
    (torch.arange(9), "token_ids must be int64 \\[10\\]"),
    (torch.arange(10, dtype=torch.int32), "token_ids must be int64"),
    ([0, 1], "token_ids must be int64"),
])
def test_rejects_bad_token_ids(token_ids, message):
    for impl in (lm_head_topk, reference.lm_head_topk):
        with pytest.raises(ValueError, match=message):
            impl(torch.zeros(2, 16, device=DEVICE), torch.zeros(10, 16, device=DEVICE), 2, token_ids=token_ids)


def test_negative_logits_never_pick_padding_columns(request):
    """With every logit negative, the zero-filled columns past V must never enter the top k."""
    gen = case_generator(request)
    hidden = torch.rand(3, 48, generator=gen).to(DEVICE)
    weight = (-torch.rand(517, 48, generator=gen)).to(DEVICE)
    check_result(lm_head_topk(hidden, weight, 9), hidden, weight, 9)


def test_rounds_logits_to_input_dtype():
    """Logits 1 and 1 + 2**-12 tie once rounded to fp16: the lower index ranks first."""
    hidden = torch.zeros(1, 16, device=DEVICE, dtype=torch.float16)
    hidden[0, :2] = torch.tensor([1.0, 2.0**-12])
    weight = torch.zeros(40, 16, device=DEVICE, dtype=torch.float16)
    weight[5, 0] = 1.0
    weight[30, :2] = 1.0
    ids, values, _ = lm_head_topk(hidden, weight, 3, block_vocab=16)
    assert ids[0, :2].tolist() == [5, 30] and values[0, :2].tolist() == [1.0, 1.0]


def test_empty_rows():
    ids, values, lse = lm_head_topk(torch.zeros(0, 16, device=DEVICE), torch.zeros(10, 16, device=DEVICE), 2)
    assert ids.shape == values.shape == (0, 2) and lse.shape == (0,)


@pytest.mark.parametrize("k", [0, 11, True, 2.5])
def test_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be"):
        lm_head_topk(torch.zeros(2, 16, device=DEVICE), torch.zeros(10, 16, device=DEVICE), k)


def test_rejects_bad_inputs():
    with pytest.raises(ValueError, match="lm_head_topk: hidden width"):
        lm_head_topk(torch.zeros(2, 16, device=DEVICE), torch.zeros(4, 8, device=DEVICE), 1)


PARTS = {"part_val_ptr": "*fp32", "part_idx_ptr": "*i32", "part_max_ptr": "*fp32", "part_sum_ptr": "*fp32"}

# The GPU default tiles for decode (16 rows) and a larger row block, with 8 candidates; the reduce
# kernel at 528 splits (4 x 132 SMs) of 8 candidates, padded to 8192 per row, with and without a draft vocabulary.
HOPPER_CASES = {
    **{
        f"partial-{dtype}-rows{rows}": (
            "specdec.kernels.topk",
            "_topk_partial_kernel",
            dtype,
            dict(BLOCK_ROWS=rows, BLOCK_VOCAB=128, BLOCK_HIDDEN=128, BLOCK_K=8),
            PARTS,
        )
        for dtype in ("bf16", "fp16")
        for rows in (16, 64)
    },
    **{  # the second maps candidates through a draft vocabulary's token ids
        name: (
            "specdec.kernels.topk",
            "_topk_reduce_kernel",
            "fp32",
            dict(BLOCK_ROWS=1, BLOCK_SPLITS=1024, BLOCK_CANDS=8192, BLOCK_K=8, HAS_IDS=has_ids),
            {**PARTS, "token_ids_ptr": "*i64", "ids_ptr": "*i64"},
        )
        for name, has_ids in (("reduce", False), ("reduce-draft-vocabulary", True))
    },
}


def test_compiles_for_hopper():
    assert set(hopper_ptx(HOPPER_CASES)) == set(HOPPER_CASES)
