"""Run Triton kernels interpreted when there is no GPU.

TRITON_INTERPRET is read when ``@triton.jit`` decorates a kernel, so it must be
set before ``specdec.kernels`` is imported; pytest loads this file first.
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
