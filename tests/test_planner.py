"""The cost-aware planner, the step-cost curve and the acceptance model, without a model."""

import math

import pytest
import torch

from specdec.acceptance import PRIOR_WEIGHT, AcceptanceModel
from specdec.cost import GRID, StepCost
from specdec.drafts import Candidates
from specdec.planner import EXPLORE_FIRST, AutoPlanner, DraftingMemory, LayoutCache


def curve(per_row: float, base: float = 1.0) -> StepCost:
    cost = StepCost()
    cost.rows, cost.seconds = [1.0, 64.0], [base + per_row, base + 64 * per_row]
    return cost


def planner(cost: StepCost, k: int = 3, gain: float = 0.5, max_depth: int = 8) -> AutoPlanner:
    memory = DraftingMemory(gain=gain)
    return AutoPlanner(k, 0.5, max_depth, memory, cost, LayoutCache(k, torch.device("cpu")))


def ranking(probs: list[list[float]], first_token: int = 10) -> Candidates:
    """Ranked candidates with draft probabilities ``probs[depth][rank]`` and distinct tokens."""
    tokens = [[first_token + 10 * d + r for r in range(len(row))] for d, row in enumerate(probs)]
    return Candidates(tokens, [[math.log(p) for p in row] for row in probs])


def test_free_rows_verify_every_likely_node_and_steep_rows_none():
    cands = ranking([[0.9, 0.05], [0.9, 0.05], [0.9, 0.05]])
    cands.chain, cands.chain_ngram = [10, 20, 30, 99, 98], 3
    wide = planner(curve(0.0)).plan(cands)
    assert wide.layout.depth == 5  # the chain continues past k = 3
    assert wide.tokens[:3] == [10, 20, 30]  # the agreeing chain and rank-0 tokens first
    assert wide.layout.owners  # with free rows, pseudo rows on the likeliest end rows
    plain = planner(curve(100.0)).plan(cands)
    assert plain.tokens == [] and plain.layout.num_rows == 1 and plain.row_equivalents == 1.0


def test_pseudo_rows_go_to_the_likeliest_end_and_only_when_they_pay():
    cands = ranking([[0.95], [0.95], [0.95]])
    chosen = planner(curve(0.1), gain=2.0).plan(cands)
    assert chosen.tokens == [10, 20, 30]
    # The deepest node, where the walk ends with probability 0.86; the root's 0.05 does not pay 1.5 rows.
    assert chosen.layout.owners == (3,)
    assert chosen.layout.pseudo_slot.tolist() == [-1, -1, -1, 0]
    assert planner(curve(0.001), gain=2.0).plan(cands).layout.owners == (0, 3)  # cheap rows: both
    assert planner(curve(0.1), gain=0.0).plan(cands).layout.owners == ()


def test_cost_trades_nodes_for_time():
    """With each row costing 10% of a step, only nodes likelier than about 0.1 * tau per row pay."""
    cands = ranking([[0.6, 0.3, 0.05, 0.02]])
    plan = planner(curve(0.1, base=1.0), gain=0.0).plan(cands)
    assert plan.tokens == [10, 11]


def test_exploration_gives_pseudo_rows_after_idle_steps():
    p = planner(curve(100.0))
    owners = [p.plan(Candidates()).layout.owners for _ in range(2 * EXPLORE_FIRST + 1)]
    assert [i for i, o in enumerate(owners) if o] == [EXPLORE_FIRST - 1]
    assert p.memory.explore_every == 2 * EXPLORE_FIRST


def test_observed_acceptance_updates_the_estimates():
    p = planner(curve(0.0))
    plan = p.plan(ranking([[0.5, 0.4]]))
    key_0, key_1 = plan.keys
    before = p.memory.acceptance.prob(key_0)
    p.observe(plan, [0, 1])  # the walk took node 1 (rank 0)
    acceptance = p.memory.acceptance
    assert acceptance.hot  # a draft was accepted: the next step reads the estimates that follow a hit
    acceptance.hot = False  # the observations above were made in the cold state
    assert acceptance.prob(key_0) > before
    assert acceptance.prob(key_1) < 0.4


