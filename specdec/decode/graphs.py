"""The compiled step (``compile=True``): one compiled program over a cache of fixed addresses.

The eager step (:mod:`specdec.decode.loop`) grows its cache with the text and builds its masks from
Python ints, so no graph could be reused from one step to the next. This step is static instead:

* :class:`StaticKVCache` holds each layer's keys and values ``[1, H_kv, C, D]`` at fixed addresses,
  zeroed once, for the life of the patched model (grown, by reallocation, only when a request needs
  more than ``C`` positions). A step writes its rows at slots ``prefix + 0..S-1`` by indexed
  assignment (a tensor ``prefix``), then :meth:`StaticKVCache.compact` moves the accepted rows down, as the eager
  cache does.
* The program (:func:`static_forward`: embedding, the model's decoder layers, final norm) takes the
  prefix length as a 0-d tensor and the tree as a bool visibility ``[S, S]``; it builds the mask over
  all ``C`` slots in the graph (:class:`~specdec.decode.attention.StaticAttention`), so neither the
  text's growth nor the tree's shape changes the graph. Rows are padded to at least 2 (one size-1
  dimension would be specialised into a second graph) and, on CUDA, to the next power of two, so
  CUDA graphs (``mode="reduce-overhead"``) are recorded for a few sizes only. Padding rows see the
  prefix and themselves, and no real row sees them; their keys land in slots past the real rows,
  which the next step overwrites.
* On a CPU the program is exported once (``torch.export``, the rows and the capacity symbolic) and
  compiled ahead of time by AOTInductor with freezing (the weights as constants, GEMMs on
  oneDNN/MKL-packed weights, linears of one input concatenated) into packages on disk
  (:mod:`specdec.decode.packages`), one per range of layers (:class:`StepPart`), built in parallel
  processes and run one after the other; every later process loads them in seconds. On CUDA it
  is ``torch.compile``'d (``fullgraph=True``, the same two dimensions dynamic) and run as CUDA graphs. Either way one program serves every step of every
  request. The LM head and verification stay outside, as in the eager step.

A draft source's network pass between steps (the token-aware head's
:meth:`~specdec.drafts.head.network.TokenHead.forward`, over a cache of its own of fixed size) is
compiled on a CPU the same way (:class:`HeadProgram`, a package per head) and reaches the source
through :meth:`StaticStep.run_network`. Draft sources with pseudo rows or an early exit (FIRP, mask
slots, early-layer guesses) change the rows mid-pass; this step does not cover them
(``patch(..., compile=True)`` refuses them). Prefill
runs eagerly (the prompt's length would otherwise be a graph shape) into a temporary cache whose
rows are then copied into the static one.
"""

import sys
import threading
import time
import types
import weakref

import torch
from torch import nn

from ..drafts.head import network as head_network
from ..drafts.head.network import TokenHead
from ..kernels import unpack_bits
from . import attention as attention_module, cache as cache_module, loop as loop_module, packages
from .attention import StaticAttention
from .cache import TreeKVCache, move_rows
from .loop import ModelParts, prefill
from .tree import StepLayout

TRACED_FILES = [__file__, attention_module.__file__, cache_module.__file__, loop_module.__file__]  # their code is in a package
MIN_ROWS = 2
CAPACITY_STEP = 256  # capacities are multiples of this


def padded_rows(rows: int, device: torch.device) -> int:
    """Rows of the program for a step of ``rows`` real rows: at least :data:`MIN_ROWS`; on CUDA the
    next power of two (each size is a CUDA graph of its own)."""
    rows = max(rows, MIN_ROWS)
    return 1 << (rows - 1).bit_length() if device.type == "cuda" else rows


