"""The speculative decoding loop (batch size 1): prefill, one step, and the loop.

Each step runs the model's own decoder layers once over the root, the draft
nodes and (after the transfer layer) the source's pseudo rows, verifies the
tree greedily, keeps the accepted rows in the cache, and asks the source for the
next tree. See ``docs/firp.md`` of the project for the algorithm.
"""

import inspect
import time
from dataclasses import dataclass

import torch
from torch import nn
from transformers import LogitsProcessorList

from . import kernels
from .attention import STEP_KWARG, StepAttention
from .cache import MIN_CAPACITY, TreeKVCache
from .drafts import DraftContext, DraftSource
from .greedy_rules import StopChecker, active_processors, processed_argmax
from .stats import DecodeStats
from .tree import StepLayout, TreeShape


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

    def run_layers(self, hidden, start, stop, cache, rotary, positions, step: StepAttention) -> torch.Tensor:
        """Run decoder layers ``[start, stop)`` on ``hidden [1, S, d]``."""
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


def prefill(parts: ModelParts, cache: TreeKVCache, tokens: torch.Tensor, backend: str) -> None:
    """Cache the keys and values of ``tokens [P]`` (the prompt without its last token)."""
    if tokens.shape[0] == 0:
        return
    positions = torch.arange(tokens.shape[0], device=tokens.device)
    hidden = parts.embed(tokens)[None]
    rotary = parts.rotary(hidden, positions[None])
    step = StepAttention(0, None, positions, backend)
    parts.run_layers(hidden, 0, len(parts.layers), cache, rotary, positions, step)


def forward_step(
    parts: ModelParts,
    source: DraftSource,
    layout: StepLayout,
    cache: TreeKVCache,
    root: torch.Tensor,
    nodes: torch.Tensor,
    prefix_len: int,
    backend: str,
) -> torch.Tensor:
    """One pass over the root ``[1]``, draft ``nodes [M]`` and pseudo rows; returns normed hidden ``[S, d]``."""
    real = layout.num_real
    positions = layout.offsets + prefix_len
    hidden = parts.embed(torch.cat([root, nodes]))[None]
    rotary = parts.rotary(hidden, positions[None])
    num_layers = len(parts.layers)
    split = source.layer + 1 if layout.pseudo_per_row else num_layers
    real_step = StepAttention(prefix_len, layout.real_bits, positions[:real], backend)
    real_rotary = tuple(part[:, :real] for part in rotary)
    hidden = parts.run_layers(hidden, 0, split, cache, real_rotary, positions[:real], real_step)
    if layout.pseudo_per_row:
        rows = hidden.new_empty(1, layout.num_rows, hidden.shape[-1])
        rows[:, :real] = hidden
        source.inject(hidden[0], rows[0, real:])
        full_step = StepAttention(prefix_len, layout.full_bits, positions, backend)
        hidden = parts.run_layers(rows, split, num_layers, cache, rotary, positions, full_step)
    return parts.norm(hidden[0])


def greedy_ids(parts, hidden_real, layout, tokens, nodes, processors, backend) -> torch.Tensor:
    """Greedy token ``[R]`` of every real row, after the logits processors still active."""
    active = active_processors(processors, len(tokens))
    if not active:
        return kernels.lm_head_argmax(hidden_real, parts.lm_head, backend=backend)[0]
    node_tokens = nodes.tolist()
    contexts = [
        tokens + [node_tokens[row - 1] for row in layout.shape.ancestors(r)[1:]] for r in range(layout.num_real)
    ]
    return processed_argmax(hidden_real, parts.lm_head, LogitsProcessorList(active), contexts)


def speculative_generate(
    parts: ModelParts,
    source: DraftSource,
    shape: TreeShape,
    input_ids: torch.Tensor,
    stop: StopChecker,
    processors,
    backend: str,
    streamer=None,
) -> tuple[torch.Tensor, DecodeStats]:
    """Greedy decoding of ``input_ids [1, P]`` with drafts from ``source`` in trees of ``shape``.

    Returns the sequence ``[1, P + new]`` (int64, on ``input_ids.device``), cut
    exactly where plain greedy decoding stops, and the statistics of the run.
    """
    start_time = time.perf_counter()
    device = input_ids.device
    prompt_len = input_ids.shape[1]
    pseudo = source.k if source.layer is not None else 0
    first = StepLayout.build(TreeShape(()), pseudo, device)
    drafted = StepLayout.build(shape, pseudo, device)
    cache = TreeKVCache(len(parts.layers), stop.max_length + drafted.num_rows)
    sequence = input_ids.new_empty(1, min(stop.max_length, prompt_len + MIN_CAPACITY) + shape.depth + 1)
    sequence[:, :prompt_len] = input_ids
    tokens = input_ids[0].tolist()
    length = prompt_len

    prefill(parts, cache, input_ids[0, :-1], backend)
    layout, root, nodes = first, input_ids[0, -1:], input_ids.new_empty(0)
    steps, accepted = 0, []
    while True:
        prefix_len = length - 1  # committed tokens in the cache: all but the root
        hidden = forward_step(parts, source, layout, cache, root, nodes, prefix_len, backend)
        real = layout.num_real
        ids = greedy_ids(parts, hidden[:real], layout, tokens, nodes, processors, backend)
        path, count = kernels.accept_walk(ids, nodes, layout.parents, layout.shape.depth, backend=backend)
        emitted = ids[path.clamp(min=0)]
        host = torch.cat([count.view(1), emitted, path]).tolist()  # the step's one host round trip
        n_accepted, new_tokens = host[0], host[1 : host[0] + 2]
        kept_rows = host[len(emitted) + 1 : len(emitted) + n_accepted + 2]
        steps += 1
        if layout is drafted:
            accepted.append(n_accepted)
        if length + n_accepted + 1 > sequence.shape[1]:  # grows by doubling, like the KV cache
            sequence = torch.cat([sequence, torch.empty_like(sequence)], dim=1)
        sequence[0, length : length + n_accepted + 1] = emitted[: n_accepted + 1]
        finished = False
        for token in new_tokens:
            tokens.append(token)
            length += 1
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if stop.stops(sequence[:, :length], token):
                finished = True
                break
        if finished:
            break
        cache.compact(prefix_len, path[: n_accepted + 1], in_place=kept_rows == list(range(n_accepted + 1)))
        root = emitted[n_accepted : n_accepted + 1]
        last = path[n_accepted : n_accepted + 1]
        pseudo_hidden = hidden[real:].view(real, pseudo, -1).index_select(0, last)[0] if pseudo else None
        candidates = source.candidates(DraftContext(tokens, pseudo_hidden, parts.lm_head, shape.num_candidates))
        layout, nodes = drafted, drafted.node_tokens(candidates)

    stats = DecodeStats(
        steps=steps,
        new_tokens=length - prompt_len,
        tree_nodes=shape.num_nodes,
        k=source.k,
        accepted=tuple(accepted),
        seconds=time.perf_counter() - start_time,
    )
    return sequence[:, :length], stats
