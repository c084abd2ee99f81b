"""tree="auto": exact on every architecture, whatever trees and pseudo rows it picks.

``tree="auto"`` chooses trees from measured step times, so its choices vary run to run. The tests
therefore check exactness under the real planner, and pin its choices where they assert a tau:
a flat step-cost curve (every row free, as on a GPU far from its compute bound) makes it verify
everything likely, a steep one makes it verify nothing. A random planner exercises arbitrary
dynamic trees, partial pseudo rows and deep chains against plain greedy.
"""

import random

import pytest
import torch

import specdec
from drafting import ScrambledDrafts, perturbed_predictor
from near_tie import assert_greedy_equivalent
from simulated_device import pin_cost
from specdec import FIRPDrafts, ForcedDrafts
from specdec import patching
from specdec.decode.planner import Plan
from tiny_models import ARCHS, NUM_LAYERS, prompt, tiny_model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("k,layer", [(1, 0), (3, NUM_LAYERS // 2), (4, NUM_LAYERS - 1)])
def test_auto_matches_plain_greedy(arch, k, layer):
    model = tiny_model(arch, seed=k)
    ids = prompt(model, 9, seed=k)
    ids = torch.cat([ids, ids[:, :5], ids], dim=1)  # repeats, so lookup chains are found
    expected = model.generate(ids, max_new_tokens=40, do_sample=False)
    specdec.patch(model, perturbed_predictor(model, layer, k, seed=k))  # the defaults: FIRP + lookup, auto
    for _ in range(2):  # the second call starts from what the first learned
        assert_greedy_equivalent(model, expected, model.generate(ids, max_new_tokens=40, do_sample=False))
        assert specdec.stats(model).fallback is None


@pytest.mark.parametrize("arch", ["llama-gqa", "mistral-window", "qwen3-norm"])
def test_true_drafts_reach_the_full_chain_depth(arch, monkeypatch):
    model = tiny_model(arch, seed=4)
    ids = prompt(model, 6, seed=2)
    expected = model.generate(ids, max_new_tokens=60, do_sample=False, eos_token_id=None)
    pin_cost(model, monkeypatch, lambda rows: 1e-3)  # rows are free: verify every likely node
    source = ForcedDrafts(FIRPDrafts(perturbed_predictor(model, 1, 3)), expected[0].tolist(), model.config.vocab_size, chain_depth=8)
    specdec.patch(model, source)
    out = model.generate(ids, max_new_tokens=60, do_sample=False, eos_token_id=None)
    assert_greedy_equivalent(model, expected, out)
    stats = specdec.stats(model)
    assert max(stats.accepted) == 8 and stats.tau > 7  # 8 chain tokens and the bonus per step


def test_wrong_drafts_and_steep_cost_give_plain_steps(monkeypatch):
    model = tiny_model("qwen2-bias", seed=2)
    ids = prompt(model, 6, seed=5)
    expected = model.generate(ids, max_new_tokens=30, do_sample=False)
    pin_cost(model, monkeypatch, lambda rows: 1e-3 + rows)  # each row costs a thousand single-row steps
    source = ForcedDrafts(FIRPDrafts(perturbed_predictor(model, 2, 3)), expected[0].tolist(), model.config.vocab_size, correct=False, chain_depth=5)
    specdec.patch(model, source)
    out = model.generate(ids, max_new_tokens=30, do_sample=False)
    assert_greedy_equivalent(model, expected, out)
    stats = specdec.stats(model)
    assert stats.tau == 1.0 and max(stats.nodes) == 0
    # Plain steps, but for the root's pseudo rows on the 8th step and 16 steps later (exploration).
    assert [step for step, rows in enumerate(stats.rows) if rows > 1] == [7, 23]


class RandomPlanner:
    """Arbitrary trees from the candidates: random nodes of the ranking and the chain, random depth,
    random pseudo-row owners (none, some or all). Not a useful planner; a hard one to decode under."""

    top_k = 4
    max_depth = 6

    def __init__(self, pseudo_per_row: int, device, seed: int):
        self.k, self.device, self.rng = pseudo_per_row, device, random.Random(seed)

    def plan(self, cands) -> Plan:
        rng = self.rng
        tokens, parents, depths = [], [], [0]
        for _ in range(rng.randint(0, 12)):
            parent = rng.randrange(len(depths))
            depth = depths[parent] + 1
            pool = list(cands.ranked[depth - 1]) if depth <= len(cands.ranked) else []
            if depth <= len(cands.chain):
                pool.append(cands.chain[depth - 1])
            if depth > self.max_depth or not pool:
                continue
            tokens.append(rng.choice(pool))
            parents.append(parent)
            depths.append(depth)
        owners = sorted(rng.sample(range(len(depths)), rng.randint(0, len(depths)))) if self.k else []
        layout = specdec.decode.tree.StepLayout.of(parents, owners, self.k, self.device)
        return Plan(layout, tokens, torch.tensor(tokens, dtype=torch.int64, device=self.device))

    def observe(self, plan, path):
        pass

    def observe_seconds(self, plan, seconds, emitted):
        pass


@pytest.mark.parametrize("arch,seed", [(arch, seed) for seed, arch in enumerate(ARCHS)])
def test_random_dynamic_trees_with_partial_pseudo_rows_match_plain(arch, seed, monkeypatch):
    model = tiny_model(arch, seed=seed)
    ids = prompt(model, 7, seed=seed)
    expected = model.generate(ids, max_new_tokens=50, do_sample=False)
    inner = FIRPDrafts(perturbed_predictor(model, 1 + seed % 2, k=3, seed=seed))
    # The truth at random ranks of the ranking (or missing), and a chain of wrong tokens.
    source = ScrambledDrafts(inner, expected[0].tolist(), model.config.vocab_size, seed=seed, miss_rate=0.3, chain_depth=5)
    monkeypatch.setattr(patching, "_planner", lambda model, state, parts, source, regime, step: RandomPlanner(source.k, ids.device, seed))
    specdec.patch(model, source)
    out = model.generate(ids, max_new_tokens=50, do_sample=False)
    assert_greedy_equivalent(model, expected, out)
    stats = specdec.stats(model)
    assert 0 < sum(stats.accepted), "expected some acceptance"
    assert any(0 < r - n - 1 < 3 * (n + 1) for n, r in zip(stats.nodes, stats.rows)), "expected partial pseudo rows"
