"""Triton ``lm_head_sample`` (Gumbel-max with counter-based noise) against the softmax it samples.

On CPU the kernels run under Triton's interpreter; with CUDA they run natively. Many rows with
the same hidden state and different stream offsets give many independent draws from one
distribution in one launch; their frequencies are compared with the warped softmax computed by the
PyTorch reference's :func:`~specdec.kernels.reference.warp` (chi-square at p = 1e-4, fixed seeds:
deterministic). Draws outside the kept set (top-k, top-p, min-p) must never occur. Every buffer
the op allocates is NaN/-1 poisoned.
"""

import pytest
import torch
import torch.nn.functional as F
from kernel_utils import DEVICE, case_generator, hopper_ptx, kernel_dtypes, poisoned
from stats_checks import chi_square

from specdec.kernels import argmax as argmax_module
from specdec.kernels import reference
from specdec.kernels import sampling
from specdec.kernels.sampling import lm_head_sample

DRAWS = 3000


@pytest.fixture(autouse=True)
def poison_buffers(monkeypatch):
    monkeypatch.setattr(argmax_module, "_empty", poisoned)


def one_distribution(request, vocab: int, d: int, dtype, scale: float = 1.5):
    """``DRAWS`` copies of one hidden row and the LM head; the row's logits have a spread of a few units."""
    gen = case_generator(request)
    hidden = torch.randn(1, d, generator=gen).expand(DRAWS, d).contiguous()
    weight = torch.randn(vocab, d, generator=gen) * scale / d**0.5
    return hidden.to(DEVICE, dtype), weight.to(DEVICE, dtype)


WARPS = {
    "temperature": dict(temperature=0.8),
    "top-k": dict(temperature=1.0, top_k=5),
    "top-p": dict(temperature=1.3, top_p=0.7),
    "min-p": dict(temperature=1.0, min_p=0.2),
    "all": dict(temperature=0.9, top_k=9, top_p=0.9, min_p=0.05),
}


@pytest.mark.parametrize("dtype", kernel_dtypes(), ids=str)
@pytest.mark.parametrize("name", list(WARPS))
def test_draws_follow_the_warped_softmax(request, dtype, name):
    warps = WARPS[name]
    hidden, weight = one_distribution(request, 37, 48, dtype)
    offsets = torch.arange(DRAWS, device=DEVICE) * 7 + 3
    draws = lm_head_sample(hidden, weight, 12345, offsets, **warps)
    assert draws.dtype == torch.int64 and draws.shape == (DRAWS,)
    probs = reference.warp(F.linear(hidden[:1], weight).float(), **warps).softmax(-1)[0]
    assert bool((probs[draws] > 0).all()), "a draw outside the kept set"
    counts = {int(t): int(c) for t, c in zip(*torch.unique(draws, return_counts=True))}
    statistic, critical = chi_square(counts, dict(enumerate(probs.tolist())), DRAWS)
    assert statistic < critical, f"chi-square {statistic:.1f} >= {critical:.1f}"


def test_same_seed_same_draws_and_rows_are_independent_of_each_other(request):
    hidden, weight = one_distribution(request, 101, 32, torch.float32)
    offsets = torch.arange(DRAWS, device=DEVICE)
    first = lm_head_sample(hidden, weight, 7, offsets, top_k=20)
    assert torch.equal(first, lm_head_sample(hidden, weight, 7, offsets, top_k=20))
    assert not torch.equal(first, lm_head_sample(hidden, weight, 8, offsets, top_k=20))
    # A row's draw depends on its own offset only, not on which rows share the launch.
    assert torch.equal(first[100:103], lm_head_sample(hidden[:3], weight, 7, offsets[100:103], top_k=20))


def test_several_vocab_blocks_and_splits(request):
    """V = 1000 with 64-column blocks: draws cross blocks and splits (the interpreter uses 4 splits)."""
    hidden, weight = one_distribution(request, 1000, 32, torch.float32, scale=4.0)
    offsets = torch.arange(DRAWS, device=DEVICE)
    probs = F.linear(hidden[:1], weight).float().softmax(-1)[0]
    for warps in ({}, {"top_k": 40}):
        draws = lm_head_sample(hidden, weight, 99, offsets, block_vocab=64, **warps)
        kept = reference.warp(F.linear(hidden[:1], weight).float(), **warps).softmax(-1)[0]
        counts = {int(t): int(c) for t, c in zip(*torch.unique(draws, return_counts=True))}
        statistic, critical = chi_square(counts, dict(enumerate(kept.tolist())), DRAWS)
        assert statistic < critical and probs[draws].min() > 0


def test_rows_past_the_candidates_fall_back_to_the_reference(request, monkeypatch):
    """A flat distribution under top-p 0.99 keeps ~300 tokens, more than the kernel's 64 candidates."""
    hidden = torch.zeros(8, 16, device=DEVICE)
    weight = torch.randn(300, 16, generator=case_generator(request)).to(DEVICE)
    calls = []
    real = reference.lm_head_sample
    monkeypatch.setattr(sampling.reference, "lm_head_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    draws = lm_head_sample(hidden, weight, 5, torch.arange(8, device=DEVICE), top_p=0.99)
    assert calls and bool(((draws >= 0) & (draws < 300)).all())


def test_empty_rows_and_bad_temperature():
    empty = lm_head_sample(torch.zeros(0, 16, device=DEVICE), torch.zeros(10, 16, device=DEVICE), 1, torch.zeros(0, dtype=torch.int64, device=DEVICE))
    assert empty.shape == (0,)
    with pytest.raises(ValueError, match="temperature"):
        lm_head_sample(torch.zeros(1, 16, device=DEVICE), torch.zeros(10, 16, device=DEVICE), 1, torch.zeros(1, dtype=torch.int64, device=DEVICE), temperature=0.0)


PARTS = {
    "streams_ptr": "*i64",
    "part_val_ptr": "*fp32",
    "part_idx_ptr": "*i32",
    "part_max_ptr": "*fp32",
    "part_sum_ptr": "*fp32",
    "part_best_ptr": "*fp64",
    "inv_temperature": "fp32",
}
HOPPER_CASES = {
    **{
        f"partial-{dtype}-truncate{truncate}": (
            "specdec.kernels.sampling",
            "_sample_partial_kernel",
            dtype,
            dict(BLOCK_ROWS=16, BLOCK_VOCAB=128, BLOCK_HIDDEN=128, BLOCK_K=64 if truncate else 1, TRUNCATE=truncate),
            PARTS,
        )
        for dtype in ("bf16", "fp16")
        for truncate in (False, True)
    },
    **{
        f"reduce-truncate{truncate}-rows{rows}": (
            "specdec.kernels.sampling",
            "_sample_reduce_kernel",
            "fp32",
            dict(BLOCK_ROWS=rows, BLOCK_SPLITS=1024, BLOCK_CANDS=8192 if truncate else 1024, BLOCK_K=64 if truncate else 1, TRUNCATE=truncate),
            {**PARTS, "ids_ptr": "*i64", "flags_ptr": "*i32", "top_p": "fp32", "log_min_p": "fp32"},
        )
        for truncate in (False, True)
        for rows in (1, 4)  # one row (decode) and several: the row dimension must not be broadcast away
    },
}


def test_compiles_for_hopper():
    assert set(hopper_ptx(HOPPER_CASES)) == set(HOPPER_CASES)
