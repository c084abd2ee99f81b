"""The step's linear layers on oneDNN-packed weights (CPU), for the duration of a ``generate`` call.

:class:`PackedWeights` keeps one packed copy (:func:`specdec.kernels.pack`) of every ``nn.Linear``
weight of the decoder layers, of the LM head and of the draft vocabulary's rows of it. Each call
checks every weight again (the same tensor, alive; its storage, in-place version, dtype, device)
and repacks what changed, so a model edited after ``patch()`` is never decoded with stale weights,
nor a draft head's fresh copy with the pack of a freed copy whose id and memory it took. Inside :meth:`active`, the
decoder layers' linears (their ``forward`` is overridden on the instance, and restored on exit)
and the LM-head ops (:func:`specdec.kernels.packed_scope`) run :func:`specdec.kernels.packed_linear`
or ``F.linear``, whichever :class:`LinearChoice` found faster for the weight's shape and the row
count; outside it the model is untouched.

Which of the two linears is faster depends on the CPU, so neither is a default: SmolLM2-135M's 211
step GEMMs (``python -m bench.ops.packed``, 2 threads, fp32) took 29.4 ms packed against 49.0 ms
with ``F.linear`` at 1 row on an AMD EPYC, but 31.3 ms against 22.8 ms on an Intel Xeon (AMX),
where packing only pays from 4 rows (33.0 against 40.1 ms).

The packed copies cost the weights' bytes again: :func:`fits_in_memory` refuses to pack when that
would take more than half of the memory the system reports available.
"""

import contextlib
import functools
import statistics
import time
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .. import kernels

TRIES = 4  # timed calls of each linear per (weight shape, dtype, row bucket) before one is chosen


def _key(weight: torch.Tensor) -> tuple:
    return weight.data_ptr(), weight._version, weight.dtype, weight.device, tuple(weight.shape)


class LinearChoice:
    """Whether a linear runs packed (:func:`specdec.kernels.packed_linear`) or as stored
    (``F.linear``), learned from the decoding calls themselves (see the module docstring).

    Per key (the weight's shape and dtype, the input's rows rounded up to a power of two), the first
    calls alternate between the two ways and are timed, :data:`TRIES` of each; then the one of the
    lower median runs (packed on a tie). Layers of one shape share a key, so one step (or prefill)
    of a new row count decides it for all of them; nothing runs that decoding does not need.
    ``clock`` is the timer (seconds).
    """

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.packed: dict[tuple, bool] = {}  # key -> whether the packed linear won
        self._timed: dict[tuple, tuple[list[float], list[float]]] = {}  # key -> (F.linear's seconds, packed's)

    def linear(self, x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """``F.linear(x, weight, bias)`` (``x [..., in]``), run the chosen way (``packed = pack(weight)``)."""
        rows = x.numel() // x.shape[-1]
        key = (weight.shape, weight.dtype, 1 << max(rows - 1, 0).bit_length())
        won = self.packed.get(key)
        if won is not None:
            return kernels.packed_linear(x, packed, bias) if won else F.linear(x, weight, bias)
        times = self._timed.setdefault(key, ([], []))
        use = len(times[1]) <= len(times[0])
        start = self.clock()
        out = kernels.packed_linear(x, packed, bias) if use else F.linear(x, weight, bias)
        times[use].append(self.clock() - start)
        if min(len(times[0]), len(times[1])) >= TRIES:
            self.packed[key] = statistics.median(times[1]) <= statistics.median(times[0])
            self._timed.pop(key, None)
        return out


def _chosen_forward(choice: LinearChoice, module: nn.Linear, packed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return choice.linear(x, module.weight, packed, module.bias)


def available_memory() -> int | None:
    """Bytes the system reports available (Linux ``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def fits_in_memory(weights: list[torch.Tensor]) -> bool:
    """Whether packed copies of ``weights`` take at most half of the available memory (True where unknown)."""
    free = available_memory()
    needed = sum(w.numel() * w.element_size() for w in weights)
    return free is None or needed <= free // 2


class PackedWeights:
    """Packed copies of a model's step weights, kept across ``generate`` calls while they stay unchanged."""

    name = "packed"

    def __init__(self):
        self._packs: dict[int, tuple[tuple, torch.Tensor, weakref.ref]] = {}  # id(weight) -> (key, packed, the weight)
        self.choice = LinearChoice()  # kept across calls: each shape and row count is timed once per process

    def __getstate__(self):
        return {}  # packed (oneDNN) tensors cannot be copied or pickled: a copy packs again at its first call

    def __setstate__(self, state):
        self.__init__()

    @staticmethod
    def linears(layers) -> list[nn.Linear]:
        """The ``nn.Linear`` modules of ``layers`` that :meth:`active` runs packed (not those whose
        ``forward`` something else already overrides on the instance, e.g. an offloading hook)."""
        return [
            m for m in layers.modules()
            if type(m) is nn.Linear and "forward" not in m.__dict__ and kernels.packable(m.weight)
        ]

    def for_step(self, layers, lm_head: torch.Tensor) -> "PackedWeights | PlainWeights":
        """``self`` where packing applies to the model as it is now (a packable head and decoder
        linears, memory to spare for the copies), else :class:`PlainWeights`."""
        linears = self.linears(layers)
        if kernels.packable(lm_head) and linears and fits_in_memory([lm_head] + [m.weight for m in linears]):
            return self
        return PlainWeights()

    def _packed(self, weight: torch.Tensor, fresh: dict) -> torch.Tensor:
        key = _key(weight)
        entry = self._packs.get(id(weight))
        if entry is None or entry[0] != key or entry[2]() is not weight:
            entry = (key, kernels.pack(weight), weakref.ref(weight))
        fresh[id(weight)] = entry
        return entry[1]

    @contextlib.contextmanager
    def active(self, layers, lm_head: torch.Tensor, vocabulary=None):
        """Inside the ``with``: ``layers``' linears, the LM head and ``vocabulary``'s rows of it run as
        :attr:`choice` picks (packed or as stored)."""
        fresh: dict = {}
        modules = self.linears(layers)
        forwards = [(m, functools.partial(_chosen_forward, self.choice, m, self._packed(m.weight, fresh))) for m in modules]
        heads = [lm_head] + ([vocabulary.rows(lm_head)[0]] if vocabulary is not None else [])
        pairs = [(w, self._packed(w, fresh)) for w in heads if kernels.packable(w)]
        self._packs = fresh  # packs of weights no longer in the model are dropped
        for module, forward in forwards:
            module.forward = forward
        try:
            with kernels.packed_scope(pairs, self.choice.linear):
                yield
        finally:
            for module, _ in forwards:
                module.__dict__.pop("forward", None)

    def __len__(self) -> int:
        return len(self._packs)


class PlainWeights:
    """The step on the weights as stored (``compile=False``, or where packing does not apply)."""

    name = "eager"

    def for_step(self, layers, lm_head: torch.Tensor) -> "PlainWeights":
        return self

    def active(self, layers, lm_head: torch.Tensor, vocabulary=None):
        return contextlib.nullcontext()

