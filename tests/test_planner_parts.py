"""The parts of ``tree="auto"``'s planner, each on its own: expansion, selection, exploration and
the memory that learns from verified steps (:class:`AutoPlanner` runs them in that order)."""

import math

import pytest

from specdec.decode.cost import StepCost
from specdec.decode.expansion import FREE, MIN_PATH_PROB, expand, likeliest_end
from specdec.decode.exploration import EXPLORE_NODES, explored, rearm_if_paid
from specdec.decode.memory import CALL_FADE, EXPLORE_FIRST, DraftingMemory
from specdec.decode.selection import MAX_OWNERS, Choice, StepShape, select
from specdec.drafts import Candidates

FLAT = StepCost.measured(lambda rows: 1.0)
STEEP = StepCost.measured(lambda rows: 1.0 + 10.0 * (rows - 1))


def ranked(probs: list[list[float]], kinds=None, chain=(), ngram=0) -> Candidates:
    tokens = [[10 * (d + 1) + r for r in range(len(row))] for d, row in enumerate(probs)]
    cands = Candidates(tokens, [[math.log(p) for p in row] for row in probs], kinds or [])
    cands.chain, cands.chain_ngram = list(chain), ngram
    return cands


def test_expansion_orders_nodes_best_first_with_parents_first():
    memory = DraftingMemory()
    nodes = expand(ranked([[0.9, 0.05], [0.8, 0.1]]), memory, max_depth=2)
    probs = [node[0] for node in nodes]
    assert probs == sorted(probs, reverse=True) and probs[-1] >= MIN_PATH_PROB
    assert all(parent <= row for row, (_, parent, _, _) in enumerate(nodes))  # node m's parent is an earlier row
    first, second = nodes[0], nodes[1]
    assert (first[1], first[2]) == (0, 10) and second[1] == 1  # depth 2 hangs under the best depth-1 node
    assert second[0] == pytest.approx(first[0] * memory.acceptance.prob(second[3]))


def test_a_chain_token_that_is_also_ranked_is_one_node_of_both_kinds():
    nodes = expand(ranked([[0.5, 0.3]], chain=[11, 77], ngram=2), DraftingMemory(), max_depth=3)
    tokens = [node[2] for node in nodes]
    assert tokens.count(11) == 1 and [node[3][0] for node in nodes if node[2] == 11] == ["both"]
    assert 77 in tokens  # the chain goes on past the ranking, under its own node
    assert sorted(node[2] for node in expand(ranked([[0.5]], chain=[11, 77]), DraftingMemory(), max_depth=1)) == [10, 11]  # capped depth


def test_free_kinds_only_when_asked():
    cands = ranked([[0.6], [0.6]], kinds=[["firp"], ["exit"]])
    assert [node[2] for node in expand(cands, DraftingMemory(), 2, use=FREE)] == []  # depth 2 needs a depth-1 parent
    cands = ranked([[0.6]], kinds=[["exit"]])
    assert [node[2] for node in expand(cands, DraftingMemory(), 2, use=FREE)] == [10]


def test_realism_scales_expansion_unless_exploring():
    memory = DraftingMemory()
    memory.checked["firp"] = [0.0, 9.0]  # nine expected acceptances, none seen
    realistic = expand(ranked([[0.9]]), memory, 1)[0][0]
    assert realistic == pytest.approx(expand(ranked([[0.9]]), memory, 1, realistic=False)[0][0] * memory.realism("firp"))


def test_likeliest_end():
    assert likeliest_end([]) == 0
    assert likeliest_end([(0.9, 0, 5, None), (0.8, 1, 6, None)]) == 2  # 0.8 ends at node 2, 0.1 at node 1
    assert likeliest_end([(0.3, 0, 5, None)]) == 0


def test_selection_verifies_what_pays_and_puts_pseudo_rows_where_the_walk_ends():
    nodes = expand(ranked([[0.95], [0.95], [0.95]]), DraftingMemory(), 3)
    shape = StepShape(k=3, fraction=0.5)
    assert select(nodes, shape, FLAT, rate=1.0, gain=0.0).nodes == 3
    assert select(nodes, shape, STEEP, rate=1.0, gain=0.0) == Choice(1.0 - 1.0, 0, ())
    with_rows = select(nodes, shape, FLAT, rate=1.0, gain=2.0)
    assert with_rows.nodes == 3 and len(with_rows.owners) == MAX_OWNERS and with_rows.owners[0] == 3
    assert select(nodes, StepShape(k=0, fraction=0.0), FLAT, rate=1.0, gain=2.0).owners == ()  # no pseudo rows to give


