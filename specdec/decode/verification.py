"""Verification of one step: the target token of every real row, the walk, and the one host read.

Both rules walk the tree the same way: start at the root; while a child of the current row carries
the current row's *target* token, move to it; emit the targets of the rows walked. They differ in
the target:

* :class:`GreedyRule`: the argmax of the row's (processed) logits. Every walked row saw exactly the
  tokens plain greedy decoding would have fed it, so the output is plain greedy's.
* :class:`SamplingRule`: a draw from the row's processed distribution (temperature, top-k, top-p,
  min-p and every other processor ``generate`` built, applied in its order with the row's own
  context). Why the output is distributed exactly as plain sampling: the first emitted token is the
  root's draw, distributed as plain sampling's next token. If a child carries that token, the walk
  moves to it, and that child's row has exactly the context plain sampling would have after
  emitting it, so the child's own draw is distributed as plain sampling's following token, and so
  on; the step ends with the draw of the last row walked. Each row's draw is fresh randomness used
  once, and whether the walk continues depends only on draws already emitted, so every emitted
  token is drawn from the right conditional distribution given all earlier ones. In rejection
  sampling terms, our drafts are point masses: a child is accepted with the target probability of
  its token, and after a rejection the residual distribution is the target's own distribution over
  the remaining tokens, which is what the draw already is. Drafts change how many tokens a step
  emits, never their distribution.

One pass over the LM head serves a greedy step (:func:`specdec.kernels.lm_head_topk`: column 0 of
the real rows is their target, the pseudo rows' top-K with log-probabilities is the next ranking).
A sampling step draws the real rows' targets in a second pass. With a draft vocabulary
(:class:`~specdec.drafts.firp.vocabulary.DraftVocabulary`, on CPU) the pseudo rows are ranked in a pass of
their own over its rows of the head: on a CPU the LM head's cost grows with rows x vocabulary, so
ranking the pseudo rows over the 4096 most frequent tokens saved 4-44% of the head's time at
1-16 real rows (``python -m bench.training.draft_vocab``); on a GPU one pass reads the weight once for all
rows and a second pass would only add bytes and a launch, so there the vocabulary is not used.
The walk
(:func:`specdec.kernels.accept_walk`), the gather of the end row's ranking and the packing of what
the host needs stay on the device, so a step reads the device once (one ``.tolist()``).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LogitsProcessorList
from transformers import generation as hf_generation

from .. import kernels
from ..drafts import Candidates
from .rules import active_processors, processed_argmax
from .planner import Plan

# Warpers the fused sampling op applies itself, by class name -> its keyword and the warper's attribute.
FUSED_WARPERS = {
    "TemperatureLogitsWarper": ("temperature", "temperature"),
    "TopKLogitsWarper": ("top_k", "top_k"),
    "TopPLogitsWarper": ("top_p", "top_p"),
    "MinPLogitsWarper": ("min_p", "min_p"),
}


@dataclass
class Verdict:
    """What one verified step produced.

    Attributes:
        tokens: host, the emitted tokens: the accepted drafts, then the bonus token.
        path: host, the rows walked (root first), one per emitted token.
        emitted: int64 ``[D + 1]`` on the device, the emitted tokens padded (``tokens`` is its prefix).
        path_rows: int64 ``[D + 1]`` on the device, ``path`` padded with -1.
        ranked: the ranking of the end row's pseudo rows (empty when it has none) and, with an
            early exit, the end row's early-exit ranking (``exit_ranked``/``exit_logp``).
    """

    tokens: list[int]
    path: list[int]
    emitted: torch.Tensor
    path_rows: torch.Tensor
    ranked: Candidates


def row_contexts(plan: Plan, tokens: list[int]) -> list[list[int]]:
    """The token context of every real row: ``tokens`` (the root last), then the row's ancestors' drafts."""
    layout = plan.layout
    return [tokens + [plan.tokens[row - 1] for row in layout.ancestors(r)[1:]] for r in range(layout.num_real)]


class GreedyRule:
    """Targets are argmaxes (see the module docstring)."""

    regime = ("greedy",)

    def __init__(self, processors):
        self.processors = processors

    def targets(self, lm_head, hidden, plan: Plan, top_k: int, tokens: list[int], backend: str, vocabulary=None):
        """``(targets [R] int64, (ids, logits, lse) of the pseudo rows or None)``; ``vocabulary``: a
        :class:`~specdec.drafts.firp.vocabulary.DraftVocabulary` to rank the pseudo rows over, or None."""
        layout = plan.layout
        real = layout.num_real
        active = active_processors(self.processors, len(tokens))
        ranked = _ranked(lm_head, hidden[real:], top_k, backend, vocabulary) if layout.num_pseudo and (active or vocabulary is not None) else None
        if active:
            return processed_argmax(hidden[:real], lm_head, LogitsProcessorList(active), row_contexts(plan, tokens)), ranked
        if ranked is not None:
            return kernels.lm_head_argmax(hidden[:real], lm_head, backend=backend)[0], ranked
        if layout.num_pseudo:
            ids, logits, lse = kernels.lm_head_topk(hidden, lm_head, top_k, backend=backend)
            return ids[:real, 0], (ids[real:], logits[real:], lse[real:])
        return kernels.lm_head_argmax(hidden, lm_head, backend=backend)[0], None


class SamplingRule:
    """Targets are draws from the processed distributions (see the module docstring).

    Randomness is counter-based: one seed per ``generate`` call, drawn from torch's global generator
    (so ``torch.manual_seed(s)`` makes a call reproducible), and the draw for the token at position
    ``p`` is a function of that seed and ``p`` alone. The output is therefore the same whatever
    trees the steps verify (static or ``"auto"``, whatever was accepted). It is not the token
    sequence plain sampling draws for the same seed: the random numbers are used differently.
    """

    def __init__(self, processors):
        self.processors = processors
        self.seed = int(torch.randint(2**62, ()))
        # Acceptance under sampling depends on the warpers: tree="auto" keeps statistics per setting.
        self.regime = ("sample", *(f"{type(p).__name__}:{vars(p)}" for p in processors if type(p).__name__.endswith("Warper")))

    def targets(self, lm_head, hidden, plan: Plan, top_k: int, tokens: list[int], backend: str, vocabulary=None):
        layout = plan.layout
        real = layout.num_real
        positions = layout.offsets[:real] + len(tokens) - 1  # the root is the last token
        active = active_processors(self.processors, len(tokens))
        fused = _fused_warpers(active)
        if fused is not None:
            draws = kernels.lm_head_sample(hidden[:real], lm_head, self.seed, positions, **fused, backend=backend)
        else:
            contexts = row_contexts(plan, tokens)
            draws = processed_sample(hidden[:real], lm_head, LogitsProcessorList(active), contexts, self.seed, positions)
        return draws, _ranked(lm_head, hidden[real:], top_k, backend, vocabulary) if layout.num_pseudo else None


def processed_sample(hidden, lm_head, processors, contexts: list[list[int]], seed: int, positions) -> torch.Tensor:
    """One draw ``[R]`` per row of ``hidden [R, d]`` from ``softmax(processors(row context, logits))``,
    row ``r``'s from the counter-based stream at ``seed + positions[r]``."""
    logits = F.linear(hidden, lm_head).float()
    scores = torch.cat([
        processors(torch.tensor([context], dtype=torch.int64, device=logits.device), logits[row : row + 1])
        for row, context in enumerate(contexts)
    ])
    return kernels.sample_scores(scores, seed, positions)


