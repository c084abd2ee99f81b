"""Test draft sources that control how much of each tree is accepted."""

import torch

from specdec import Candidates, DraftContext, EarlyExitDrafts, FIRPDrafts, ForcedDrafts, FuturePredictor, MaskDrafts


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

    def __init__(self, inner, sequence, vocab_size, seed: int = 0, miss_rate: float = 0.25, chain_depth: int = 0):
        super().__init__(inner, sequence, vocab_size, correct=False, chain_depth=chain_depth)
        self.seed = seed
        self.gen = torch.Generator().manual_seed(seed)
        self.miss_rate = miss_rate

    def prepared(self, model, backend):
        inner = self.inner.prepared(model, backend)
        return ScrambledDrafts(inner, self.sequence, self.vocab_size, self.seed, self.miss_rate, self.chain_depth)

    def propose(self, context: DraftContext, ranked: Candidates) -> Candidates:
        cands = super().propose(context, ranked)
        n = len(context.tokens)
        for depth, row in enumerate(cands.ranked, start=1):
            if torch.rand((), generator=self.gen) >= self.miss_rate:
                rank = int(torch.randint(0, len(row), (), generator=self.gen))
                row[rank] = self.truth(n, depth)
                cands.logp[depth - 1][rank] = -0.1
        return cands


def forced(predictor, sequence, vocab_size, correct=True) -> ForcedDrafts:
    return ForcedDrafts(FIRPDrafts(predictor), sequence, vocab_size, correct=correct)


def perturbed_mask(model, k: int, seed: int = 0) -> MaskDrafts:
    """Mask slots with random (not mean-embedding) vectors, so slots of different offsets differ."""
    source = MaskDrafts.for_model(model, k=k)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        source.module.embeddings.add_(torch.randn(source.module.embeddings.shape, generator=gen).to(source.module.embeddings))
    return source


def perturbed_exit(model, layer: int, k: int, seed: int = 0, inner=None) -> EarlyExitDrafts:
    """An identity-initialised early exit with small random perturbations."""
    source = EarlyExitDrafts.for_model(model, layer=layer, k=k, inner=inner)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head = source.module
        head.weight.add_(0.05 * torch.randn(head.weight.shape, generator=gen).to(head.weight))
        head.bias.add_(0.05 * torch.randn(head.bias.shape, generator=gen).to(head.bias))
    return source
