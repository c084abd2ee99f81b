"""The exactness policy of firp.md: outputs equal, or the first difference is a genuine near-tie."""

import math

import torch


def tie_tolerance(logit: float, dtype: torch.dtype) -> float:
    """Largest top-2 gap accepted as a near-tie: 1e-4 in fp32, 2 ulps of the logit in 16-bit types."""
    if dtype == torch.float32:
        return 1e-4
    mantissa = {torch.bfloat16: 7, torch.float16: 10}[dtype]
    exponent = math.floor(math.log2(abs(logit))) if logit else -14
    return 2 * 2.0 ** (exponent - mantissa)


def assert_greedy_equivalent(model, plain: torch.Tensor, patched: torch.Tensor) -> None:
    """``patched [1, L']`` must equal ``plain [1, L]`` (unpatched greedy) up to a near-tie flip."""
    if torch.equal(plain, patched):
        return
    common = min(plain.shape[1], patched.shape[1])
    diff = (plain[0, :common] != patched[0, :common]).nonzero()
    assert diff.numel() > 0, f"one output is a prefix of the other: lengths {plain.shape[1]} vs {patched.shape[1]}"
    pos = int(diff[0])
    with torch.no_grad():
        logits = model(plain[:, :pos]).logits[0, -1].float()
    top2 = logits.topk(2).values
    gap = float(top2[0] - top2[1])
    dtype = next(model.parameters()).dtype
    assert gap < tie_tolerance(float(top2[0]), dtype), (
        f"outputs differ at position {pos} where the plain model's top-2 gap is {gap:.3g} (not a near-tie): "
        f"plain {plain[0, pos].item()} vs patched {patched[0, pos].item()}"
    )
