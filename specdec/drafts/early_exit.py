"""SPEED-style early-layer guesses on a standard decoder: drafts from the real rows' early hidden states.

SPEED (arXiv 2310.12072) starts the next token's layers before the current token finishes, with the
next token guessed from the current token's early-layer hidden state. On a decoder whose layers do
not share weights, that pipelining reads no weight fewer times (see the README), so what we keep is
the guess: after layer ``e`` of every real row the step already computes, ``k`` trained maps (as
LayerSkip's and Kangaroo's early-exit heads) go straight to the final norm and LM head and rank the
tokens after the accepted row's bonus token. The draft costs no extra rows, only ``k`` LM-head rows
per step. It combines with a pseudo-row source (FIRP or mask slots), which then ranks the deeper
candidates, and with lookup: ``LookupDrafts(early.combined_with(FIRPDrafts(predictor)))``.
"""

import torch

from .firp.predictor import FuturePredictor
from .base import Candidates, DraftContext, DraftSource, frozen_copy


class ExitHead(FuturePredictor):
    """``k`` maps from the hidden state after layer ``layer`` straight to the final norm and LM head.

    A :class:`FuturePredictor` that skips the later layers (``refine = False``); map ``i`` ranks the
    token ``i + 1`` places after the one the row itself predicts. Identity-initialised: untrained,
    every offset guesses the row's own next token from layer ``layer``.
    """

    SOURCE = "exit"
    WHAT = "early-exit head"
    refine = False

    @classmethod
    def for_model(cls, model, layer: int | None = None, k: int = 1) -> "ExitHead":
        """Identity-initialised head after ``layer`` (default ``L // 2``)."""
        layer = model.config.num_hidden_layers // 2 if layer is None else layer
        return super().for_model(model, layer, k)


class EarlyExitDrafts(DraftSource):
    """Depth-1 (to ``k``) drafts from an early layer of the accepted row, at no extra rows per step.

    Args:
        head: the trainable :class:`ExitHead` (what :func:`specdec.train_predictor` trains).
        inner: an optional pseudo-row source (:class:`FIRPDrafts`, :class:`MaskDrafts`) whose ranking
            is merged with the early exit's: per depth, every token either ranks, by the larger
            draft probability, tagged with the source that ranked it higher.
    """

    kind = "exit"

    def __init__(self, head: ExitHead, inner: DraftSource | None = None):
        if not isinstance(head, ExitHead):
            raise TypeError(f"EarlyExitDrafts needs an ExitHead, got {type(head).__name__}")
        if inner is not None and inner.exit_layer is not None:
            raise ValueError("an EarlyExitDrafts cannot wrap another early-exit source")
        if inner is not None and inner.chain_depth:
            raise ValueError("wrap lookup around early exit, not inside it: LookupDrafts(EarlyExitDrafts(head, inner))")
        self.module, self.inner = head, inner
        self.exit_layer, self.exit_depth = head.layer, head.k
        if inner is not None:
            self.k, self.layer, self.capture_layer = inner.k, inner.layer, inner.capture_layer

    @classmethod
    def for_model(cls, model, layer: int | None = None, k: int = 1, inner: DraftSource | None = None) -> "EarlyExitDrafts":
        """An untrained early exit after ``layer`` (default ``L // 2``) ranking ``k`` depths."""
        return cls(ExitHead.for_model(model, layer, k), inner)

    def combined_with(self, inner: DraftSource) -> "EarlyExitDrafts":
        """This early exit (the same head) merged with ``inner``'s pseudo-row ranking."""
        return EarlyExitDrafts(self.module, inner)

    def save_pretrained(self, path) -> None:
        """Write the head (not ``inner``: save that on its own)."""
        self.module.save_pretrained(path)

    @classmethod
    def from_pretrained(cls, path, device=None, dtype=None, inner: DraftSource | None = None) -> "EarlyExitDrafts":
        return cls(ExitHead.from_pretrained(path, device, dtype), inner)

    def check_model(self, model) -> None:
        self.module.check_model(model)
        if self.inner is not None:
            self.inner.check_model(model)

    def prepared(self, model, backend: str) -> "EarlyExitDrafts":
        inner = None if self.inner is None else self.inner.prepared(model, backend)
        return EarlyExitDrafts(frozen_copy(self.module, model), inner)

    def inject(self, hidden, out) -> None:
        self.inner.inject(hidden, out)

    def adapted(self, layers, num_real: int):
        return super().adapted(layers, num_real) if self.inner is None else self.inner.adapted(layers, num_real)

    def exit_states(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.module(hidden)[0]

    def propose(self, context: DraftContext, ranked: Candidates) -> Candidates:
        exit_ranked, exit_logp = ranked.exit_ranked, ranked.exit_logp
        ranked.exit_ranked, ranked.exit_logp = [], []
        cands = self.inner.propose(context, ranked) if self.inner is not None else ranked
        merged = Candidates(chain=cands.chain, chain_ngram=cands.chain_ngram)
        for depth in range(max(len(cands.ranked), len(exit_ranked))):
            best: dict[int, tuple[float, str]] = {}
            sources = []
            if depth < len(cands.ranked):
                kinds = cands.kinds[depth] if cands.kinds else ["firp"] * len(cands.ranked[depth])
                sources.append(zip(cands.ranked[depth], cands.logp[depth], kinds))
            if depth < len(exit_ranked):
                sources.append(zip(exit_ranked[depth], exit_logp[depth], ["exit"] * len(exit_ranked[depth])))
            for entries in sources:
                for token, logp, kind in entries:
                    if token not in best or logp > best[token][0]:
                        best[token] = (logp, kind)
            order = sorted(best, key=lambda t: -best[t][0])
            merged.ranked.append(order)
            merged.logp.append([best[t][0] for t in order])
            merged.kinds.append([best[t][1] for t in order])
        return merged
