"""Shared helpers of the kernel tests: device, dtypes, tolerances, poisoning, GPU compiles."""

import os

import torch

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"

# (atol, rtol) of a Triton op against its PyTorch reference, per dtype.
TOLERANCES = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (1.6e-2, 1.6e-2),
}


def kernel_dtypes() -> list[torch.dtype]:
    """fp32 and fp16 everywhere; bf16 only on a GPU (the interpreter cannot compute it)."""
    return [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])


def poisoned(shape, dtype, device=DEVICE) -> torch.Tensor:
    """A NaN-filled (or -1 for integers) buffer, so elements a kernel fails to write are caught."""
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.full(shape, -1, dtype=dtype, device=device)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


def compile_for_hopper(kernel, signature: dict, constexprs: dict):
    """Compile a ``@triton.jit`` kernel for sm_90 without a GPU (catches GPU-only compile errors)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    fn = kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn)
    source = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    return triton.compile(source, target=GPUTarget("cuda", 90, 32))
