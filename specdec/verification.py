"""Greedy verification of one step: the LM-head pass, the accept walk and the step's one host read.

One pass over the LM head serves the whole step (:func:`specdec.kernels.lm_head_topk`): column 0
of the real rows is their greedy token, and the pseudo rows' top-K with log-probabilities is the
ranking the next step drafts from. The walk (:func:`specdec.kernels.accept_walk`), the gather of
the end row's ranking and the packing of everything the host needs stay on the device, so a step
reads the device once (one ``.tolist()``), whatever the tree.

Greedy rule: start at the root; while a child of the current row carries the current row's greedy
token, move to it. The emitted tokens are the greedy tokens of the rows walked: exactly what plain
greedy decoding produces, since every walked row saw exactly the tokens plain decoding would have
fed it.
"""

from dataclasses import dataclass

import torch
from transformers import LogitsProcessorList

from . import kernels
from .drafts import Candidates
from .greedy_rules import active_processors, processed_argmax
from .planner import Plan


@dataclass
class Verdict:
    """What one verified step produced.

    Attributes:
        tokens: host, the emitted tokens: the accepted drafts, then the bonus token.
        path: host, the rows walked (root first), one per emitted token.
        emitted: int64 ``[D + 1]`` on the device, the emitted tokens padded (``tokens`` is its prefix).
        path_rows: int64 ``[D + 1]`` on the device, ``path`` padded with -1.
        ranked: the ranking of the end row's pseudo rows (empty when it has none).
    """

    tokens: list[int]
    path: list[int]
    emitted: torch.Tensor
    path_rows: torch.Tensor
    ranked: Candidates


def verify_greedy(lm_head, hidden, plan: Plan, top_k: int, processors, tokens: list[int], backend: str) -> Verdict:
    """Verify ``plan`` from the step's final-normed hidden states ``hidden [S, d]`` (model dtype).

    Args:
        lm_head: ``[V, d]`` the LM head weight.
        top_k: candidates per pseudo row to rank.
        processors: ``generate``'s logits processors (applied per real row in its own context).
        tokens: the tokens so far (the root last), for the processors.
    """
    layout = plan.layout
    real, k = layout.num_real, layout.pseudo_per_row
    active = active_processors(processors, len(tokens))
    ranked_rows = None
    if active:
        contexts = [tokens + [plan.tokens[row - 1] for row in layout.ancestors(r)[1:]] for r in range(real)]
        greedy = processed_argmax(hidden[:real], lm_head, LogitsProcessorList(active), contexts)
        if layout.num_pseudo:
            ranked_rows = kernels.lm_head_topk(hidden[real:], lm_head, top_k, backend=backend)
    elif layout.num_pseudo:
        ids, logits, lse = kernels.lm_head_topk(hidden, lm_head, top_k, backend=backend)
        greedy = ids[:real, 0]
        ranked_rows = ids[real:], logits[real:], lse[real:]
    else:
        greedy = kernels.lm_head_argmax(hidden, lm_head, backend=backend)[0]
    path, count = kernels.accept_walk(greedy, plan.nodes, layout.node_parents, layout.depth, backend=backend)
    emitted = greedy[path.clamp(min=0)]
    read = [count.view(1), emitted, path]
    if ranked_rows is not None:
        ids, logits, lse = ranked_rows
        slot = layout.pseudo_slot.index_select(0, path.gather(0, count.view(1)))
        rows = slot.clamp(min=0) * k + torch.arange(k, device=slot.device)
        read += [slot, ids.index_select(0, rows).view(-1), (logits - lse[:, None]).index_select(0, rows).view(-1)]
    host = torch.cat([part.double() for part in read]).tolist()  # the step's one host round trip

    accepted, span = int(host[0]), layout.depth + 1
    verdict = Verdict(
        tokens=[int(t) for t in host[1 : accepted + 2]],
        path=[int(r) for r in host[1 + span : accepted + 2 + span]],
        emitted=emitted,
        path_rows=path,
        ranked=Candidates(),
    )
    if ranked_rows is not None and host[1 + 2 * span] >= 0:
        start, width = 2 + 2 * span, top_k
        ids_flat, logp_flat = host[start : start + k * width], host[start + k * width : start + 2 * k * width]
        verdict.ranked.ranked = [[int(t) for t in ids_flat[j * width : (j + 1) * width]] for j in range(k)]
        verdict.ranked.logp = [logp_flat[j * width : (j + 1) * width] for j in range(k)]
    return verdict
