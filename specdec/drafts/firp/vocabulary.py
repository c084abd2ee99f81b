"""A draft vocabulary: the tokens pseudo rows may be ranked over (FR-Spec, arXiv 2502.14856).

Ranking a pseudo row over the ``N`` most frequent tokens of the distillation data reads ``N`` rows
of the LM head instead of ``V`` (:func:`specdec.kernels.lm_head_topk` with ``token_ids``); real
rows always keep the whole vocabulary, so the output is unchanged whatever the subset: a draft
outside it just cannot be proposed. ``python -m bench.training.draft_vocab`` measures the coverage lost
against the LM-head time saved.
"""

import torch


class DraftVocabulary:
    """Ascending int64 token ids ``[N]`` of a vocabulary of ``vocab_size`` tokens, checked once."""

    def __init__(self, ids: torch.Tensor, vocab_size: int):
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 1 or ids.numel() == 0:
            raise ValueError(f"DraftVocabulary: ids must be a non-empty 1-D int64 tensor, got {getattr(ids, 'shape', type(ids))}")
        if ids.numel() > 1 and not bool((ids[1:] > ids[:-1]).all()):
            raise ValueError("DraftVocabulary: ids must be strictly ascending (the tie rule ranks equal logits by id)")
        if int(ids[0]) < 0 or int(ids[-1]) >= vocab_size:
            raise ValueError(f"DraftVocabulary: ids must lie in [0, {vocab_size}), got {int(ids[0])}..{int(ids[-1])}")
        self.ids, self.vocab_size = ids, vocab_size
        self._rows = None  # (LM head identity, its rows ``ids``)

    @classmethod
    def most_frequent(cls, counts: torch.Tensor, size: int) -> "DraftVocabulary":
        """The ``size`` tokens with the highest ``counts [V]`` (equal counts: lower id first)."""
        if not 1 <= size <= counts.numel():
            raise ValueError(f"DraftVocabulary: size must be in [1, {counts.numel()}], got {size}")
        order = counts.argsort(descending=True, stable=True)[:size]
        return cls(order.sort().values.to(torch.int64), counts.numel())

    def __len__(self) -> int:
        return self.ids.numel()

    def to(self, device) -> "DraftVocabulary":
        return DraftVocabulary(self.ids.to(device), self.vocab_size)

    def mask(self, device=None) -> torch.Tensor:
        """Bool ``[vocab_size]``: True at the vocabulary's tokens."""
        inside = torch.zeros(self.vocab_size, dtype=torch.bool, device=device)
        inside[self.ids.to(device)] = True
        return inside

    def coverage(self, tokens: torch.Tensor) -> float:
        """Fraction of ``tokens`` (int64, any shape) inside the vocabulary."""
        return float(self.mask(tokens.device)[tokens].float().mean())

    def rows(self, lm_head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight [N, d], ids [N])``: the LM head's rows of this vocabulary (gathered once per head
        and kept while the head's storage, version, dtype and device stay the same)."""
        if lm_head.shape[0] != self.vocab_size:
            raise ValueError(f"DraftVocabulary: built for {self.vocab_size} tokens, the LM head has {lm_head.shape[0]}")
        key = (lm_head.data_ptr(), lm_head._version, lm_head.dtype, lm_head.device)
        if self._rows is None or self._rows[0] != key:
            ids = self.ids.to(lm_head.device)
            self._rows = (key, lm_head.detach().index_select(0, ids).contiguous(), ids)
        return self._rows[1], self._rows[2]
