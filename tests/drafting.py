"""Test draft sources that control how much of each tree is accepted."""

import torch

from specdec import DraftContext, FIRPDrafts, ForcedDrafts, FuturePredictor


def perturbed_predictor(model, layer: int, k: int, seed: int = 0) -> FuturePredictor:
    """An identity-initialised predictor with small random perturbations (not a no-op map)."""
    predictor = FuturePredictor.for_model(model, layer=layer, k=k)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        predictor.weight.add_(0.05 * torch.randn(predictor.weight.shape, generator=gen).to(predictor.weight))
        predictor.bias.add_(0.05 * torch.randn(predictor.bias.shape, generator=gen).to(predictor.bias))
    return predictor


class ScrambledDrafts(ForcedDrafts):
    """Puts the true continuation at a random rank of each depth, or leaves it out.

    Exercises acceptance of non-zero ranks, partial paths and rejected branches.
    """

    def __init__(self, inner, sequence, vocab_size, seed: int = 0, miss_rate: float = 0.25):
        super().__init__(inner, sequence, vocab_size, correct=False)
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)
        self.miss_rate = miss_rate

    def prepared(self, model, backend):
        return ScrambledDrafts(self.inner.prepared(model, backend), self.sequence, self.vocab_size, self.seed, self.miss_rate)

    def candidates(self, context: DraftContext) -> torch.Tensor:
        cands = super().candidates(context).cpu()
        n = len(context.tokens)
        for depth in range(self.k):
            if n + depth < len(self.sequence) and torch.rand((), generator=self.gen) >= self.miss_rate:
                rank = int(torch.randint(0, cands.shape[1], (), generator=self.gen))
                cands[depth, rank] = self.sequence[n + depth]
        return cands.to(context.lm_head.device)


def forced(predictor, sequence, vocab_size, correct=True) -> ForcedDrafts:
    return ForcedDrafts(FIRPDrafts(predictor), sequence, vocab_size, correct=correct)
