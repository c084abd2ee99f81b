"""The speculative decoding loop (batch size 1): prefill, one step, and the loop.

Each step runs the model's own decoder layers once over the root, the draft nodes and (after the
transfer layer) the pseudo rows of the rows the planner chose, verifies the tree greedily
(:mod:`specdec.decode.verification`), keeps the accepted rows in the cache, and asks the source for the
next candidates and the planner for the next tree. See ``docs/method.md`` for the
algorithm.
"""

import contextlib
import inspect
import time
from dataclasses import dataclass

import torch
from torch import nn

from .attention import STEP_KWARG, StepAttention
from .cache import MIN_CAPACITY, TreeKVCache
from ..drafts import Candidates, DraftContext, DraftSource
from .rules import StopChecker
from .stats import DecodeStats
from .tree import StepLayout
from .verification import verify

CACHE_SLACK = 64  # cache positions beyond max_length the cache may double into (a larger step still fits)


@dataclass(frozen=True)
class ModelParts:
    """The pieces of a Llama-style causal LM that the decoder drives directly."""

    embed: nn.Module
    layers: nn.ModuleList
    norm: nn.Module
    rotary: nn.Module
    lm_head: torch.Tensor
    cache_kwarg: str

    @classmethod
    def of(cls, model) -> "ModelParts":
        inner = model.model
        head = model.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            raise ValueError("specdec does not support LM heads with a bias")
        params = inspect.signature(inner.layers[0].forward).parameters
        # transformers >= 5.2x names the cache argument `cache`, earlier 5.x `past_key_values`.
        cache_kwarg = "cache" if "cache" in params else "past_key_values"
        return cls(inner.embed_tokens, inner.layers, inner.norm, inner.rotary_emb, head.weight, cache_kwarg)

    def run_layers(self, hidden, start, stop, cache, rotary, positions, step) -> torch.Tensor:
        """Run decoder layers ``[start, stop)`` on ``hidden [1, S, d]``; ``step`` is the rows'
        :class:`~specdec.decode.attention.StepAttention` or ``StaticAttention``."""
        for layer in self.layers[start:stop]:
            hidden = layer(
                hidden,
                attention_mask=None,
                position_ids=positions[None],
                position_embeddings=rotary,
                use_cache=True,
                **{self.cache_kwarg: cache, STEP_KWARG: step},
            )
        return hidden


def prefill(parts: ModelParts, cache: TreeKVCache, tokens: torch.Tensor, backend: str, states: bool = False) -> torch.Tensor | None:
    """Cache the keys and values of ``tokens [P]`` (the prompt without its last token); with
    ``states``, return their final-normed hidden states ``[P, d]`` (else None)."""
    if tokens.shape[0] == 0:
        return None
    positions = torch.arange(tokens.shape[0], device=tokens.device)
    hidden = parts.embed(tokens)[None]
    rotary = parts.rotary(hidden, positions[None])
    step = StepAttention(0, None, positions, backend)
    hidden = parts.run_layers(hidden, 0, len(parts.layers), cache, rotary, positions, step)
    return parts.norm(hidden[0]) if states else None


def pseudo_entry(source: DraftSource) -> tuple[int | None, int | None]:
    """``(inject_at, capture_at)``: how many decoder layers run before ``source``'s pseudo rows are
    written (its transfer layer + 1; 0: before the first) and before the real rows' states the maps
    also read are taken (its capture layer + 1), each None where the source has none."""
    inject_at = source.layer + 1 if source.k else None
    capture_at = source.capture_layer + 1 if inject_at is not None and source.capture_layer is not None else None
    return inject_at, capture_at


def write_pseudo_rows(source: DraftSource, layout: StepLayout, states: torch.Tensor, captured: torch.Tensor | None, out: torch.Tensor) -> None:
    """``source`` writes the pseudo rows ``out [P, d]`` from the real rows' states ``[R, d]`` after its
    transfer layer (and ``captured [R, d]``, after its capture layer, or None), those of the owners."""
    if captured is not None:
        states = torch.cat([states, captured], dim=-1)
    source.inject(states if layout.owner_rows is None else states.index_select(0, layout.owner_rows), out)


