"""The cost-aware planner, the step-cost curve and the acceptance model, without a model."""

import copy
import math

import pytest
import torch

from specdec.decode.acceptance import PRIOR_WEIGHT, AcceptanceModel
from specdec.decode.cost import MAX_WEIGHT, PRIOR_JUMP, PRIOR_SLOPE, StepCost
from specdec.drafts import Candidates
from specdec.decode.planner import EXPLORE_FIRST, AutoPlanner, DraftingMemory, LayoutCache


def curve(per_row: float, base: float = 1.0) -> StepCost:
    return StepCost.measured(lambda rows: base + per_row * rows)


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
    assert plain.tokens == [] and plain.layout.num_rows == 1 and plain.segments == ((1.0, 1),)


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


def test_step_cost_needs_no_timing_run_and_prices_unseen_sizes_pessimistically():
    cost = StepCost()
    assert not cost.ready
    with pytest.raises(RuntimeError, match="single-row step"):
        cost(1)
    cost.observe([(1.0, 4)], 9.0)  # a drafted step before any plain one teaches nothing yet
    assert not cost.ready
    cost.observe([(1.0, 1)], 1.0)
    assert cost.ready and cost(1) == 1.0
    assert cost(2) == pytest.approx(1 + PRIOR_JUMP + PRIOR_SLOPE)  # the jump past one row
    assert cost(64) == pytest.approx(1 + PRIOR_JUMP + 63 * PRIOR_SLOPE)
    # one real row before the transfer layer, four rows after it
    assert cost.step([(0.75, 1), (0.25, 4)]) == pytest.approx(0.75 + 0.25 * cost(4))


def test_step_cost_learns_the_sizes_it_sees_and_bridges_the_others():
    """A GPU-like flat curve: after drafted steps of 2 and 16 rows, sizes between are flat too."""
    cost = StepCost()
    for _ in range(10):
        cost.observe([(1.0, 1)], 1.0)
        cost.observe([(1.0, 2)], 1.02)
        cost.observe([(1.0, 16)], 1.1)
    assert cost(2) == pytest.approx(1.02, rel=0.02)
    assert cost(16) == pytest.approx(1.1, rel=0.03)  # the prior keeps a small weight
    assert cost(8) == pytest.approx(1.02 + 0.08 * 6 / 14, rel=0.02)  # between the two observed sizes
    assert cost(32) == pytest.approx(1.1 + 16 * PRIOR_SLOPE, rel=0.03)  # past them: the prior slope, no jump


def test_step_cost_points_follow_every_observation():
    """points() is kept between observations (the planner asks many times a step), never past one."""
    cost = StepCost()
    cost.observe([(1.0, 1)], 1.0)
    for rows, seconds in [(4, 1.3), (4, 1.2), (16, 2.0), (1, 0.9)]:
        before = cost.points()
        cost.observe([(1.0, rows)], seconds)
        fresh = copy.copy(cost)
        fresh._points = None
        assert cost.points() == fresh.points() != before


def test_step_cost_puts_a_mixed_steps_error_on_the_rows_it_has_not_seen():
    """One real row through the early layers and four after the transfer layer: a well-measured
    single-row step takes little of the error, the 4-row point takes the rest."""
    cost = StepCost()
    for _ in range(20):
        cost.observe([(1.0, 1)], 1.0)
    for _ in range(20):
        cost.observe([(0.7, 1), (0.3, 4)], 0.7 + 0.3 * 1.2)  # four rows cost 1.2 here, not the prior's 1.65
    assert cost(1) == pytest.approx(1.0, rel=0.01)
    assert cost(4) == pytest.approx(1.2, rel=0.06)  # against the prior 1.65


def test_step_cost_keeps_ratios_so_a_busy_spell_does_not_price_rows_forever():
    cost = StepCost()
    for _ in range(20):  # another process shares the cores: every step is ten times slower
        cost.observe([(1.0, 1)], 10.0)
        cost.observe([(1.0, 4)], 12.0)
    for _ in range(3):  # it ends; only plain steps run for a while
        cost.observe([(1.0, 1)], 1.0)
    assert cost(1) == pytest.approx(1.0, rel=0.01)
    assert cost(4) == pytest.approx(1.2, rel=0.05)


def test_step_cost_observations_move_the_curve_boundedly():
    cost = StepCost.measured(lambda rows: 1.0)
    cost.observe([(1.0, 1)], 100.0)  # a stalled step counts as twice the estimate, averaged with what was seen
    assert 1.0 < cost(1) <= 1.0 + 1.0 / MAX_WEIGHT + 1e-9
    first_use = StepCost()
    first_use.observe([(1.0, 1)], 50.0)  # a first step that compiled kernels ...
    first_use.observe([(1.0, 1)], 1.0)  # ... is forgotten at the first normal one
    assert first_use(1) == 1.0


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


def test_a_new_call_halves_what_earlier_calls_saw():
    """Each generate call builds its planner; earlier texts' evidence then counts half, so the new
    text's own outcomes soon dominate (chat-learned lookup estimates must not keep code chains short)."""
    p = planner(curve(0.0))
    key = AcceptanceModel.chain_key(1, 3)
    for _ in range(10):
        p.memory.acceptance.observe(key, False)
    p.observe(p.plan(ranking([[0.9]])), [0])
    counts = list(p.memory.acceptance.counts[(*key, False)])
    checked = list(p.memory.checked["firp"])
    AutoPlanner(3, 0.5, 8, p.memory, p.cost, p.layouts)  # the next call's planner
    assert p.memory.acceptance.counts[(*key, False)] == pytest.approx([c / 2 for c in counts])
    assert p.memory.checked["firp"] == pytest.approx([c / 2 for c in checked])
