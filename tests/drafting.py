"""Test draft sources that control how much of each tree is accepted."""

import copy

import torch

import specdec
from specdec import Candidates, DraftContext, EarlyExitDrafts, FIRPDrafts, ForcedDrafts, FuturePredictor, MaskDrafts, TokenHead
from specdec.decode.cache import TreeKVCache
from specdec.decode.loop import ModelParts, forward_step, prefill
from specdec.drafts.firp.predictor import MAP_CLASSES
from specdec.decode.tree import StepLayout, TreeShape


def perturbed_predictor(model, layer: int, k: int, seed: int = 0, map: str = "linear", **options) -> FuturePredictor:
    """An identity-initialised predictor (``map`` kind, ``options`` of its ``for_model``) with small random
    perturbations of every parameter (not a no-op map; a richer map's new terms not zero), adapters too."""
    predictor = MAP_CLASSES[map].for_model(model, layer=layer, k=k, **options)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in predictor.named_parameters():
            if not name.startswith("adapters."):
                param.add_(0.05 * torch.randn(param.shape, generator=gen).to(param))
    return perturbed_adapters(predictor, seed)


def perturbed_adapters(module, seed: int = 0, scale: float = 0.5):
    """``module`` with its adapters' ``B`` (zero-initialised) made random, so they change the pseudo
    rows (a module without adapters is returned as it is)."""
    if module.adapters is None:
        return module
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, param in module.adapters.named_parameters():
            if name.endswith(".up"):
                param.copy_(scale * torch.randn(param.shape, generator=gen) / param.shape[1] ** 0.5)
    return module


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


def perturbed_mask(model, k: int, seed: int = 0, **adapters) -> MaskDrafts:
    """Mask slots with random (not mean-embedding) vectors, so slots of different offsets differ, and
    random adapters if ``adapters`` (``adapter_rank``, ``adapter_layers``) asks for them."""
    source = MaskDrafts.for_model(model, k=k, **adapters)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        source.module.embeddings.add_(torch.randn(source.module.embeddings.shape, generator=gen).to(source.module.embeddings))
    perturbed_adapters(source.module, seed)
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


def without_adapters(source):
    """The same source with its adapters removed."""
    bare = copy.deepcopy(source)
    (bare.predictor if isinstance(bare, FIRPDrafts) else bare.module).adapters = None
    return bare


def one_step(model, source, ids, n: int, shape: TreeShape):
    """``forward_step`` of the root ``ids[n]`` and ``shape``'s nodes (random tokens) after a prefill of
    ``ids[:n]``: final hidden states ``[S, d]``, the cache, the number of real rows, the LM head ``[V, d]``."""
    parts = ModelParts.of(specdec.patch(model, source, backend="torch"))
    layout = StepLayout.build(shape, source.k, torch.device("cpu"))
    nodes = torch.randint(0, model.config.vocab_size, (shape.num_nodes,), generator=torch.Generator().manual_seed(n))
    cache = TreeKVCache(len(parts.layers), 64)
    with torch.no_grad():
        prefill(parts, cache, ids[0, :n], "torch")
        hidden, _ = forward_step(parts, source.prepared(model, "torch"), layout, cache, ids[0, n : n + 1], nodes, n, "torch")
    specdec.unpatch(model)
    return hidden, cache, layout.num_real, parts.lm_head


def perturbed_head(model, depth: int = 3, seed: int = 0, vocab=None) -> TokenHead:
    """A head with random (not identity) input fusion, so its drafts differ from "repeat the state"."""
    head = TokenHead.for_model(model, depth, vocab)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in head.parameters():
            param.add_(0.2 * torch.randn(param.shape, generator=gen).to(param))
    return head