class StaticKVCache:
    """Keys and values ``[1, H_kv, capacity, D]`` per layer at fixed addresses (see the module docstring).

    ``slots`` (int64 ``[S]``) is where the next :meth:`update` writes: the program sets it.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.keys, self.values = keys, values
        self.slots: torch.Tensor | None = None

    @classmethod
    def allocate(cls, num_layers: int, heads: int, head_dim: int, capacity: int, dtype: torch.dtype, device: torch.device) -> "StaticKVCache":
        """A zeroed cache of ``capacity`` positions, its buffers marked for the compiler."""
        cache = cls(*([torch.zeros(1, heads, capacity, head_dim, dtype=dtype, device=device) for _ in range(num_layers)] for _ in range(2)))
        for buffer in cache.keys + cache.values:
            torch._dynamo.mark_dynamic(buffer, 2)  # the capacity is symbolic: a grown cache compiles nothing
            if device.type == "cuda":  # CUDA graphs read and write these buffers in place
                torch._dynamo.mark_static_address(buffer)
        return cache

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def fits(self, num_layers: int, heads: int, head_dim: int, capacity: int, dtype: torch.dtype, device: torch.device) -> bool:
        """Whether this cache serves a model of these dimensions for ``capacity`` positions."""
        k = self.keys[0]
        return (len(self.keys), k.shape[1], k.shape[3], k.dtype, k.device) == (num_layers, heads, head_dim, dtype, device) and self.capacity >= capacity

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        """Write ``[1, H_kv, S, D]`` at :attr:`slots` of layer ``layer_idx``; return all ``C`` slots."""
        # Indexed assignment, not index_copy_: its decomposition pins the row count to a constant.
        self.keys[layer_idx][:, :, self.slots] = key_states
        self.values[layer_idx][:, :, self.slots] = value_states
        return self.keys[layer_idx], self.values[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # the step's attention reads its own mask; transformers' masks are not built

    def load(self, other: "TreeKVCache | StaticKVCache", length: int) -> None:
        """Copy the first ``length`` positions of every layer of ``other`` (a prefilled eager cache, or
        the static cache this one replaces)."""
        for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
            for buffer, source in zip(mine, theirs):
                buffer[:, :, :length] = source[:, :, :length]

    def compact(self, prefix_len: int, keep: torch.Tensor, in_place: bool = False) -> None:
        """Keep step rows ``keep`` (int64 ``[n]``, ascending, relative to ``prefix_len``) in every layer."""
        if not in_place:
            move_rows(self.keys + self.values, prefix_len, keep)


def static_forward(parts: ModelParts, cache: StaticKVCache, tokens, positions, prefix_len, visibility) -> torch.Tensor:
    """The program: final-normed hidden states ``[S, d]`` of rows ``tokens [S]`` (int64) at ``positions [S]``
    (int64) over the ``prefix_len`` (int64, 0-d) cached positions, row ``i`` seeing step row ``j``
    where ``visibility[i, j]`` (bool ``[S, S]``). Writes the rows' keys and values at slots
    ``prefix_len + 0..S-1`` of ``cache``. No host reads, no branch on tensor values."""
    hidden = parts.embed(tokens)[None]
    hidden = static_layers(parts, cache, hidden, positions, prefix_len, visibility, range(len(parts.layers)))
    return parts.norm(hidden[0])


def static_layers(parts: ModelParts, cache: StaticKVCache, hidden, positions, prefix_len, visibility, layers: range) -> torch.Tensor:
    """Decoder layers ``layers`` of :func:`static_forward` on ``hidden [1, S, d]``; returns ``[1, S, d]``."""
    rows = hidden.shape[1]
    capacity = cache.keys[layers.start].shape[2]
    slot = torch.arange(capacity, device=hidden.device)
    cache.slots = prefix_len + torch.arange(rows, device=hidden.device)
    relative = slot - prefix_len
    inside = (relative >= 0) & (relative < rows)
    column = relative.clamp(0, rows - 1)
    step = visibility.gather(1, column[None, :].expand(rows, capacity))
    mask = (relative < 0)[None, :] | (inside[None, :] & step)
    key_positions = torch.where(relative < 0, slot, positions.gather(0, column))
    rotary = parts.rotary(hidden, positions[None])
    attention = StaticAttention(mask[None, None], positions, key_positions)
    return parts.run_layers(hidden, layers.start, layers.stop, cache, rotary, positions, attention)


def weights_key(parts: ModelParts) -> tuple:
    """What the compiled program depends on of the model's weights: each parameter's storage and
    in-place version (an edited, replaced, moved or cast weight changes it)."""
    modules = (parts.embed, parts.layers, parts.norm)
    return tuple((p.data_ptr(), p._version) for module in modules for p in module.parameters())


class StepPart(nn.Module):
    """Layers ``layers`` of :func:`static_forward` as a module (what ``torch.export`` takes) over the
    model's own modules, the cache's buffers of those layers passed in: the first part takes the
    tokens ``[S]`` (int64) and embeds them, the last returns the final-normed ``[S, d]``, any other
    takes and returns hidden states ``[1, S, d]``. Over all layers it is the whole program."""

    def __init__(self, parts: ModelParts, layers: range):
        super().__init__()
        first, last = layers.start == 0, layers.stop == len(parts.layers)
        self.embed, self.norm = (parts.embed if first else None), (parts.norm if last else None)
        self.layers = nn.ModuleList(parts.layers[layers.start : layers.stop])  # the parameters a package holds
        self.rotary, self.parts, self.range = parts.rotary, parts, layers
        self.config = parts.layers[0].self_attn.config  # part of the package key

    def forward(self, inputs, positions, prefix, visibility, keys: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
        before = [None] * self.range.start  # the layers index the cache by their own number
        cache = StaticKVCache(before + list(keys), before + list(values))
        hidden = inputs if self.embed is None else self.embed(inputs)[None]
        hidden = static_layers(self.parts, cache, hidden, positions, prefix, visibility, self.range)
        return hidden if self.norm is None else self.norm(hidden[0])


def layer_ranges(layers: int, count: int) -> list[range]:
    """``count`` consecutive ranges covering ``layers`` layers, their sizes within one of each other."""
    bounds = [layers * i // count for i in range(count + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


class PackagedProgram:
    """The program on a CPU: :func:`static_forward` compiled ahead of time with inductor's freezing (the
    weights as constants, GEMMs on oneDNN-packed weights) into packages on disk, one per range of
    layers (:func:`~specdec.decode.packages.build_parts`, built in parallel processes:
    :mod:`specdec.decode.packages`), loaded from there by any later process and run one after the
    other. One program per model and state of its weights (the package key hashes their bytes)."""

    def __init__(self, key: tuple, parts: ModelParts):
        layer = parts.layers[0].self_attn
        dims = (len(parts.layers), layer.config.num_key_value_heads, layer.head_dim)
        rows, capacity = 8, 2 * CAPACITY_STEP  # the example: sizes no dimension takes otherwise
        weight = parts.embed.weight
        cache = StaticKVCache.allocate(*dims, capacity, weight.dtype, weight.device)
        tokens = torch.zeros(rows, dtype=torch.int64, device=weight.device)
        common = (torch.arange(rows, device=weight.device), torch.tensor(0, device=weight.device),
                  torch.ones(rows, rows, dtype=torch.bool, device=weight.device).tril())
        r = torch.export.Dim("rows", min=MIN_ROWS, max=packages.MAX_ROWS)
        c = torch.export.Dim("capacity", min=CAPACITY_STEP, max=packages.MAX_CAPACITY)
        self.ranges = layer_ranges(dims[0], packages.build_parts(dims[0]))
        programs = []
        for layers in self.ranges:
            inputs = tokens if layers.start == 0 else weight.new_zeros(1, rows, weight.shape[1])
            example = (inputs, *common, cache.keys[layers.start : layers.stop], cache.values[layers.start : layers.stop])
            shapes = ({0: r} if layers.start == 0 else {1: r}, {0: r}, None, {0: r, 1: r}, [{2: c}] * len(layers), [{2: c}] * len(layers))
            programs.append((StepPart(parts, layers).eval(), example, shapes))
        self.key = key
        self.runs = packages.load_or_build(programs, packages.package_key(StepPart(parts, range(dims[0])), TRACED_FILES))

    def __call__(self, cache: StaticKVCache, tokens, positions, prefix, visibility) -> torch.Tensor:
        hidden = tokens
        for layers, run in zip(self.ranges, self.runs):
            hidden = run(hidden, positions, prefix, visibility, cache.keys[layers.start : layers.stop], cache.values[layers.start : layers.stop])
        return hidden


class GraphProgram:
    """The program on CUDA: :func:`static_forward` through ``torch.compile`` (``fullgraph``, the rows
    and the capacity dynamic), run as CUDA graphs (``mode="reduce-overhead"``: one per padded row
    count, reading the weights in place). Each program compiles a code object of its own, so
    dynamo's cache of graphs belongs to one model and state of its weights."""

    def __init__(self, key: tuple, parts: ModelParts):
        def forward(cache, tokens, positions, prefix, visibility):
            return static_forward(parts, cache, tokens, positions, prefix, visibility)

        # Every closure of `forward` shares one code object, where dynamo keeps its graphs: a copy of it.
        forward = types.FunctionType(forward.__code__.replace(), forward.__globals__, forward.__name__, None, forward.__closure__)
        self.compiled = torch.compile(forward, fullgraph=True, mode="reduce-overhead")
        self.key = key
        self.seen: set[int] = set()  # row counts recorded

    def __call__(self, cache: StaticKVCache, tokens, positions, prefix, visibility) -> torch.Tensor:
        for tensor in (tokens, positions, visibility):  # the rows are symbolic (the cache marks its capacity)
            torch._dynamo.mark_dynamic(tensor, 0)
        torch._dynamo.mark_dynamic(visibility, 1)
        torch.compiler.cudagraph_mark_step_begin()
        rows = tokens.shape[0]
        if rows in self.seen:
            return self.compiled(cache, tokens, positions, prefix, visibility).clone()  # a replay overwrites its outputs
        print(f"specdec: recording the step's CUDA graph for {rows} rows ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        hidden = self.compiled(cache, tokens, positions, prefix, visibility).clone()
        print(f"specdec: recorded the step's CUDA graph for {rows} rows in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        self.seen.add(rows)
        return hidden


class HeadProgram:
    """A token-aware head's decoding pass (:meth:`TokenHead.forward`) on a CPU, compiled ahead of time
    with freezing into a package like the step's (one per head and state of its weights). Called as
    the module is; a single row is padded with a second one (a size-1 dimension would be a graph of
    its own) that writes to the slot after the last, which the source keeps spare."""

    TRACED_FILES = [head_network.__file__, __file__]

    def __init__(self, head: TokenHead, key: str):
        hidden = head.hidden_size
        rows, capacity = 8, 2 * CAPACITY_STEP  # the example: sizes no dimension takes otherwise
        keys = head.zero_kv(1, capacity)
        weight = head.qkv.weight
        example = (weight.new_zeros(1, rows, hidden), weight.new_zeros(1, rows, hidden), torch.arange(rows, device=weight.device),
                   torch.arange(rows, device=weight.device), torch.ones(rows, capacity, dtype=torch.bool, device=weight.device), keys, keys.clone())
        r = torch.export.Dim("rows", min=MIN_ROWS, max=packages.MAX_CAPACITY)
        c = torch.export.Dim("capacity", min=MIN_ROWS + 1, max=packages.MAX_CAPACITY)
        shapes = ({1: r}, {1: r}, {0: r}, {0: r}, {0: r, 1: c}, {2: c}, {2: c})
        (self.run,) = packages.load_or_build([(head.eval(), example, shapes)], key, "the draft head's pass")

    def __call__(self, features, embeds, positions, slots, mask, keys, values) -> torch.Tensor:
        real = slots.shape[0]
        if real >= MIN_ROWS:
            return self.run(features, embeds, positions, slots, mask, keys, values)
        spare = slots[-1:] + 1
        own = torch.zeros(1, mask.shape[1], dtype=torch.bool, device=mask.device)
        own[0, spare] = True
        padded = (torch.cat([features, features[:, -1:]], 1), torch.cat([embeds, embeds[:, -1:]], 1), torch.cat([positions, positions[-1:]]),
                  torch.cat([slots, spare]), torch.cat([mask, own]), keys, values)
        return self.run(*padded)[:, :real]


PROGRAMS = {"cpu": PackagedProgram, "cuda": GraphProgram}
NETWORK_PROGRAMS = {("cpu", TokenHead): HeadProgram}  # (device type, network type) -> its compiled pass


class CompiledStep:
    """The step factory of ``compile=True`` (like :class:`~specdec.decode.loop.EagerStep`), kept per
    model (``patch()`` keeps one for the model's life) with its compiled programs and, while patched,
    its static cache.
    """

    name = "compiled"

    def __init__(self):
        self._cache: StaticKVCache | None = None
        self._programs: dict[str, PackagedProgram | GraphProgram] = {}  # device type -> program
        self._networks = weakref.WeakKeyDictionary()  # network -> (its weights' addresses and versions, its program)
        self._loaded: dict[str, HeadProgram] = {}  # package key -> program: the latest network program
        self._in_use = threading.Lock()  # held by the call that uses the kept cache

    def __getstate__(self):
        return {}  # programs and cache do not travel with a copied or unpickled model: it compiles afresh

    def __setstate__(self, state):
        self.__init__()

    @staticmethod
    def networks(parts: ModelParts, source) -> nn.ModuleList:
        """Modules whose linears ``compile="auto"``'s packing may take over: the draft source's own
        networks that have no compiled pass of their own (the decoder layers are the program's)."""
        device = parts.embed.weight.device.type
        return nn.ModuleList([network for network in source.networks() if (device, type(network)) not in NETWORK_PROGRAMS])

    def cache(self, parts: ModelParts, capacity: int, kept: bool = True) -> StaticKVCache:
        """The kept cache (reallocated when it cannot hold ``capacity`` positions of this model), or with
        ``kept=False`` a cache of the call's own."""
        attention = parts.layers[0].self_attn
        weight = parts.embed.weight
        dims = (len(parts.layers), attention.config.num_key_value_heads, attention.head_dim)
        capacity = -(-capacity // CAPACITY_STEP) * CAPACITY_STEP
        if not kept:
            return StaticKVCache.allocate(*dims, capacity, weight.dtype, weight.device)
        if self._cache is None or not self._cache.fits(*dims, capacity, weight.dtype, weight.device):
            self._cache = None  # free the old buffers before allocating the new ones
            self._cache = StaticKVCache.allocate(*dims, capacity, weight.dtype, weight.device)
        return self._cache

    def release(self) -> None:
        """Free the static cache (the programs stay)."""
        self._cache = None

    def program(self, parts: ModelParts) -> "PackagedProgram | GraphProgram":
        """The program for the model's device, made afresh when its weights changed since it compiled."""
        key, device_type = weights_key(parts), parts.embed.weight.device.type
        if device_type not in PROGRAMS:
            raise ValueError(f"compile=True runs on a CPU or CUDA, not on {device_type!r}")
        program = self._programs.get(device_type)
        if program is None or program.key != key:
            self._programs.pop(device_type, None)  # free the old program first
            program = self._programs[device_type] = PROGRAMS[device_type](key, parts)
        return program

    def network_program(self, network: nn.Module):
        """The compiled pass of a draft source's ``network`` (:data:`NETWORK_PROGRAMS`), made afresh
        when its weights changed; the network itself where none applies (it runs eagerly). A
        re-patched model's fresh copy of the same head finds the program loaded for the last one."""
        device = next(network.parameters()).device
        kind = NETWORK_PROGRAMS.get((device.type, type(network)))
        if kind is None:
            return network
        weights = tuple((p.data_ptr(), p._version) for p in network.parameters())
        seen = self._networks.get(network)
        if seen is None or seen[0] != weights:
            content = packages.package_key(network, kind.TRACED_FILES)
            program = self._loaded.get(content) or kind(network, content)
            self._loaded = {content: program}  # the latest only: an older head's program is freed
            seen = self._networks[network] = (weights, program)
        return seen[1]

    def open(self, parts: ModelParts, backend: str, max_positions: int) -> "StaticStep":
        """A call's step, on the kept cache unless another call (another thread, or a call made from
        inside one, e.g. by a streamer) is using it: that one gets a cache of its own."""
        return StaticStep(self, parts, backend, max_positions, kept=self._in_use.acquire(blocking=False))

    def done(self) -> None:
        """The call on the kept cache has ended."""
        self._in_use.release()


class StaticStep:
    """One ``generate`` call's steps through a :class:`CompiledStep` (the loop's step interface)."""

    def __init__(self, compiled: CompiledStep, parts: ModelParts, backend: str, max_positions: int, kept: bool):
        self.compiled, self.parts, self.backend, self.kept = compiled, parts, backend, kept
        self.cache = compiled.cache(parts, max_positions, kept)
        self.program = compiled.program(parts)  # the weights are checked once per call
        self._visibility: tuple = (None, None, None)  # (real_bits, padded rows, bool visibility): the last layout's

    def prefill(self, tokens: torch.Tensor, states: bool = False) -> torch.Tensor | None:
        """As :func:`~specdec.decode.loop.prefill`, eagerly, then copied into the static cache."""
        scratch = TreeKVCache(len(self.parts.layers), max(tokens.shape[0], 1))
        hidden = prefill(self.parts, scratch, tokens, self.backend, states)
        if tokens.shape[0]:
            self.cache.load(scratch, tokens.shape[0])
        return hidden

    def forward(self, source, layout: StepLayout, root: torch.Tensor, nodes: torch.Tensor, prefix_len: int):
        """The step over ``root [1]`` and ``nodes [M]`` (no pseudo rows); returns ``(hidden [R, d], None)``."""
        real = layout.num_real
        device = root.device
        rows = padded_rows(real, device)
        needed = prefix_len + rows
        if needed > self.cache.capacity:  # a longer step than the request's limit foresaw
            grown = self.compiled.cache(self.parts, 2 * needed, self.kept)
            grown.load(self.cache, prefix_len)
            self.cache = grown
        tokens = torch.cat([root, nodes, root.new_zeros(rows - real)])
        positions = torch.cat([layout.offsets[:real], layout.offsets.new_zeros(rows - real)]) + prefix_len
        prefix = torch.tensor(prefix_len, device=device)
        hidden = self.program(self.cache, tokens, positions, prefix, self.visibility(layout, rows))
        return hidden[:real], None

    def visibility(self, layout: StepLayout, rows: int) -> torch.Tensor:
        """Bool ``[rows, rows]``: the tree among the real rows, each padding row seeing itself."""
        bits, size, mask = self._visibility
        if bits is layout.real_bits and size == rows:
            return mask
        real = layout.num_real
        mask = torch.eye(rows, dtype=torch.bool, device=layout.real_bits.device)
        mask[:real, :real] = unpack_bits(layout.real_bits, real)
        self._visibility = (layout.real_bits, rows, mask)
        return mask

    def compact(self, prefix_len: int, keep: torch.Tensor, in_place: bool = False) -> None:
        self.cache.compact(prefix_len, keep, in_place)

    def truncate(self, length: int) -> None:
        """Nothing to drop: slots past the prefix are masked and overwritten by the next step."""

    def run_network(self, network: nn.Module, *inputs):
        """A draft source's network pass (:attr:`~specdec.drafts.DraftContext.run`): its compiled
        program where :data:`NETWORK_PROGRAMS` has one for it, else eagerly."""
        return self.compiled.network_program(network)(*inputs)

    def close(self) -> None:
        """The call has ended: the kept cache is free for the next one."""
        if self.kept:
            self.kept = False
            self.compiled.done()

    def __enter__(self) -> "StaticStep":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
