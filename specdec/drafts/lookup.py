"""N-gram lookup (prompt lookup decoding) as a draft source merged with another one."""

from .firp.predictor import FuturePredictor
from .base import Candidates, DraftContext, DraftSource, WrappingSource
from .firp.source import FIRPDrafts


class NgramIndex:
    """The latest earlier occurrence of every n-gram (``n <= max_ngram``) of a growing text.

    ``lookup`` finds what followed the latest earlier occurrence of the text's last n-gram, trying
    ``n = max_ngram`` down to ``min_ngram``. The index is updated incrementally (O(max_ngram) per
    new token), so a lookup costs the same at any text length.
    """

    def __init__(self, max_ngram: int, min_ngram: int = 1):
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.starts: dict[tuple[int, ...], int] = {}  # n-gram -> index of the token that followed it
        self.indexed = 0  # tokens[:indexed] have their n-grams ending before indexed - 1 recorded

    def extend(self, tokens: list[int]) -> None:
        """Record the n-grams of ``tokens`` (a text that only ever grows) that now have a follower."""
        for end in range(max(self.indexed, 1), len(tokens)):  # the n-grams ending at end - 1, followed by tokens[end]
            for n in range(1, min(self.max_ngram, end) + 1):
                self.starts[tuple(tokens[end - n : end])] = end
        self.indexed = max(self.indexed, len(tokens))

    def lookup(self, tokens: list[int], length: int) -> tuple[list[int], int]:
        """``(continuation, n)``: up to ``length`` tokens and the n-gram length that matched, or ``([], 0)``."""
        self.extend(tokens)
        for n in range(min(self.max_ngram, len(tokens) - 1), self.min_ngram - 1, -1):
            start = self.starts.get(tuple(tokens[-n:]))
            if start is not None:
                return tokens[start : start + length], n
        return [], 0


class LookupDrafts(WrappingSource):
    """Adds an n-gram lookup chain to another source's candidates, or drafts from the chain alone.

    Each step, :class:`NgramIndex` finds what followed the latest earlier occurrence of the text's
    last ``max_ngram..min_ngram`` tokens; up to ``chain_depth`` of those tokens become the
    :attr:`Candidates.chain`, which ``tree="auto"`` may follow deeper than ``k`` and static trees
    merge as the rank-0 candidate of each depth they reach. Pass a :class:`FuturePredictor` to merge
    with FIRP: ``specdec.patch(model, LookupDrafts(predictor))`` (``patch`` does this by default).
    Without ``inner`` (``LookupDrafts()``, what ``specdec.patch(model)`` uses) the chain is the only
    draft: no training, no pseudo rows, a step runs the root and the chain's nodes only; it needs
    ``tree="auto"`` (static trees draft from ranked candidates).
    """

    def __init__(self, inner: "DraftSource | FuturePredictor | None" = None, max_ngram: int = 3, min_ngram: int = 1, chain_depth: int = 10):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got min_ngram={min_ngram}, max_ngram={max_ngram}")
        if isinstance(chain_depth, bool) or not isinstance(chain_depth, int) or chain_depth < 1:
            raise ValueError(f"chain_depth must be an int >= 1, got {chain_depth!r}")
        if inner is None:
            inner = DraftSource()  # no pseudo rows, no ranking
        super().__init__(FIRPDrafts(inner) if isinstance(inner, FuturePredictor) else inner)
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.chain_depth = chain_depth

    def prepared(self, model, backend: str) -> "LookupDrafts":
        return LookupDrafts(self.inner.prepared(model, backend), self.max_ngram, self.min_ngram, self.chain_depth)

    def propose(self, context: DraftContext, ranked: Candidates) -> Candidates:
        cands = self.inner.propose(context, ranked)
        index = context.scratch.get(self)
        if index is None:
            index = context.scratch[self] = NgramIndex(self.max_ngram, self.min_ngram)
        cands.chain, cands.chain_ngram = index.lookup(context.tokens, self.chain_depth)
        return cands
