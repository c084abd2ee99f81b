"""Draft sources: where the candidate tokens of the next step's tree come from.

A source may inject pseudo rows after a transfer layer (FIRP does; their final
hidden states are handed back to it) and proposes ``[k, K]`` candidates per step:
row ``j`` holds the rank-ordered candidates for depth ``j + 1``. The decoder
builds the tree from a static shape and verifies it; sources never affect the
output, only how much of it each step accepts.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import kernels
from .predictor import FuturePredictor


@dataclass(frozen=True)
class DraftContext:
    """What a source sees when proposing the next tree.

    Attributes:
        tokens: every token so far (prompt and output, the next root last), on the host.
        pseudo_hidden: ``[k, d]`` final-normed hidden states of the pseudo rows of the
            last accepted row, in the model dtype, or None when the source injects none.
        lm_head: ``[V, d]`` the model's LM head weight.
        num_candidates: ``K``, candidates needed per depth.
    """

    tokens: list[int]
    pseudo_hidden: torch.Tensor | None
    lm_head: torch.Tensor
    num_candidates: int


class DraftSource:
    """Interface of a draft source (see the module docstring)."""

    k: int
    layer: int | None = None

    def check_model(self, model) -> None:
        """Raise ``ValueError`` if this source cannot serve ``model``."""

    def prepared(self, model, backend: str) -> "DraftSource":
        """A copy (or self) ready to run with ``model``'s device and dtype on ``backend``."""
        return self

    def inject(self, hidden: torch.Tensor, out: torch.Tensor) -> None:
        """Write ``[R * k, d]`` pseudo rows into ``out`` from real rows ``hidden [R, d]``."""
        raise NotImplementedError

    def candidates(self, context: DraftContext) -> torch.Tensor:
        """int64 ``[k, K]`` candidates on the model's device."""
        raise NotImplementedError


class FIRPDrafts(DraftSource):
    """FIRP: a :class:`FuturePredictor` at the transfer layer; the LM head decodes its pseudo rows."""

    def __init__(self, predictor: FuturePredictor, backend: str = "auto"):
        self.predictor = predictor
        self.backend = backend
        self.k = predictor.k
        self.layer = predictor.layer

    def check_model(self, model) -> None:
        self.predictor.check_model(model)

    def prepared(self, model, backend: str) -> "FIRPDrafts":
        param = model.get_input_embeddings().weight
        predictor = self.predictor
        if predictor.weight.device != param.device or predictor.weight.dtype != param.dtype:
            predictor = FuturePredictor(predictor.hidden_size, predictor.k, predictor.layer, predictor.fingerprint)
            predictor.load_state_dict(self.predictor.state_dict())
            predictor = predictor.to(device=param.device, dtype=param.dtype)
        return FIRPDrafts(predictor.eval().requires_grad_(False), backend)

    def inject(self, hidden: torch.Tensor, out: torch.Tensor) -> None:
        kernels.project_future(hidden, self.predictor.weight, self.predictor.bias, out=out, backend=self.backend)

    def candidates(self, context: DraftContext) -> torch.Tensor:
        logits = F.linear(context.pseudo_hidden, context.lm_head)
        return logits.topk(context.num_candidates, dim=-1).indices


def lookup_continuation(tokens: list[int], max_ngram: int, length: int, min_ngram: int = 1) -> list[int]:
    """Prompt-lookup guess: what followed the latest earlier occurrence of the text's last n-gram.

    Tries ``n = max_ngram`` down to ``min_ngram``; returns up to ``length`` tokens, or ``[]`` without a match.
    """
    for n in range(min(max_ngram, len(tokens) - 1), min_ngram - 1, -1):
        suffix = tokens[-n:]
        for start in range(len(tokens) - n - 1, -1, -1):
            if tokens[start : start + n] == suffix:
                return tokens[start + n : start + n + length]
    return []


