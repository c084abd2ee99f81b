"""The ops of FIRP decoding, each dispatched to Triton or to its PyTorch reference.

``backend`` is ``"auto"`` (Triton for CUDA tensors, PyTorch otherwise),
``"torch"`` or ``"triton"`` (Triton even on CPU, where it runs interpreted when
``TRITON_INTERPRET=1`` was set before this package was imported). On CPU, linear layers may run
with oneDNN-packed weights (:mod:`specdec.kernels.packed`).
"""

import importlib

import torch

from . import reference
from .bits import num_words, pack_bits, unpack_bits
from .packed import pack, packable, packed_linear, packed_scope

BACKENDS = ("auto", "torch", "triton")

__all__ = [
    "BACKENDS",
    "accept_walk",
    "check_backend",
    "lm_head_argmax",
    "lm_head_sample",
    "lm_head_topk",
    "num_words",
    "pack",
    "pack_bits",
    "packable",
    "packed_linear",
    "packed_scope",
    "project_future",
    "sample_scores",
    "tree_attention",
    "unpack_bits",
    "uses_triton",
]


def check_backend(backend: str) -> str:
    """Validate a backend name; raise ``ValueError`` naming the choices."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def uses_triton(backend: str, tensor: torch.Tensor) -> bool:
    """Whether an op called with ``backend`` on ``tensor`` runs the Triton kernel."""
    check_backend(backend)
    return backend == "triton" or (backend == "auto" and tensor.is_cuda)


def _triton(module: str):
    """The Triton implementation module (imported on first use: triton is optional off Linux)."""
    return importlib.import_module(f"{__name__}.{module}")


def project_future(hidden, weight, bias, out=None, *, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.project_future`."""
    if uses_triton(backend, hidden):
        return _triton("projection").project_future(hidden, weight, bias, out)
    return reference.project_future(hidden, weight, bias, out)


def tree_attention(q, k, v, *, prefix_len, step_bits, scale, positions=None, window=None, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.tree_attention`."""
    impl = _triton("attention") if uses_triton(backend, q) else reference
    return impl.tree_attention(
        q, k, v, prefix_len=prefix_len, step_bits=step_bits, scale=scale, positions=positions, window=window
    )


def lm_head_argmax(hidden, weight, *, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.lm_head_argmax`."""
    impl = _triton("argmax") if uses_triton(backend, hidden) else reference
    return impl.lm_head_argmax(hidden, weight)


def lm_head_topk(hidden, weight, k: int, *, token_ids=None, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.lm_head_topk`."""
    impl = _triton("topk") if uses_triton(backend, hidden) else reference
    return impl.lm_head_topk(hidden, weight, k, token_ids=token_ids)


def lm_head_sample(hidden, weight, seed: int, offsets, *, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.lm_head_sample`."""
    impl = _triton("sampling") if uses_triton(backend, hidden) else reference
    return impl.lm_head_sample(hidden, weight, seed, offsets, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)


def sample_scores(scores, seed: int, offsets):
    """See :func:`specdec.kernels.reference.sample_scores` (already-processed scores: no fused version)."""
    return reference.sample_scores(scores, seed, offsets)


def accept_walk(ids, tokens, parents, max_depth: int, *, backend: str = "auto"):
    """See :func:`specdec.kernels.reference.accept_walk`."""
    impl = _triton("accept") if uses_triton(backend, ids) else reference
    return impl.accept_walk(ids, tokens, parents, max_depth)
