"""The compiled step on a CPU, built once per machine and model: an AOTInductor package on disk.

``torch.compile`` with inductor's freezing (the weights as constants, GEMMs on oneDNN-packed
weights) is what makes the CPU step fast, but nothing of it outlives the process: inductor's caches
skip frozen graphs (AOTAutograd bypasses freezing; the FX graph cache cannot pickle packed
weights), so every process traced and froze again (58 s for SmolLM2-135M on 2 cores). Here the
program (:func:`~specdec.decode.graphs.static_range`) is exported once (``torch.export``, the rows
and the cache's capacity symbolic) and compiled ahead of time with freezing into ``.pt2``
packages that hold the packed weights; a later process loads them (a couple of seconds) instead.

Building is Python-bound (AOTAutograd's trace, freezing, lowering, then the C++ compile) and runs on
one core, so the step is split into layer ranges (:func:`build_parts`: one per usable core, at most
:data:`MAX_PARTS`), each exported here and built by AOTInductor in a process of its own
(:mod:`.aoti_worker`), all at once, while this process goes on (its prefill, a draft head's export):
the packages are waited for and loaded at their first call (:class:`Build`). Compiling never runs
in the user's process, so nothing of inductor's (not thread-safe) state is touched there.

Packages live in :func:`cache_dir` (``$SPECDEC_CACHE_DIR``, else ``$XDG_CACHE_HOME/specdec`` or
``~/.cache/specdec``), under ``steps/``, one set per :func:`package_key`: the weights' bytes, the model's
config and dtype, the code that is traced (this package's and transformers' versions and the
sources of the traced modules), torch's version, the inductor settings and the CPU's instruction
set. A step's packages together are about the size of the model's weights (SmolLM2-135M fp32:
521 MB); delete the folder to free the space.
"""

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from pathlib import Path

import torch
from torch import nn

MAX_ROWS = 1 << 12  # the largest step the package runs
MAX_CAPACITY = 1 << 22  # the largest cache it reads (positions)
MAX_PARTS = 4  # the most packages (and build processes) one step is split into
INDUCTOR_CONFIGS = {  # AOTInductor's settings for every package (part of its key); bench.ops.package_build measures them
    "freezing": True,  # the weights as constants: GEMMs on oneDNN/MKL-packed weights
    "cpp.enable_concat_linear": True,  # linears of one input (q/k/v, gate/up) as one packed GEMM
    "aot_inductor.compile_wrapper_opt_level": "O0",  # the host wrapper's C++ unoptimised (kernels stay -O3)
    "aot_inductor.precompile_headers": False,  # a first build would precompile torch's headers twice (O0, O3)
}