def test_step_shape_segments():
    shape = StepShape(k=3, fraction=0.25)
    assert shape.segments(4, 0) == ((1.0, 4),)
    assert shape.segments(4, 2) == ((0.75, 4), (0.25, 10))


def test_exploration_waits_doubles_and_is_rearmed():
    memory, shape = DraftingMemory(), StepShape(k=2, fraction=0.5)
    cands = ranked([[0.5, 0.2]])
    idle = Choice(0.0, 0, ())
    picks = [explored(idle, [], cands, memory, shape, FLAT, 2)[2] for _ in range(EXPLORE_FIRST)]
    assert picks[:-1] == [()] * (EXPLORE_FIRST - 1) and len(picks[-1]) == 1  # pseudo rows on the likeliest end
    assert memory.explore_every == 2 * EXPLORE_FIRST and memory.idle_steps == 0
    choice, nodes, _ = explored(idle, [], cands, DraftingMemory(idle_steps=EXPLORE_FIRST), shape, FLAT, 2)
    assert choice.nodes <= EXPLORE_NODES and nodes
    busy = Choice(1.0, 1, (1,))
    memory.idle_steps = 5
    assert explored(busy, [], cands, memory, shape, FLAT, 2)[2] == (1,) and memory.idle_steps == 0
    rearm_if_paid(memory, gain=0.0, shape=shape, cost=FLAT, rate=1.0)  # pseudo rows cost nothing here: any gain pays
    assert memory.explore_every == 2 * EXPLORE_FIRST
    rearm_if_paid(memory, gain=0.1, shape=shape, cost=STEEP, rate=1.0)
    assert memory.explore_every == 2 * EXPLORE_FIRST
    rearm_if_paid(memory, gain=0.1, shape=shape, cost=FLAT, rate=1.0)
    assert memory.explore_every == EXPLORE_FIRST


def test_memory_learns_from_verification_rate_and_gain():
    memory = DraftingMemory()
    key, other = (memory.acceptance.ranked_key("firp", 1, p) for p in (0.5, 0.1))
    before = memory.acceptance.prob(key) + memory.acceptance.prob(other)
    memory.learn_verification(parents=(0, 0), keys=[key, other], path=[0, 1])
    accepted, expected = memory.checked["firp"]
    assert accepted == 1 and expected == pytest.approx(before) and memory.acceptance.hot
    memory.learn_verification(parents=(0,), keys=[key], path=[0])
    assert not memory.acceptance.hot and memory.checked["firp"][0] < 1  # evidence decays a step
    memory.learn_rate(2.0, 4)
    assert memory.rate(FLAT) == pytest.approx(2.0)
    assert DraftingMemory().rate(STEEP) == 1.0  # before any step: a plain step's rate
    memory.learn_gain(1.0)
    assert 0.5 < memory.gain < 1.0  # the first measurement outweighs the prior of 0
    old = list(memory.checked["firp"])
    memory.begin_call()
    assert memory.checked["firp"] == [old[0] * CALL_FADE, old[1] * CALL_FADE]


def test_an_explicit_tree_hangs_each_node_under_its_own_parent():
    # root -> 5 (0.6) -> 7 (0.9); root -> 6 (0.3) -> 8 (0.5); the chain 6, 8, 9 agrees with the second branch
    tree = [(-1, 5, math.log(0.6), "head"), (-1, 6, math.log(0.3), "head"), (0, 7, math.log(0.9), "head"), (1, 8, math.log(0.5), "head")]
    cands = Candidates(tree=tree, chain=[6, 8, 9], chain_ngram=2)
    nodes = expand(cands, DraftingMemory(), max_depth=3, realistic=False)
    by_token = {node[2]: (row, node) for row, node in enumerate(nodes, start=1)}
    assert set(by_token) == {5, 6, 7, 8, 9}
    assert nodes[by_token[7][0] - 1][1] == by_token[5][0]  # 7 under 5, never under 6
    assert nodes[by_token[8][0] - 1][1] == by_token[6][0]
    assert by_token[6][1][3][0] == by_token[8][1][3][0] == "both"  # chain and tree agree: one node of both kinds
    assert by_token[9][1][3][0] == "chain" and nodes[by_token[9][0] - 1][1] == by_token[8][0]
    assert by_token[5][1][3][0] == "head"
    only_chain = expand(cands, DraftingMemory(), max_depth=3, use=frozenset({"firp"}), realistic=False)
    assert [node[2] for node in only_chain] == [6, 8, 9]  # a tree of kinds outside ``use`` drops out
