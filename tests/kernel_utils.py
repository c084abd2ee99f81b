"""Shared helpers of the kernel tests: device, dtypes, tolerances, poisoning, GPU compiles."""

import importlib
import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

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


def case_generator(request) -> torch.Generator:
    """A CPU generator seeded from the test case's id: fresh inputs per case, the same on every run."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.name.encode()))


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> None:
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=rtol)


def hopper_ptx(cases: dict[str, tuple]) -> dict[str, str]:
    """Compile kernels for sm_90 without a GPU (catches GPU-only compile errors); returns ``{case: PTX}``.

    ``cases`` maps a name to ``(module, kernel name, dtype, constexprs, argument types)``. Arguments
    named in ``constexprs`` are constexpr; the others take their type from ``argument types``, else
    ``*<dtype>`` for names ending in ``_ptr`` and ``i32`` otherwise. Under TRITON_INTERPRET every
    ``@triton.jit`` function (triton.language's own helpers included) is an interpreter object the
    compiler cannot lower, so there all cases compile in one child process without it.
    """
    if not INTERPRETED:
        return compile_cases(cases)
    root = Path(__file__).resolve().parents[1]
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), str(root / "tests"), env.get("PYTHONPATH", "")])
    script = "import json, sys\nfrom kernel_utils import compile_cases\nprint(json.dumps(compile_cases(json.load(sys.stdin))))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], input=json.dumps(cases), capture_output=True, text=True, env=env, cwd=root, timeout=600
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_cases(cases: dict[str, tuple]) -> dict[str, str]:
    """In-process part of :func:`hopper_ptx`."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction

    ptx = {}
    for name, (module, kernel_name, dtype, constexprs, arg_types) in cases.items():
        kernel = getattr(importlib.import_module(module), kernel_name)
        fn = kernel if isinstance(kernel, JITFunction) else JITFunction(kernel.fn)
        signature = {
            arg: "constexpr" if arg in constexprs else arg_types.get(arg, f"*{dtype}" if arg.endswith("_ptr") else "i32")
            for arg in fn.arg_names
        }
        try:
            compiled = triton.compile(ASTSource(fn=fn, signature=signature, constexprs=constexprs), target=GPUTarget("cuda", 90, 32))
        except Exception as error:
            raise RuntimeError(f"{name}: {module}.{kernel_name} does not compile for sm_90: {error}") from error
        ptx[name] = compiled.asm["ptx"]
    return ptx
