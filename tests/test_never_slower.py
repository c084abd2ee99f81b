"""Never slower from the first call: no timing run in front of decoding, and a planner that stops
drafting where drafts do not pay (counted in forward passes and planned steps, never timed)."""

import math

import torch

import specdec
from drafting import perturbed_predictor
from near_tie import assert_greedy_equivalent
from simulated_device import pin_cost
from specdec import FIRPDrafts, ForcedDrafts
from specdec.decode.cost import StepCost
from specdec.drafts import Candidates
from specdec.decode.planner import EXPLORE_FIRST, AutoPlanner, DraftingMemory, LayoutCache
from tiny_models import prompt, tiny_model


def count_passes(model) -> list[int]:
    """A one-element list counting forward passes through the model's first decoder layer."""
    calls = [0]
    model.model.layers[0].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_first_patched_generate_runs_no_more_passes_than_tokens():
    """The step-cost curve is learned from the steps decoding runs, not timed in front of them."""
    model = tiny_model("llama-gqa", seed=1)
    ids = prompt(model, 12, seed=3)
    ids = torch.cat([ids, ids], dim=1)  # repeated text: lookup finds chains to draft from the start
    expected = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None)
    specdec.patch(model, perturbed_predictor(model, 1, 3))
    passes = count_passes(model)
    out = model.generate(ids, max_new_tokens=40, do_sample=False, eos_token_id=None)
    assert_greedy_equivalent(model, expected, out)
    stats = specdec.stats(model)
    assert passes[0] == 1 + stats.steps  # the prefill and one pass per step, nothing else
    assert stats.steps <= 40 and stats.rows[0] == 1  # the first step, before anything is measured, is plain


def cpu_like(rows: int) -> float:
    """A step of ``rows`` rows in single-row steps: 1.5 plus 2% a row past one (the jump of a CPU
    leaving matrix-vector products)."""
    return 1.0 if rows == 1 else 1.5 + 0.02 * rows


def test_wrong_lookup_chains_and_confident_useless_drafts_turn_into_plain_steps(monkeypatch):
    """Drafts whose estimates start optimistic (certain-looking ranks, 3-gram chains) and are never
    accepted: after a few steps only the bounded exploration drafts."""
    model = tiny_model("qwen3-norm", seed=2)
    ids = prompt(model, 8, seed=4)
    expected = model.generate(ids, max_new_tokens=120, do_sample=False, eos_token_id=None)
    pin_cost(model, monkeypatch, lambda rows: 0.05 * cpu_like(rows), measured=False)
    source = ForcedDrafts(FIRPDrafts(perturbed_predictor(model, 1, 3)), expected[0].tolist(), model.config.vocab_size, correct=False, chain_depth=6)
    specdec.patch(model, source)
    out = model.generate(ids, max_new_tokens=120, do_sample=False, eos_token_id=None)
    assert_greedy_equivalent(model, expected, out)
    drafted = [step for step, nodes in enumerate(specdec.stats(model).nodes) if nodes]
    assert drafted and len(drafted) <= 6 and max(drafted[:-2], default=0) < 10  # a few at first, then exploration


def planner_with(cost: StepCost, k: int = 3) -> AutoPlanner:
    return AutoPlanner(k, 0.3, 8, DraftingMemory(), cost, LayoutCache(k, torch.device("cpu")))


def test_realism_scales_down_the_kind_that_promises_more_than_verification_gives():
    planner = planner_with(StepCost.measured(cpu_like))
    acceptance = planner.memory.acceptance
    ranked = Candidates([[10], [20]], [[math.log(0.95)], [math.log(0.95)]])
    first = planner.plan(ranked)
    assert first.tokens and planner.memory.realism("firp") == 1.0
    for _ in range(4):  # FIRP's confident drafts rejected, seen in the state after a hit ...
        acceptance.hot = True
        planner.observe(first, [0])
    assert planner.memory.realism("firp") < 0.4
    acceptance.hot = False  # ... so the estimates after a miss never learned of it: the realism did
    assert planner.plan(ranked).tokens == []
    chained = Candidates(chain=[30, 31, 32], chain_ngram=3)
    assert planner.memory.realism("chain") == 1.0 and planner.plan(chained).tokens  # lookup keeps its say
    for _ in range(200):  # the evidence fades over idle steps: FIRP's drafts are tried again
        planner.observe(planner.plan(Candidates()), [0])
    assert planner.memory.realism("firp") > 0.9 and planner.plan(ranked).tokens


def test_plain_steps_until_a_single_row_step_is_measured():
    planner = planner_with(StepCost())
    cands = Candidates([[10]], [[0.0]], chain=[10, 11, 12], chain_ngram=3)
    plan = planner.plan(cands)
    assert plan.tokens == [] and plan.segments == ((1.0, 1),)
    planner.observe_seconds(plan, 0.05, 1)
    assert planner.cost.ready and planner.plan(cands).tokens  # certain drafts pay even at the prior's price


def test_exploration_is_a_bounded_fraction_of_steps():
    """No useful drafts ever: exploration steps (pseudo rows for a predictor that may become useful)
    come after 8 idle steps and then ever more rarely: 7 of 1000 steps."""
    planner = planner_with(StepCost.measured(cpu_like))
    planner.memory.gain = 0.0  # FIRP's ranking measured useless: pseudo rows never pay
    explored = [step for step in range(1000) if planner.plan(Candidates()).layout.owners]
    assert EXPLORE_FIRST == 8 and explored == [7, 23, 55, 119, 247, 503, 759]  # the wait doubles up to 256