def cache_dir() -> Path:
    """Where packages are kept (see the module docstring)."""
    if os.environ.get("SPECDEC_CACHE_DIR"):
        return Path(os.environ["SPECDEC_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "specdec"


def package_key(program: nn.Module, traced_files: list[str], ranges: list[tuple[int, int]] | None = None) -> str:
    """A hex digest of what a package depends on: ``program``'s parameters and buffers (bytes, names,
    shapes, dtypes), its model's config (``program.config``, if it has one), the ``traced_files``' sources,
    the layer ``ranges`` it is split into (a step's), :data:`INDUCTOR_CONFIGS`, the versions of torch,
    transformers and this package, and the CPU's instruction set."""
    import transformers

    from .. import __version__

    digest = hashlib.sha256()
    config = getattr(program, "config", None)
    context = {
        "inductor": INDUCTOR_CONFIGS, "ranges": ranges,
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


def build_parts(layers: int) -> int:
    """Into how many packages (layer ranges, built in parallel processes) a step of ``layers`` decoder
    layers is split: ``$SPECDEC_BUILD_PARTS``, else one per usable CPU core, at most
    :data:`MAX_PARTS` and ``layers``."""
    if os.environ.get("SPECDEC_BUILD_PARTS"):
        return max(1, min(int(os.environ["SPECDEC_BUILD_PARTS"]), layers))
    return max(1, min(usable_cores(), MAX_PARTS, layers))


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_or_build(programs: list[tuple[nn.Module, tuple, object]], key: str, what: str = "the step") -> list:
    """Callables running the packages of ``programs`` (each ``(module, example, dynamic_shapes)``: an
    ``nn.Module`` called with ``example``'s structure): loaded now where :func:`cache_dir` has them
    for ``key``; else each is exported here (``torch.export``) and built by AOTInductor with
    :data:`INDUCTOR_CONFIGS` in a process of its own, all at once (see :mod:`.aoti_worker`), and the
    callables wait for the builds at their first call (:class:`Build`), so this process goes on
    meanwhile (a prefill, another program's export). Says on stderr what it does (naming the
    programs ``what``) and, once they are loaded, how long it took ("specdec: built/loaded ... in N s")."""
    count = len(programs)
    paths = [cache_dir() / "steps" / (f"{key}.pt2" if count == 1 else f"{key}-{i + 1}of{count}.pt2") for i in range(count)]
    start = time.perf_counter()
    if all(path.is_file() for path in paths):
        print(f"specdec: loading the compiled {what.removeprefix('the ')} from {paths[0].parent} ...", file=sys.stderr, flush=True)
        loaded = [torch._inductor.aoti_load_package(str(path)) for path in paths]
        print(f"specdec: loaded {what} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        return loaded
    where = f"{count} packages in {count} processes" if count > 1 else "a package"
    print(f"specdec: compiling {what} into {where} in {paths[0].parent} (once per machine and model; a minute or "
          "more on a small CPU) ...", file=sys.stderr, flush=True)
    build = Build(programs, paths, start, what)
    return [functools.partial(build.run, i) for i in range(count)]


class Build:
    """Packages being built, each by a process of its own, started at construction (after exporting
    each program here, into a temporary folder beside the packages); :meth:`run` waits for them all
    and loads them at its first call. Processes still running when this object is collected (or the
    interpreter exits) are stopped and their folder removed."""

    def __init__(self, programs: list[tuple[nn.Module, tuple, object]], paths: list[Path], start: float, what: str):
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix=f"build-{os.getpid()}-", dir=paths[0].parent))  # exported programs, logs
        self.paths, self.start, self.what, self.workers = paths, start, what, []
        self._finalizer = weakref.finalize(self, abandon, self.workers, self.folder)
        self._loaded: list | None = None
        self._failure: RuntimeError | None = None
        self._lock = threading.Lock()
        threads = max(1, usable_cores() // len(programs))
        worker = str(Path(__file__).with_name("aoti_worker.py"))
        for i, (module, example, shapes) in enumerate(programs):
            with torch.no_grad():
                exported = torch.export.export(module, example, dynamic_shapes=shapes, strict=False)
            saved = self.folder / f"exported-{i}.pt2"
            torch.export.save(exported, saved)
            del exported
            command = [sys.executable, worker, str(saved), str(self.partial(i)), json.dumps(INDUCTOR_CONFIGS), str(threads)]
            with open(self.folder / f"log-{i}.txt", "w") as log:
                self.workers.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))

    def partial(self, i: int) -> Path:
        return self.folder / f"package-{i}.pt2"

    def run(self, index: int, *inputs):
        """Package ``index`` on ``inputs`` (after waiting for the builds and loading them, once)."""
        if self._loaded is None:
            with self._lock:
                if self._failure is not None:
                    raise self._failure
                if self._loaded is None:
                    self._loaded = self.wait()
        return self._loaded[index](*inputs)

    def wait(self) -> list:
        """Wait for every build, move each package into place and load them all."""
        failed = [i for i, worker in enumerate(self.workers) if worker.wait()]
        try:
            if failed:
                logs = [(self.folder / f"log-{i}.txt").read_text()[-4000:] for i in failed]
                self._failure = RuntimeError("specdec: building a compiled package failed:\n" + "\n".join(logs))
                raise self._failure
            for i, path in enumerate(self.paths):
                os.replace(self.partial(i), path)  # atomic: another process never loads half a package
        finally:
            self._finalizer()
        loaded = [torch._inductor.aoti_load_package(str(path)) for path in self.paths]
        print(f"specdec: built {self.what} in {time.perf_counter() - self.start:.1f} s", file=sys.stderr, flush=True)
        return loaded


def abandon(workers: list[subprocess.Popen], folder: Path) -> None:
    """Stop ``workers`` still running and remove their ``folder``."""
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    shutil.rmtree(folder, ignore_errors=True)
