"""The exactness policy: outputs equal, or the first difference is a genuine near-tie.

A flip is accepted where the plain model's top-2 logit gap is below 1e-4 in fp32, or at
most 4 ulps (bf16) / 8 ulps (fp16) of the top logit. The 16-bit bounds come from plain
greedy decoding itself (README, "Exactness policy"): feeding its own first output tokens
back as prompt, which changes only the batching, moved its top-2 gaps by up to 3 ulps
(bf16) and 6 ulps (fp16) on the test models (6,000 positions each) and flipped tokens at
gaps of up to 3 ulps, at the very positions where speculative decoding flips
(test_near_tie.py). Each bound is the next power of two above that measured change.
"""

import math

import torch

TIE_ULPS = {torch.bfloat16: 4, torch.float16: 8}
MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10}


def ulp(logit: float, dtype: torch.dtype) -> float:
    """The spacing of 16-bit ``dtype`` numbers at ``logit``."""
    exponent = math.floor(math.log2(abs(logit))) if logit else -14
    return 2.0 ** (exponent - MANTISSA_BITS[dtype])


def tie_tolerance(logit: float, dtype: torch.dtype) -> float:
    """Largest top-2 gap accepted as a near-tie (inclusive): 1e-4 in fp32, ``TIE_ULPS`` ulps of the logit in 16-bit."""
    if dtype == torch.float32:
        return 1e-4
    return TIE_ULPS[dtype] * ulp(logit, dtype)


def top2_gap(model, sequence: torch.Tensor, pos: int) -> tuple[float, float]:
    """``(gap, top logit)`` of the plain model's fp32-cast logits for the token at ``pos`` of ``sequence [1, L]``."""
    with torch.no_grad():
        return _gap(model(sequence[:, :pos]).logits[0, -1])


def _gap(scores: torch.Tensor) -> tuple[float, float]:
    top2 = scores.float().topk(2).values
    return float(top2[0] - top2[1]), float(top2[0])


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """First position where ``a [1, L]`` and ``b [1, L']`` differ (None if one is a prefix of the other)."""
    common = min(a.shape[1], b.shape[1])
    diff = (a[0, :common] != b[0, :common]).nonzero()
    return int(diff[0]) if diff.numel() else None


def assert_greedy_equivalent(model, plain: torch.Tensor, patched: torch.Tensor, scores=None) -> None:
    """``patched [1, L']`` must equal ``plain [1, L]`` (unpatched greedy) up to a near-tie flip.

    ``scores``: plain ``generate``'s processed scores (``output_scores=True``), one ``[1, V]``
    per new token. Pass them when logits processors ran: the gap that matters is the one
    greedy search compared, after them. Without them the gap is read from the raw logits.
    """
    if torch.equal(plain, patched):
        return
    pos = first_difference(plain, patched)
    assert pos is not None, f"one output is a prefix of the other: lengths {plain.shape[1]} vs {patched.shape[1]}"
    if scores is None:
        gap, top = top2_gap(model, plain, pos)
    else:
        gap, top = _gap(scores[pos - (plain.shape[1] - len(scores))][0])
    dtype = next(model.parameters()).dtype
    assert gap <= tie_tolerance(top, dtype), (
        f"outputs differ at position {pos} where the plain model's top-2 gap is {gap:.3g} (not a near-tie): "
        f"plain {plain[0, pos].item()} vs patched {patched[0, pos].item()}"
    )
