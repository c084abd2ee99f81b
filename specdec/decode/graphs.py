"""The compiled step (``compile=True``): one compiled program over a cache of fixed addresses.

The eager step (:mod:`specdec.decode.loop`) grows its cache with the text and builds its masks from
Python ints, so no graph could be reused from one step to the next. This step is static instead:

* :class:`StaticKVCache` holds each layer's keys and values ``[1, H_kv, C, D]`` at fixed addresses,
  zeroed once, for the life of the patched model (grown, by reallocation, only when a request needs
  more than ``C`` positions). A step writes its rows at slots ``prefix + 0..S-1`` by indexed
  assignment (a tensor ``prefix``), then :meth:`StaticKVCache.compact` moves the accepted rows down, as the eager
  cache does.
* The program (:func:`static_range` over all layers: embedding, the model's decoder layers, final norm) takes the
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
through :meth:`StaticStep.run_network`. Pseudo rows (FIRP) enter mid-pass: for such a source the
program leaves off after the transfer layer (and the layer whose states the maps read too,
:func:`source_stops`), the source writes the pseudo rows there eagerly, and the program goes on
over every row (:meth:`StaticStep.forward`). Early exits, pseudo-row adapters and pseudo rows
entering before layer 0 (mask slots) would change the layers themselves: ``patch(...,
compile=True)`` refuses them (:func:`compile_refusal`). Prefill
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
from .loop import ModelParts, prefill, pseudo_entry, write_pseudo_rows
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


def static_range(parts: ModelParts, cache: StaticKVCache, inputs, positions, prefix_len, visibility, layers: range) -> torch.Tensor:
    """The program over decoder layers ``layers`` (the whole program over all of them): the rows'
    tokens ``[S]`` (int64) when ``layers`` starts at 0, embedded here, else their hidden states
    ``[1, S, d]``; at ``positions [S]`` (int64) over the ``prefix_len`` (int64, 0-d) cached
    positions, row ``i`` seeing step row ``j`` where ``visibility[i, j]`` (bool ``[S, S]``). Writes the
    rows' keys and values at slots ``prefix_len + 0..S-1`` of ``cache``'s layers ``layers``. Returns the
    final-normed ``[S, d]`` when ``layers`` ends at the last layer, else ``[1, S, d]``. No host reads,
    no branch on tensor values."""
    hidden = parts.embed(inputs)[None] if layers.start == 0 else inputs
    hidden = static_layers(parts, cache, hidden, positions, prefix_len, visibility, layers)
    return parts.norm(hidden[0]) if layers.stop == len(parts.layers) else hidden


def static_layers(parts: ModelParts, cache: StaticKVCache, hidden, positions, prefix_len, visibility, layers: range) -> torch.Tensor:
    """Decoder layers ``layers`` of :func:`static_range` on ``hidden [1, S, d]``; returns ``[1, S, d]``."""
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
    """:func:`static_range` over layers ``layers`` as a module (what ``torch.export`` takes) over the
    model's own modules, the cache's buffers of those layers passed in. Over all layers it is the
    whole program."""

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
        return static_range(self.parts, cache, inputs, positions, prefix, visibility, self.range)


def compile_refusal(source, num_layers: int) -> str | None:
    """Why the compiled step cannot run draft ``source`` on a model of ``num_layers`` layers, or None:
    it runs pseudo rows that enter after a decoder layer, but not rows that enter before the first
    (mask slots), states captured before it, pseudo-row adapters (they change the layers, which are
    the program's) or an early exit."""
    if source.exit_layer is not None:
        return "an early exit"
    if source.k and not 0 <= source.layer < num_layers - 1:
        return f"pseudo rows entering after layer {source.layer} (the compiled step takes them after layer 0..{num_layers - 2})"
    if source.k and source.capture_layer is not None and source.capture_layer < 0:
        return "pseudo rows read from the embeddings"
    if source.has_adapters:
        return "pseudo-row adapters"
    return None


def source_stops(source, num_layers: int) -> tuple[int, ...]:
    """Layers where a step of ``source`` leaves the program: before the layer its pseudo rows enter
    (:attr:`~specdec.drafts.DraftSource.layer` + 1) and the one whose output they read as well
    (:attr:`~specdec.drafts.DraftSource.capture_layer` + 1); none for a source without pseudo rows."""
    return tuple(sorted({at for at in pseudo_entry(source) if at is not None and at < num_layers}))


def layer_ranges(layers: int, count: int, stops: tuple[int, ...] = ()) -> list[range]:
    """Consecutive ranges covering ``layers`` layers, one ending at each of ``stops``, ``count`` of them
    where there are fewer stops: each segment between stops is cut into ranges whose sizes are within
    one of each other, the next range going to the segment of the most layers per range."""
    cuts = [0, *sorted(set(stop for stop in stops if 0 < stop < layers)), layers]
    segments = list(zip(cuts, cuts[1:]))
    shares = [1] * len(segments)
    for _ in range(count - len(segments)):
        widest = max(range(len(segments)), key=lambda i: (segments[i][1] - segments[i][0]) / shares[i])
        if segments[widest][1] - segments[widest][0] <= shares[widest]:
            break  # every range is one layer
        shares[widest] += 1
    return [range(a + (b - a) * i // n, a + (b - a) * (i + 1) // n) for (a, b), n in zip(segments, shares) for i in range(n)]


class PackagedProgram:
    """The program on a CPU: :func:`static_range` compiled ahead of time with inductor's freezing (the
    weights as constants, GEMMs on oneDNN-packed weights) into packages on disk, one per range of
    layers (:func:`layer_ranges`: one per build process, :func:`~specdec.decode.packages.build_parts`,
    and one ending at each of the source's ``stops``), built in parallel processes
    (:mod:`specdec.decode.packages`), loaded from there by any later process and run one after the
    other. One program per model, state of its weights and stops (the package key hashes them)."""

    def __init__(self, key: tuple, parts: ModelParts, stops: tuple[int, ...] = ()):
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
        self.ranges = layer_ranges(dims[0], packages.build_parts(dims[0]), stops)
        programs = []
        for layers in self.ranges:
            inputs = tokens if layers.start == 0 else weight.new_zeros(1, rows, weight.shape[1])
            example = (inputs, *common, cache.keys[layers.start : layers.stop], cache.values[layers.start : layers.stop])
            shapes = ({0: r} if layers.start == 0 else {1: r}, {0: r}, None, {0: r, 1: r}, [{2: c}] * len(layers), [{2: c}] * len(layers))
            programs.append((StepPart(parts, layers).eval(), example, shapes))
        self.key = key
        whole = StepPart(parts, range(dims[0]))
        self.runs = packages.load_or_build(programs, packages.package_key(whole, TRACED_FILES, [(p.start, p.stop) for p in self.ranges]))

    def __call__(self, cache: StaticKVCache, inputs, positions, prefix, visibility, layers: range) -> torch.Tensor:
        """:func:`static_range` over ``layers``, which starts and ends where the program's ranges do."""
        runs = [(part, run) for part, run in zip(self.ranges, self.runs) if layers.start <= part.start and part.stop <= layers.stop]
        if not runs or runs[0][0].start != layers.start or runs[-1][0].stop != layers.stop:
            raise ValueError(f"layers {layers.start}..{layers.stop - 1} do not start and end where the program's parts do: {self.ranges}")
        hidden = inputs
        for part, run in runs:
            hidden = run(hidden, positions, prefix, visibility, cache.keys[part.start : part.stop], cache.values[part.start : part.stop])
        return hidden


def compiled_range(parts: ModelParts, layers: range):
    """:func:`static_range` over ``layers`` through ``torch.compile`` (``fullgraph``, run as CUDA graphs),
    a code object of its own (dynamo keeps its graphs on the code object, which every closure of one
    function shares)."""

    def forward(cache, inputs, positions, prefix, visibility):
        return static_range(parts, cache, inputs, positions, prefix, visibility, layers)

    forward = types.FunctionType(forward.__code__.replace(), forward.__globals__, forward.__name__, None, forward.__closure__)
    return torch.compile(forward, fullgraph=True, mode="reduce-overhead")


class GraphProgram:
    """The program on CUDA: :func:`static_range` through ``torch.compile`` (``fullgraph``, the rows
    and the capacity dynamic), run as CUDA graphs (``mode="reduce-overhead"``: one per padded row
    count, reading the weights in place), one compiled function per segment between the source's
    ``stops`` (the whole step for most sources). Each program compiles code objects of its own, so
    dynamo's cache of graphs belongs to one model and state of its weights."""

    def __init__(self, key: tuple, parts: ModelParts, stops: tuple[int, ...] = ()):
        self.compiled = {layers: compiled_range(parts, layers) for layers in layer_ranges(len(parts.layers), 1, stops)}
        self.key = key
        self.seen: set[tuple[range, int]] = set()  # (layers, row count) recorded

    def __call__(self, cache: StaticKVCache, inputs, positions, prefix, visibility, layers: range) -> torch.Tensor:
        compiled = self.compiled.get(layers)
        if compiled is None:
            raise ValueError(f"layers {layers.start}..{layers.stop - 1} are not one of the program's segments: {list(self.compiled)}")
        rows = positions.shape[0]
        for tensor in (positions, visibility):  # the rows are symbolic (the cache marks its capacity)
            torch._dynamo.mark_dynamic(tensor, 0)
        torch._dynamo.mark_dynamic(visibility, 1)
        torch._dynamo.mark_dynamic(inputs, 0 if layers.start == 0 else 1)
        torch.compiler.cudagraph_mark_step_begin()
        if (layers, rows) in self.seen:
            return compiled(cache, inputs, positions, prefix, visibility).clone()  # a replay overwrites its outputs
        what = f"the step's CUDA graph for {rows} rows" + ("" if len(self.compiled) == 1 else f" (layers {layers.start}-{layers.stop - 1})")
        print(f"specdec: recording {what} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        hidden = compiled(cache, inputs, positions, prefix, visibility).clone()
        print(f"specdec: recorded {what} in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
        self.seen.add((layers, rows))
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
        self._programs: dict[tuple, PackagedProgram | GraphProgram] = {}  # (device type, stops) -> program
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

    def program(self, parts: ModelParts, stops: tuple[int, ...] = ()) -> "PackagedProgram | GraphProgram":
        """The program for the model's device that leaves off at ``stops`` (:func:`source_stops`), made
        afresh when the weights changed since it was made. Programs of other stops stay (a process
        switching between draft sources does not reload them at every switch; each holds its own
        packed weights); those of older weights are freed first."""
        weights, device_type = weights_key(parts), parts.embed.weight.device.type
        if device_type not in PROGRAMS:
            raise ValueError(f"compile=True runs on a CPU or CUDA, not on {device_type!r}")
        program = self._programs.get((device_type, stops))
        if program is None or program.key != (weights, stops):
            self._programs = {place: kept for place, kept in self._programs.items() if kept.key[0] == weights and place != (device_type, stops)}
            program = self._programs[device_type, stops] = PROGRAMS[device_type]((weights, stops), parts, stops)
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

    def open(self, parts: ModelParts, backend: str, max_positions: int, source=None) -> "StaticStep":
        """A call's step for draft ``source`` (None: one without pseudo rows), on the kept cache unless
        another call (another thread, or a call made from inside one, e.g. by a streamer) is using
        it: that one gets a cache of its own."""
        stops = () if source is None else source_stops(source, len(parts.layers))
        return StaticStep(self, parts, backend, max_positions, self._in_use.acquire(blocking=False), stops)

    def done(self) -> None:
        """The call on the kept cache has ended."""
        self._in_use.release()


class StaticStep:
    """One ``generate`` call's steps through a :class:`CompiledStep` (the loop's step interface)."""

    def __init__(self, compiled: CompiledStep, parts: ModelParts, backend: str, max_positions: int, kept: bool, stops: tuple[int, ...] = ()):
        self.compiled, self.parts, self.backend, self.kept = compiled, parts, backend, kept
        self.cache = compiled.cache(parts, max_positions, kept)
        self.program = compiled.program(parts, stops)  # the weights are checked once per call
        self.stops = stops
        self._visibility: dict = {}  # (id of a layout's bits, padded rows) -> (the bits, bool visibility)

    def prefill(self, tokens: torch.Tensor, states: bool = False) -> torch.Tensor | None:
        """As :func:`~specdec.decode.loop.prefill`, eagerly, then copied into the static cache."""
        scratch = TreeKVCache(len(self.parts.layers), max(tokens.shape[0], 1))
        hidden = prefill(self.parts, scratch, tokens, self.backend, states)
        if tokens.shape[0]:
            self.cache.load(scratch, tokens.shape[0])
        return hidden

    def forward(self, source, layout: StepLayout, root: torch.Tensor, nodes: torch.Tensor, prefix_len: int):
        """The step over ``root [1]``, ``nodes [M]`` and ``source``'s pseudo rows (as
        :func:`~specdec.decode.loop.forward_step`: the real rows up to the layer the pseudo rows enter,
        every row after it); returns ``(hidden [S, d], None)``.

        The program runs segment by segment between the :attr:`stops`: the real rows (padded) up to
        the transfer layer, where the source writes the pseudo rows from their states (eagerly,
        between the segments), then all rows (padded) to the end. Padding rows see themselves only."""
        real, total, num_layers = layout.num_real, layout.num_rows, len(self.parts.layers)
        device = root.device
        rows = padded_rows(real, device)
        every = padded_rows(total, device)
        needed = prefix_len + every
        if needed > self.cache.capacity:  # a longer step than the request's limit foresaw
            grown = self.compiled.cache(self.parts, 2 * needed, self.kept)
            grown.load(self.cache, prefix_len)
            self.cache = grown
        prefix = torch.tensor(prefix_len, device=device)
        inject_at, capture_at = pseudo_entry(source) if layout.num_pseudo else (None, None)
        hidden = torch.cat([root, nodes, root.new_zeros(rows - real)])
        positions = torch.cat([layout.offsets[:real], layout.offsets.new_zeros(rows - real)]) + prefix_len
        visibility = self.visibility(layout.real_bits, real, rows)
        captured, done = None, 0
        for stop in [*self.stops, num_layers]:
            hidden = self.program(self.cache, hidden, positions, prefix, visibility, range(done, stop))
            done = stop
            if stop == capture_at:
                captured = hidden[0, :real]
            if stop == inject_at:
                grown = hidden.new_zeros(1, every, hidden.shape[-1])
                grown[:, :real] = hidden[:, :real]
                write_pseudo_rows(source, layout, hidden[0, :real], captured, grown[0, real:total])
                hidden = grown
                positions = torch.cat([layout.offsets, layout.offsets.new_zeros(every - total)]) + prefix_len
                visibility = self.visibility(layout.full_bits, total, every)
        return hidden[:total], None

    def visibility(self, bits: torch.Tensor, count: int, rows: int) -> torch.Tensor:
        """Bool ``[rows, rows]``: the visibility ``bits`` among ``count`` rows (a layout's real or full
        bits), each padding row seeing itself. Kept per layout (a layout's bits are made once)."""
        key = (id(bits), rows)
        kept = self._visibility.get(key)
        if kept is not None and kept[0] is bits:
            return kept[1]
        mask = torch.eye(rows, dtype=torch.bool, device=bits.device)
        mask[:count, :count] = unpack_bits(bits, count)
        if len(self._visibility) >= 16:
            self._visibility.clear()
        self._visibility[key] = (bits, mask)
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