def forward_step(
    parts: ModelParts,
    source: DraftSource,
    layout: StepLayout,
    cache: TreeKVCache,
    root: torch.Tensor,
    nodes: torch.Tensor,
    prefix_len: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pass over the root ``[1]``, draft ``nodes [M]`` and pseudo rows.

    Returns the final-normed hidden states ``[S, d]`` and, for a source with an early exit, the
    real rows' hidden states ``[R, d]`` after its ``exit_layer`` (else None). Pseudo rows run with
    the source's adapters (:meth:`DraftSource.adapted`), which never touch real rows.
    """
    real = layout.num_real
    positions = layout.offsets + prefix_len
    hidden = parts.embed(torch.cat([root, nodes]))[None]
    rotary = parts.rotary(hidden, positions[None])
    num_layers = len(parts.layers)
    inject_at, capture_at = pseudo_entry(source) if layout.num_pseudo else (None, None)
    exit_at = source.exit_layer + 1 if source.exit_layer is not None else None
    step = StepAttention(prefix_len, layout.real_bits, positions[:real], backend)
    step_rotary, step_positions = tuple(part[:, :real] for part in rotary), positions[:real]
    exit_hidden, captured, done = None, None, 0
    with source.adapted(parts.layers, real) if inject_at is not None else contextlib.nullcontext():
        for stop in sorted({num_layers} | {at for at in (inject_at, capture_at, exit_at) if at is not None}):
            hidden = parts.run_layers(hidden, done, stop, cache, step_rotary, step_positions, step)
            done = stop
            if stop == exit_at:
                exit_hidden = hidden[0, :real]
            if stop == capture_at:
                captured = hidden[0]
            if stop == inject_at:
                rows = hidden.new_empty(1, layout.num_rows, hidden.shape[-1])
                rows[:, :real] = hidden
                write_pseudo_rows(source, layout, hidden[0], captured, rows[0, real:])
                hidden, step_rotary, step_positions = rows, rotary, positions
                step = StepAttention(prefix_len, layout.full_bits, positions, backend)
    return parts.norm(hidden[0]), exit_hidden


class EagerStep:
    """One ``generate`` call's steps as eager PyTorch over a cache that grows with the text.

    The loop's step interface (also :class:`specdec.decode.graphs.StaticStep`): :meth:`prefill`,
    :meth:`forward`, :meth:`compact` (keep the accepted rows), :meth:`truncate`, :meth:`close`,
    :meth:`run_network` (a draft source's network pass).
    """

    name = "eager"

    def __init__(self, parts: ModelParts, backend: str, max_positions: int):
        self.parts, self.backend = parts, backend
        self.cache = TreeKVCache(len(parts.layers), max_positions)

    @classmethod
    def open(cls, parts: ModelParts, backend: str, max_positions: int, source: DraftSource | None = None) -> "EagerStep":
        return cls(parts, backend, max_positions)

    @staticmethod
    def networks(parts: ModelParts, source: DraftSource) -> nn.ModuleList:
        """Modules whose linears ``compile="auto"``'s packing may take over: the decoder layers and
        the draft source's own networks."""
        return nn.ModuleList([parts.layers, *source.networks()])

    def prefill(self, tokens: torch.Tensor, states: bool = False) -> torch.Tensor | None:
        return prefill(self.parts, self.cache, tokens, self.backend, states)

    def forward(self, source: DraftSource, layout: StepLayout, root: torch.Tensor, nodes: torch.Tensor, prefix_len: int):
        return forward_step(self.parts, source, layout, self.cache, root, nodes, prefix_len, self.backend)

    def compact(self, prefix_len: int, keep: torch.Tensor, in_place: bool = False) -> None:
        self.cache.compact(prefix_len, keep, in_place)

    def truncate(self, length: int) -> None:
        self.cache.truncate(length)

    def close(self) -> None:
        """The call has ended (its cache is dropped with it)."""

    @staticmethod
    def run_network(network: nn.Module, *inputs):
        """A draft source's network pass (:attr:`~specdec.drafts.DraftContext.run`): eagerly."""
        return network(*inputs)

    def __enter__(self) -> "EagerStep":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def early_exit(parts: ModelParts, source: DraftSource, exit_hidden):
    """``f(row [1] int64) -> [exit_depth, d]`` final-normed early-exit states of a real row, or None."""
    if exit_hidden is None:
        return None
    return lambda row: parts.norm(source.exit_states(exit_hidden.index_select(0, row)))


def speculative_generate(
    parts: ModelParts,
    source: DraftSource,
    planner,
    input_ids: torch.Tensor,
    stop: StopChecker,
    rule,
    backend: str,
    streamer=None,
    steps=EagerStep,
) -> tuple[torch.Tensor, DecodeStats]:
    """Decoding of ``input_ids [1, P]`` with drafts from ``source`` in trees chosen by ``planner``.

    ``steps.open(parts, backend, max_positions, source)`` gives the call's step (:class:`EagerStep`, or the
    compiled step of :class:`specdec.decode.graphs.CompiledStep`).
    ``planner`` is a :class:`~specdec.decode.planner.StaticPlanner` or :class:`~specdec.decode.planner.AutoPlanner`;
    ``rule`` a :class:`~specdec.decode.verification.GreedyRule` or :class:`~specdec.decode.verification.SamplingRule`.
    Returns the sequence ``[1, P + new]`` (int64, on ``input_ids.device``), cut exactly where plain
    decoding stops, and the statistics of the run.
    """
    start_time = time.perf_counter()
    prompt_len = input_ids.shape[1]
    with steps.open(parts, backend, stop.max_length + CACHE_SLACK, source) as step:  # closed on exit and on errors
        sequence = input_ids.new_empty(1, min(stop.max_length, prompt_len + MIN_CAPACITY) + planner.max_depth + 1)
        sequence[:, :prompt_len] = input_ids
        context = DraftContext(input_ids[0].tolist(), run=step.run_network)
        length = prompt_len
        root = input_ids[0, -1:]

        prompt_states = step.prefill(input_ids[0, :-1], source.reads_states)
        if prompt_states is not None:
            source.observe(context, prompt_states, context.tokens[1:])
        plan = planner.plan(source.propose(context, Candidates()))
        per_step = []  # (draft nodes, rows, accepted) of every step
        last = None  # (plan, start time, emitted) of the previous step
        while True:
            now = time.perf_counter()
            if last is not None:
                planner.observe_seconds(last[0], now - last[1], last[2])
            prefix_len = length - 1  # committed tokens in the cache: all but the root
            hidden, exit_hidden = step.forward(source, plan.layout, root, plan.nodes, prefix_len)
            early = early_exit(parts, source, exit_hidden)
            verdict = verify(rule, parts.lm_head, hidden, plan, planner.top_k, context.tokens, backend, early, source.vocabulary)
            accepted = len(verdict.tokens) - 1
            per_step.append((len(plan.tokens), plan.layout.num_rows, accepted))
            planner.observe(plan, verdict.path)
            if length + accepted + 1 > sequence.shape[1]:  # grows by doubling, like the KV cache
                sequence = torch.cat([sequence, torch.empty_like(sequence)], dim=1)
            sequence[0, length : length + accepted + 1] = verdict.emitted[: accepted + 1]
            finished = False
            for token in verdict.tokens:
                context.tokens.append(token)
                length += 1
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                if stop.stops(sequence[:, :length], token):
                    finished = True
                    break
            if finished:
                break
            step.compact(prefix_len, verdict.path_rows[: accepted + 1], in_place=verdict.path == list(range(accepted + 1)))
            root = verdict.emitted[accepted : accepted + 1]
            last = (plan, now, accepted + 1)
            if source.reads_states:
                source.observe(context, hidden.index_select(0, verdict.path_rows[: accepted + 1]), verdict.tokens)
            plan = planner.plan(source.propose(context, verdict.ranked))

    nodes, rows, accepted = zip(*per_step)
    stats = DecodeStats(
        steps=len(per_step),
        new_tokens=length - prompt_len,
        k=source.depth,
        nodes=nodes,
        rows=rows,
        accepted=accepted,
        seconds=time.perf_counter() - start_time,
    )
    return sequence[:, :length], stats