def test_estimates_after_a_hit_and_after_a_miss_are_kept_apart():
    """A streak of repetition (everything accepted) must not keep drafting alive once it ends."""
    p = planner(curve(0.0))
    acceptance = p.memory.acceptance
    key = AcceptanceModel.ranked_key("firp", 1, 0.95)
    acceptance.hot = True
    for _ in range(30):
        acceptance.observe(key, True)
    acceptance.hot = False
    for _ in range(3):
        acceptance.observe(key, False)
    assert acceptance.prob(key) < 0.3
    acceptance.hot = True
    assert acceptance.prob(key) > 0.95
    plan = p.plan(ranking([[0.95]]))
    p.observe(plan, [0])  # the draft was rejected: cold again
    assert not acceptance.hot


def test_chain_and_ranking_agreeing_make_one_node():
    cands = ranking([[0.5, 0.3]])
    cands.chain, cands.chain_ngram = [11], 2
    plan = planner(curve(0.0)).plan(cands)
    assert sorted(plan.tokens) == [10, 11]
    assert {key[0] for key in plan.keys} == {"firp", "both"}


def test_acceptance_prior_and_forgetting():
    model = AcceptanceModel()
    key = AcceptanceModel.ranked_key("firp", 1, 0.5)
    assert model.prob(key) == pytest.approx(0.525)  # the draft probability's bucket centre
    for _ in range(200):
        model.observe(key, False)
    assert model.prob(key) < 0.01
    chain = AcceptanceModel.chain_key(9, 7)
    assert chain == ("chain", 4, 3) and model.prob(chain) == 0.7
    model.observe(chain, True)
    assert model.counts[(*chain, False)] == [1.0, 0.0]
    assert model.prob(chain) == pytest.approx((1 + PRIOR_WEIGHT * model.prior(chain)) / (1 + PRIOR_WEIGHT))


def test_failures_in_some_buckets_lower_the_prior_of_untried_ones():
    """An untrained predictor's confident drafts: after a few misses at probability 0.95, an untried
    bucket of the same depth (0.7) is distrusted too; another depth and the chains are not."""
    model = AcceptanceModel()
    tried, untried = AcceptanceModel.ranked_key("firp", 1, 0.95), AcceptanceModel.ranked_key("firp", 1, 0.7)
    other_depth = AcceptanceModel.ranked_key("firp", 2, 0.7)
    before = model.prob(untried)
    for _ in range(6):
        model.observe(tried, False)
    assert model.prob(untried) < 0.3 * before
    assert model.prob(other_depth) == pytest.approx(0.675)
    for _ in range(6):
        model.observe(other_depth, True)  # better than its guesses: other buckets' priors are not raised
    assert model.prob(AcceptanceModel.ranked_key("firp", 2, 0.3)) == pytest.approx(0.25)
    assert model.prob(other_depth) > 0.9


def test_step_cost_calibration_keeps_the_fastest_repeat_and_interpolates():
    calls = []

    def measure(n):
        calls.append(n)
        return 1.0 + 0.5 * n + (5.0 if len(calls) % 2 else 0.0)  # every other run is disturbed

    cost = StepCost()
    cost.calibrate(measure)
    assert cost.rows[:2] == [1.0, 2.0] and cost(1.5) == pytest.approx(1.75)
    assert cost.seconds == [1.0 + 0.5 * n for n in cost.rows]
    assert cost.rows[-1] < GRID[-1]  # stopped once a step cost 6 single-row steps
    assert cost(1000) > cost(cost.rows[-1])  # extrapolated with the last slope


def test_step_cost_observations_move_the_curve_boundedly():
    cost = curve(0.0)
    cost.observe(1.0, 100.0)  # a stalled step: clipped to +50% of the estimate, times the learning rate
    assert 1.0 < cost(1.0) <= 1.0 + 0.05 * 0.5 + 1e-9
    with pytest.raises(RuntimeError, match="calibrate"):
        StepCost()(1.0)


def test_early_exit_ranking_is_drafted_without_pseudo_rows_and_does_not_count_as_their_gain():
    exit_only = ranking([[0.9, 0.05]])
    exit_only.kinds = [["exit", "exit"]]
    plan = planner(curve(0.01), k=0, gain=0.0).plan(exit_only)
    assert plan.tokens[:1] == [10] and plan.keys[0][0] == "exit" and not plan.layout.owners
    # The same ranking tagged as FIRP's adds to g (what pseudo rows bring); the early exit's does not.
    for kind, gains in (("firp", True), ("exit", False)):
        cands = ranking([[0.9, 0.05], [0.9, 0.05]])
        cands.kinds = [[kind, kind], [kind, kind]]
        p = planner(curve(0.01), gain=0.0)
        p.plan(cands)
        assert (p.memory.gain > 0) == gains
