"""The four ops of FIRP decoding, each dispatched to Triton or to its PyTorch reference.

``backend`` is ``"auto"`` (Triton for CUDA tensors, PyTorch otherwise),
``"torch"`` or ``"triton"`` (Triton even on CPU, where it runs interpreted when
``TRITON_INTERPRET=1`` was set before this package was imported).
"""

import torch

from . import reference
from .bits import num_words, pack_bits, unpack_bits

BACKENDS = ("auto", "torch", "triton")

__all__ = [
    "BACKENDS",
    "accept_walk",
    "check_backend",
    "lm_head_argmax",
    "num_words",
    "pack_bits",
    "project_future",
    "tree_attention",
    "unpack_bits",
    "uses_triton",
]


def check_backend(backend: str) -> str:
    """Validate a backend name; raise ``ValueError`` or ``NotImplementedError`` with the reason."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "triton":
        raise NotImplementedError(
            "backend='triton': the Triton kernels are not implemented yet; use backend='torch' or 'auto'"
        )
    return backend


def uses_triton(backend: str, tensor: torch.Tensor) -> bool:
    """Whether an op called with ``backend`` on ``tensor`` runs the Triton kernel."""
    check_backend(backend)
    return backend == "triton"


def project_future(hidden, weight, bias, out=None, *, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.project_future`."""
    uses_triton(backend, hidden)
    return reference.project_future(hidden, weight, bias, out)


def tree_attention(q, k, v, *, prefix_len, step_bits, scale, positions=None, window=None, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.tree_attention`."""
    uses_triton(backend, q)
    return reference.tree_attention(
        q, k, v, prefix_len=prefix_len, step_bits=step_bits, scale=scale, positions=positions, window=window
    )


def lm_head_argmax(hidden, weight, *, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.lm_head_argmax`."""
    uses_triton(backend, hidden)
    return reference.lm_head_argmax(hidden, weight)


def accept_walk(ids, tokens, parents, max_depth: int, *, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.accept_walk`."""
    uses_triton(backend, ids)
    return reference.accept_walk(ids, tokens, parents, max_depth)
