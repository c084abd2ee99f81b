"""Launch helpers shared by the Triton ops: interpreter mode, device checks, block sizes.

``TRITON_INTERPRET`` is read once, at import, as ``@triton.jit`` reads it when it
decorates a kernel. ``INTERPRET`` is the same flag as a ``tl.constexpr`` (a plain
bool global fails to compile): kernels upcast loaded tiles to fp32 under it,
because the interpreter computes bf16 on raw bit patterns, while a GPU build
drops the cast and keeps its 16-bit tensor-core dots.
"""

import functools
import os

import torch
import triton
import triton.language as tl

INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"
INTERPRET = tl.constexpr(INTERPRETING)
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_runnable(op: str, *tensors: torch.Tensor) -> None:
    """Raise unless all tensors share a device on which Triton can run (CUDA, or any under the interpreter)."""
    devices = {t.device for t in tensors}
    if len(devices) != 1:
        raise ValueError(f"{op}: all tensors must be on one device, got {sorted(map(str, devices))}")
    device = devices.pop()
    if device.type != "cuda" and not INTERPRETING:
        raise ValueError(f"{op}: Triton needs CUDA tensors (or TRITON_INTERPRET=1 set before import), got {device}")


def check_block(name: str, value: int) -> int:
    """``value`` checked to be a power of two >= 16 (as ``tl.dot`` needs)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 16 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= 16, got {value!r}")
    return value


def pick_block(name: str, value: int | None, default: int) -> int:
    """``default`` when ``value`` is None, else ``value`` checked by :func:`check_block`."""
    return default if value is None else check_block(name, value)


def clamped_pow2(n: int, low: int, high: int) -> int:
    """The next power of two of ``n``, clamped to ``[low, high]``."""
    return min(high, max(low, triton.next_power_of_2(n)))


def row_major(t: torch.Tensor) -> torch.Tensor:
    """``t`` with unit stride in its last dimension (a copy only when it has none)."""
    return t if t.stride(-1) == 1 else t.contiguous()


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Number of streaming multiprocessors of a CUDA device."""
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
