"""A test and benchmark source that proposes a known continuation (or guaranteed misses)."""

import math

from .base import Candidates, DraftContext, DraftSource, WrappingSource


class ForcedDrafts(WrappingSource):
    """Proposes a known continuation ``sequence`` as the drafts.

    Wraps another source, whose pseudo rows and early exit still run, so a step costs the same. With
    ``correct=True`` the rank-0 candidate at depth ``j`` is ``sequence[n + j - 1]`` (``n`` tokens
    so far, root included) with log-probability 0 (certain), so every draft is accepted while the
    output follows ``sequence``; the other ranks, and every rank with ``correct=False``, hold tokens
    that differ from it, at log-probability ``log(1/2)``. ``chain_depth > 0`` also proposes that
    many tokens of ``sequence`` (or of the wrong tokens) as a chain, as n-gram lookup would.
    Rankings are proposed only where, and as deep as, the inner source produced one.
    """

    def __init__(self, inner: DraftSource, sequence: list[int], vocab_size: int, correct: bool = True, chain_depth: int = 0):
        super().__init__(inner)
        self.sequence = list(sequence)
        self.vocab_size = vocab_size
        self.correct = correct
        self.chain_depth = chain_depth

    def prepared(self, model, backend: str) -> "ForcedDrafts":
        return type(self)(self.inner.prepared(model, backend), self.sequence, self.vocab_size, self.correct, self.chain_depth)

    def truth(self, n: int, depth: int) -> int:
        """The token plain decoding emits at depth ``depth`` (1-based) after ``n`` tokens (0 past the end)."""
        return self.sequence[n + depth - 1] if n + depth - 1 < len(self.sequence) else 0

    def wrong(self, n: int, depth: int, rank: int) -> int:
        """A token that differs from :meth:`truth` (distinct per rank)."""
        return (self.truth(n, depth) + 1 + rank) % self.vocab_size

    def propose(self, context: DraftContext, ranked: Candidates) -> Candidates:
        n = len(context.tokens)
        cands = Candidates()
        ranked = self.inner.propose(context, ranked)
        if ranked.ranked:
            width = len(ranked.ranked[0])
            for depth in range(1, len(ranked.ranked) + 1):
                row = [self.wrong(n, depth, rank) for rank in range(width)]
                if self.correct:
                    row[0] = self.truth(n, depth)
                cands.ranked.append(row)
                cands.logp.append([0.0 if self.correct and r == 0 else math.log(0.5) for r in range(width)])
        if self.chain_depth:
            cands.chain = [self.truth(n, d) if self.correct else self.wrong(n, d, 0) for d in range(1, self.chain_depth + 1)]
            cands.chain_ngram = 3
        return cands
