"""The compiled step on a CPU, built once per machine and model: an AOTInductor package on disk.

``torch.compile`` with inductor's freezing (the weights as constants, GEMMs on oneDNN-packed
weights) is what makes the CPU step fast, but nothing of it outlives the process: inductor's caches
skip frozen graphs (AOTAutograd bypasses freezing; the FX graph cache cannot pickle packed
weights), so every process traced and froze again (58 s for SmolLM2-135M on 2 cores). Here the
program (:func:`~specdec.decode.graphs.static_forward`) is exported once (``torch.export``, the rows
and the cache's capacity symbolic) and compiled ahead of time with freezing into a ``.pt2``
package that holds the packed weights; a later process loads it (a couple of seconds) instead.

Packages live in :func:`cache_dir` (``$SPECDEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/specdec`` or
``~/.cache/specdec``), under ``steps/``, one per :func:`package_key`: the weights' bytes, the model's
config and dtype, the code that is traced (this package's and transformers' versions and the
sources of the traced modules), torch's version and the CPU's instruction set. A package is about
the size of the model's weights (SmolLM2-135M fp32: 543 MB); delete the folder to free the space.
"""

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from torch import nn

MAX_ROWS = 1 << 12  # the largest step the package runs
MAX_CAPACITY = 1 << 22  # the largest cache it reads (positions)


def cache_dir() -> Path:
    """Where packages are kept (see the module docstring)."""
    if os.environ.get("SPECDEC_CACHE_DIR"):
        return Path(os.environ["SPECDEC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "specdec"


def package_key(program: nn.Module, traced_files: list[str]) -> str:
    """A hex digest of what a package depends on: ``program``'s parameters and buffers (bytes, names,
    shapes, dtypes), its model's config (``program.config``, if it has one), the ``traced_files``' sources, and the versions of torch,
    transformers and this package, and the CPU's instruction set."""
    import transformers

    from .. import __version__

    digest = hashlib.sha256()
    config = getattr(program, "config", None)
    context = {
        "torch": torch.__version__, "transformers": transformers.__version__, "specdec": __version__,
        "cpu": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(), "python": sys.version_info[:2],
        "config": config.to_json_string(use_diff=False) if hasattr(config, "to_json_string") else repr(config),
    }
    digest.update(json.dumps(context, sort_keys=True, default=str).encode())
    for path in traced_files:
        digest.update(Path(path).read_bytes())
    for name, tensor in [*program.named_parameters(), *program.named_buffers()]:
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(data.shape)}:{data.dtype};".encode())
        digest.update(data.view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()[:32]


def load_or_build(program: nn.Module, example: tuple, dynamic_shapes, key: str, what: str = "the step"):
    """The loaded package of ``program`` (an ``nn.Module`` called with ``example``'s structure), built
    first (export, then AOTInductor with freezing) when :func:`cache_dir` has none for ``key``.
    Says on stderr what it does (naming the program ``what``) and how long it took."""
    path = cache_dir() / "steps" / f"{key}.pt2"
    start = time.perf_counter()
    if path.is_file():
        print(f"specdec: loading the compiled {what.removeprefix('the ')} from {path} ...", file=sys.stderr, flush=True)
    else:
        print(f"specdec: compiling {what} into {path} (once per machine and model; a minute or more on a small CPU) ...", file=sys.stderr, flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():  # freezing applies only without autograd
            exported = torch.export.export(program, example, dynamic_shapes=dynamic_shapes, strict=False)
            partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.pt2")
            torch._inductor.aoti_compile_and_package(exported, package_path=str(partial), inductor_configs={"freezing": True})
        os.replace(partial, path)  # atomic: another process never loads half a package
    loaded = torch._inductor.aoti_load_package(str(path))
    print(f"specdec: done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return loaded