class LookupDrafts(DraftSource):
    """Merges n-gram lookup (as in prompt lookup decoding) into another source's candidates.

    Each step, :func:`lookup_continuation` of the text so far becomes the rank-0
    candidate at depths 1, 2, ... (as far as it reaches), and the inner source's
    ranking moves one place down behind it (without repeating it). With no match
    the inner candidates are used as they are. Pass a :class:`FuturePredictor` to
    merge with FIRP: ``specdec.patch(model, LookupDrafts(predictor))``.
    """

    def __init__(self, inner: "DraftSource | FuturePredictor", max_ngram: int = 3, min_ngram: int = 1):
        if not 1 <= min_ngram <= max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram, got min_ngram={min_ngram}, max_ngram={max_ngram}")
        self.inner = FIRPDrafts(inner) if isinstance(inner, FuturePredictor) else inner
        self.max_ngram, self.min_ngram = max_ngram, min_ngram
        self.k = self.inner.k
        self.layer = self.inner.layer

    def check_model(self, model) -> None:
        self.inner.check_model(model)

    def prepared(self, model, backend: str) -> "LookupDrafts":
        return LookupDrafts(self.inner.prepared(model, backend), self.max_ngram, self.min_ngram)

    def inject(self, hidden: torch.Tensor, out: torch.Tensor) -> None:
        self.inner.inject(hidden, out)

    def candidates(self, context: DraftContext) -> torch.Tensor:
        cands = self.inner.candidates(context)
        guess = lookup_continuation(context.tokens, self.max_ngram, self.k, self.min_ngram)
        if not guess:
            return cands
        # On the device without a host sync: row j becomes [guess[j], its candidates minus
        # guess[j] (or minus its last one when guess[j] is not among them)].
        depths, width = len(guess), cands.shape[1]
        rows = cands[:depths]
        tokens = torch.tensor(guess, dtype=cands.dtype).to(cands.device, non_blocking=True)
        extended = torch.cat([tokens[:, None], rows], dim=1)  # [g, K + 1]
        ranks = torch.arange(width, device=cands.device)
        dropped = torch.where(rows == tokens[:, None], ranks, width - 1).amin(dim=1) + 1
        order = torch.arange(width + 1, device=cands.device).repeat(depths, 1).scatter_(1, dropped[:, None], width + 1)
        merged = cands.clone()
        merged[:depths] = extended.gather(1, order.argsort(dim=1)[:, :width])
        return merged


class ForcedDrafts(DraftSource):
    """Test and benchmark source: proposes a known continuation (or guaranteed misses).

    Wraps another source, whose pseudo rows still run, so a step costs the same.
    With ``correct=True`` the rank-0 candidate at depth ``j`` is ``sequence[n + j - 1]``
    (``n`` tokens so far, root included), so every draft is accepted while the
    output follows ``sequence``; other ranks, and every rank with ``correct=False``,
    hold tokens that differ from it.
    """

    def __init__(self, inner: DraftSource, sequence: list[int], vocab_size: int, correct: bool = True):
        self.inner = inner
        self.sequence = list(sequence)
        self.vocab_size = vocab_size
        self.correct = correct
        self.k = inner.k
        self.layer = inner.layer

    def check_model(self, model) -> None:
        self.inner.check_model(model)

    def prepared(self, model, backend: str) -> "ForcedDrafts":
        return ForcedDrafts(self.inner.prepared(model, backend), self.sequence, self.vocab_size, self.correct)

    def inject(self, hidden: torch.Tensor, out: torch.Tensor) -> None:
        self.inner.inject(hidden, out)

    def candidates(self, context: DraftContext) -> torch.Tensor:
        n = len(context.tokens)
        truth = torch.tensor(
            [self.sequence[n + j] if n + j < len(self.sequence) else 0 for j in range(self.k)], dtype=torch.int64
        )
        ranks = torch.arange(context.num_candidates, dtype=torch.int64)
        cands = (truth[:, None] + 1 + ranks[None, :]) % self.vocab_size
        if self.correct:
            cands[:, 0] = truth
        return cands.to(context.lm_head.device)