def _fused_warpers(processors) -> dict | None:
    """Keyword arguments of :func:`specdec.kernels.lm_head_sample` when ``processors`` are only the
    warpers it applies, in transformers' order; None when a row's context or another processor matters."""
    fused = {}
    order = list(FUSED_WARPERS)
    last = -1
    for proc in processors:
        name = type(proc).__name__
        if name not in FUSED_WARPERS or order.index(name) <= last or getattr(proc, "min_tokens_to_keep", 1) != 1:
            return None
        last = order.index(name)
        keyword, attribute = FUSED_WARPERS[name]
        fused[keyword] = getattr(proc, attribute)
    return fused


def _ranked(lm_head, pseudo_hidden, top_k: int, backend: str, vocabulary=None):
    if vocabulary is None:
        return kernels.lm_head_topk(pseudo_hidden, lm_head, top_k, backend=backend)
    weight, ids = vocabulary.rows(lm_head)
    return kernels.lm_head_topk(pseudo_hidden, weight, min(top_k, ids.numel()), token_ids=ids, backend=backend)


def verify(rule, lm_head, hidden, plan: Plan, top_k: int, tokens: list[int], backend: str, early=None, vocabulary=None) -> Verdict:
    """Verify ``plan`` by ``rule`` from the step's final-normed hidden states ``hidden [S, d]`` (model dtype).

    Args:
        rule: :class:`GreedyRule` or :class:`SamplingRule`.
        lm_head: ``[V, d]`` the LM head weight.
        top_k: candidates per pseudo row to rank.
        tokens: the tokens so far (the root last), the context of the processors.
        early: for a source with an early exit, ``f(end row [1]) -> [E, d]`` normed early-exit
            states of the accepted row (see :func:`specdec.decode.loop.early_exit`); their top-K
            become ``ranked.exit_ranked``/``exit_logp``, read in the same host round trip.
        vocabulary: the source's draft vocabulary (used on CPU only, see the module docstring), or None.
    """
    layout = plan.layout
    k = layout.pseudo_per_row
    subset = vocabulary if vocabulary is not None and lm_head.device.type == "cpu" else None
    targets, ranked_rows = rule.targets(lm_head, hidden, plan, top_k, tokens, backend, subset)
    path, count = kernels.accept_walk(targets, plan.nodes, layout.node_parents, layout.depth, backend=backend)
    emitted = targets[path.clamp(min=0)]
    read = [count.view(1), emitted, path]
    end = path.gather(0, count.view(1))  # the row the walk ended on
    exit_width = 0
    if early is not None:
        exit_ids, exit_logits, exit_lse = kernels.lm_head_topk(early(end), lm_head, top_k, backend=backend)
        exit_width = exit_ids.numel()
        read += [exit_ids.view(-1), (exit_logits - exit_lse[:, None]).view(-1)]
    if ranked_rows is not None:
        ids, logits, lse = ranked_rows
        slot = layout.pseudo_slot.index_select(0, end)
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
    start = 1 + 2 * span
    if exit_width:
        ids_flat, logp_flat = host[start : start + exit_width], host[start + exit_width : start + 2 * exit_width]
        verdict.ranked.exit_ranked = [[int(t) for t in ids_flat[j : j + top_k]] for j in range(0, exit_width, top_k)]
        verdict.ranked.exit_logp = [logp_flat[j : j + top_k] for j in range(0, exit_width, top_k)]
        start += 2 * exit_width
    if ranked_rows is not None and host[start] >= 0:
        start, width = start + 1, ranked_rows[0].shape[1]  # top_k, or a smaller draft vocabulary
        ids_flat, logp_flat = host[start : start + k * width], host[start + k * width : start + 2 * k * width]
        verdict.ranked.ranked = [[int(t) for t in ids_flat[j * width : (j + 1) * width]] for j in range(k)]
        verdict.ranked.logp = [logp_flat[j * width : (j + 1) * width] for j in range(k)]
    return verdict


def rule_for(generation_config, processors) -> "GreedyRule | SamplingRule":
    """The verification rule of a ``generate`` request (greedy or sampling)."""
    if generation_config.get_generation_mode() == hf_generation.GenerationMode.SAMPLE:
        return SamplingRule(processors)
    return GreedyRule(processors)
