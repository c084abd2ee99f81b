"""Linear layers with oneDNN-packed weights (CPU): the op, its reference, and the scope that uses it.

On a CPU, ``F.linear`` of a few rows runs MKL's GEMM on the weight as stored; oneDNN's linear on a
weight reordered once into its blocked layout reads it faster and stays flat in the row count.
Measured (AMD EPYC, 2 threads, AVX-512, fp32, SmolLM2-135M's 211 decoder and head GEMMs, ms):
1 row 49.0 -> 29.4, 8 rows 76.5 -> 28.8, 16 rows 84.3 -> 36.8 (``python -m bench.ops.packed``
reports the curve on the machine at hand). A packed copy costs the weight's bytes again.

:func:`packed_linear` is the op (no Triton kernel: the CUDA path keeps its own GEMMs), ``F.linear``
its reference. :func:`linear` is what the reference ops call for logits: the packed op for a
weight registered by an enclosing :func:`packed_scope`, ``F.linear`` otherwise, so outside a
scope nothing changes.
"""

import contextlib

import torch
import torch.nn.functional as F

_active: dict[int, tuple] = {}  # id(weight) -> (weight, packed, how to run it), inside scopes


def packable(weight: torch.Tensor) -> bool:
    """Whether :func:`pack` can pack ``weight`` here: a CPU tensor of a dtype oneDNN computes natively
    (fp32; bf16 where the CPU supports it) in a torch build with oneDNN's linear ops."""
    if weight.device.type != "cpu" or weight.dim() != 2 or not torch.backends.mkldnn.is_available():
        return False
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return False
    if weight.dtype == torch.float32:
        return True
    return weight.dtype == torch.bfloat16 and bool(ops._is_mkldnn_bf16_supported())


def pack(weight: torch.Tensor) -> torch.Tensor:
    """A oneDNN-packed copy of ``weight [out, in]`` (``nn.Linear`` layout), for :func:`packed_linear`."""
    if not packable(weight):
        raise ValueError(f"pack: cannot pack a {weight.dtype} weight on {weight.device} with oneDNN here (see packable())")
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` with ``packed = pack(weight)``: ``x [..., in]`` -> ``[..., out]``
    in ``x.dtype`` (rounding may differ from ``F.linear``'s in the last bits). No autograd."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def reference_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """The reference of :func:`packed_linear`: ``F.linear``."""
    return F.linear(x, weight, bias)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, through the packed op (or the scope's ``run``) when an enclosing
    :func:`packed_scope` registered ``weight`` (the same tensor object)."""
    entry = _active.get(id(weight))
    if entry is not None and entry[0] is weight:
        return entry[2](x, weight, entry[1], bias)
    return F.linear(x, weight, bias)


def _run_packed(x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return packed_linear(x, packed, bias)


@contextlib.contextmanager
def packed_scope(pairs, run=_run_packed):
    """Inside the ``with``, :func:`linear` uses ``packed`` for each ``(weight, packed)`` of ``pairs``:
    ``run(x, weight, packed, bias)`` (default: :func:`packed_linear` on ``packed``; a caller may
    choose per call between it and ``F.linear``).

    Scopes nest; leaving one restores what the enclosing scope had registered."""
    saved = {}
    for weight, packed in pairs:
        key = id(weight)
        saved.setdefault(key, _active.get(key))
        _active[key] = (weight, packed, run)
    try:
        yield
    finally:
        for key, previous in saved.items():
            if previous is None:
                _active.pop(key, None)
            else:
                _active[key] = previous
